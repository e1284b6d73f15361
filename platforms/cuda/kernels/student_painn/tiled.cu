/*
 * student_painn/tiled.cu: the tiled path, for systems with many atoms. The messages stay one
 * thread block per atom (mlffMessagesInto, mlffMessagesBackward), while each block's update MLP
 * runs as matrix products over all ML atoms (matmul.cu), so that a weight is read once per 128
 * atoms (64 in double) rather than once per atom; and the forward pass keeps the MLP's hidden layer and outputs
 * for the backward pass instead of recomputing them. Per step, block l = 0 .. L-1, then back:
 *
 *   mlffMessagesForwardTiled   atoms           midV [l] = v'; updateInput = [s', |v'|] (s' kept there alone)
 *   mlffUpdateHiddenForward    matmul          updateHidden[l] = updateInput U0^T + b0;
 *                                              updateActivation = SiLU(updateHidden[l])
 *   mlffUpdateOutputForward    matmul          (a, g1, g2) = updateActivation U2^T + b2; (g1, g2) into updateOutput[l],
 *                                              s_out = s' + a (s' from updateInput), v_out = v' g1 + (M v') g2 into
 *                                              stateS, stateV [l+1]
 *                                              (block L-1: ...Last, a alone into stateS [L])
 *   mlffReadoutTiled           atoms / 32      energies; dE/ds' (partial) of block L-1, which is its dE/da
 *   mlffUpdateHiddenBackward   matmul          gradHidden = (updateGradOutput U2) SiLU'(updateHidden[l])
 *                                              (block L-1: ...Last, dE/da alone)
 *   mlffUpdateInputBackward    matmul          dE/d(s', v') of block l = partial + the MLP's part, gradHidden U0
 *                                              (the partial dE/ds' of block l < L-1 is its dE/da, read there)
 *   mlffMessagesBackwardTiled  atoms           forces; dE/d(a, g1, g2) and the partial dE/dv' of block l-1
 *
 * With edge rows (edge_filters.cu: exact filters as products over pairs, or tabulated ones from
 * table_rows.cu) the message kernels here take only the atoms whose list overflowed (the
 * ...Overflowed kernels), and row_messages.cu's take the rest.
 *
 * Storage (global, `real`, as in forward.cu where shared): updateInput (N, 2H) of the block being
 * evaluated (its s' the one copy the tiled path keeps: the update's output reads it), updateHidden
 * (L, N, H), updateActivation (N, H; also gradHidden), updateOutput (L - 1, N, 2H) with the gates of
 * a channel adjacent: (g1, g2) of channel c at 2c, 2c + 1 (the backward needs no a: s_out = s' + a
 * passes dE/ds_out on unchanged); updateGradOutput (N, 3H), dE/d(a, g1, g2) in block order: a, then
 * g1, then g2.
 *
 * The last block's vector output is dead (the readout reads s alone), so its g1, g2 are never
 * computed and their gradients never formed: its output product and its backward to the hidden
 * layer take H columns or inputs instead of 3H (the ...Last kernels), and its updateOutput is
 * not kept. The sums are those of the full products less terms that were exact zeros.
 */

/** The update's gates (g1, g2) of channel c of atom i in block `layer`, kept by the forward pass. */
DEVICE inline MlffRealVector<2> mlffUpdateGates(const real* RESTRICT updateOutput, int layer, int i, int c) {
    return *reinterpret_cast<const MlffRealVector<2>*>(updateOutput + ((size_t) layer * MLFF_NUM_ATOMS + i) * 2 * MLFF_H +
                                                       2 * c);
}

/**
 * Channel c's post-message features of atom i in block `layer`: v' into midV, and the update's
 * input [s', |v'|], where the update's output reads s' too (the tiled path keeps no midS).
 */
DEVICE inline void mlffStoreMessages(int i, int layer, real sMid, const real* vMid, real* RESTRICT midV,
        real* RESTRICT updateInput, int c) {
    for (int a = 0; a < 3; a++)
        midV[(((size_t) layer * MLFF_NUM_ATOMS + i) * 3 + a) * MLFF_H + c] = vMid[a];
    updateInput[(size_t) i * 2 * MLFF_H + c] = sMid;
    updateInput[(size_t) i * 2 * MLFF_H + MLFF_H + c] = sqrt(vMid[0] * vMid[0] + vMid[1] * vMid[1] + vMid[2] * vMid[2]);
}

/** The messages of block `layer` into atom i (a thread block): the body of the kernels below. */
DEVICE inline void mlffMessagesForwardOfAtom(int i, int layer, const real* RESTRICT params,
        const real* RESTRICT filterTable, const real4* RESTRICT pos, const int* RESTRICT mlZ,
        const int* RESTRICT mlReplica, const int* RESTRICT replicaStart, const int* RESTRICT neighborCount,
        const int* RESTRICT neighborList, int neighborCapacity, real4 boxA, real4 boxB, real4 boxC,
        real4 invBoxSize, const real* RESTRICT stateS, const real* RESTRICT stateV, real* RESTRICT midV,
        real* RESTRICT updateInput, MlffMessageScratch* scratch) {
    real sMid, vMid[3];
    mlffMessagesInto(i, layer, params, filterTable, pos, mlZ, mlReplica, replicaStart, neighborCount, neighborList,
                     neighborCapacity, boxA, boxB, boxC, invBoxSize, stateS, stateV, scratch, &sMid, vMid);
    if (threadIdx.x < MLFF_H)
        mlffStoreMessages(i, layer, sMid, vMid, midV, updateInput, threadIdx.x);
}

/*
 * The message kernels come in two kinds with the same arguments, so that the host launches either
 * alike: ...Tiled, a thread block per atom (overflowedAtoms unused); and ...Overflowed, where edge
 * rows (edge_filters.cu) serve the other atoms, only those listed in overflowedAtoms ([0] their
 * count, then the atoms: those whose list overflowed), the grid's blocks taking them in turn, the
 * loop's test the block's alone so that its barriers stay uniform. A small grid costs a few µs
 * where a block per atom, each finding it had nothing to do, cost 20 to 30 (the 12,000-atom
 * droplet, H200). One kernel for both took 96 registers a thread rather than 76 in the forward,
 * and the tabulated droplet's step 10 % longer.
 */

