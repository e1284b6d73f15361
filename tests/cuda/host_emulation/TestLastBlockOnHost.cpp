// The tiled path's readout and last block (tiled.cu), run on the CPU (CudaOnHost.h) in double
// precision. mlffReadoutTiled (32 atoms a block, the last block partly empty) must give the fused
// path's mlffReadout's energies and dE/ds bit for bit. The last block's vector output is dead, and
// its kernels are checked against those of any other block: mlffUpdateOutputForwardLast's
// s_out and mlffUpdateHiddenBackwardLast's gradient must equal, bit for bit, the full products'
// (3H columns, or 3H inputs with zeros for dE/d(g1, g2)), with U2 and b2 packed as
// StudentPainnParameters.cpp packs them; and mlffUpdateInputBackward must write the last block's
// dE/dv' (the readout leaves no partial one) and add to any other block's, and add to the partial
// dE/ds' where it is: the readout's for the last block, dE/da in updateGradOutput for the others.
// Any other block's output must apply the update and keep the gates where the backward reads them
// (mlffUpdateGates).
#include <gtest/gtest.h>

#include <random>

#include "KernelsOnHost.h"

namespace {

constexpr int N = MLFF_NUM_ATOMS, H = MLFF_H, Last = MLFF_L - 1;

/** Random parameters, except block `layer`'s U2 (3H, H) and b2 in every copy the kernels read. */
std::vector<real> parametersWithPackedU2(std::mt19937& rng, int layer = Last) {
    std::vector<real> params = randomReals(rng, MLFF_PARAMETERS_SIZE);
    const std::vector<real> w2 = randomReals(rng, (size_t) 3 * H * H), b2 = randomReals(rng, 3 * H);
    real* block = params.data() + MLFF_P_BLOCKS + (size_t) layer * MLFF_P_BLOCK_STRIDE;
    for (int o = 0; o < 3 * H; o++) { // output o = t H + c: a, g1, g2 of channel c
        block[MLFF_B_UPDATE_B2 + o] = b2[o];
        for (int k = 0; k < H; k++)
            block[MLFF_B_UPDATE_W2 + o * H + k] = w2[o * H + k];
    }
    for (int c = 0; c < H; c++)
        for (int t = 0; t < 3; t++) {
            block[MLFF_B_UPDATE_B2_BY_CHANNEL + 3 * c + t] = b2[t * H + c];
            for (int k = 0; k < H; k++)
                block[MLFF_B_UPDATE_W2T_BY_CHANNEL + k * 3 * H + 3 * c + t] = w2[(t * H + c) * H + k];
        }
    for (int k = 0; k < H; k++)
        for (int c = 0; c < H; c++)
            block[MLFF_B_UPDATE_W2T_SCALAR + k * H + c] = w2[c * H + k];
    return params;
}

/** A kernel built on mlffMatmul over the N atoms' rows, `outputs` columns in tiles of 16 TN. */
template <class Kernel>
void launchMatmul(int outputs, int tn, Kernel kernel) {
    const int tiles = (N + MLFF_MATMUL_ROWS - 1) / MLFF_MATMUL_ROWS * (outputs / (16 * tn));
    cudaOnHostLaunch(tiles, MLFF_MATMUL_THREADS, kernel);
}

TEST(LastBlockOnHost, TiledReadoutEqualsTheFusedReadout) {
    std::mt19937 rng(4);
    const std::vector<real> params = randomReals(rng, MLFF_PARAMETERS_SIZE);
    const std::vector<real> stateS = randomReals(rng, (size_t) (MLFF_L + 1) * N * H);
    std::vector<real> energy(N, -7), gradMidS((size_t) N * H, -7);
    ASSERT_NE(N % MLFF_READOUT_ATOMS, 0) << "the last block should be partly empty";
    cudaOnHostLaunch((N + MLFF_READOUT_ATOMS - 1) / MLFF_READOUT_ATOMS, H, [&] {
        mlffReadoutTiled(params.data(), stateS.data(), energy.data(), gradMidS.data());
    });
    for (int i = 0; i < N; i++) {
        SCOPED_TRACE("atom " + std::to_string(i));
        real eps = 0, gs[H];
        cudaOnHostLaunch(1, MLFF_BLOCK, [&] {
            __shared__ MlffReadoutScratch scratch;
            real e = 0, g = 0;
            mlffReadout(params.data(), threadIdx.x < H ? stateS[((size_t) MLFF_L * N + i) * H + threadIdx.x] : 0,
                        &scratch, &e, &g);
            if (threadIdx.x == 0)
                eps = e;
            if (threadIdx.x < H)
                gs[threadIdx.x] = g;
        });
        ASSERT_EQ(energy[i], eps);
        for (int c = 0; c < H; c++)
            ASSERT_EQ(gradMidS[(size_t) i * H + c], gs[c]) << "channel " << c;
    }
}

TEST(LastBlockOnHost, OutputEqualsTheFullProducts) {
    std::mt19937 rng(5);
    const std::vector<real> params = parametersWithPackedU2(rng);
    const std::vector<real> activation = randomReals(rng, (size_t) N * H);
    const std::vector<real> updateInput = randomReals(rng, (size_t) N * 2 * H); // [s', |v'|]
    const std::vector<real> midV = randomReals(rng, (size_t) MLFF_L * N * 3 * H);
    std::vector<real> stateS[2], stateV((size_t) (MLFF_L + 1) * N * 3 * H, -7);
    std::vector<real> updateOutput((size_t) MLFF_L * N * 2 * H, -7);
    for (std::vector<real>& s : stateS)
        s.assign((size_t) (MLFF_L + 1) * N * H, -7);
    launchMatmul(3 * H, 6, [&] {
        mlffUpdateOutputForward(Last, params.data(), activation.data(), updateInput.data(), midV.data(),
                                updateOutput.data(), stateS[0].data(), stateV.data());
    });
    launchMatmul(H, 4, [&] {
        mlffUpdateOutputForwardLast(params.data(), activation.data(), updateInput.data(), stateS[1].data(), nullptr);
    });
    for (size_t k = (size_t) MLFF_L * N * H; k < stateS[1].size(); k++)
        ASSERT_NE(stateS[1][k], -7) << "s_out " << k << " not written";
    EXPECT_EQ(stateS[0], stateS[1]);
}

TEST(LastBlockOnHost, AnEarlierBlocksOutputAppliesTheUpdateAndKeepsTheGates) {
    static_assert(MLFF_L >= 2, "a block before the last");
    constexpr int Layer = Last - 1;
    std::mt19937 rng(8);
    const std::vector<real> params = parametersWithPackedU2(rng, Layer);
    const real* block = params.data() + MLFF_P_BLOCKS + (size_t) Layer * MLFF_P_BLOCK_STRIDE;
    const std::vector<real> activation = randomReals(rng, (size_t) N * H);
    const std::vector<real> updateInput = randomReals(rng, (size_t) N * 2 * H); // [s', |v'|]
    const std::vector<real> midV = randomReals(rng, (size_t) MLFF_L * N * 3 * H);
    std::vector<real> stateS((size_t) (MLFF_L + 1) * N * H, -7), stateV((size_t) (MLFF_L + 1) * N * 3 * H, -7);
    std::vector<real> updateOutput((size_t) (MLFF_L - 1) * N * 2 * H, -7);
    launchMatmul(3 * H, 6, [&] {
        mlffUpdateOutputForward(Layer, params.data(), activation.data(), updateInput.data(), midV.data(),
                                updateOutput.data(), stateS.data(), stateV.data());
    });
    // (a, g1, g2) = activation U2^T + b2 in U2's own layout (output t H + c), summed here.
    const real* w2 = block + MLFF_B_UPDATE_W2;
    const real* b2 = block + MLFF_B_UPDATE_B2;
    auto near = [](real x, real expected) { return std::abs(x - expected) <= 1e-12 * (1 + std::abs(expected)); };
    for (int i = 0; i < N; i++)
        for (int c = 0; c < H; c++) {
            real y[3];
            for (int t = 0; t < 3; t++) {
                y[t] = b2[t * H + c];
                for (int k = 0; k < H; k++)
                    y[t] += activation[(size_t) i * H + k] * w2[(size_t) (t * H + c) * H + k];
            }
            const std::string at = "atom " + std::to_string(i) + ", channel " + std::to_string(c);
            const MlffRealVector<2> gates = mlffUpdateGates(updateOutput.data(), Layer, i, c);
            ASSERT_TRUE(near(gates.v[0], y[1]) && near(gates.v[1], y[2])) << at << ": the gates kept";
            const size_t mid = (size_t) Layer * N + i, out = (size_t) (Layer + 1) * N + i;
            ASSERT_TRUE(near(stateS[out * H + c], updateInput[(size_t) i * 2 * H + c] + y[0])) << at << ": s_out";
            real vMid[3], vOut[3];
            for (int d = 0; d < 3; d++)
                vMid[d] = midV[(mid * 3 + d) * H + c];
            mlffUpdateVector(block, vMid, gates.v[0], gates.v[1], vOut);
            for (int d = 0; d < 3; d++)
                ASSERT_EQ(stateV[(out * 3 + d) * H + c], vOut[d]) << at << ", v_out component " << d;
        }
}

TEST(LastBlockOnHost, HiddenGradientEqualsTheFullProduct) {
    std::mt19937 rng(6);
    const std::vector<real> params = parametersWithPackedU2(rng);
    const std::vector<real> gradA = randomReals(rng, (size_t) N * H); // dE/da, the readout's gradMidS
    const std::vector<real> updateHidden = randomReals(rng, (size_t) MLFF_L * N * H);
    std::vector<real> gradOutput((size_t) N * 3 * H, 0); // dE/d(a, g1, g2) in block order, g1 and g2 dead
    for (int i = 0; i < N; i++)
        std::copy(gradA.begin() + (size_t) i * H, gradA.begin() + (size_t) (i + 1) * H, gradOutput.begin() + (size_t) i * 3 * H);
    std::vector<real> gradHidden[2];
    for (std::vector<real>& g : gradHidden)
        g.assign((size_t) N * H, -7);
    launchMatmul(H, 4, [&] {
        mlffUpdateHiddenBackward(Last, params.data(), gradOutput.data(), updateHidden.data(), gradHidden[0].data(),
                                 nullptr);
    });
    launchMatmul(H, 4, [&] {
        mlffUpdateHiddenBackwardLast(params.data(), gradA.data(), updateHidden.data(), gradHidden[1].data(), nullptr);
    });
    for (real g : gradHidden[1])
        ASSERT_NE(g, -7);
    EXPECT_EQ(gradHidden[0], gradHidden[1]);
}

TEST(LastBlockOnHost, InputBackwardAddsToThePartialGradientsWhereTheyAre) {
    std::mt19937 rng(7);
    const std::vector<real> params = randomReals(rng, MLFF_PARAMETERS_SIZE);
    const std::vector<real> gradHidden = randomReals(rng, (size_t) N * H);
    std::vector<real> midV = randomReals(rng, (size_t) MLFF_L * N * 3 * H);
    for (int layer = 0; layer < MLFF_L; layer++) // one channel with v' = 0, whose norm's gradient is taken as 0
        for (int d = 0; d < 3; d++)
            midV[(((size_t) layer * N + 5) * 3 + d) * H + 9] = 0;
    // The partial dE/ds': the readout's in gradMidS for the last block; for the others dE/da, the first
    // H of updateGradOutput's rows, while gradMidS holds values that must not be read.
    const std::vector<real> gradMidSIn = randomReals(rng, (size_t) N * H);
    const std::vector<real> updateGradOutputIn = randomReals(rng, (size_t) N * 3 * H);
    for (int layer : {Last, Last - 1}) {
        SCOPED_TRACE("block " + std::to_string(layer));
        // [0]: every partial gradient 0, so that the launch writes the product's sums alone; [1]: as given.
        const real before[2] = {0, -7}; // dE/dv' before the launch: [1] what the last block must overwrite
        std::vector<real> gradMidS[2], gradMidV[2], updateGradOutput[2];
        for (int k = 0; k < 2; k++) {
            gradMidS[k] = k == 0 ? std::vector<real>((size_t) N * H, 0) : gradMidSIn;
            updateGradOutput[k] = k == 0 ? std::vector<real>((size_t) N * 3 * H, 0) : updateGradOutputIn;
            gradMidV[k].assign((size_t) N * 3 * H, before[k]);
            launchMatmul(2 * H, 4, [&] {
                mlffUpdateInputBackward(layer, params.data(), gradHidden.data(), midV.data(),
                                        updateGradOutput[k].data(), gradMidS[k].data(), gradMidV[k].data());
            });
        }
        EXPECT_EQ(updateGradOutput[1], updateGradOutputIn);
        for (int i = 0; i < N; i++)
            for (int c = 0; c < H; c++) {
                const real partial = layer == Last ? gradMidSIn[(size_t) i * H + c]
                                                   : updateGradOutputIn[(size_t) i * 3 * H + c];
                ASSERT_EQ(gradMidS[1][(size_t) i * H + c], partial + gradMidS[0][(size_t) i * H + c])
                        << "atom " << i << ", channel " << c;
            }
        EXPECT_EQ(gradMidV[0][((size_t) 5 * 3 + 1) * H + 9], 0);
        for (size_t k = 0; k < gradMidV[0].size(); k++)
            ASSERT_EQ(gradMidV[1][k], layer == Last ? gradMidV[0][k] : before[1] + gradMidV[0][k]) << k;
    }
}

} // namespace
