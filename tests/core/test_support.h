// test_support.h: helpers shared by the core's tests.
//
//  - ModelFileBuilder: valid random student-painn model files (safetensors) made in memory,
//    with hooks to break them (edit metadata, drop/rename/reshape/poison a tensor, edit the
//    header JSON) for the loader's bad-input tests.
//  - load_model_or_fail: load bytes or a file, recording a GoogleTest failure with the
//    loader's message when it fails; random_model_and_table_or_fail: a random model and, if
//    asked, its filter table.
//  - TempFile: bytes written to a temporary file, removed on destruction.
//  - seed models and golden data: the converted ../shared models and the golden values
//    exported by the `seed_models` CTest fixture (tests/core/CMakeLists.txt).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

extern "C" {
#include "mlff/mlff.h"
}

namespace mlff_test {

// ------------------------------------------------------------------------------------------
// Random model files

enum class DType { F32, F64 };

struct ModelSpec {
    int hidden = 8;           // H, divisible by 4
    int blocks = 2;           // L
    int rbf = 6;              // K
    int max_z = 10;           // Z_max (embedding has Z_max + 1 rows)
    double cutoff = 5.0;      // Å
    std::uint64_t seed = 1;
    DType dtype = DType::F64; // how every tensor is stored
    bool last_mixing = true;  // write the last block's mixing_matrix (exports omit it)
};

struct Tensor {
    std::string name;
    std::vector<std::int64_t> shape;
    std::vector<double> values; // row-major; stored as `dtype` (F32 rounds)
    DType dtype = DType::F64;
};

// A model file as a list of tensors plus metadata, serialized on demand by bytes().
// Weights are uniform in +-1/sqrt(fan_in) (so activations stay O(1)), rbf centers spread
// over [0, cutoff], widths cutoff/K, mixing matrices near the identity.
class ModelFileBuilder {
public:
    explicit ModelFileBuilder(const ModelSpec &spec);

    const ModelSpec &spec() const { return spec_; }

    // metadata ("__metadata__"): key -> string value, written in insertion order
    std::vector<std::pair<std::string, std::string>> metadata;
    void set_metadata(const std::string &key, const std::string &value);
    void remove_metadata(const std::string &key);

    // tensors, written in this order, data laid out back to back in the same order
    std::vector<Tensor> tensors;
    Tensor &tensor(const std::string &name); // fails the test (and throws) if absent
    bool has_tensor(const std::string &name) const;
    void remove_tensor(const std::string &name);
    void rename_tensor(const std::string &from, const std::string &to);
    void set_shape(const std::string &name, std::vector<std::int64_t> shape); // values resized (zeros)
    void poison(const std::string &name, std::size_t flat_index, double value); // e.g. NaN

    // The header JSON (without the 8-byte length prefix) and the data section.
    std::string header_json() const;
    std::string data_section() const;

