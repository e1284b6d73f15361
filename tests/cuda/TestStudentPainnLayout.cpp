// The CUDA kernels' parameter layout (platforms/cuda/src/student_painn/StudentPainnParameters.cpp),
// checked on the host, element by element, against the model it was made from: every matrix in
// the orientation its offset's comment in the kernels says, including the channel-major copies
// that the tiled path's epilogues rely on, and the alignment matmul.cu's copies rely on. Runs
// without a GPU (label `build`).
#include "student_painn/StudentPainnParameters.h"
#include "test_support.h"

extern "C" {
#include "mlff/mlff.h"
}

#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <string>

namespace {

struct Layout {
    std::unique_ptr<mlff_model, void (*)(mlff_model*)> model{nullptr, mlff_model_free};
    const mlff_student_painn* painn = nullptr;
    MLFFPlugin::StudentPainnLayout layout;

    explicit Layout(const mlff_test::ModelSpec& spec) {
        const std::string bytes = mlff_test::random_model_bytes(spec);
        mlff_model* raw = nullptr;
        mlff_error error{};
        EXPECT_EQ(mlff_model_load_memory(bytes.data(), bytes.size(), "random", &raw, &error), MLFF_OK) << error.message;
        model.reset(raw);
        if (raw == nullptr)
            return; // painn stays null; the test asserts it
        painn = mlff_model_student_painn(raw);
        if (painn != nullptr)
            layout = MLFFPlugin::layoutStudentPainn(*painn);
    }
    size_t offset(const std::string& name) const {
        return std::stoul(layout.defines.at(name));
    }
    /** Where block l's matrix `name` (MLFF_B_*) starts in the flat array. */
    const double* block(int l, const std::string& name) const {
        return layout.values.data() + offset("MLFF_P_BLOCKS") + l * offset("MLFF_P_BLOCK_STRIDE") + offset(name);
    }
};

class StudentPainnLayout : public ::testing::TestWithParam<int> {}; // H

TEST_P(StudentPainnLayout, EveryBlockMatrixInItsOrientation) {
    mlff_test::ModelSpec spec;
    spec.hidden = GetParam();
    spec.rbf = 12;
    spec.blocks = 3;
    spec.max_z = 10;
    spec.seed = 5;
    const Layout l(spec);
    ASSERT_NE(l.painn, nullptr);
    const int H = spec.hidden, K = spec.rbf;
    EXPECT_EQ(l.layout.defines.at("MLFF_H"), std::to_string(H));
    for (int b = 0; b < spec.blocks; b++) {
        const mlff_student_painn_block& m = l.painn->blocks[b];
        const int kPadded = std::stoi(l.layout.defines.at("MLFF_K_PADDED"));
        ASSERT_EQ(kPadded, 32);
        for (int c = 0; c < H; c++) {
            for (int k = 0; k < K; k++) {
                ASSERT_EQ(l.block(b, "MLFF_B_FILTER_W0T")[k * H + c], m.filter_w0[c * K + k]) << b;
                ASSERT_EQ(l.block(b, "MLFF_B_FILTER_W0_PADDED")[c * kPadded + k], m.filter_w0[c * K + k]) << b;
            }
            for (int k = K; k < kPadded; k++)
                ASSERT_EQ(l.block(b, "MLFF_B_FILTER_W0_PADDED")[c * kPadded + k], 0.0) << b;
        }
        for (int o = 0; o < 3 * H; o++)
            for (int c = 0; c < H; c++) {
                ASSERT_EQ(l.block(b, "MLFF_B_FILTER_W2")[o * H + c], m.filter_w2[o * H + c]) << b;
                ASSERT_EQ(l.block(b, "MLFF_B_FILTER_W2T")[c * 3 * H + o], m.filter_w2[o * H + c]) << b;
                ASSERT_EQ(l.block(b, "MLFF_B_UPDATE_W2")[o * H + c], m.update_w2[o * H + c]) << b;
                // By fours (layers.cu's mlffWeightsByFours): (input k, output o) at ((k/4) O + o) 4 + k % 4.
                ASSERT_EQ(l.block(b, "MLFF_B_FILTER_W2T_BY_FOURS")[((c / 4) * 3 * H + o) * 4 + c % 4],
                          m.filter_w2[o * H + c])
                    << b;
                ASSERT_EQ(l.block(b, "MLFF_B_FILTER_W2_BY_FOURS")[((o / 4) * H + c) * 4 + o % 4], m.filter_w2[o * H + c])
                    << b;
                ASSERT_EQ(l.block(b, "MLFF_B_UPDATE_W2T_BY_FOURS")[((c / 4) * 3 * H + o) * 4 + c % 4],
                          m.update_w2[o * H + c])
                    << b;
                ASSERT_EQ(l.block(b, "MLFF_B_UPDATE_W2_BY_FOURS")[((o / 4) * H + c) * 4 + o % 4], m.update_w2[o * H + c])
                    << b;
            }
        for (int c = 0; c < H; c++)
            for (int x = 0; x < 2 * H; x++) {
                ASSERT_EQ(l.block(b, "MLFF_B_UPDATE_W0T")[x * H + c], m.update_w0[c * 2 * H + x]) << b;
                ASSERT_EQ(l.block(b, "MLFF_B_UPDATE_W0T_BY_FOURS")[((x / 4) * H + c) * 4 + x % 4],
                          m.update_w0[c * 2 * H + x])
                    << b;
                ASSERT_EQ(l.block(b, "MLFF_B_UPDATE_W0_BY_FOURS")[((c / 4) * 2 * H + x) * 4 + c % 4],
                          m.update_w0[c * 2 * H + x])
                    << b;
            }
        // Channel-major (tiled.cu): output (t, c) of U2, t = a, g1, g2, at column 3c + t of U2^T;
        // input (t, c) of U0, t = s, |v|, at column 2c + t.
        for (int c = 0; c < H; c++)
            for (int t = 0; t < 3; t++) {
                ASSERT_EQ(l.block(b, "MLFF_B_UPDATE_B2_BY_CHANNEL")[3 * c + t], m.update_b2[t * H + c]) << b;
                for (int c2 = 0; c2 < H; c2++)
                    ASSERT_EQ(l.block(b, "MLFF_B_UPDATE_W2T_BY_CHANNEL")[c2 * 3 * H + 3 * c + t],
                              m.update_w2[(t * H + c) * H + c2])
                        << b;
            }
        for (int c2 = 0; c2 < H; c2++)
            for (int c = 0; c < H; c++)
                ASSERT_EQ(l.block(b, "MLFF_B_UPDATE_W2T_SCALAR")[c2 * H + c], m.update_w2[c * H + c2]) << b;
        for (int c2 = 0; c2 < H; c2++)
            for (int c = 0; c < H; c++)
                for (int t = 0; t < 2; t++)
                    ASSERT_EQ(l.block(b, "MLFF_B_UPDATE_W0_BY_CHANNEL")[c2 * 2 * H + 2 * c + t],
                              m.update_w0[c2 * 2 * H + t * H + c])
                        << b;
        for (int q = 0; q < 9; q++)
            ASSERT_EQ(l.block(b, "MLFF_B_MIXING")[q], m.mixing[q]) << b;
    }
    // Every matrix and vector starts at a multiple of 4 elements (16-byte copies in float).
    for (const auto& define : l.layout.defines) {
        if (define.first.rfind("MLFF_P_", 0) == 0 || define.first.rfind("MLFF_B_", 0) == 0) {
            EXPECT_EQ(l.offset(define.first) % 4, 0u) << define.first;
        }
    }
}

// H = 8: fused path only; 64: the smallest the tiled path takes.
INSTANTIATE_TEST_SUITE_P(Sizes, StudentPainnLayout, ::testing::Values(8, 64),
                         [](const ::testing::TestParamInfo<int>& param) { return "H" + std::to_string(param.param); });

} // namespace