/**
 * body(i) for each atom i listed in overflowedAtoms, the grid's blocks taking them in turn, with a
 * barrier between a block's atoms for the scratch they share.
 */
template <class AtomBody>
DEVICE inline void mlffForOverflowedAtoms(const int* RESTRICT overflowedAtoms, AtomBody body) {
    for (int k = blockIdx.x; k < overflowedAtoms[0]; k += gridDim.x) {
        if (k != blockIdx.x)
            __syncthreads(); // the previous atom's scratch read
        body(overflowedAtoms[1 + k]);
    }
}

/** The messages of block `layer`, a thread block per atom. */
KERNEL void mlffMessagesForwardTiled(int layer, const int* RESTRICT overflowedAtoms, const real* RESTRICT params,
        const real* RESTRICT filterTable, const real4* RESTRICT pos, const int* RESTRICT mlZ,
        const int* RESTRICT mlReplica, const int* RESTRICT replicaStart, const int* RESTRICT neighborCount,
        const int* RESTRICT neighborList, int neighborCapacity, real4 boxA, real4 boxB, real4 boxC,
        real4 invBoxSize, const real* RESTRICT stateS, const real* RESTRICT stateV, real* RESTRICT midV,
        real* RESTRICT updateInput) {
    (void) overflowedAtoms;
    mlffStartAfterPreviousLaunch();
    __shared__ MlffMessageScratch scratch;
    mlffMessagesForwardOfAtom(blockIdx.x, layer, params, filterTable, pos, mlZ, mlReplica, replicaStart, neighborCount,
                              neighborList, neighborCapacity, boxA, boxB, boxC, invBoxSize, stateS, stateV, midV,
                              updateInput, &scratch);
}

/** The messages of block `layer` into the atoms without edge rows. */
KERNEL void mlffMessagesForwardOverflowed(int layer, const int* RESTRICT overflowedAtoms,
        const real* RESTRICT params, const real* RESTRICT filterTable, const real4* RESTRICT pos,
        const int* RESTRICT mlZ, const int* RESTRICT mlReplica, const int* RESTRICT replicaStart,
        const int* RESTRICT neighborCount, const int* RESTRICT neighborList, int neighborCapacity, real4 boxA,
        real4 boxB, real4 boxC, real4 invBoxSize, const real* RESTRICT stateS, const real* RESTRICT stateV,
        real* RESTRICT midV, real* RESTRICT updateInput) {
    mlffStartAfterPreviousLaunch();
    __shared__ MlffMessageScratch scratch;
    mlffForOverflowedAtoms(overflowedAtoms, [&](int i) {
        mlffMessagesForwardOfAtom(i, layer, params, filterTable, pos, mlZ, mlReplica, replicaStart, neighborCount,
                                  neighborList, neighborCapacity, boxA, boxB, boxC, invBoxSize, stateS, stateV, midV,
                                  updateInput, &scratch);
    });
}

/*
 * On sm_90, from WarpgroupUpdateMinAtoms ML atoms (the host's choice, CudaKernelConstants.h),
 * the update's products to and from its hidden layer are warp-group products, 64 columns a block
 * (the host sizes their grids and shared memory: warpgroup_matmul.cu); elsewhere mma.sync's or the
 * FMA pipes' (matmul.cu). Their epilogues take TN adjacent columns of a row: 2
 * from a warp-group product, 4 from mlffMatmul. The output's and the input backward's stay on
 * mlffMatmul: their epilogues take a channel's outputs together (a, g1, g2; or s and |v|), and
 * move more bytes than the others', which two columns a thread would read and write scattered.
 */
// The kernel waits for the launch before here: a warp-group product does once its weights are in.
// MLFF_UPDATE_PRODUCT(I, O, a, params, layer, weights, images, epilogue): block `layer`'s product
// by B = its weights at offset `weights` (MLFF_B_*) in params on mma.sync, by their images
// (mlffPrepareWarpgroupTiles, every block's in `images`) as a warp-group product, its rows not
// prefetched: at 12,288 atoms a product's A is in the L2 already, and prefetches only cost (the
// probe: the update's hidden layer 17.5 µs without, 18.1 with).
#ifdef MLFF_WARPGROUP_UPDATE
#define MLFF_UPDATE_BOUNDS MLFF_WARPGROUP_BOUNDS
#define MLFF_UPDATE_PRODUCT(I, O, a, params, layer, weights, images, epilogue) \
    mlffWarpgroupMatmul<I, O, MLFF_WARPGROUP_UPDATE_COLUMNS, MLFF_WARPGROUPS, 0>( \
            a, mlffWarpgroupImagesOf<I, O, MLFF_WARPGROUP_UPDATE_COLUMNS, 0>(images, layer), MLFF_NUM_ATOMS, epilogue)
#else
#define MLFF_UPDATE_BOUNDS MLFF_MATMUL_BOUNDS
#define MLFF_UPDATE_PRODUCT(I, O, a, params, layer, weights, images, epilogue) \
    do { \
        mlffStartAfterPreviousLaunch(); \
        mlffMatmul<I, O, 4, 64>(a, params + MLFF_P_BLOCKS + (size_t) (layer) * MLFF_P_BLOCK_STRIDE + weights, \
                                MLFF_NUM_ATOMS, epilogue); \
    } while (0)
#endif

struct MlffHiddenForwardEpilogue {
    const real* bias;
    real* hidden;     // (N, H) of this block
    real* activation; // (N, H)
    template <int TN>
    DEVICE void columns(int row, int column, const real* sums) const {
        real h[TN], silu[TN];
        mlffLoadRow<TN>(bias + column, h);
#pragma unroll
        for (int t = 0; t < TN; t++) {
            h[t] += sums[t];
            silu[t] = mlffSilu(h[t]);
        }
        mlffStoreRow<TN>(hidden + (size_t) row * MLFF_H + column, h);
        mlffStoreRow<TN>(activation + (size_t) row * MLFF_H + column, silu);
    }
    DEVICE void operator()(int row, int column, const real* sums) const {
        columns<4>(row, column, sums);
    }
};