    // The whole file. `edit_header`, if given, may rewrite the header JSON text first.
    std::string bytes(const std::function<void(std::string &header)> &edit_header = nullptr) const;

private:
    ModelSpec spec_;
};

// A valid random model file's bytes.
std::string random_model_bytes(const ModelSpec &spec = ModelSpec());

// A file from raw parts: 8-byte little-endian length of `header`, `header`, `data`.
std::string safetensors_bytes(const std::string &header, const std::string &data);

// Names of the tensors of a student-painn model with L blocks, in state_dict order.
std::vector<std::string> student_painn_tensor_names(int blocks, bool last_mixing = true);

// ------------------------------------------------------------------------------------------
// Loading

struct ModelDeleter {
    void operator()(mlff_model *model) const { mlff_model_free(model); }
};
using ModelPtr = std::unique_ptr<mlff_model, ModelDeleter>;

struct WorkspaceDeleter {
    void operator()(mlff_workspace *workspace) const { mlff_workspace_free(workspace); }
};
using WorkspacePtr = std::unique_ptr<mlff_workspace, WorkspaceDeleter>;

struct FilterTableDeleter {
    void operator()(mlff_filter_table *table) const { mlff_filter_table_free(table); }
};
using FilterTablePtr = std::unique_ptr<mlff_filter_table, FilterTableDeleter>;

// Loads; on failure records a non-fatal GoogleTest failure with the loader's message and
// returns null (callers: ASSERT_TRUE(model)).
ModelPtr load_model_or_fail(const std::string &bytes, const char *name = "<test model>");
ModelPtr load_model_file_or_fail(const std::string &path);
ModelPtr random_model_or_fail(const ModelSpec &spec = ModelSpec());

// A random model of H channels and L blocks (K = 7, Z_max = 9) and, if `tabulated`, its filter
// table at the default spacing (else a null table). On failure records a non-fatal GoogleTest
// failure and returns a null model (callers: ASSERT_TRUE(m.model)).
struct ModelAndTable {
    ModelPtr model;
    FilterTablePtr table;
};
ModelAndTable random_model_and_table_or_fail(int hidden, int blocks, bool tabulated);

// Loads bytes expected to be rejected; returns the error (status MLFF_OK if it loaded,
// which the caller's assertion then reports).
mlff_error load_model_error(const std::string &bytes, const char *name = "<test model>");

// ------------------------------------------------------------------------------------------
// Files

// `bytes` written to a fresh file in the temp directory, removed when this goes away.
class TempFile {
public:
    explicit TempFile(const std::string &bytes, const std::string &suffix = ".mlff.safetensors");
    ~TempFile();
    TempFile(const TempFile &) = delete;
    TempFile &operator=(const TempFile &) = delete;
    const std::string &path() const { return path_; }

private:
    std::string path_;
};

std::string read_file_bytes(const std::string &path); // empty on failure, with a test failure

// ------------------------------------------------------------------------------------------
// Seed models and golden values (from ../shared, prepared by the `seed_models` fixture)

// $MLFF_SHARED_DIR, or "" when unset: tests that need it GTEST_SKIP().
std::string shared_dir();
// $MLFF_BUILD_DIR if set, else the CMake binary dir this was compiled in.
std::string build_dir();

// ${MLFF_BUILD_DIR}/models/student_NAME.mlff.safetensors, NAME in original, tiny, ultra_tiny.
std::string seed_model_path(const std::string &name);

struct GoldenCase {
    std::string model;    // "original", "tiny"
    std::string geometry; // "benzene", "water", "ethanol", ...
    std::vector<int> atomic_numbers;   // (N)
    std::vector<double> positions;     // (N, 3) Å
    double energy = 0.0;               // eV, float64 PyTorch
    std::vector<double> forces;        // (N, 3) eV/Å
    double energy_f32 = 0.0;           // eV, float32 PyTorch
};

// ${MLFF_BUILD_DIR}/golden/seed_models_golden.json (written by tests/core/export_golden.py).
// On failure returns false with *error set.
bool read_golden(std::vector<GoldenCase> *cases, std::string *error);

// GTEST_SKIP()s the calling test when MLFF_SHARED_DIR is unset or empty.
#define MLFF_SKIP_WITHOUT_SHARED()                                                                  \
    do {                                                                                            \
        if (::mlff_test::shared_dir().empty())                                                      \
            GTEST_SKIP() << "MLFF_SHARED_DIR is not set: configure with -DMLFF_SHARED_DIR=../shared"; \
    } while (0)

// ------------------------------------------------------------------------------------------
// Structures and derivatives

struct Structure {
    std::vector<int> atomic_numbers; // (N)
    std::vector<double> positions;   // (N, 3) Å
    std::vector<int> replicas;       // (N) or empty: all in replica 0
    int num_replicas = 1;
    std::vector<double> box;         // (9) rows a, b, c in OpenMM's reduced form, or empty
    mlff_structure view() const;     // points into this object
};

// N atoms with Z in [1, max_z], uniform in a cube of side `side` Å, no two closer than
// `min_distance` Å (rejection sampling; fails the test if it can't place them).
Structure random_structure(int num_atoms, int max_z, double side, double min_distance, std::uint64_t seed);

// E (the sum of the replica energies) and forces via mlff_compute; returns false with a
// test failure on error.
bool compute_energy_forces(const mlff_model *model, const Structure &structure, double *energy,
                           std::vector<double> *forces);

// -dE/dx by central differences with step h (Å) for every coordinate of every atom,
// E being the sum over replicas.
std::vector<double> finite_difference_forces(const mlff_model *model, const Structure &structure, double h);

// True when some pair of atoms (any periodic image ignored) lies within `margin` Å of the cutoff,
// where the energy is discontinuous (docs/student-painn.md) and finite differences are meaningless.
bool pair_near_cutoff(const Structure &structure, double cutoff, double margin);

} // namespace mlff_test
