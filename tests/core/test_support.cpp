#include "test_support.h"

#include <gtest/gtest.h>

#include <cjson/cJSON.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace mlff_test {

namespace {

// splitmix64: the same numbers on every platform (std:: distributions are not).
struct Random {
    std::uint64_t state;
    explicit Random(std::uint64_t seed) : state(seed * 0x9E3779B97F4A7C15ull + 0x1234567ull) {}
    std::uint64_t next() {
        std::uint64_t z = (state += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        return z ^ (z >> 31);
    }
    double uniform() { return static_cast<double>(next() >> 11) * (1.0 / 9007199254740992.0); } // [0, 1)
    double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
};

std::size_t element_count(const std::vector<std::int64_t> &shape) {
    std::size_t n = 1;
    for (std::int64_t d : shape) n *= static_cast<std::size_t>(d < 0 ? 0 : d);
    return n;
}

std::string json_string(const std::string &s) {
    std::string out = "\"";
    for (char c : s) {
        if (c == '"' || c == '\\') {
            out += '\\';
            out += c;
        } else if (static_cast<unsigned char>(c) < 0x20) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\u%04x", c);
            out += buf;
        } else {
            out += c;
        }
    }
    return out + "\"";
}

std::string env_or_empty(const char *name) {
    const char *value = std::getenv(name);
    return value == nullptr ? std::string() : std::string(value);
}

} // namespace

// ------------------------------------------------------------------------------------------
// Random model files

std::vector<std::string> student_painn_tensor_names(int blocks, bool last_mixing) {
    std::vector<std::string> names = {"embedding.weight", "rbf.centers", "rbf.widths"};
    for (int l = 0; l < blocks; ++l) {
        const std::string p = "interactions." + std::to_string(l) + ".";
        for (const char *suffix :
             {"message.rbf_to_scalar.0.weight", "message.rbf_to_scalar.0.bias", "message.rbf_to_scalar.2.weight",
              "message.rbf_to_scalar.2.bias", "update.update_mlp.0.weight", "update.update_mlp.0.bias",
              "update.update_mlp.2.weight", "update.update_mlp.2.bias"})
            names.push_back(p + suffix);
        if (l < blocks - 1 || last_mixing) names.push_back(p + "update.mixing_matrix");
    }
    for (const char *name : {"energy_head.0.weight", "energy_head.0.bias", "energy_head.2.weight", "energy_head.2.bias",
                             "energy_head.4.weight", "energy_head.4.bias"})
        names.push_back(name);
    return names;
}

ModelFileBuilder::ModelFileBuilder(const ModelSpec &spec) : spec_(spec) {
    metadata = {{"format", "openmm-mlff"},
                {"format_version", "1"},
                {"architecture", "student-painn"},
                {"cutoff", [&] {
                     char buf[64];
                     std::snprintf(buf, sizeof buf, "%.17g", spec.cutoff);
                     return std::string(buf);
                 }()},
                {"length_unit", "angstrom"},
                {"energy_unit", "eV"}};

    Random random(spec.seed);
    const std::int64_t H = spec.hidden, K = spec.rbf;
    auto add = [&](const std::string &name, std::vector<std::int64_t> shape, const std::function<double(std::size_t)> &value) {
        Tensor t;
        t.name = name;
        t.shape = std::move(shape);
        t.dtype = spec.dtype;
        t.values.resize(element_count(t.shape));
        for (std::size_t i = 0; i < t.values.size(); ++i) t.values[i] = value(i);
        tensors.push_back(std::move(t));
    };
    // Linear layer (out, in): weights and biases uniform in +-1/sqrt(in), as PyTorch initializes.
    auto linear = [&](const std::string &prefix, std::int64_t out, std::int64_t in) {
        const double bound = 1.0 / std::sqrt(static_cast<double>(in));
        add(prefix + ".weight", {out, in}, [&](std::size_t) { return random.uniform(-bound, bound); });
        add(prefix + ".bias", {out}, [&](std::size_t) { return random.uniform(-bound, bound); });
    };

    add("embedding.weight", {spec.max_z + 1, H}, [&](std::size_t) { return random.uniform(-1.0, 1.0); });
    add("rbf.centers", {K}, [&](std::size_t k) { return K > 1 ? spec.cutoff * static_cast<double>(k) / static_cast<double>(K - 1) : 0.0; });
    add("rbf.widths", {K}, [&](std::size_t) { return spec.cutoff / static_cast<double>(K) * random.uniform(0.8, 1.2); });
    for (int l = 0; l < spec.blocks; ++l) {
        const std::string p = "interactions." + std::to_string(l) + ".";
        linear(p + "message.rbf_to_scalar.0", H, K);
        linear(p + "message.rbf_to_scalar.2", 3 * H, H);
        linear(p + "update.update_mlp.0", H, 2 * H);
        linear(p + "update.update_mlp.2", 3 * H, H);
        if (l < spec.blocks - 1 || spec.last_mixing)
            add(p + "update.mixing_matrix", {3, 3},
                [&](std::size_t i) { return (i % 4 == 0 ? 1.0 : 0.0) + random.uniform(-0.1, 0.1); });
    }
    linear("energy_head.0", H / 2, H);
    linear("energy_head.2", H / 4, H / 2);
    linear("energy_head.4", 1, H / 4);

    if (spec.dtype == DType::F32)
        for (Tensor &t : tensors)
            for (double &v : t.values) v = static_cast<double>(static_cast<float>(v));
}