KERNEL void MLFF_UPDATE_BOUNDS mlffUpdateHiddenForward(int layer, const real* RESTRICT params, const real* RESTRICT updateInput,
        real* RESTRICT updateHidden, real* RESTRICT updateActivation, const unsigned int* RESTRICT weightImages) {
    const real* block = params + MLFF_P_BLOCKS + (size_t) layer * MLFF_P_BLOCK_STRIDE;
    const MlffHiddenForwardEpilogue epilogue = {block + MLFF_B_UPDATE_B0,
                                                updateHidden + (size_t) layer * MLFF_NUM_ATOMS * MLFF_H,
                                                updateActivation};
    MLFF_UPDATE_PRODUCT(2 * MLFF_H, MLFF_H, updateInput, params, layer, MLFF_B_UPDATE_W0T, weightImages, epilogue);
}

struct MlffOutputForwardEpilogue {
    int layer;
    const real* block;
    const real* updateInput; // (N, 2H): s' in the first H
    const real* midV;
    real* gates; // (N, 2H) of this block: (g1, g2) of channel c at 2c
    real* stateS;
    real* stateV;
    // The thread's 6 columns are (a, g1, g2) of channels c = column / 3 (even) and c + 1, whose
    // features it reads and writes as vectors of two, and whose gates it keeps as one of four.
    // What a row's call reads (mlffMatmul loads every row's ahead; matmul.cu, MlffEpilogueSteps).
    struct Inputs {
        real s[2], v[3][2]; // s' and v' of the two channels
    };
    DEVICE void load(int row, int column, Inputs& in) const {
        const size_t mid = (size_t) layer * MLFF_NUM_ATOMS + row;
        const int c = column / 3;
        mlffLoadRow<2>(updateInput + (size_t) row * 2 * MLFF_H + c, in.s);
        if (layer + 1 < MLFF_L) // the last block's vector update is dead
#pragma unroll
            for (int d = 0; d < 3; d++)
                mlffLoadRow<2>(midV + (mid * 3 + d) * MLFF_H + c, in.v[d]);
    }
    DEVICE void apply(int row, int column, const real* sums, const Inputs& in) const {
        const int c = column / 3;
        real y[6];
        mlffLoadRow<6>(block + MLFF_B_UPDATE_B2_BY_CHANNEL + column, y);
#pragma unroll
        for (int t = 0; t < 6; t++)
            y[t] += sums[t];
        const real s[2] = {in.s[0] + y[0], in.s[1] + y[3]};
        mlffStoreRow<2>(stateS + ((size_t) (layer + 1) * MLFF_NUM_ATOMS + row) * MLFF_H + c, s);
        if (layer + 1 == MLFF_L)
            return;
        const real g[4] = {y[1], y[2], y[4], y[5]};
        mlffStoreRow<4>(gates + (size_t) row * 2 * MLFF_H + 2 * c, g);
        real vOut[2][3];
#pragma unroll
        for (int q = 0; q < 2; q++) {
            const real v[3] = {in.v[0][q], in.v[1][q], in.v[2][q]};
            mlffUpdateVector(block, v, y[3 * q + 1], y[3 * q + 2], vOut[q]);
        }
#pragma unroll
        for (int d = 0; d < 3; d++) {
            const real v[2] = {vOut[0][d], vOut[1][d]};
            mlffStoreRow<2>(stateV + (((size_t) (layer + 1) * MLFF_NUM_ATOMS + row) * 3 + d) * MLFF_H + c, v);
        }
    }
};

KERNEL void MLFF_MATMUL_BOUNDS mlffUpdateOutputForward(int layer, const real* RESTRICT params, const real* RESTRICT updateActivation,
        const real* RESTRICT updateInput, const real* RESTRICT midV, real* RESTRICT updateOutput, real* RESTRICT stateS,
        real* RESTRICT stateV) {
    mlffStartAfterPreviousLaunch();
    const real* block = params + MLFF_P_BLOCKS + (size_t) layer * MLFF_P_BLOCK_STRIDE;
    const MlffOutputForwardEpilogue epilogue = {layer, block, updateInput, midV,
                                                updateOutput + (size_t) layer * MLFF_NUM_ATOMS * 2 * MLFF_H,
                                                stateS, stateV};
    mlffMatmul<MLFF_H, 3 * MLFF_H, 6, 128>(updateActivation, block + MLFF_B_UPDATE_W2T_BY_CHANNEL, MLFF_NUM_ATOMS,
                                           epilogue);
}

/** The last block's output: a alone, s_out = s' + a into stateS [L] (no v_out: it is dead). */
struct MlffLastOutputForwardEpilogue {
    const real* bias;        // b2's a part (H)
    const real* updateInput; // (N, 2H) of block L-1: s' in the first H
    real* stateS;            // (N, H) of block L
    template <int TN>
    DEVICE void columns(int row, int column, const real* sums) const {
        real a[TN], s[TN];
        mlffLoadRow<TN>(bias + column, a);
        mlffLoadRow<TN>(updateInput + (size_t) row * 2 * MLFF_H + column, s);
#pragma unroll
        for (int t = 0; t < TN; t++) {
            a[t] += sums[t];
            s[t] += a[t];
        }
        mlffStoreRow<TN>(stateS + (size_t) row * MLFF_H + column, s);
    }
    DEVICE void operator()(int row, int column, const real* sums) const {
        columns<4>(row, column, sums);
    }
};

