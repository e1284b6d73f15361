// The update's products over atoms on warp-group products (tiled.cu with MLFF_WARPGROUP_UPDATE, as
// an H100 runs them from 2,048 atoms), run on the CPU (CudaOnHost.h, wgmma emulated) in float, each
// against its definition in double: the hidden layer forward (input W0^T + b0, and its SiLU) and
// its backward (dE/d(a, g1, g2) W2, times SiLU' of the hidden layer), for the 54 atoms of
// KernelsOnHost.h, one row tile whose last 10 rows are dropped. The weights' images are made by
// mlffPrepareWarpgroupTiles, as the plugin makes them. Built four times: with the emulated
// products' sums rounded to nearest; toward zero as the tensor cores round them
// (MLFF_HOST_ROUND_TOWARD_ZERO), where the hidden layer's outputs lean toward zero (the log's
// section "The products at one TF32 product a term"); and so, with the probe that sums each pair
// of k-steps from zero and adds it outside the tensor cores (MLFF_TF32_SUMS_OUTSIDE), which leans
// much less, once splitting each pair after the pair before's sum is added and once while that
// pair's products run (MLFF_TF32_SUMS_OVERLAPPED; the same sums, so the same lean).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <random>
#include <string>

#define MLFF_HOST_FLOAT 1 // warp-group products are float alone
// As CudaCalcMLFFForceKernel::addKernelDefines gives them on an H100 for H = 64 in float.
#define MLFF_WARPGROUPS 4
#define MLFF_WARPGROUP_UPDATE 1
#define MLFF_WARPGROUP_UPDATE_COLUMNS 64
#include "KernelsOnHost.h"
#include "WarpgroupOnHost.h"

