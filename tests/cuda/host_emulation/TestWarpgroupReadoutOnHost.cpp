// The tiled readout on warp-group products (tiled.cu's mlffReadoutWarpgroup, as an H100 runs it at
// H = 128 or 64 in float), run on the CPU (CudaOnHost.h, wgmma emulated), against its definition in
// double: each atom's energy and dE/ds for the 54 atoms of KernelsOnHost.h, one 64-atom tile whose
// last 10 rows are dropped. The weights' images are made by mlffPrepareWarpgroupTiles, as the plugin
// makes them (CudaKernelChoices.cpp's prepareReadoutImages).
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>

#define MLFF_HOST_FLOAT 1 // warp-group products are float alone
#ifndef MLFF_HOST_H
#define MLFF_HOST_H 128 // the seed's; the H64/ variant, the trained defaults'
#endif
// As CudaCalcMLFFForceKernel::addKernelDefines gives them on an H100 for H = 64 or 128 in float.
#define MLFF_WARPGROUPS 4
#define MLFF_WARPGROUP_READOUT 1
#define MLFF_READOUT_WARPGROUPS 2
#include "KernelsOnHost.h"
#include "WarpgroupOnHost.h"

namespace {

constexpr int N = MLFF_NUM_ATOMS, H = MLFF_H;

/** The four images side by side, in MlffReadoutImage's order (accumulatorOrder: each after the first). */
std::vector<unsigned int> readoutImagesOnHost(const std::vector<real>& params) {
    std::vector<unsigned int> images(MlffReadoutImageWords, 0);
    struct Matrix {
        int weights, inputs, outputs, offset;
    };
    const Matrix matrices[] = {{MLFF_P_HEAD_W0T, H, H / 2, MlffReadoutImage0},
                               {MLFF_P_HEAD_W2T, H / 2, H / 4, MlffReadoutImage2},
                               {MLFF_P_HEAD_W2, H / 4, H / 2, MlffReadoutImage2Back},
                               {MLFF_P_HEAD_W0, H / 2, H, MlffReadoutImage0Back}};
    for (const Matrix& m : matrices)
        cudaOnHostLaunch(1, 256, [&] {
            mlffPrepareWarpgroupTiles(params.data() + m.weights, m.inputs, m.outputs, m.outputs, m.offset > 0, nullptr,
                                      0, 0, nullptr, images.data() + m.offset);
        });
    return images;
}

/** Expects got to be expected to 1e-5 of the sum of its terms' magnitudes (3xTF32 keeps float's precision). */
void expectNear(double got, double expected, double scale, const std::string& what, int& failures) {
    if (!(std::fabs(got - expected) <= 1e-5 * scale) && failures++ < 5)
        ADD_FAILURE() << what << ": " << got << ", not " << expected << " (terms' magnitudes " << scale << ")";
}

double silu(double x) {
    return x / (1 + std::exp(-x));
}

double siluGrad(double x) {
    const double sigma = 1 / (1 + std::exp(-x));
    return sigma * (1 + x * (1 - sigma));
}

TEST(WarpgroupReadoutOnHost, EnergiesAndGradientsAreTheHeadsInDouble) {
    std::mt19937 rng(43);
    const std::vector<real> params = randomReals(rng, MLFF_PARAMETERS_SIZE);
    const std::vector<real> stateS = randomReals(rng, (size_t) (MLFF_L + 1) * N * H);
    const std::vector<unsigned int> images = readoutImagesOnHost(params);
    std::vector<real> energy(N, -7), gradMidS((size_t) N * H, -7);
    cudaOnHostLaunch(1, 128 * MLFF_READOUT_WARPGROUPS, [&] {
        mlffReadoutWarpgroup(params.data(), stateS.data(), energy.data(), gradMidS.data(), images.data());
    });
    const real* p = params.data();
    int failures = 0;
    for (int i = 0; i < N; i++) {
        const real* s = stateS.data() + ((size_t) MLFF_L * N + i) * H;
        double hidden0[H / 2], act0[H / 2], hidden1[H / 4], grad1[H / 4], grad0[H / 2];
        for (int q = 0; q < H / 2; q++) {
            hidden0[q] = p[MLFF_P_HEAD_B0 + q];
            for (int c = 0; c < H; c++)
                hidden0[q] += (double) s[c] * p[MLFF_P_HEAD_W0T + c * (H / 2) + q];
            act0[q] = silu(hidden0[q]);
        }
        double e = p[MLFF_P_HEAD_B4], eScale = std::fabs(e);
        for (int q = 0; q < H / 4; q++) {
            hidden1[q] = p[MLFF_P_HEAD_B2 + q];
            for (int k = 0; k < H / 2; k++)
                hidden1[q] += act0[k] * p[MLFF_P_HEAD_W2T + k * (H / 4) + q];
            e += p[MLFF_P_HEAD_W4 + q] * silu(hidden1[q]);
            eScale += std::fabs(p[MLFF_P_HEAD_W4 + q] * silu(hidden1[q]));
            grad1[q] = p[MLFF_P_HEAD_W4 + q] * siluGrad(hidden1[q]);
        }
        expectNear(energy[i], e, eScale, "atom " + std::to_string(i) + "'s energy", failures);
        for (int k = 0; k < H / 2; k++) {
            grad0[k] = 0;
            for (int q = 0; q < H / 4; q++)
                grad0[k] += grad1[q] * p[MLFF_P_HEAD_W2 + q * (H / 2) + k];
            grad0[k] *= siluGrad(hidden0[k]);
        }
        for (int c = 0; c < H; c++) {
            double g = 0, scale = 0;
            for (int k = 0; k < H / 2; k++) {
                g += grad0[k] * p[MLFF_P_HEAD_W0 + k * H + c];
                scale += std::fabs(grad0[k] * p[MLFF_P_HEAD_W0 + k * H + c]);
            }
            expectNear(gradMidS[(size_t) i * H + c], g, scale,
                       "atom " + std::to_string(i) + "'s dE/ds, channel " + std::to_string(c), failures);
        }
    }
    EXPECT_EQ(failures, 0);
}

} // namespace