KERNEL void MLFF_UPDATE_BOUNDS mlffUpdateOutputForwardLast(const real* RESTRICT params,
        const real* RESTRICT updateActivation, const real* RESTRICT updateInput, real* RESTRICT stateS,
        const unsigned int* RESTRICT weightImages) {
    const real* block = params + MLFF_P_BLOCKS + (size_t) (MLFF_L - 1) * MLFF_P_BLOCK_STRIDE;
    const MlffLastOutputForwardEpilogue epilogue = {block + MLFF_B_UPDATE_B2,
                                                    updateInput,
                                                    stateS + (size_t) MLFF_L * MLFF_NUM_ATOMS * MLFF_H};
    MLFF_UPDATE_PRODUCT(MLFF_H, MLFF_H, updateActivation, params, MLFF_L - 1, MLFF_B_UPDATE_W2T_SCALAR, weightImages,
                        epilogue);
}

/**
 * y[k] += sum_j w[j * stride] x[k][j], j = 0 .. INPUTS - 1 in order, for the COUNT rows x[k] (in
 * shared memory): one output of a matrix-vector product for several atoms, each weight loaded once.
 */
template <int COUNT, int INPUTS, int ROW>
DEVICE inline void mlffWeightColumnTimesRows(const real* RESTRICT w, int stride, const real (*x)[ROW], real* y) {
#pragma unroll 16
    for (int j = 0; j < INPUTS; j++) {
        const real wj = w[j * stride];
#pragma unroll
        for (int k = 0; k < COUNT; k++)
            y[k] += wj * x[k][j];
    }
}

/**
 * The readout of MLFF_READOUT_ATOMS atoms (set by the host, a multiple of 4) per thread block of
 * MLFF_H threads (H is a multiple of 64 on this path), and the start of the backward pass: the
 * same sums in the same order as mlffReadout, each weight loaded once for several atoms (one atom
 * a block read the head's weights from L2 12,288 times for 1,024 benzenes). dE/ds_out = gs, so
 * the last block's dE/da = gs (mlffUpdateHiddenBackwardLast reads it here) and the partial
 * dE/ds' = gs, the residual; its dE/d(g1, g2) and partial dE/dv' are 0, never stored
 * (mlffUpdateInputBackward writes the last block's dE/dv' rather than adding to it). Weights:
 * W0T (H, H/2), W2T (H/2, H/4), W2 (H/4, H/2), W0 (H/2, H).
 */
KERNEL void mlffReadoutTiled(const real* RESTRICT params, const real* RESTRICT stateS, real* RESTRICT atomEnergy,
        real* RESTRICT gradMidS) {
    constexpr int A = MLFF_READOUT_ATOMS, H = MLFF_H;
    constexpr int Groups0 = 2, Groups1 = 4; // atom groups in the head's hidden layers (H/2, H/4 outputs)
    constexpr int Atoms0 = A / Groups0, Atoms1 = A / Groups1;
    static_assert(A % Groups1 == 0 && H % 64 == 0, "whole atom groups, whole warps of outputs");
    mlffStartAfterPreviousLaunch();
    __shared__ real s[A][H], act0[A][H / 2], grad0[A][H / 2], act1[A][H / 4], grad1[A][H / 4];
    const int first = blockIdx.x * A, t = threadIdx.x;
    for (int a = 0; a < A; a++)
        s[a][t] = first + a < MLFF_NUM_ATOMS ? stateS[((size_t) MLFF_L * MLFF_NUM_ATOMS + first + a) * H + t] : 0;
    __syncthreads();
    // head0: thread (p, g), p < H/2, for atoms g Atoms0 .. (g + 1) Atoms0 - 1; hidden0 kept.
    const int p = t % (H / 2), g0 = t / (H / 2);
    real hidden0[Atoms0];
    for (int k = 0; k < Atoms0; k++)
        hidden0[k] = params[MLFF_P_HEAD_B0 + p];
    mlffWeightColumnTimesRows<Atoms0, H>(params + MLFF_P_HEAD_W0T + p, H / 2, s + g0 * Atoms0, hidden0);
#pragma unroll
    for (int k = 0; k < Atoms0; k++)
        act0[g0 * Atoms0 + k][p] = mlffSilu(hidden0[k]);
    __syncthreads();
    // head2: thread (q, g), q < H/4, for atoms g Atoms1 .. (g + 1) Atoms1 - 1.
    {
        const int q = t % (H / 4), g1 = t / (H / 4);
        real hidden1[Atoms1];
        for (int k = 0; k < Atoms1; k++)
            hidden1[k] = params[MLFF_P_HEAD_B2 + q];
        mlffWeightColumnTimesRows<Atoms1, H / 2>(params + MLFF_P_HEAD_W2T + q, H / 4, act0 + g1 * Atoms1,
                                                 hidden1);
        const real w4 = params[MLFF_P_HEAD_W4 + q];
#pragma unroll
        for (int k = 0; k < Atoms1; k++) {
            act1[g1 * Atoms1 + k][q] = mlffSilu(hidden1[k]);
            grad1[g1 * Atoms1 + k][q] = w4 * mlffSiluGrad(hidden1[k]);
        }
    }
    __syncthreads();
    // head4: atom a's energy by thread a, in q order.
    if (t < A && first + t < MLFF_NUM_ATOMS) {
        real sum = params[MLFF_P_HEAD_B4];
        for (int q = 0; q < H / 4; q++)
            sum += params[MLFF_P_HEAD_W4 + q] * act1[t][q];
        atomEnergy[first + t] = sum;
    }
    // Back through head2 (thread (p, g) as in head0), then head0 (thread c, every atom).
    {
        real ga[Atoms0] = {};
        mlffWeightColumnTimesRows<Atoms0, H / 4>(params + MLFF_P_HEAD_W2 + p, H / 2, grad1 + g0 * Atoms0, ga);
#pragma unroll
        for (int k = 0; k < Atoms0; k++)
            grad0[g0 * Atoms0 + k][p] = ga[k] * mlffSiluGrad(hidden0[k]);
    }
    __syncthreads();
    real gs[A] = {};
    mlffWeightColumnTimesRows<A, H / 2>(params + MLFF_P_HEAD_W0 + t, H, grad0, gs);
    for (int a = 0; a < A && first + a < MLFF_NUM_ATOMS; a++)
        gradMidS[(size_t) (first + a) * H + t] = gs[a];
}