void ModelFileBuilder::set_metadata(const std::string &key, const std::string &value) {
    for (auto &kv : metadata)
        if (kv.first == key) {
            kv.second = value;
            return;
        }
    metadata.emplace_back(key, value);
}

void ModelFileBuilder::remove_metadata(const std::string &key) {
    for (auto it = metadata.begin(); it != metadata.end(); ++it)
        if (it->first == key) {
            metadata.erase(it);
            return;
        }
}

Tensor &ModelFileBuilder::tensor(const std::string &name) {
    for (Tensor &t : tensors)
        if (t.name == name) return t;
    ADD_FAILURE() << "test model has no tensor " << name;
    throw std::runtime_error("test model has no tensor " + name);
}

bool ModelFileBuilder::has_tensor(const std::string &name) const {
    for (const Tensor &t : tensors)
        if (t.name == name) return true;
    return false;
}

void ModelFileBuilder::remove_tensor(const std::string &name) {
    for (auto it = tensors.begin(); it != tensors.end(); ++it)
        if (it->name == name) {
            tensors.erase(it);
            return;
        }
    ADD_FAILURE() << "test model has no tensor " << name;
}

void ModelFileBuilder::rename_tensor(const std::string &from, const std::string &to) { tensor(from).name = to; }

void ModelFileBuilder::set_shape(const std::string &name, std::vector<std::int64_t> shape) {
    Tensor &t = tensor(name);
    t.shape = std::move(shape);
    t.values.resize(element_count(t.shape), 0.0);
}

void ModelFileBuilder::poison(const std::string &name, std::size_t flat_index, double value) {
    Tensor &t = tensor(name);
    if (flat_index >= t.values.size()) {
        ADD_FAILURE() << "poison: index " << flat_index << " out of range for " << name;
        return;
    }
    t.values[flat_index] = value;
}

std::string ModelFileBuilder::header_json() const {
    std::ostringstream out;
    out << "{\"__metadata__\":{";
    for (std::size_t i = 0; i < metadata.size(); ++i)
        out << (i ? "," : "") << json_string(metadata[i].first) << ":" << json_string(metadata[i].second);
    out << "}";
    std::size_t offset = 0;
    for (const Tensor &t : tensors) {
        const std::size_t size = t.values.size() * (t.dtype == DType::F32 ? 4 : 8);
        out << "," << json_string(t.name) << ":{\"dtype\":\"" << (t.dtype == DType::F32 ? "F32" : "F64")
            << "\",\"shape\":[";
        for (std::size_t d = 0; d < t.shape.size(); ++d) out << (d ? "," : "") << t.shape[d];
        out << "],\"data_offsets\":[" << offset << "," << offset + size << "]}";
        offset += size;
    }
    out << "}";
    return out.str();
}

