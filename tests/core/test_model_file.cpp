// test_model_file: the model file loader (core/src/model_file.c) accepts valid files, reads
// every tensor exactly, and rejects each kind of malformed file with a message naming the
// file, the tensor and what was expected versus found.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "test_support.h"

using namespace mlff_test;

namespace {

const char *const kName = "bad-model.mlff.safetensors";

// Every parameter array of a loaded model next to the builder's tensor of the same name.
std::vector<std::pair<std::string, const double *>> model_arrays(const mlff_model *model) {
    const mlff_student_painn *p = mlff_model_student_painn(model);
    std::vector<std::pair<std::string, const double *>> arrays = {
        {"embedding.weight", p->embedding}, {"rbf.centers", p->rbf_centers}, {"rbf.widths", p->rbf_widths},
        {"energy_head.0.weight", p->head_w0}, {"energy_head.0.bias", p->head_b0}, {"energy_head.2.weight", p->head_w2},
        {"energy_head.2.bias", p->head_b2}, {"energy_head.4.weight", p->head_w4}, {"energy_head.4.bias", p->head_b4}};
    for (int l = 0; l < p->num_blocks; ++l) {
        const mlff_student_painn_block &b = p->blocks[l];
        const std::string q = "interactions." + std::to_string(l) + ".";
        arrays.push_back({q + "message.rbf_to_scalar.0.weight", b.filter_w0});
        arrays.push_back({q + "message.rbf_to_scalar.0.bias", b.filter_b0});
        arrays.push_back({q + "message.rbf_to_scalar.2.weight", b.filter_w2});
        arrays.push_back({q + "message.rbf_to_scalar.2.bias", b.filter_b2});
        arrays.push_back({q + "update.update_mlp.0.weight", b.update_w0});
        arrays.push_back({q + "update.update_mlp.0.bias", b.update_b0});
        arrays.push_back({q + "update.update_mlp.2.weight", b.update_w2});
        arrays.push_back({q + "update.update_mlp.2.bias", b.update_b2});
        arrays.push_back({q + "update.mixing_matrix", b.mixing});
    }
    return arrays;
}

// Every tensor of the builder equals (bit for bit) the loaded array of that name.
void expect_model_matches(const mlff_model *model, ModelFileBuilder &builder) {
    for (const auto &named : model_arrays(model)) {
        ASSERT_NE(named.second, nullptr) << named.first;
        if (!builder.has_tensor(named.first)) continue;
        const Tensor &t = builder.tensor(named.first);
        for (std::size_t i = 0; i < t.values.size(); ++i)
            ASSERT_EQ(named.second[i], t.values[i]) << named.first << " at flat index " << i;
    }
}

// Replaces the text of one tensor's header entry {"dtype":...} by `entry`.
void replace_entry(std::string &header, const std::string &name, const std::string &entry) {
    const std::string key = "\"" + name + "\":{";
    const std::size_t at = header.find(key);
    ASSERT_NE(at, std::string::npos) << "no entry " << name << " in " << header;
    const std::size_t begin = at + key.size() - 1;
    const std::size_t end = header.find('}', begin);
    header.replace(begin, end + 1 - begin, entry);
}

// The byte range of a tensor in the builder's data section.
std::pair<std::size_t, std::size_t> offsets_of(const ModelFileBuilder &builder, const std::string &name) {
    std::size_t offset = 0;
    for (const Tensor &t : builder.tensors) {
        const std::size_t size = t.values.size() * (t.dtype == DType::F32 ? 4 : 8);
        if (t.name == name) return {offset, offset + size};
        offset += size;
    }
    ADD_FAILURE() << "no tensor " << name;
    return {0, 0};
}

void expect_rejected(const std::string &bytes, std::initializer_list<std::string> words,
                     mlff_status status = MLFF_ERROR_FORMAT) {
    const mlff_error error = load_model_error(bytes, kName);
    EXPECT_EQ(error.status, status) << error.message;
    const std::string message = error.message;
    EXPECT_NE(message.find(kName), std::string::npos) << "message lacks the file name: " << message;
    for (const std::string &word : words)
        EXPECT_NE(message.find(word), std::string::npos) << "message lacks '" << word << "': " << message;
}

#define EXPECT_REJECTED(bytes, ...)                                                                                    \
    do {                                                                                                               \
        SCOPED_TRACE(#bytes);                                                                                          \
        expect_rejected(bytes, __VA_ARGS__);                                                                           \
    } while (0)

std::string with_entry(const std::string &name, const std::string &entry) {
    ModelFileBuilder builder{ModelSpec()};
    return builder.bytes([&](std::string &header) { replace_entry(header, name, entry); });
}

std::string with_metadata(const std::string &key, const std::string &value) {
    ModelFileBuilder builder{ModelSpec()};
    builder.set_metadata(key, value);
    return builder.bytes();
}

std::string without_metadata(const std::string &key) {
    ModelFileBuilder builder{ModelSpec()};
    builder.remove_metadata(key);
    return builder.bytes();
}

std::string without_tensor(const std::string &name, const ModelSpec &spec = ModelSpec()) {
    ModelFileBuilder builder(spec);
    builder.remove_tensor(name);
    return builder.bytes();
}

std::string with_shape(const std::string &name, std::vector<std::int64_t> shape) {
    ModelFileBuilder builder{ModelSpec()};
    builder.set_shape(name, std::move(shape));
    return builder.bytes();
}

} // namespace

// ------------------------------------------------------------------------------------------
// Valid files

TEST(ModelFile, GettersReportTheHyperparameters) {
    ModelSpec spec;
    spec.hidden = 12;
    spec.blocks = 3;
    spec.rbf = 7;
    spec.max_z = 17;
    spec.cutoff = 4.25;
    ModelPtr model = random_model_or_fail(spec);
    ASSERT_TRUE(model);
    EXPECT_STREQ(mlff_model_architecture(model.get()), "student-painn");
    EXPECT_STREQ(mlff_model_length_unit(model.get()), "angstrom");
    EXPECT_STREQ(mlff_model_energy_unit(model.get()), "eV");
    EXPECT_EQ(mlff_model_cutoff(model.get()), 4.25);
    EXPECT_EQ(mlff_model_hidden_channels(model.get()), 12);
    EXPECT_EQ(mlff_model_num_blocks(model.get()), 3);
    EXPECT_EQ(mlff_model_num_rbf(model.get()), 7);
    EXPECT_EQ(mlff_model_max_atomic_number(model.get()), 17);
    const mlff_student_painn *p = mlff_model_student_painn(model.get());
    ASSERT_NE(p, nullptr);
    EXPECT_EQ(p->hidden_channels, 12);
    EXPECT_EQ(p->num_blocks, 3);
    EXPECT_EQ(p->num_rbf, 7);
    EXPECT_EQ(p->max_atomic_number, 17);
    EXPECT_EQ(p->cutoff, 4.25);
}

TEST(ModelFile, ReadsEveryF64TensorExactly) {
    ModelFileBuilder builder{ModelSpec()};
    ModelPtr model = load_model_or_fail(builder.bytes());
    ASSERT_TRUE(model);
    expect_model_matches(model.get(), builder);
}

TEST(ModelFile, ReadsEveryF32TensorExactly) {
    ModelSpec spec;
    spec.dtype = DType::F32;
    ModelFileBuilder builder(spec);
    ModelPtr model = load_model_or_fail(builder.bytes());
    ASSERT_TRUE(model);
    expect_model_matches(model.get(), builder);
    // The builder rounded to float: the values really went through F32.
    const Tensor &t = builder.tensor("embedding.weight");
    EXPECT_EQ(t.values[0], static_cast<double>(static_cast<float>(t.values[0])));
}

TEST(ModelFile, ReadsMixedDtypes) {
    ModelFileBuilder builder{ModelSpec()};
    builder.tensor("rbf.widths").dtype = DType::F32;
    for (double &v : builder.tensor("rbf.widths").values) v = static_cast<double>(static_cast<float>(v));
    ModelPtr model = load_model_or_fail(builder.bytes());
    ASSERT_TRUE(model);
    expect_model_matches(model.get(), builder);
}

TEST(ModelFile, LastMixingMatrixMayBeAbsentAndIsThenZero) {
    ModelSpec spec;
    spec.blocks = 3;
    spec.last_mixing = false;
    ModelFileBuilder builder(spec);
    ASSERT_FALSE(builder.has_tensor("interactions.2.update.mixing_matrix"));
    ModelPtr model = load_model_or_fail(builder.bytes());
    ASSERT_TRUE(model);
    EXPECT_EQ(mlff_model_num_blocks(model.get()), 3);
    const mlff_student_painn *p = mlff_model_student_painn(model.get());
    ASSERT_NE(p->blocks[2].mixing, nullptr);
    for (int i = 0; i < 9; ++i) EXPECT_EQ(p->blocks[2].mixing[i], 0.0) << i;
    expect_model_matches(model.get(), builder);
}

TEST(ModelFile, LoadFromFileEqualsLoadFromMemory) {
    ModelSpec spec;
    spec.dtype = DType::F32;
    spec.seed = 7;
    const std::string bytes = random_model_bytes(spec);
    TempFile file(bytes);
    ModelPtr from_file = load_model_file_or_fail(file.path());
    ModelPtr from_memory = load_model_or_fail(bytes);
    ASSERT_TRUE(from_file && from_memory);
    EXPECT_EQ(mlff_model_cutoff(from_file.get()), mlff_model_cutoff(from_memory.get()));
    EXPECT_EQ(mlff_model_hidden_channels(from_file.get()), mlff_model_hidden_channels(from_memory.get()));
    EXPECT_EQ(mlff_model_num_blocks(from_file.get()), mlff_model_num_blocks(from_memory.get()));
    const auto a = model_arrays(from_file.get()), b = model_arrays(from_memory.get());
    ASSERT_EQ(a.size(), b.size());
    ModelFileBuilder builder(spec);
    for (std::size_t t = 0; t < a.size(); ++t) {
        const std::size_t n = builder.tensor(a[t].first).values.size();
        for (std::size_t i = 0; i < n; ++i) ASSERT_EQ(a[t].second[i], b[t].second[i]) << a[t].first << " " << i;
    }
}

TEST(ModelFile, AcceptsPaddedHeaderExtraMetadataAndAnyTensorOrder) {
    ModelFileBuilder builder{ModelSpec()};
    builder.set_metadata("source", "student_tiny.onnx");
    std::reverse(builder.tensors.begin(), builder.tensors.end());
    ModelPtr model = load_model_or_fail(builder.bytes([](std::string &header) { header += "   "; }));
    ASSERT_TRUE(model);
    expect_model_matches(model.get(), builder);
}

TEST(ModelFile, TheCallerMayFreeTheBytesAfterLoading) {
    ModelFileBuilder builder{ModelSpec()};
    ModelPtr model;
    {
        std::string bytes = builder.bytes();
        model = load_model_or_fail(bytes);
        std::memset(&bytes[0], 0xFF, bytes.size());
    }
    ASSERT_TRUE(model);
    expect_model_matches(model.get(), builder);
}

// ------------------------------------------------------------------------------------------
// The container

TEST(ModelFileRejects, FileShorterThanTheHeaderLength) {
    EXPECT_REJECTED(std::string(), {"too short", "0 bytes", "at least 8"});
    EXPECT_REJECTED(std::string(7, '\0'), {"too short", "7 bytes", "at least 8"});
}

TEST(ModelFileRejects, HeaderLengthLargerThanTheFile) {
    const std::string bytes = random_model_bytes();
    std::string truncated = bytes.substr(0, 100);
    EXPECT_REJECTED(truncated, {"header length", "larger than the 92 bytes"});
    std::string huge = bytes;
    for (int i = 0; i < 8; ++i) huge[static_cast<std::size_t>(i)] = '\xFF';
    EXPECT_REJECTED(huge, {"header length 18446744073709551615", "larger than"});
}

TEST(ModelFileRejects, InvalidJson) {
    EXPECT_REJECTED(safetensors_bytes("{\"__metadata__\": {", ""), {"not valid JSON"});
    EXPECT_REJECTED(safetensors_bytes("{} x", ""), {"after its JSON value", "byte 3"});
    EXPECT_REJECTED(safetensors_bytes(std::string("{}\0 ", 4), ""), {"NUL byte", "byte 2"});
}

TEST(ModelFileRejects, HeaderThatIsNotAnObject) {
    EXPECT_REJECTED(safetensors_bytes("[1, 2]", ""), {"header is an array", "expected a JSON object"});
    EXPECT_REJECTED(safetensors_bytes("\"text\"", ""), {"header is a string", "expected a JSON object"});
}

TEST(ModelFileRejects, TensorEntryThatIsNotAnObject) {
    EXPECT_REJECTED(with_entry("rbf.widths", "[1]"), {"'rbf.widths'", "is an array", "expected an object"});
}

TEST(ModelFileRejects, MissingOrIllTypedDtype) {
    EXPECT_REJECTED(with_entry("rbf.widths", "{\"shape\":[6],\"data_offsets\":[752,800]}"),
                    {"'rbf.widths'", "no dtype", "F32", "F64"});
    EXPECT_REJECTED(with_entry("rbf.widths", "{\"dtype\":8,\"shape\":[6],\"data_offsets\":[752,800]}"),
                    {"'rbf.widths'", "a number for dtype"});
}

TEST(ModelFileRejects, UnknownDtype) {
    EXPECT_REJECTED(with_entry("rbf.widths", "{\"dtype\":\"BF16\",\"shape\":[6],\"data_offsets\":[752,800]}"),
                    {"'rbf.widths'", "dtype 'BF16'", "expected F32 or F64"});
}

TEST(ModelFileRejects, MissingOrIllTypedShape) {
    EXPECT_REJECTED(with_entry("rbf.widths", "{\"dtype\":\"F64\",\"data_offsets\":[752,800]}"),
                    {"'rbf.widths'", "no shape", "expected an array"});
    EXPECT_REJECTED(with_entry("rbf.widths", "{\"dtype\":\"F64\",\"shape\":6,\"data_offsets\":[752,800]}"),
                    {"'rbf.widths'", "a number for shape", "expected an array"});
    EXPECT_REJECTED(with_entry("rbf.widths", "{\"dtype\":\"F64\",\"shape\":[-6],\"data_offsets\":[752,800]}"),
                    {"'rbf.widths'", "in its shape", "non-negative integers"});
    EXPECT_REJECTED(with_entry("rbf.widths", "{\"dtype\":\"F64\",\"shape\":[5.5],\"data_offsets\":[752,800]}"),
                    {"'rbf.widths'", "in its shape", "non-negative integers"});
    EXPECT_REJECTED(with_entry("rbf.widths", "{\"dtype\":\"F64\",\"shape\":[\"6\"],\"data_offsets\":[752,800]}"),
                    {"'rbf.widths'", "a string in its shape"});
}

TEST(ModelFileRejects, MissingOrIllTypedDataOffsets) {
    EXPECT_REJECTED(with_entry("rbf.widths", "{\"dtype\":\"F64\",\"shape\":[6]}"),
                    {"'rbf.widths'", "no data_offsets", "[begin, end]"});
    EXPECT_REJECTED(with_entry("rbf.widths", "{\"dtype\":\"F64\",\"shape\":[6],\"data_offsets\":[752]}"),
                    {"'rbf.widths'", "data_offsets", "[begin, end]"});
    EXPECT_REJECTED(with_entry("rbf.widths", "{\"dtype\":\"F64\",\"shape\":[6],\"data_offsets\":[752,\"800\"]}"),
                    {"'rbf.widths'", "not two non-negative integers"});
    EXPECT_REJECTED(with_entry("rbf.widths", "{\"dtype\":\"F64\",\"shape\":[6],\"data_offsets\":[-8,40]}"),
                    {"'rbf.widths'", "not two non-negative integers"});
}

TEST(ModelFileRejects, DataOffsetsOutOfRange) {
    ModelFileBuilder builder{ModelSpec()};
    const std::size_t data_size = builder.data_section().size();
    const std::string begin = std::to_string(data_size - 8), end = std::to_string(data_size + 40);
    EXPECT_REJECTED(with_entry("rbf.widths", "{\"dtype\":\"F64\",\"shape\":[6],\"data_offsets\":[" + begin + "," + end + "]}"),
                    {"'rbf.widths'", "beyond the end of the data section", std::to_string(data_size) + " bytes"});
    EXPECT_REJECTED(with_entry("rbf.widths", "{\"dtype\":\"F64\",\"shape\":[6],\"data_offsets\":[0,1e300]}"),
                    {"'rbf.widths'", "not two non-negative integers"});
}

TEST(ModelFileRejects, DecreasingDataOffsets) {
    EXPECT_REJECTED(with_entry("rbf.widths", "{\"dtype\":\"F64\",\"shape\":[6],\"data_offsets\":[800,752]}"),
                    {"'rbf.widths'", "decreasing data_offsets [800, 752]", "begin <= end"});
}

TEST(ModelFileRejects, DataOffsetsNotMatchingShapeAndDtype) {
    ModelFileBuilder builder{ModelSpec()};
    const auto range = offsets_of(builder, "rbf.widths");
    ASSERT_EQ(range.first, 752u); // the entries below assume the default spec's layout
    EXPECT_REJECTED(with_entry("rbf.widths", "{\"dtype\":\"F32\",\"shape\":[6],\"data_offsets\":[752,800]}"),
                    {"'rbf.widths'", "48 bytes", "shape [6] of F32"});
    EXPECT_REJECTED(with_entry("rbf.widths", "{\"dtype\":\"F64\",\"shape\":[7],\"data_offsets\":[752,800]}"),
                    {"'rbf.widths'", "48 bytes", "shape [7] of F64"});
    // A shape whose byte count overflows 64 bits matches no data section.
    EXPECT_REJECTED(
        with_entry("rbf.widths", "{\"dtype\":\"F64\",\"shape\":[4294967296,4294967296,2],\"data_offsets\":[752,800]}"),
        {"'rbf.widths'", "more than SIZE_MAX"});
}

TEST(ModelFileRejects, OverlappingTensors) {
    EXPECT_REJECTED(with_entry("rbf.widths", "{\"dtype\":\"F64\",\"shape\":[6],\"data_offsets\":[696,744]}"),
                    {"overlaps", "'rbf.widths'", "'embedding.weight'", "[696, 744)", "[0, 704)"});
}

TEST(ModelFileRejects, RepeatedTensor) {
    ModelFileBuilder builder{ModelSpec()};
    EXPECT_REJECTED(builder.bytes([](std::string &header) {
        header.insert(header.size() - 1, ",\"rbf.widths\":{\"dtype\":\"F64\",\"shape\":[6],\"data_offsets\":[752,800]}");
    }),
                    {"'rbf.widths'", "appears twice"});
}

// ------------------------------------------------------------------------------------------
// Metadata

TEST(ModelFileRejects, MissingMetadata) {
    ModelFileBuilder builder{ModelSpec()};
    builder.metadata.clear();
    EXPECT_REJECTED(builder.bytes([](std::string &header) {
        const std::string empty = "\"__metadata__\":{},";
        header.erase(header.find(empty), empty.size());
    }),
                    {"no __metadata__", "openmm-mlff", "mlff-convert"});
    EXPECT_REJECTED(builder.bytes([](std::string &header) {
        header.replace(header.find("{}"), 2, "[]");
    }),
                    {"__metadata__ is an array", "expected an object"});
}

TEST(ModelFileRejects, MetadataValueThatIsNotAString) {
    ModelFileBuilder builder{ModelSpec()};
    EXPECT_REJECTED(builder.bytes([](std::string &header) {
        const std::string cutoff = "\"cutoff\":\"5\"";
        ASSERT_NE(header.find(cutoff), std::string::npos) << header;
        header.replace(header.find(cutoff), cutoff.size(), "\"cutoff\":5");
    }),
                    {"metadata 'cutoff' is a number", "expected a string"});
}

TEST(ModelFileRejects, MissingOrWrongFormat) {
    EXPECT_REJECTED(without_metadata("format"), {"no 'format'", "\"openmm-mlff\""});
    EXPECT_REJECTED(with_metadata("format", "pt"), {"format is \"pt\"", "expected \"openmm-mlff\""});
}

TEST(ModelFileRejects, MissingOrWrongFormatVersion) {
    EXPECT_REJECTED(without_metadata("format_version"), {"no 'format_version'", "\"1\""});
    EXPECT_REJECTED(with_metadata("format_version", "2"), {"format_version is \"2\"", "expected \"1\""});
}

TEST(ModelFileRejects, MissingOrWrongArchitecture) {
    EXPECT_REJECTED(without_metadata("architecture"), {"no 'architecture'", "\"student-painn\""});
    EXPECT_REJECTED(with_metadata("architecture", "schnet"), {"architecture is \"schnet\"", "expected \"student-painn\""});
}

TEST(ModelFileRejects, MissingOrWrongUnits) {
    EXPECT_REJECTED(without_metadata("length_unit"), {"no 'length_unit'", "\"angstrom\""});
    EXPECT_REJECTED(with_metadata("length_unit", "nm"), {"length_unit is \"nm\"", "expected \"angstrom\""});
    EXPECT_REJECTED(without_metadata("energy_unit"), {"no 'energy_unit'", "\"eV\""});
    EXPECT_REJECTED(with_metadata("energy_unit", "kJ/mol"), {"energy_unit is \"kJ/mol\"", "expected \"eV\""});
}

TEST(ModelFileRejects, MissingCutoff) {
    EXPECT_REJECTED(without_metadata("cutoff"), {"no 'cutoff'"});
}

TEST(ModelFileRejects, UnparsableCutoff) {
    for (const char *text : {"", "five", "5.0 A", "5,0", ".5", "5.", "+5", "nan", "0x5"})
        EXPECT_REJECTED(with_metadata("cutoff", text), {"cutoff is \"" + std::string(text) + "\"", "decimal number"});
}

TEST(ModelFileRejects, CutoffNotPositiveOrNotFinite) {
    for (const char *text : {"0", "-0.0", "-5.0", "1e999"})
        EXPECT_REJECTED(with_metadata("cutoff", text), {"cutoff is \"" + std::string(text) + "\"", "finite number > 0"});
}

// ------------------------------------------------------------------------------------------
// Tensors of the architecture

TEST(ModelFileRejects, MissingTensor) {
    ModelSpec three;
    three.blocks = 3;
    for (const char *name : {"embedding.weight", "rbf.centers", "rbf.widths", "energy_head.0.weight",
                             "energy_head.4.bias", "interactions.0.message.rbf_to_scalar.0.weight",
                             "interactions.1.update.update_mlp.2.bias", "interactions.1.update.mixing_matrix",
                             "interactions.2.message.rbf_to_scalar.2.bias"})
        EXPECT_REJECTED(without_tensor(name, three), {"missing tensor '" + std::string(name) + "'", "expected shape"});
}

TEST(ModelFileRejects, ModelWithoutBlocks) {
    ModelFileBuilder builder{ModelSpec()};
    builder.tensors.erase(std::remove_if(builder.tensors.begin(), builder.tensors.end(),
                                         [](const Tensor &t) { return t.name.rfind("interactions.", 0) == 0; }),
                          builder.tensors.end());
    EXPECT_REJECTED(builder.bytes(), {"missing tensor 'interactions.0.message.rbf_to_scalar.0.weight'"});
}

TEST(ModelFileRejects, UnknownTensor) {
    ModelFileBuilder builder{ModelSpec()};
    builder.rename_tensor("energy_head.4.bias", "energy_head.6.bias");
    EXPECT_REJECTED(builder.bytes(), {"unknown tensor 'energy_head.6.bias'"});

    ModelFileBuilder prefixed{ModelSpec()};
    prefixed.rename_tensor("embedding.weight", "model.embedding.weight");
    EXPECT_REJECTED(prefixed.bytes(), {"unknown tensor 'model.embedding.weight'"});

    ModelFileBuilder extra{ModelSpec()};
    extra.tensors.push_back(Tensor{"interactions.0.message.extra", {2}, {1.0, 2.0}, DType::F64});
    EXPECT_REJECTED(extra.bytes(), {"unknown tensor 'interactions.0.message.extra'"});

    ModelFileBuilder far{ModelSpec()};
    far.tensors.push_back(Tensor{"interactions.99999999999999999999999.update.mixing_matrix", {3, 3},
                                 std::vector<double>(9, 0.0), DType::F64});
    EXPECT_REJECTED(far.bytes(), {"unknown tensor 'interactions.99999999999999999999999.update.mixing_matrix'",
                                  "block index"});

    ModelFileBuilder leading_zero{ModelSpec()};
    leading_zero.rename_tensor("interactions.1.update.mixing_matrix", "interactions.01.update.mixing_matrix");
    EXPECT_REJECTED(leading_zero.bytes(), {"unknown tensor 'interactions.01.update.mixing_matrix'"});
}

TEST(ModelFileRejects, GapInTheBlockNumbers) {
    ModelSpec spec;
    spec.blocks = 3;
    ModelFileBuilder builder(spec);
    builder.tensors.erase(std::remove_if(builder.tensors.begin(), builder.tensors.end(),
                                         [](const Tensor &t) { return t.name.rfind("interactions.1.", 0) == 0; }),
                          builder.tensors.end());
    EXPECT_REJECTED(builder.bytes(), {"'interactions.2.", "interactions.1, which has no tensors", "without gaps"});
}

TEST(ModelFileRejects, WrongShape) {
    // defaults: H = 8, K = 6, Z_max = 10
    EXPECT_REJECTED(with_shape("embedding.weight", {11, 6}), {"'embedding.weight'", "[11, 6]", "multiple of 4"});
    EXPECT_REJECTED(with_shape("embedding.weight", {0, 8}), {"'embedding.weight'", "[0, 8]", "Z_max >= 0"});
    EXPECT_REJECTED(with_shape("embedding.weight", {88}), {"'embedding.weight'", "[88]", "[Z_max+1, H]"});
    EXPECT_REJECTED(with_shape("rbf.centers", {0}), {"'rbf.centers'", "[0]", "K >= 1"});
    EXPECT_REJECTED(with_shape("rbf.widths", {5}), {"'rbf.widths'", "shape [5]", "expected [K] = [6]"});
    EXPECT_REJECTED(with_shape("interactions.0.message.rbf_to_scalar.0.weight", {8, 5}),
                    {"'interactions.0.message.rbf_to_scalar.0.weight'", "shape [8, 5]", "expected [H, K] = [8, 6]"});
    EXPECT_REJECTED(with_shape("interactions.1.update.update_mlp.0.weight", {8, 8}),
                    {"'interactions.1.update.update_mlp.0.weight'", "shape [8, 8]", "expected [H, 2H] = [8, 16]"});
    EXPECT_REJECTED(with_shape("interactions.0.message.rbf_to_scalar.2.bias", {24, 1}),
                    {"'interactions.0.message.rbf_to_scalar.2.bias'", "shape [24, 1]", "expected [3H] = [24]"});
    EXPECT_REJECTED(with_shape("interactions.0.update.mixing_matrix", {3, 2}),
                    {"'interactions.0.update.mixing_matrix'", "shape [3, 2]", "expected [3, 3] = [3, 3]"});
    EXPECT_REJECTED(with_shape("energy_head.2.weight", {2, 4, 1}),
                    {"'energy_head.2.weight'", "shape [2, 4, 1]", "expected [H/4, H/2] = [2, 4]"});
    EXPECT_REJECTED(with_shape("energy_head.4.bias", {}), {"'energy_head.4.bias'", "shape []", "expected [1] = [1]"});
}

TEST(ModelFileRejects, NanOrInfWeights) {
    const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
    for (DType dtype : {DType::F64, DType::F32}) {
        ModelSpec spec;
        spec.dtype = dtype;
        ModelFileBuilder builder(spec);
        builder.poison("interactions.1.update.update_mlp.0.weight", 37, nan);
        EXPECT_REJECTED(builder.bytes(), {"'interactions.1.update.update_mlp.0.weight'", "NaN at flat index 37",
                                          "expected finite"});
        ModelFileBuilder plus(spec);
        plus.poison("energy_head.4.bias", 0, inf);
        EXPECT_REJECTED(plus.bytes(), {"'energy_head.4.bias'", "+Inf at flat index 0"});
        ModelFileBuilder minus(spec);
        minus.poison("embedding.weight", 87, -inf);
        EXPECT_REJECTED(minus.bytes(), {"'embedding.weight'", "-Inf at flat index 87"});
    }
}

TEST(ModelFileRejects, ZeroRbfWidth) {
    ModelFileBuilder builder{ModelSpec()};
    builder.poison("rbf.widths", 3, 0.0);
    EXPECT_REJECTED(builder.bytes(), {"'rbf.widths'", "0 at flat index 3", "non-zero"});
}

// ------------------------------------------------------------------------------------------
// Files and arguments

TEST(ModelFileRejects, MissingFile) {
    mlff_model *model = reinterpret_cast<mlff_model *>(1);
    mlff_error error{};
    const char *path = "/nonexistent/dir/model.mlff.safetensors";
    EXPECT_EQ(mlff_model_load_file(path, &model, &error), MLFF_ERROR_IO);
    EXPECT_EQ(model, nullptr);
    EXPECT_NE(std::string(error.message).find(path), std::string::npos) << error.message;
    EXPECT_NE(std::string(error.message).find("No such file"), std::string::npos) << error.message;
}

TEST(ModelFileRejects, DirectoryInsteadOfAFile) {
    mlff_model *model = nullptr;
    mlff_error error{};
    EXPECT_EQ(mlff_model_load_file("/", &model, &error), MLFF_ERROR_IO);
    EXPECT_EQ(model, nullptr);
    EXPECT_NE(std::string(error.message).find("'/'"), std::string::npos) << error.message;
}

TEST(ModelFileRejects, MalformedFileOnDiskIsNamedByItsPath) {
    ModelFileBuilder builder{ModelSpec()};
    builder.set_shape("rbf.widths", {2});
    TempFile file(builder.bytes());
    mlff_model *model = nullptr;
    mlff_error error{};
    EXPECT_EQ(mlff_model_load_file(file.path().c_str(), &model, &error), MLFF_ERROR_FORMAT);
    EXPECT_EQ(model, nullptr);
    EXPECT_NE(std::string(error.message).find(file.path()), std::string::npos) << error.message;
    EXPECT_NE(std::string(error.message).find("'rbf.widths'"), std::string::npos) << error.message;
}

TEST(ModelFileRejects, NullArguments) {
    mlff_model *model = nullptr;
    mlff_error error{};
    EXPECT_EQ(mlff_model_load_memory(nullptr, 10, "x", &model, &error), MLFF_ERROR_INVALID_ARGUMENT);
    EXPECT_NE(std::string(error.message).find("NULL"), std::string::npos) << error.message;
    const std::string bytes = random_model_bytes();
    EXPECT_EQ(mlff_model_load_memory(bytes.data(), bytes.size(), "x", nullptr, &error), MLFF_ERROR_INVALID_ARGUMENT);
    EXPECT_EQ(mlff_model_load_file(nullptr, &model, &error), MLFF_ERROR_INVALID_ARGUMENT);
    // A NULL error is allowed: the status alone reports the failure.
    EXPECT_EQ(mlff_model_load_memory(bytes.data(), 4, "x", &model, nullptr), MLFF_ERROR_FORMAT);
    EXPECT_EQ(model, nullptr);
    // A NULL name is replaced by a placeholder.
    EXPECT_EQ(mlff_model_load_memory(bytes.data(), 4, nullptr, &model, &error), MLFF_ERROR_FORMAT);
    EXPECT_NE(std::string(error.message).find("<memory>"), std::string::npos) << error.message;
    mlff_model_free(nullptr);
}