#ifdef MLFF_WARPGROUP_READOUT
/**
 * The readout's four matrices as the images of warp-group products (mlffPrepareWarpgroupTiles, one
 * column tile each), side by side in this order: head0's W0T (H, H/2), its k-steps' inputs in the
 * order of A's loads (s, from memory); head2's W2T (H/2, H/4), head2's backward's W2 (H/4, H/2) and
 * head0's backward's W0 (H/2, H), each in the order of the accumulators of the product before, which
 * are its A.
 */
template <int I, int O>
struct MlffReadoutImage {
    static constexpr int words = MlffWarpgroupTileWords<I, O, 0>::value;
};
constexpr int MlffReadoutImage0 = 0;
constexpr int MlffReadoutImage2 = MlffReadoutImage0 + MlffReadoutImage<MLFF_H, MLFF_H / 2>::words;
constexpr int MlffReadoutImage2Back = MlffReadoutImage2 + MlffReadoutImage<MLFF_H / 2, MLFF_H / 4>::words;
constexpr int MlffReadoutImage0Back = MlffReadoutImage2Back + MlffReadoutImage<MLFF_H / 4, MLFF_H / 2>::words;
constexpr int MlffReadoutImageWords = MlffReadoutImage0Back + MlffReadoutImage<MLFF_H / 2, MLFF_H>::words;

/** A product's B descriptors in its two parts, from its image at `image` (I inputs, O columns). */
struct MlffReadoutWeights {
    unsigned long long big, small;
};

template <int I, int O>
DEVICE inline MlffReadoutWeights mlffReadoutWeights(const unsigned int* image) {
    constexpr int inputs = (I + 15) / 16 * 16;
    return {mlffWarpgroupDescriptor(image), mlffWarpgroupDescriptor(image + O * inputs)};
}

/**
 * d = A B over a product's I / 8 k-steps, A the accumulators of the product before as they stand (x:
 * a thread's sums of rows row0 and row0 + 8 at columns 8 j + 2 t and + 1, for j < I / 8, as
 * mlffWarpgroupTileProduct leaves them), whose k-step j is inputs 8 j .. 8 j + 7 of B's image in
 * accumulator order (mlffWarpgroupBIndexOfAccumulators). The products are waited for. With
 * MLFF_TF32_SUMS_OUTSIDE (a probe) each pair of k-steps is summed from zero and added to d outside the
 * tensor cores, as mlffWarpgroupTileProduct does.
 */
template <int I, int O>
DEVICE inline void mlffReadoutProductOfAccumulators(const float* x, MlffReadoutWeights b, float* d) {
    static_assert(I % 16 == 0, "pairs of k-steps");
    unsigned int big[I / 8][4], small[I / 8][4];
#pragma unroll
    for (int j = 0; j < I / 8; j++) {
        const float a[4] = {x[4 * j], x[4 * j + 2], x[4 * j + 1], x[4 * j + 3]};
#pragma unroll
        for (int i = 0; i < 4; i++)
            mlffSplitTf32(a[i], &big[j][i], &small[j][i]);
    }
#ifdef MLFF_TF32_SUMS_OUTSIDE
    float pairSum[O / 2];
#pragma unroll
    for (int j = 0; j < I / 8; j += 2) {
        mlffWarpgroupFence(); // before the first products, and after the adds that read pairSum
#pragma unroll
        for (int q = 0; q < 2; q++)
            mlffWarpgroupKStep<O>(pairSum, big[j + q], small[j + q], b.big, b.small,
                                  mlffWarpgroupBOffset<O>(j + q, 0, 0), q > 0);
        mlffWarpgroupCommit();
        mlffWarpgroupWait<0>();
        mlffWarpgroupAddPairSum<O / 2>(d, pairSum, j == 0);
    }
#else
    mlffWarpgroupFence();
#pragma unroll
    for (int j = 0; j < I / 8; j++)
        mlffWarpgroupKStep<O>(d, big[j], small[j], b.big, b.small, mlffWarpgroupBOffset<O>(j, 0, 0), j > 0);
    mlffWarpgroupCommit();
    mlffWarpgroupWait<0>(); // A's registers free, d's sums in
#endif
}

/**
 * The tiled readout on warp-group products (H = 64 or 128, float, sm_90a): mlffReadoutTiled's sums as four
 * products over 64-atom tiles, each 3xTF32, a warp group a tile, the hidden layers' values kept in
 * the accumulators' registers from one product to the next (none in memory). Each block holds the
 * four matrices' images in its dynamic shared memory (MlffReadoutImageWords, 160 KB at H = 128),
 * copied in before the wait for the launch before. On the FMA pipes the readout was bound by its
 * multiply-adds (docs/performance-log.md: 7.9 million warp instructions for 12,288 atoms).
 * d[4 j + 2 r + c] of a product is row row0 + 8 r of the tile, column 8 j + 2 t + c. The energy of
 * an atom sums its head4 terms within its thread, then across its quad, in another order than
 * mlffReadout's; the sums agree to float's precision.
 */