std::string ModelFileBuilder::data_section() const {
    std::string data;
    for (const Tensor &t : tensors) {
        for (double v : t.values) {
            // Little-endian bytes (the test machines are little-endian, as safetensors is).
            if (t.dtype == DType::F32) {
                const float f = static_cast<float>(v);
                data.append(reinterpret_cast<const char *>(&f), sizeof f);
            } else {
                data.append(reinterpret_cast<const char *>(&v), sizeof v);
            }
        }
    }
    return data;
}

std::string ModelFileBuilder::bytes(const std::function<void(std::string &header)> &edit_header) const {
    std::string header = header_json();
    if (edit_header) edit_header(header);
    return safetensors_bytes(header, data_section());
}

std::string random_model_bytes(const ModelSpec &spec) { return ModelFileBuilder(spec).bytes(); }

std::string safetensors_bytes(const std::string &header, const std::string &data) {
    std::string out(8, '\0');
    std::uint64_t n = header.size();
    for (int i = 0; i < 8; ++i) out[static_cast<std::size_t>(i)] = static_cast<char>((n >> (8 * i)) & 0xFF);
    return out + header + data;
}

// ------------------------------------------------------------------------------------------
// Loading

ModelPtr load_model_or_fail(const std::string &bytes, const char *name) {
    mlff_model *model = nullptr;
    mlff_error error{};
    if (mlff_model_load_memory(bytes.data(), bytes.size(), name, &model, &error) != MLFF_OK) {
        ADD_FAILURE() << "loading " << name << " failed: " << error.message;
        return nullptr;
    }
    return ModelPtr(model);
}

ModelPtr load_model_file_or_fail(const std::string &path) {
    mlff_model *model = nullptr;
    mlff_error error{};
    if (mlff_model_load_file(path.c_str(), &model, &error) != MLFF_OK) {
        ADD_FAILURE() << "loading " << path << " failed: " << error.message;
        return nullptr;
    }
    return ModelPtr(model);
}

ModelPtr random_model_or_fail(const ModelSpec &spec) { return load_model_or_fail(random_model_bytes(spec)); }

ModelAndTable random_model_and_table_or_fail(int hidden, int blocks, bool tabulated) {
    ModelSpec spec;
    spec.hidden = hidden;
    spec.blocks = blocks;
    spec.rbf = 7;
    spec.max_z = 9;
    ModelAndTable made{random_model_or_fail(spec), nullptr};
    if (!made.model || !tabulated) return made;
    mlff_filter_table *table = nullptr;
    mlff_error error{};
    if (mlff_filter_table_create(made.model.get(), 0.0, &table, &error) != MLFF_OK) {
        ADD_FAILURE() << "mlff_filter_table_create: " << error.message;
        made.model.reset();
        return made;
    }
    made.table.reset(table);
    return made;
}

mlff_error load_model_error(const std::string &bytes, const char *name) {
    mlff_model *model = nullptr;
    mlff_error error{};
    error.status = mlff_model_load_memory(bytes.data(), bytes.size(), name, &model, &error);
    if (error.status == MLFF_OK) {
        if (model == nullptr) ADD_FAILURE() << "load returned MLFF_OK without a model";
        mlff_model_free(model);
    } else if (model != nullptr) {
        ADD_FAILURE() << "load failed but set *model";
    }
    return error;
}

// ------------------------------------------------------------------------------------------
// Files

