// The exact filters' backward over pairs on mlffMatmul (edge_filters.cu, matmul.cu), run on the CPU
// (CudaOnHost.h) in double, as the FMA path runs on the GPU in double: mlffEdgeFilterHiddenBackward's
// dE/dhidden = (dE/dw W2) SiLU'(x) of each pair against its definition. In the first block dE/dw_v1 is
// 0 and left unwritten by the messages' backward (mlffFilterKindUsed): NaN here, which the product
// must skip. On the GPU in float the same kernel runs on mma.sync (the CUDA tests' edges_mma path).
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <string>

#define MLFF_HOST_EXACT_FILTERS 1
#include "KernelsOnHost.h"

namespace {

constexpr int H = MLFF_H, K = MLFF_K;

// 150 pairs: two whole row tiles of 64 and a part, whose rows past the last the product drops.
TEST(EdgeFiltersOnHost, HiddenBackwardGivesEachPairsGradientOfItsHiddenLayer) {
    constexpr int rows = 150;
    std::mt19937 rng(33);
    const std::vector<real> params = randomReals(rng, MLFF_PARAMETERS_SIZE);
    const std::vector<real> basis = randomReals(rng, (size_t) rows * K);
    for (int layer : {1, 0}) {
        SCOPED_TRACE("block " + std::to_string(layer));
        const real* block = params.data() + MLFF_P_BLOCKS + (size_t) layer * MLFF_P_BLOCK_STRIDE;
        std::vector<real> gradFilter = randomReals(rng, (size_t) rows * 3 * H);
        const auto read = [&](int o) { return mlffFilterKindUsed(layer, o / H); };
        for (size_t x = 0; x < gradFilter.size(); x++)
            if (!read(x % (3 * H)))
                gradFilter[x] = std::numeric_limits<real>::quiet_NaN();
        std::vector<real> gradHidden((size_t) rows * H, -7);
        const int tiles = (rows + MLFF_MATMUL_ROWS - 1) / MLFF_MATMUL_ROWS * (H / (16 * 4));
        cudaOnHostLaunch(tiles, MLFF_MATMUL_THREADS, [&] {
            mlffEdgeFilterHiddenBackward(layer, params.data(), &rows, gradFilter.data(), basis.data(),
                                         gradHidden.data());
        });
        int failures = 0;
        for (int r = 0; r < rows; r++)
            for (int h = 0; h < H; h++) {
                double gw = 0, scale = 0;
                for (int o = 0; o < 3 * H; o++)
                    if (read(o)) {
                        const double term =
                                (double) gradFilter[(size_t) r * 3 * H + o] * block[MLFF_B_FILTER_W2 + o * H + h];
                        gw += term;
                        scale += std::fabs(term);
                    }
                double x = block[MLFF_B_FILTER_B0 + h];
                for (int k = 0; k < K; k++)
                    x += (double) basis[(size_t) r * K + k] * block[MLFF_B_FILTER_W0T + k * H + h];
                const double sigmoid = 1 / (1 + std::exp(-x)), siluGrad = sigmoid * (1 + x * (1 - sigmoid));
                const double expected = gw * siluGrad, got = gradHidden[(size_t) r * H + h];
                if (!(std::fabs(got - expected) <= 1e-12 * scale * std::fabs(siluGrad)) && failures++ < 5)
                    ADD_FAILURE() << "pair " << r << ", channel " << h << ": dE/dhidden " << got << ", not "
                                  << expected;
            }
        EXPECT_EQ(failures, 0);
    }
}

} // namespace