KERNEL void __launch_bounds__(MLFF_WARPGROUP_THREADS * MLFF_READOUT_WARPGROUPS, 1)
        mlffReadoutWarpgroup(const real* RESTRICT params, const real* RESTRICT stateS, real* RESTRICT atomEnergy,
                             real* RESTRICT gradMidS, const unsigned int* RESTRICT images) {
    constexpr int H = MLFF_H, N = MLFF_NUM_ATOMS;
    static_assert(H == 64 || H == 128, "the readout's products of H/2, H/4, H/2 and H columns, each 16 to 128");
    const unsigned int* image = mlffWarpgroupCopyImages<MlffReadoutImageWords>(images); // and waits
    const MlffReadoutWeights w2t = mlffReadoutWeights<H / 2, H / 4>(image + MlffReadoutImage2);
    const MlffReadoutWeights w2 = mlffReadoutWeights<H / 4, H / 2>(image + MlffReadoutImage2Back);
    const MlffReadoutWeights w0 = mlffReadoutWeights<H / 2, H>(image + MlffReadoutImage0Back);
    const unsigned int* w0tImage = image + MlffReadoutImage0;
    const int t = threadIdx.x % 4;
    const MlffWarpgroupRowTiles rowTiles = mlffWarpgroupRowTiles<MLFF_READOUT_WARPGROUPS>(N, 1);
    for (int tile = rowTiles.first; tile < rowTiles.count; tile += rowTiles.stride) {
        const MlffWarpgroupThreadRows mine = mlffWarpgroupThreadRows(tile, N);
        const real* s = stateS + (size_t) MLFF_L * N * H;
        // head0: hidden0 = s W0T + b0, kept for SiLU' in the backward.
        float hidden0[H / 4];
        MlffWarpgroupFragments fragments;
        mlffWarpgroupTileProduct<H, H / 2, 0>(MlffWarpgroupMemoryRow{s + (size_t) mine.r0 * H},
                                              MlffWarpgroupMemoryRow{s + (size_t) mine.r1 * H}, w0tImage,
                                              w0tImage + (H / 2) * H, hidden0, fragments);
        mlffWarpgroupWait<0>();
        float act0[H / 4];
#pragma unroll
        for (int i = 0; i < H / 4; i++) {
            hidden0[i] += params[MLFF_P_HEAD_B0 + 8 * (i / 4) + 2 * t + i % 2];
            act0[i] = mlffSilu(hidden0[i]);
        }
        // head2, then head4's energy and dE/d(hidden1) = w4 SiLU'(hidden1).
        float hidden1[H / 8];
        mlffReadoutProductOfAccumulators<H / 2, H / 4>(act0, w2t, hidden1);
        float energy[2] = {0, 0}, grad1[H / 8];
#pragma unroll
        for (int i = 0; i < H / 8; i++) {
            const int q = 8 * (i / 4) + 2 * t + i % 2;
            const float x = hidden1[i] + params[MLFF_P_HEAD_B2 + q], w4 = params[MLFF_P_HEAD_W4 + q];
            energy[i / 2 % 2] += w4 * mlffSilu(x);
            grad1[i] = w4 * mlffSiluGrad(x);
        }
#pragma unroll
        for (int r = 0; r < 2; r++) {
            energy[r] += __shfl_xor_sync(0xffffffffu, energy[r], 1);
            energy[r] += __shfl_xor_sync(0xffffffffu, energy[r], 2);
        }
        if (t == 0) {
            if (mine.row0 < N)
                atomEnergy[mine.row0] = params[MLFF_P_HEAD_B4] + energy[0];
            if (mine.row1 < N)
                atomEnergy[mine.row1] = params[MLFF_P_HEAD_B4] + energy[1];
        }
        // Back through head2 (dE/d(hidden0) = (grad1 W2) SiLU'(hidden0)), then head0: dE/ds = gs.
        float grad0[H / 4];
        mlffReadoutProductOfAccumulators<H / 4, H / 2>(grad1, w2, grad0);
#pragma unroll
        for (int i = 0; i < H / 4; i++)
            grad0[i] *= mlffSiluGrad(hidden0[i]);
        float gs[H / 2];
        mlffReadoutProductOfAccumulators<H / 2, H>(grad0, w0, gs);
#pragma unroll
        for (int j = 0; j < H / 8; j++)
#pragma unroll
            for (int r = 0; r < 2; r++) {
                const int row = r == 0 ? mine.row0 : mine.row1;
                if (row < N)
                    mlffStoreRow<2>(gradMidS + (size_t) row * H + 8 * j + 2 * t, &gs[4 * j + 2 * r]);
            }
    }
}
#endif

struct MlffHiddenBackwardEpilogue {
    const real* hidden; // (N, H) of this block
    real* gradHidden;   // (N, H)
    template <int TN>
    DEVICE void columns(int row, int column, const real* sums) const {
        real g[TN];
        mlffLoadRow<TN>(hidden + (size_t) row * MLFF_H + column, g);
#pragma unroll
        for (int t = 0; t < TN; t++)
            g[t] = sums[t] * mlffSiluGrad(g[t]);
        mlffStoreRow<TN>(gradHidden + (size_t) row * MLFF_H + column, g);
    }
    DEVICE void operator()(int row, int column, const real* sums) const {
        columns<4>(row, column, sums);
    }
};

KERNEL void MLFF_UPDATE_BOUNDS mlffUpdateHiddenBackward(int layer, const real* RESTRICT params, const real* RESTRICT updateGradOutput,
        const real* RESTRICT updateHidden, real* RESTRICT gradHidden, const unsigned int* RESTRICT weightImages) {
    const MlffHiddenBackwardEpilogue epilogue = {updateHidden + (size_t) layer * MLFF_NUM_ATOMS * MLFF_H, gradHidden};
    MLFF_UPDATE_PRODUCT(3 * MLFF_H, MLFF_H, updateGradOutput, params, layer, MLFF_B_UPDATE_W2, weightImages, epilogue);
}

/** The last block's: dE/da alone (the readout's gradMidS), against U2's a rows (the first H of W2). */
KERNEL void MLFF_UPDATE_BOUNDS mlffUpdateHiddenBackwardLast(const real* RESTRICT params, const real* RESTRICT gradMidS,
        const real* RESTRICT updateHidden, real* RESTRICT gradHidden, const unsigned int* RESTRICT weightImages) {
    const MlffHiddenBackwardEpilogue epilogue = {updateHidden + (size_t) (MLFF_L - 1) * MLFF_NUM_ATOMS * MLFF_H,
                                                 gradHidden};
    MLFF_UPDATE_PRODUCT(MLFF_H, MLFF_H, gradMidS, params, MLFF_L - 1, MLFF_B_UPDATE_W2, weightImages, epilogue);
}