TempFile::TempFile(const std::string &bytes, const std::string &suffix) {
    std::string dir = env_or_empty("TMPDIR");
    if (dir.empty()) dir = "/tmp";
    std::string pattern = dir + "/mlff-test-XXXXXX" + suffix;
    std::vector<char> buf(pattern.begin(), pattern.end());
    buf.push_back('\0');
    const int fd = mkstemps(buf.data(), static_cast<int>(suffix.size()));
    if (fd < 0) {
        ADD_FAILURE() << "cannot create a temporary file " << pattern;
        return;
    }
    path_ = buf.data();
    std::size_t done = 0;
    while (done < bytes.size()) {
        const ssize_t n = write(fd, bytes.data() + done, bytes.size() - done);
        if (n <= 0) {
            ADD_FAILURE() << "cannot write " << path_;
            break;
        }
        done += static_cast<std::size_t>(n);
    }
    close(fd);
}

TempFile::~TempFile() {
    if (!path_.empty()) std::remove(path_.c_str());
}

std::string read_file_bytes(const std::string &path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        ADD_FAILURE() << "cannot open " << path;
        return std::string();
    }
    std::ostringstream out;
    out << in.rdbuf();
    return out.str();
}

// ------------------------------------------------------------------------------------------
// Seed models and golden values

std::string shared_dir() { return env_or_empty("MLFF_SHARED_DIR"); }
std::string build_dir() {
    const std::string dir = env_or_empty("MLFF_BUILD_DIR");
#ifdef MLFF_TEST_BUILD_DIR
    if (dir.empty()) return MLFF_TEST_BUILD_DIR;
#endif
    return dir;
}

std::string seed_model_path(const std::string &name) {
    return build_dir() + "/models/student_" + name + ".mlff.safetensors";
}

namespace {

bool json_numbers(const cJSON *array, std::vector<double> *out) {
    if (!cJSON_IsArray(array)) return false;
    out->clear();
    const cJSON *item = nullptr;
    cJSON_ArrayForEach(item, array) {
        if (!cJSON_IsNumber(item)) return false;
        out->push_back(item->valuedouble);
    }
    return true;
}

} // namespace

bool read_golden(std::vector<GoldenCase> *cases, std::string *error) {
    const std::string path = build_dir() + "/golden/seed_models_golden.json";
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        *error = "cannot open " + path + " (made by the seed_models fixture: run the tests through ctest)";
        return false;
    }
    std::ostringstream text;
    text << in.rdbuf();
    cJSON *root = cJSON_Parse(text.str().c_str());
    if (!cJSON_IsArray(root)) {
        cJSON_Delete(root);
        *error = path + " is not a JSON array";
        return false;
    }
    cases->clear();
    const cJSON *item = nullptr;
    int index = 0;
    cJSON_ArrayForEach(item, root) {
        GoldenCase c;
        const cJSON *model = cJSON_GetObjectItemCaseSensitive(item, "model");
        const cJSON *geometry = cJSON_GetObjectItemCaseSensitive(item, "geometry");
        const cJSON *energy = cJSON_GetObjectItemCaseSensitive(item, "energy");
        const cJSON *energy_f32 = cJSON_GetObjectItemCaseSensitive(item, "energy_f32");
        std::vector<double> z;
        const bool ok = cJSON_IsString(model) && cJSON_IsString(geometry) && cJSON_IsNumber(energy) &&
                        cJSON_IsNumber(energy_f32) && json_numbers(cJSON_GetObjectItemCaseSensitive(item, "z"), &z) &&
                        json_numbers(cJSON_GetObjectItemCaseSensitive(item, "pos"), &c.positions) &&
                        json_numbers(cJSON_GetObjectItemCaseSensitive(item, "forces"), &c.forces) &&
                        c.positions.size() == 3 * z.size() && c.forces.size() == 3 * z.size();
        if (!ok) {
            cJSON_Delete(root);
            *error = path + ": entry " + std::to_string(index) +
                     " lacks model, geometry, z, pos (N*3), energy, forces (N*3) or energy_f32";
            return false;
        }
        c.model = model->valuestring;
        c.geometry = geometry->valuestring;
        c.energy = energy->valuedouble;
        c.energy_f32 = energy_f32->valuedouble;
        for (double v : z) c.atomic_numbers.push_back(static_cast<int>(v));
        cases->push_back(std::move(c));
        ++index;
    }
    cJSON_Delete(root);
    if (cases->empty()) {
        *error = path + " holds no cases";
        return false;
    }
    return true;
}