namespace {

constexpr int N = MLFF_NUM_ATOMS, H = MLFF_H, Columns = MLFF_WARPGROUP_UPDATE_COLUMNS;
constexpr int Layer = 1; // not the first, so that the blocks' offsets count

template <int I, int O>
std::vector<unsigned int> imagesOf(const real* b) {
    return warpgroupImagesOnHost<I, O, Columns, 0>(Layer, b);
}

/** A warp-group product over the N atoms: a block a column tile. */
template <int O, class Kernel>
void launchWarpgroups(Kernel kernel) {
    launchWarpgroupsOnHost<O, Columns>(1, kernel);
}

const real* blockOf(const std::vector<real>& params) {
    return params.data() + MLFF_P_BLOCKS + (size_t) Layer * MLFF_P_BLOCK_STRIDE;
}

/** Expects got to be expected to 1e-5 of the sum of its terms' magnitudes (3xTF32 keeps float's precision). */
void expectNear(double got, double expected, double scale, const std::string& what, int& failures) {
    if (!(std::fabs(got - expected) <= 1e-5 * scale) && failures++ < 5)
        ADD_FAILURE() << what << ": " << got << ", not " << expected << " (terms' magnitudes " << scale << ")";
}

/**
 * How far the products' outputs lean toward zero: the mean of (got - expected) / expected over the
 * outputs with |expected| > 0.5 (the smaller ones weigh their own rounding too much). Float's rounding
 * to nearest leaves about 0; rounding toward zero a k-step's sum, some -1e-6 at 2H = 128 inputs.
 */
struct Lean {
    double sum = 0;
    int count = 0;
    void add(double got, double expected) {
        if (std::fabs(expected) > 0.5) {
            sum += (got - expected) / expected;
            count++;
        }
    }
    double mean() const {
        return sum / count;
    }
};

TEST(WarpgroupUpdateOnHost, HiddenForwardIsInputByW0PlusBiasAndItsSilu) {
    std::mt19937 rng(41);
    const std::vector<real> params = randomReals(rng, MLFF_PARAMETERS_SIZE);
    const std::vector<real> input = randomReals(rng, (size_t) N * 2 * H);
    const real* block = blockOf(params);
    const std::vector<unsigned int> images = imagesOf<2 * H, H>(block + MLFF_B_UPDATE_W0T);
    std::vector<real> hidden((size_t) (Layer + 1) * N * H, -7), activation((size_t) N * H, -7);
    launchWarpgroups<H>([&] {
        mlffUpdateHiddenForward(Layer, params.data(), input.data(), hidden.data(), activation.data(), images.data());
    });
    int failures = 0;
    Lean lean;
    for (int i = 0; i < N; i++)
        for (int h = 0; h < H; h++) {
            double x = block[MLFF_B_UPDATE_B0 + h], scale = std::fabs(x);
            for (int k = 0; k < 2 * H; k++) {
                const double term = (double) input[(size_t) i * 2 * H + k] * block[MLFF_B_UPDATE_W0T + k * H + h];
                x += term;
                scale += std::fabs(term);
            }
            const std::string where = "atom " + std::to_string(i) + ", channel " + std::to_string(h);
            const double got = hidden[((size_t) Layer * N + i) * H + h];
            expectNear(got, x, scale, "hidden layer, " + where, failures);
            expectNear(activation[(size_t) i * H + h], x / (1 + std::exp(-x)), scale, "its SiLU, " + where, failures);
            lean.add(got, x);
        }
    EXPECT_EQ(failures, 0);
    std::printf("[lean] hidden layer: %.3e over %d outputs\n", lean.mean(), lean.count);
#if defined(MLFF_HOST_ROUND_TOWARD_ZERO) && defined(MLFF_TF32_SUMS_OUTSIDE)
    // Six roundings toward zero of each pair's smaller sum, and the pairs' sums to nearest.
    EXPECT_LT(std::fabs(lean.mean()), 2e-7) << "each pair's sum added outside should lean much less";
#elif defined(MLFF_HOST_ROUND_TOWARD_ZERO)
    // The emulation's check: 48 roundings toward zero a sum (16 k-steps, three products each).
    EXPECT_LT(lean.mean(), -3e-7) << "the sums rounded toward zero should lean toward zero";
#else
    EXPECT_LT(std::fabs(lean.mean()), 1e-7) << "the sums rounded to nearest should not lean";
#endif
}

TEST(WarpgroupUpdateOnHost, HiddenBackwardIsGradientByW2TimesSiluGradient) {
    std::mt19937 rng(42);
    const std::vector<real> params = randomReals(rng, MLFF_PARAMETERS_SIZE);
    const std::vector<real> gradOutput = randomReals(rng, (size_t) N * 3 * H);
    const std::vector<real> hidden = randomReals(rng, (size_t) (Layer + 1) * N * H);
    const real* block = blockOf(params);
    const std::vector<unsigned int> images = imagesOf<3 * H, H>(block + MLFF_B_UPDATE_W2);
    std::vector<real> gradHidden((size_t) N * H, -7);
    launchWarpgroups<H>([&] {
        mlffUpdateHiddenBackward(Layer, params.data(), gradOutput.data(), hidden.data(), gradHidden.data(),
                                 images.data());
    });
    int failures = 0;
    for (int i = 0; i < N; i++)
        for (int h = 0; h < H; h++) {
            double g = 0, scale = 0;
            for (int o = 0; o < 3 * H; o++) {
                const double term = (double) gradOutput[(size_t) i * 3 * H + o] * block[MLFF_B_UPDATE_W2 + o * H + h];
                g += term;
                scale += std::fabs(term);
            }
            const double x = hidden[((size_t) Layer * N + i) * H + h], sigmoid = 1 / (1 + std::exp(-x));
            const double siluGrad = sigmoid * (1 + x * (1 - sigmoid));
            expectNear(gradHidden[(size_t) i * H + h], g * siluGrad, scale * std::fabs(siluGrad),
                       "atom " + std::to_string(i) + ", channel " + std::to_string(h), failures);
        }
    EXPECT_EQ(failures, 0);
}

} // namespace