struct MlffInputBackwardEpilogue {
    const real* midV;     // (N, 3, H) of this block
    const real* partialS; // the partial dE/ds' in, a row of `partialStride`: for the last block the readout's,
    int partialStride;    // (N, H) in gradMidS; for the others dE/da, the first H of updateGradOutput (N, 3H)
    real* gradMidS;       // (N, H): the whole gradient out
    real* gradMidV;       // (N, 3, H): the partial in, the whole out, except for the last block (no partial: written,
                          // not added to)
    bool lastBlock;
    // The thread's 4 columns are (s, |v|) of channels c = column / 2 (even) and c + 1, whose
    // features and gradients it reads and writes as vectors of two.
    // What a row's call reads (mlffMatmul loads every row's ahead; matmul.cu, MlffEpilogueSteps).
    struct Inputs {
        real gs[2], vMid[3][2], gvBefore[3][2]; // the partial dE/ds', v', the partial dE/dv'
    };
    DEVICE void load(int row, int column, Inputs& in) const {
        const int c = column / 2;
        mlffLoadRow<2>(partialS + (size_t) row * partialStride + c, in.gs);
#pragma unroll
        for (int a = 0; a < 3; a++) {
            mlffLoadRow<2>(midV + ((size_t) row * 3 + a) * MLFF_H + c, in.vMid[a]);
            in.gvBefore[a][0] = in.gvBefore[a][1] = 0;
            if (!lastBlock)
                mlffLoadRow<2>(gradMidV + ((size_t) row * 3 + a) * MLFF_H + c, in.gvBefore[a]);
        }
    }
    DEVICE void apply(int row, int column, const real* sums, const Inputs& in) const {
        const int c = column / 2;
        const real gs[2] = {in.gs[0] + sums[0], in.gs[1] + sums[2]};
        mlffStoreRow<2>(gradMidS + (size_t) row * MLFF_H + c, gs);
        real m[2];
#pragma unroll
        for (int q = 0; q < 2; q++)
            m[q] = sqrt(in.vMid[0][q] * in.vMid[0][q] + in.vMid[1][q] * in.vMid[1][q] + in.vMid[2][q] * in.vMid[2][q]);
#pragma unroll
        for (int a = 0; a < 3; a++) {
            real g[2];
#pragma unroll
            for (int q = 0; q < 2; q++) {
                const real gm = sums[2 * q + 1];
                g[q] = m[q] > 0 ? gm * in.vMid[a][q] / m[q] : 0; // the norm's gradient v/m, taken as 0 at v = 0
                if (!lastBlock)
                    g[q] = in.gvBefore[a][q] + g[q];
            }
            mlffStoreRow<2>(gradMidV + ((size_t) row * 3 + a) * MLFF_H + c, g);
        }
    }
};

KERNEL void MLFF_MATMUL_BOUNDS mlffUpdateInputBackward(int layer, const real* RESTRICT params, const real* RESTRICT gradHidden,
        const real* RESTRICT midV, const real* RESTRICT updateGradOutput, real* RESTRICT gradMidS,
        real* RESTRICT gradMidV) {
    mlffStartAfterPreviousLaunch();
    const real* block = params + MLFF_P_BLOCKS + (size_t) layer * MLFF_P_BLOCK_STRIDE;
    const bool lastBlock = layer == MLFF_L - 1;
    const MlffInputBackwardEpilogue epilogue = {midV + (size_t) layer * MLFF_NUM_ATOMS * 3 * MLFF_H,
                                                lastBlock ? gradMidS : updateGradOutput,
                                                lastBlock ? MLFF_H : 3 * MLFF_H, gradMidS, gradMidV, lastBlock};
    mlffMatmul<MLFF_H, 2 * MLFF_H, 4, 64>(gradHidden, block + MLFF_B_UPDATE_W0_BY_CHANNEL, MLFF_NUM_ATOMS, epilogue);
}

/** What the direct part of block layer-1's update backward reads of channel c of atom i. */
struct MlffUpdateDirectInputs {
    real vMid[3], g1, g2; // v' and the update's g1, g2 of block layer-1
};

DEVICE inline MlffUpdateDirectInputs mlffLoadUpdateDirectInputs(int i, int layer, const real* RESTRICT midV,
                                                                const real* RESTRICT updateOutput, int c) {
    MlffUpdateDirectInputs in;
    for (int a = 0; a < 3; a++)
        in.vMid[a] = midV[(((size_t) (layer - 1) * MLFF_NUM_ATOMS + i) * 3 + a) * MLFF_H + c];
    const MlffRealVector<2> gates = mlffUpdateGates(updateOutput, layer - 1, i, c);
    in.g1 = gates.v[0];
    in.g2 = gates.v[1];
    return in;
}

/**
 * The direct part of block layer-1's update backward for channel c of atom i (layer > 0),
 * from its inputs `in` (mlffLoadUpdateDirectInputs) and gsIn, gvIn = dE/d(s_out, v_out) of block
 * layer-1: its dE/d(a, g1, g2) into updateGradOutput and the partial dE/dv' into gradOutV. The
 * partial dE/ds' is dE/da (s_out = s' + a), so the update's backward to its input reads it from
 * updateGradOutput rather than from a copy.
 */
DEVICE inline void mlffUpdateBackwardDirectFrom(const MlffUpdateDirectInputs& in, int i, int layer,
        const real* RESTRICT params, real gsIn, const real* gvIn, real* RESTRICT updateGradOutput,
        real* RESTRICT gradOutV, int c) {
    const real* previous = params + MLFF_P_BLOCKS + (size_t) (layer - 1) * MLFF_P_BLOCK_STRIDE;
    real gradG1, gradG2, gvMid[3];
    mlffUpdateVectorBackward(previous, in.vMid, in.g1, in.g2, gvIn, &gradG1, &gradG2, gvMid);
    real* gradOutput = updateGradOutput + (size_t) i * 3 * MLFF_H;
    gradOutput[c] = gsIn;
    gradOutput[MLFF_H + c] = gradG1;
    gradOutput[2 * MLFF_H + c] = gradG2;
    for (int a = 0; a < 3; a++)
        gradOutV[((size_t) i * 3 + a) * MLFF_H + c] = gvMid[a];
}