// ------------------------------------------------------------------------------------------
// Structures and derivatives

mlff_structure Structure::view() const {
    mlff_structure s{};
    s.num_atoms = static_cast<int>(atomic_numbers.size());
    s.positions = positions.data();
    s.atomic_numbers = atomic_numbers.data();
    s.replicas = replicas.empty() ? nullptr : replicas.data();
    s.num_replicas = num_replicas;
    s.box = box.empty() ? nullptr : box.data();
    return s;
}

Structure random_structure(int num_atoms, int max_z, double side, double min_distance, std::uint64_t seed) {
    Random random(seed);
    Structure s;
    const double min_d2 = min_distance * min_distance;
    for (int i = 0; i < num_atoms; ++i) {
        bool placed = false;
        for (int attempt = 0; attempt < 10000 && !placed; ++attempt) {
            double r[3] = {random.uniform(0, side), random.uniform(0, side), random.uniform(0, side)};
            placed = true;
            for (int j = 0; j < i && placed; ++j) {
                double d2 = 0;
                for (int a = 0; a < 3; ++a) {
                    const double u = r[a] - s.positions[static_cast<std::size_t>(3 * j + a)];
                    d2 += u * u;
                }
                placed = d2 >= min_d2;
            }
            if (placed) s.positions.insert(s.positions.end(), r, r + 3);
        }
        if (!placed) {
            ADD_FAILURE() << "random_structure: cannot place " << num_atoms << " atoms " << min_distance
                          << " Å apart in a " << side << " Å cube";
            break;
        }
        s.atomic_numbers.push_back(1 + static_cast<int>(random.next() % static_cast<std::uint64_t>(max_z)));
    }
    return s;
}

bool compute_energy_forces(const mlff_model *model, const Structure &structure, double *energy,
                           std::vector<double> *forces) {
    WorkspacePtr workspace(mlff_workspace_create());
    if (!workspace) {
        ADD_FAILURE() << "mlff_workspace_create failed";
        return false;
    }
    const mlff_structure s = structure.view();
    std::vector<double> replica_energies(static_cast<std::size_t>(structure.num_replicas > 0 ? structure.num_replicas : 1));
    if (forces != nullptr) forces->assign(structure.positions.size(), 0.0);
    mlff_result result{};
    result.replica_energies = replica_energies.data();
    result.forces = forces != nullptr ? forces->data() : nullptr;
    mlff_error error{};
    if (mlff_compute(model, workspace.get(), &s, &result, &error) != MLFF_OK) {
        ADD_FAILURE() << "mlff_compute failed: " << error.message;
        return false;
    }
    *energy = 0.0;
    for (double e : replica_energies) *energy += e;
    return true;
}

bool pair_near_cutoff(const Structure &s, double cutoff, double margin) {
    std::size_t N = s.atomic_numbers.size();
    for (std::size_t i = 0; i < N; i++)
        for (std::size_t j = i + 1; j < N; j++) {
            double d2 = 0.0;
            for (int a = 0; a < 3; a++) d2 += std::pow(s.positions[j * 3 + a] - s.positions[i * 3 + a], 2);
            if (std::fabs(std::sqrt(d2) - cutoff) < margin) return true;
        }
    return false;
}

std::vector<double> finite_difference_forces(const mlff_model *model, const Structure &structure, double h) {
    Structure moved = structure;
    std::vector<double> forces(structure.positions.size(), 0.0);
    for (std::size_t k = 0; k < forces.size(); ++k) {
        double plus = 0.0, minus = 0.0;
        moved.positions[k] = structure.positions[k] + h;
        if (!compute_energy_forces(model, moved, &plus, nullptr)) break;
        moved.positions[k] = structure.positions[k] - h;
        if (!compute_energy_forces(model, moved, &minus, nullptr)) break;
        moved.positions[k] = structure.positions[k];
        forces[k] = -(plus - minus) / (2.0 * h);
    }
    return forces;
}

} // namespace mlff_test
