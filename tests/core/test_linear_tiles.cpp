// test_linear_tiles.cpp: the linear layers over tiles of rows must give each row, to the bit, what
// the per-row sums they replaced give (y = b + W x summed in order; gx += W^T gy in order), whatever
// the layer's shape (outputs and inputs that are not multiples of the kernels' blocks), the
// tile's row count, or gradients that are zero in some rows or in all of them; and the kernels the
// core runs must be the widest that the machine and the build allow. tests/core/CMakeLists.txt
// builds it three times, for the kernels of each vector width.
#include <gtest/gtest.h>

#include <ostream>
#include <random>
#include <vector>

extern "C" {
#include "linear_tiles.h"
}

namespace {

constexpr int RT = MLFF_ROW_TILE;
using Vector = std::vector<double>;

Vector random_values(std::mt19937_64 &rng, std::size_t n) {
    std::uniform_real_distribution<double> uniform(-1.0, 1.0);
    Vector v(n);
    for (double &x : v) x = uniform(rng);
    return v;
}

struct Shape {
    int out, in, rows;
};

void PrintTo(const Shape &s, std::ostream *os) {
    *os << s.out << " outputs, " << s.in << " inputs, " << s.rows << " rows";
}

class LinearTiles : public ::testing::TestWithParam<Shape> {};

TEST_P(LinearTiles, ForwardGivesEachRowItsOwnSumInOrder) {
    const auto [out, in, rows] = GetParam();
    std::mt19937_64 rng(out * 1000 + in * 10 + rows);
    Vector W = random_values(rng, (std::size_t)out * in), b = random_values(rng, out);
    Vector X = random_values(rng, (std::size_t)rows * in);  // (rows, in) row-major
    Vector xt((std::size_t)in * RT, -7.0), yt((std::size_t)out * RT);
    mlff_tile_load(xt.data(), X.data(), in, rows, in);
    for (int k = 0; k < in; k++)
        for (int r = rows; r < RT; r++) ASSERT_EQ(xt[(std::size_t)k * RT + r], 0.0) << "padding of row " << r;

    for (bool bias : {true, false}) {
        mlff_tile_linear_forward(yt.data(), W.data(), bias ? b.data() : nullptr, xt.data(), out, in);
        Vector Y((std::size_t)rows * out);
        mlff_tile_store(Y.data(), out, yt.data(), rows, out);
        for (int r = 0; r < rows; r++)
            for (int o = 0; o < out; o++) {
                double sum = bias ? b[o] : 0.0;
                for (int k = 0; k < in; k++) sum += W[(std::size_t)o * in + k] * X[(std::size_t)r * in + k];
                ASSERT_EQ(Y[(std::size_t)r * out + o], sum) << "row " << r << ", output " << o << ", bias " << bias;
            }
    }
}

TEST_P(LinearTiles, BackwardAddsEachRowsTermsInOrderAndSkipsOnlyZeros) {
    const auto [out, in, rows] = GetParam();
    std::mt19937_64 rng(out * 1000 + in * 10 + rows + 1);
    Vector W = random_values(rng, (std::size_t)out * in);
    Vector GY = random_values(rng, (std::size_t)rows * out), GX = random_values(rng, (std::size_t)rows * in);
    for (int o = 0; o < out; o += 3)  // outputs with no gradient in any row: skipped
        for (int r = 0; r < rows; r++) GY[(std::size_t)r * out + o] = 0.0;
    for (int o = 1; o < out; o += 3) GY[o] = 0.0;  // zero in row 0 alone: computed
    Vector gyt((std::size_t)out * RT), gxt((std::size_t)in * RT);
    mlff_tile_load(gyt.data(), GY.data(), out, rows, out);
    mlff_tile_load(gxt.data(), GX.data(), in, rows, in);
    mlff_tile_linear_backward(gxt.data(), W.data(), gyt.data(), out, in);
    Vector result((std::size_t)rows * in);
    mlff_tile_store(result.data(), in, gxt.data(), rows, in);
    for (int r = 0; r < rows; r++)
        for (int k = 0; k < in; k++) {
            double sum = GX[(std::size_t)r * in + k];
            for (int o = 0; o < out; o++) sum += W[(std::size_t)o * in + k] * GY[(std::size_t)r * out + o];
            ASSERT_EQ(result[(std::size_t)r * in + k], sum) << "row " << r << ", input " << k;
        }
}

TEST(LinearTileWidth, IsTheWidestTheMachineAndBuildAllow) {
#if defined(__x86_64__) && defined(__GNUC__) && !defined(MLFF_NO_AVX512) && !defined(MLFF_NO_VECTOR_CLONES)
    const int widest = __builtin_cpu_supports("avx512f") ? 8 : 4;
#else
    const int widest = 4;
#endif
    RecordProperty("lanes", mlff_tile_lanes());
    EXPECT_EQ(mlff_tile_lanes(), widest);
}

// The network's shapes (K -> H, H -> 3H, 2H -> H, H -> H/2 -> H/4 -> 1) and ones that leave a
// remainder after the kernels' blocks of four, with full and partial tiles.
INSTANTIATE_TEST_SUITE_P(Shapes, LinearTiles,
                         ::testing::Values(Shape{64, 20, RT}, Shape{192, 64, 5}, Shape{64, 128, 1}, Shape{1, 16, RT},
                                           Shape{7, 13, 3}, Shape{13, 7, RT}, Shape{3, 1, 2}, Shape{1, 1, 1}),
                         [](const auto &shape_info) {
                             const Shape &s = shape_info.param;
                             return std::to_string(s.out) + "x" + std::to_string(s.in) + "_" +
                                    std::to_string(s.rows) + "rows";
                         });

}  // namespace