/** mlffUpdateBackwardDirectFrom, its inputs loaded here. */
DEVICE inline void mlffUpdateBackwardDirect(int i, int layer, const real* RESTRICT params, const real* RESTRICT midV,
        const real* RESTRICT updateOutput, real gsIn, const real* gvIn, real* RESTRICT updateGradOutput,
        real* RESTRICT gradOutV, int c) {
    mlffUpdateBackwardDirectFrom(mlffLoadUpdateDirectInputs(i, layer, midV, updateOutput, c), i, layer, params, gsIn,
                                 gvIn, updateGradOutput, gradOutV, c);
}

/** The messages' backward of block `layer` into atom i (a thread block): the body of the kernels below. */
DEVICE inline void mlffMessagesBackwardOfAtom(int i, int layer, const real* RESTRICT params,
        const real* RESTRICT filterTable, const real4* RESTRICT pos, const int* RESTRICT mlZ,
        const int* RESTRICT mlReplica, const int* RESTRICT replicaStart, const int* RESTRICT neighborCount,
        const int* RESTRICT neighborList, int neighborCapacity, real4 boxA, real4 boxB, real4 boxC,
        real4 invBoxSize, const real* RESTRICT stateS, const real* RESTRICT stateV, const real* RESTRICT midV,
        const real* RESTRICT updateOutput, const real* RESTRICT gradInS, const real* RESTRICT gradInV,
        real* RESTRICT updateGradOutput, real* RESTRICT gradOutV,
        const double* RESTRICT replicaScale, double lambdaForceScale, const int* RESTRICT mlParticle,
        const int* RESTRICT sortedIndexOfParticle, unsigned long long* RESTRICT forceBuffer,
        MlffMessageBackwardScratch* scratch) {
    real gsI, gvI[3]; // dE/d(s'_i, v'_i) of this block
    mlffLoadAtomGradient(gradInS, gradInV, i, &gsI, gvI);
    real gsIn, gvIn[3]; // dE/d(s_out, v_out) of block layer-1
    mlffMessagesBackward(i, layer, params, filterTable, pos, mlZ, mlReplica, replicaStart, neighborCount, neighborList,
                         neighborCapacity, boxA, boxB, boxC, invBoxSize, stateS, stateV, gradInS, gradInV, gsI, gvI,
                         replicaScale, lambdaForceScale, mlParticle, sortedIndexOfParticle, forceBuffer, scratch,
                         &gsIn, gvIn);
    if (layer > 0 && threadIdx.x < MLFF_H) // the embedding and v = 0 have no gradient to pass on
        mlffUpdateBackwardDirect(i, layer, params, midV, updateOutput, gsIn, gvIn, updateGradOutput, gradOutV,
                                 threadIdx.x);
}

/**
 * The messages' backward of block `layer` (forces), then, for layer > 0, the direct part of block
 * layer-1's update backward (mlffUpdateBackwardDirect); a thread block per atom.
 */
KERNEL void mlffMessagesBackwardTiled(int layer, const int* RESTRICT overflowedAtoms, const real* RESTRICT params,
        const real* RESTRICT filterTable, const real4* RESTRICT pos, const int* RESTRICT mlZ,
        const int* RESTRICT mlReplica, const int* RESTRICT replicaStart, const int* RESTRICT neighborCount,
        const int* RESTRICT neighborList, int neighborCapacity, real4 boxA, real4 boxB, real4 boxC,
        real4 invBoxSize, const real* RESTRICT stateS, const real* RESTRICT stateV, const real* RESTRICT midV,
        const real* RESTRICT updateOutput, const real* RESTRICT gradInS, const real* RESTRICT gradInV,
        real* RESTRICT updateGradOutput, real* RESTRICT gradOutV,
        const double* RESTRICT replicaScale, double lambdaForceScale, const int* RESTRICT mlParticle,
        const int* RESTRICT sortedIndexOfParticle, unsigned long long* RESTRICT forceBuffer) {
    (void) overflowedAtoms;
    mlffStartAfterPreviousLaunch();
    __shared__ MlffMessageBackwardScratch scratch;
    mlffMessagesBackwardOfAtom(blockIdx.x, layer, params, filterTable, pos, mlZ, mlReplica, replicaStart, neighborCount,
                               neighborList, neighborCapacity, boxA, boxB, boxC, invBoxSize, stateS, stateV, midV,
                               updateOutput, gradInS, gradInV, updateGradOutput, gradOutV, replicaScale,
                               lambdaForceScale, mlParticle, sortedIndexOfParticle, forceBuffer, &scratch);
}

/** The same for the atoms without edge rows. */
KERNEL void mlffMessagesBackwardOverflowed(int layer, const int* RESTRICT overflowedAtoms,
        const real* RESTRICT params, const real* RESTRICT filterTable, const real4* RESTRICT pos,
        const int* RESTRICT mlZ, const int* RESTRICT mlReplica, const int* RESTRICT replicaStart,
        const int* RESTRICT neighborCount, const int* RESTRICT neighborList, int neighborCapacity, real4 boxA,
        real4 boxB, real4 boxC, real4 invBoxSize, const real* RESTRICT stateS, const real* RESTRICT stateV,
        const real* RESTRICT midV, const real* RESTRICT updateOutput, const real* RESTRICT gradInS,
        const real* RESTRICT gradInV, real* RESTRICT updateGradOutput, real* RESTRICT gradOutV,
        const double* RESTRICT replicaScale, double lambdaForceScale,
        const int* RESTRICT mlParticle, const int* RESTRICT sortedIndexOfParticle,
        unsigned long long* RESTRICT forceBuffer) {
    mlffStartAfterPreviousLaunch();
    __shared__ MlffMessageBackwardScratch scratch;
    mlffForOverflowedAtoms(overflowedAtoms, [&](int i) {
        mlffMessagesBackwardOfAtom(i, layer, params, filterTable, pos, mlZ, mlReplica, replicaStart, neighborCount,
                                   neighborList, neighborCapacity, boxA, boxB, boxC, invBoxSize, stateS, stateV, midV,
                                   updateOutput, gradInS, gradInV, updateGradOutput, gradOutV, replicaScale,
                                   lambdaForceScale, mlParticle, sortedIndexOfParticle, forceBuffer, &scratch);
    });
}
