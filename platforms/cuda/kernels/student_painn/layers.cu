/*
 * student_painn/layers.cu: the layers of the student PaiNN (docs of ../shared: student-painn.md)
 * as device functions for one atom per thread block, thread c owning channel c (c < MLFF_H;
 * threads c >= MLFF_H only join the barriers). Every function that contains __syncthreads() must
 * be called by all threads of the block.
 *
 * Compile-time constants: MLFF_H, MLFF_K, MLFF_L, MLFF_BLOCK (threads, >= H and K, a multiple of 32),
 * MLFF_EDGE_BATCH (edges filtered together, sharing each weight load), MLFF_CUTOFF (Å), and the
 * parameter offsets MLFF_P_* (model-wide) and MLFF_B_* (within a block; block l starts at
 * MLFF_P_BLOCKS + l * MLFF_P_BLOCK_STRIDE). See src/student_painn/StudentPainnParameters.cpp.
 *
 * Loops over weights are unrolled (by 32 where an iteration loads one weight, by 16 where it loads
 * three): with one atom per block the kernels are bound by the latency of weight loads, and
 * unrolling keeps many of them in flight per thread. The order of every sum is unchanged.
 */

#define MLFF_NORMAL_EPSILON 1e-8
#define MLFF_PI 3.14159265358979323846

/** W adjacent reals, loaded or stored as one or two vector accesses where aligned to their size. */
template <int W>
struct alignas(W * sizeof(real)) MlffRealVector {
    real v[W];
};

/**
 * Inputs k .. k + 3 (k a multiple of 4) of output o of a weight matrix with O outputs stored by
 * fours (StudentPainnParameters: element (k, o) at ((k / 4) O + o) 4 + k % 4, zeros past the
 * inputs): thread o's four weights in one load, its warp's in 512 contiguous bytes, so that a thread
 * block of one atom keeps four times the bytes in flight while it streams a matrix.
 */
template <int O>
DEVICE inline MlffRealVector<4> mlffWeightsByFours(const real* RESTRICT m, int k, int o) {
    return *reinterpret_cast<const MlffRealVector<4>*>(m + ((size_t) (k / 4) * O + o) * 4);
}

/**
 * Streams the weights of outputs c, H + c and 2H + c (thread c's three) of an (I, 3H) matrix
 * stored by fours, input by input in order: use(k, w0, w1, w2) for each input k.
 */
template <int I, class Use>
DEVICE inline void mlffStreamThreeOutputs(const real* RESTRICT m, int c, Use use) {
#pragma unroll 4
    for (int k4 = 0; k4 < I; k4 += 4) {
        const MlffRealVector<4> w0 = mlffWeightsByFours<3 * MLFF_H>(m, k4, c);
        const MlffRealVector<4> w1 = mlffWeightsByFours<3 * MLFF_H>(m, k4, MLFF_H + c);
        const MlffRealVector<4> w2 = mlffWeightsByFours<3 * MLFF_H>(m, k4, 2 * MLFF_H + c);
#pragma unroll
        for (int q = 0; q < 4 && (I % 4 == 0 || k4 + q < I); q++)
            use(k4 + q, w0.v[q], w1.v[q], w2.v[q]);
    }
}

DEVICE inline real mlffSilu(real x) {
    return x / (1 + exp(-x));
}

DEVICE inline real mlffSiluGrad(real x) {
    const real sigmoid = 1 / (1 + exp(-x));
    return sigmoid * (1 + x * (1 - sigmoid));
}

/** Radial basis e_k(d) with the cosine cutoff, and optionally its derivative de_k/dd. */
DEVICE inline void mlffRadialBasis(const real* RESTRICT params, real d, int k, real* e, real* dedd) {
    const real width = params[MLFF_P_RBF_WIDTHS + k];
    const real x = (d - params[MLFF_P_RBF_CENTERS + k]) / width;
    const real gauss = exp(-x * x);
    // Selected, not branched on, so that a warp-group product's rows may call it between its
    // products (edge_filters.cu's MlffBasisDerivativeRow).
    const bool inside = d < (real) MLFF_CUTOFF;
    const real fc = inside ? (real) 0.5 * (cos((real) MLFF_PI * d / (real) MLFF_CUTOFF) + 1) : 0;
    const real dfc = inside ? -(real) 0.5 * (real) MLFF_PI / (real) MLFF_CUTOFF * sin((real) MLFF_PI * d / (real) MLFF_CUTOFF) : 0;
    *e = gauss * fc;
    if (dedd != 0)
        *dedd = gauss * (dfc - 2 * x / width * fc);
}

/**
 * Where atom i's scan of its edge candidates has got to, in shared memory. Two slots, used in
 * turn: batch n reads slot n % 2 and writes slot (n + 1) % 2, so that the block's test of whether
 * more candidates remain (after batch n) never races with the next batch's write.
 */
struct MlffEdgeCursor {
    int position[2];
    int batch;
};

DEVICE inline void mlffStartEdges(MlffEdgeCursor* cursor) {
    if (threadIdx.x == 0) {
        cursor->position[0] = 0;
        cursor->batch = 0;
    }
    __syncthreads();
}

/** Whether candidates remain after the batch just processed; call after a barrier. */
DEVICE inline bool mlffMoreEdges(const MlffEdgeCursor* cursor, int batch, int num) {
    return cursor->position[batch % 2] < num;
}

/**
 * The next batch of up to MLFF_EDGE_BATCH edges of atom i, taken in candidate order from
 * position[batch % 2] on: warp 0 tests 32 candidates at a time (list entries, or after an
 * overflow the atoms of the replica, see mlffNeighborCandidate) and keeps only the edges, so a
 * batch is never spent on non-edges. edgeAtom[b] = j, or -1 for the rows left empty;
 * geometry[b] = (u, d) with u = r_j - r_i, and d = cutoff in empty rows so that everything
 * computed from them stays finite. Writes position[(batch + 1) % 2]; callers add a barrier.
 * The batches are the same whichever candidates are scanned, so the list and the fallback sum
 * the same edges in the same order.
 */
template <class Positions> // const real4* (mlPos), or MlffSystemPositions (geometry.cu)
DEVICE inline void mlffLoadEdgeBatch(int i, int batch, int num, bool overflowed, int replicaStart,
        const int* RESTRICT neighborList, int neighborCapacity, Positions pos, real4 ri,
        real4 boxA, real4 boxB, real4 boxC, real4 invBoxSize, MlffEdgeCursor* cursor, int* edgeAtom, real4* geometry) {
    if (threadIdx.x >= 32)
        return;
    const int lane = threadIdx.x;
    int next = cursor->position[batch % 2], have = 0;
    while (have < MLFF_EDGE_BATCH && next < num) { // uniform across the warp
        const int t = next + lane;
        int j = -1;
        real ux = 0, uy = 0, uz = 0;
        bool edge = false;
        if (t < num) {
            j = mlffNeighborCandidate(i, t, overflowed, replicaStart, neighborList, neighborCapacity);
            if (j != i) {
                mlffPairDelta(ri, pos[j], boxA, boxB, boxC, invBoxSize, &ux, &uy, &uz);
                edge = mlffIsEdge(ux, uy, uz);
            }
        }
        const unsigned int mask = __ballot_sync(0xffffffffu, edge);
        const int found = __popc(mask);
        const int take = min(found, MLFF_EDGE_BATCH - have);
        const int rank = __popc(mask & ((1u << lane) - 1u));
        if (edge && rank < take) {
            edgeAtom[have + rank] = j;
            geometry[have + rank] = make_real4(ux, uy, uz, sqrt(ux * ux + uy * uy + uz * uz));
        }
        if (take < found) // the batch is full: resume just after the last edge taken
            next += __ffs(__ballot_sync(0xffffffffu, edge && rank == take - 1));
        else
            next += 32;
        have += take;
    }
    if (lane >= have && lane < MLFF_EDGE_BATCH) {
        edgeAtom[lane] = -1;
        geometry[lane] = make_real4(0, 0, 0, (real) MLFF_CUTOFF);
    }
    if (lane == 0)
        cursor->position[(batch + 1) % 2] = min(next, num);
}

/*
 * Per-edge values of a batch sit edge-minor in shared memory, rows[x][b] for edge b, so that a
 * thread that needs value x of every edge in the batch (a matrix-vector product over the batch)
 * reads one aligned row with vector loads rather than MLFF_EDGE_BATCH broadcast loads: the
 * filter's inner loops then wait on the FMA pipes, not on shared memory.
 */
#ifdef USE_DOUBLE_PRECISION
typedef double2 MlffEdgeVector;
#else
typedef float4 MlffEdgeVector;
#endif
#define MLFF_EDGE_VECTOR (sizeof(MlffEdgeVector) / sizeof(real))

DEVICE inline void mlffLoadEdgeRow(const real* row, real* values) {
    static_assert(MLFF_EDGE_BATCH % MLFF_EDGE_VECTOR == 0, "a batch must fill whole vectors");
#pragma unroll
    for (int q = 0; q < (int) (MLFF_EDGE_BATCH / MLFF_EDGE_VECTOR); q++) {
        const MlffEdgeVector v = reinterpret_cast<const MlffEdgeVector*>(row)[q];
        const real* parts = reinterpret_cast<const real*>(&v);
#pragma unroll
        for (int t = 0; t < (int) MLFF_EDGE_VECTOR; t++)
            values[q * MLFF_EDGE_VECTOR + t] = parts[t];
    }
}

DEVICE inline void mlffStoreEdgeRow(real* row, const real* values) {
#pragma unroll
    for (int q = 0; q < (int) (MLFF_EDGE_BATCH / MLFF_EDGE_VECTOR); q++) {
        MlffEdgeVector v;
        real* parts = reinterpret_cast<real*>(&v);
#pragma unroll
        for (int t = 0; t < (int) MLFF_EDGE_VECTOR; t++)
            parts[t] = values[q * MLFF_EDGE_VECTOR + t];
        reinterpret_cast<MlffEdgeVector*>(row)[q] = v;
    }
}

/**
 * The filter network's hidden layer for a batch of edges, after mlffLoadEdgeBatch (and a
 * barrier): e (shared, [K][batch]) and, if dedd is not null, de/dd ([batch][K]); activation
 * (shared, [H][batch]) = SiLU(W0 e + b0), hidden (registers of thread c) = W0 e + b0. Ends with a
 * barrier, so the activations are ready for every thread.
 */
DEVICE inline void mlffFilterHidden(const real* RESTRICT params, const real* RESTRICT block, const real4* geometry,
        real (*e)[MLFF_EDGE_BATCH], real (*dedd)[MLFF_K], real (*activation)[MLFF_EDGE_BATCH], real* hidden) {
    const int c = threadIdx.x;
    for (int index = c; index < MLFF_EDGE_BATCH * MLFF_K; index += MLFF_BLOCK) {
        const int b = index / MLFF_K, k = index % MLFF_K;
        mlffRadialBasis(params, geometry[b].w, k, &e[k][b], dedd == 0 ? (real*) 0 : &dedd[b][k]);
    }
    __syncthreads();
    if (c < MLFF_H) {
        const real* w0t = block + MLFF_B_FILTER_W0T; // (K, H)
#pragma unroll
        for (int b = 0; b < MLFF_EDGE_BATCH; b++)
            hidden[b] = block[MLFF_B_FILTER_B0 + c];
#pragma unroll
        for (int k = 0; k < MLFF_K; k++) {
            const real w = w0t[k * MLFF_H + c];
            real ek[MLFF_EDGE_BATCH];
            mlffLoadEdgeRow(e[k], ek);
#pragma unroll
            for (int b = 0; b < MLFF_EDGE_BATCH; b++)
                hidden[b] += w * ek[b];
        }
        real act[MLFF_EDGE_BATCH];
#pragma unroll
        for (int b = 0; b < MLFF_EDGE_BATCH; b++)
            act[b] = mlffSilu(hidden[b]);
        mlffStoreEdgeRow(activation[c], act);
    }
    __syncthreads();
}

/**
 * The filter network of a batch of edges: mlffFilterHidden, then w (registers of thread c) =
 * W2 act + b2 split into ws, wv1, wv2. Ends with the outputs in registers; the caller adds a
 * barrier before reusing the shared arrays.
 */
DEVICE inline void mlffFilterForward(const real* RESTRICT params, const real* RESTRICT block, const real4* geometry,
        real (*e)[MLFF_EDGE_BATCH], real (*dedd)[MLFF_K], real (*activation)[MLFF_EDGE_BATCH], real* hidden, real* ws,
        real* wv1, real* wv2) {
    mlffFilterHidden(params, block, geometry, e, dedd, activation, hidden);
    const int c = threadIdx.x;
    if (c < MLFF_H) {
        const real* w2t = block + MLFF_B_FILTER_W2T_BY_FOURS; // (H, 3H)
#pragma unroll
        for (int b = 0; b < MLFF_EDGE_BATCH; b++) {
            ws[b] = block[MLFF_B_FILTER_B2 + c];
            wv1[b] = block[MLFF_B_FILTER_B2 + MLFF_H + c];
            wv2[b] = block[MLFF_B_FILTER_B2 + 2 * MLFF_H + c];
        }
        mlffStreamThreeOutputs<MLFF_H>(w2t, c, [&](int c2, real w0, real w1, real w2) {
            real a[MLFF_EDGE_BATCH];
            mlffLoadEdgeRow(activation[c2], a);
#pragma unroll
            for (int b = 0; b < MLFF_EDGE_BATCH; b++) {
                ws[b] += w0 * a[b];
                wv1[b] += w1 * a[b];
                wv2[b] += w2 * a[b];
            }
        });
    }
}

/**
 * Thread c's part of an edge's dE/dd through the filter network: dE/dhidden_c = ga SiLU'(hidden)
 * (ga = (W2^T dE/dw)_c) times (W0 de/dd)_c, from de/dd of the edge (K values).
 */
DEVICE inline real mlffFilterDistanceGradient(const real* RESTRICT block, int c, real ga, real hidden, const real* dedd) {
    const real* w0t = block + MLFF_B_FILTER_W0T; // (K, H)
    real q = 0;
#pragma unroll
    for (int k = 0; k < MLFF_K; k++)
        q += w0t[k * MLFF_H + c] * dedd[k];
    return ga * mlffSiluGrad(hidden) * q;
}

/**
 * Whether block `layer` uses its filters of kind `kind` (0 w_s, 1 w_v1, 2 w_v2): w_v1 multiplies
 * v, which is 0 in the first block, so there the edge rows' kernels and the table's readers
 * neither compute nor read it, nor write or read its dE/dw, 0. The clusters (cluster.cu) and the
 * filter network a block per atom (mlffFilterForward) still compute it and multiply it by v = 0.
 */
DEVICE inline bool mlffFilterKindUsed(int layer, int kind) {
    return layer > 0 || kind != 1;
}

#ifdef MLFF_TABULATED
/*
 * Tabulated filters (docs/tabulated-filters.md): each block's w(d) and dw/dd from the cubic
 * Hermite table of the core (mlff_filter_table_*), evaluated exactly as the core does. The table
 * (L, MLFF_TABLE_NODES, 3H, 2): per block, node by node, each output's value and derivative (per
 * Å) side by side, so that a thread loads both at once (the kernels wait on these loads).
 * Compile-time constants: MLFF_TABLE_NODES, MLFF_TABLE_SPACING (Å), MLFF_TABLE_INV_SPACING.
 */
#define MLFF_TABLE_BLOCK_STRIDE (2 * MLFF_TABLE_NODES * 3 * MLFF_H)

/** The Hermite weights at distance d: w = sum a_k y_k, dw/dd = sum b_k y_k over (y[n], D[n], y[n+1], D[n+1]). */
struct MlffHermite {
    int node;
    real a[4], b[4];
};

DEVICE inline MlffHermite mlffHermiteAt(real d) {
    MlffHermite hw;
    // Selects, not branches, so that a thread's table loads for several distances issue together.
    const bool last = d >= (real) MLFF_CUTOFF; // the last node, exactly
    const real t = d * (real) MLFF_TABLE_INV_SPACING;
    hw.node = last ? MLFF_TABLE_NODES - 2 : min((int) t, MLFF_TABLE_NODES - 2);
    const real x = last ? (real) 1 : t - hw.node;
    const real h = (real) MLFF_TABLE_SPACING, g = (real) MLFF_TABLE_INV_SPACING;
    hw.a[0] = (1 + 2 * x) * (1 - x) * (1 - x);
    hw.a[1] = x * (1 - x) * (1 - x) * h;
    hw.a[2] = x * x * (3 - 2 * x);
    hw.a[3] = x * x * (x - 1) * h;
    hw.b[0] = 6 * x * (x - 1) * g;
    hw.b[1] = (1 - x) * (1 - 3 * x);
    hw.b[2] = -hw.b[0];
    hw.b[3] = x * (3 * x - 2);
    return hw;
}

/** Output o's table entries around `node`: (y[n], D[n], y[n+1], D[n+1]), in two loads. */
DEVICE inline void mlffTableEntries(const real* RESTRICT blockTable, int node, int o, real* entries) {
    const real2* pairs = reinterpret_cast<const real2*>(blockTable) + (size_t) node * 3 * MLFF_H + o;
    const real2 here = pairs[0], next = pairs[3 * MLFF_H];
    entries[0] = here.x;
    entries[1] = here.y;
    entries[2] = next.x;
    entries[3] = next.y;
}

/** An output's w and, if dwdd is not null, dw/dd, from its table entries at the weights hw. */
DEVICE inline void mlffHermiteSum(const MlffHermite& hw, const real* entries, real* w, real* dwdd) {
    *w = hw.a[0] * entries[0] + hw.a[1] * entries[1] + hw.a[2] * entries[2] + hw.a[3] * entries[3];
    if (dwdd != 0)
        *dwdd = hw.b[0] * entries[0] + hw.b[1] * entries[1] + hw.b[2] * entries[2] + hw.b[3] * entries[3];
}

/** Output o of the block's table at the weights hw: *w and, if dwdd is not null, *dwdd. */
DEVICE inline void mlffTableOutput(const real* RESTRICT blockTable, const MlffHermite& hw, int o, real* w, real* dwdd) {
    real entries[4];
    mlffTableEntries(blockTable, hw.node, o, entries);
    mlffHermiteSum(hw, entries, w, dwdd);
}

/** Filter kind `kind` of channel c at the weights hw, as mlffTableOutput; 0 where block `layer` does not use it. */
DEVICE inline void mlffTableKindOutput(const real* RESTRICT blockTable, int layer, const MlffHermite& hw, int kind,
                                       int c, real* w, real* dwdd) {
    if (mlffFilterKindUsed(layer, kind)) {
        mlffTableOutput(blockTable, hw, kind * MLFF_H + c, w, dwdd);
        return;
    }
    *w = 0;
    if (dwdd != 0)
        *dwdd = 0;
}

/**
 * The tabulated filters of block `layer` for a batch of edges and thread c's channel (registers):
 * ws, wv1, wv2 and, if dws is not null, their derivatives by d. No shared memory and no barrier.
 */
DEVICE inline void mlffFilterFromTable(const real* RESTRICT blockTable, int layer, const real4* geometry, real* ws,
        real* wv1, real* wv2, real* dws, real* dwv1, real* dwv2) {
    const int c = threadIdx.x;
    if (c >= MLFF_H) { // threads without a channel contribute zeros
#pragma unroll
        for (int b = 0; b < MLFF_EDGE_BATCH; b++) {
            ws[b] = wv1[b] = wv2[b] = 0;
            if (dws != 0)
                dws[b] = dwv1[b] = dwv2[b] = 0;
        }
        return;
    }
#pragma unroll
    for (int b = 0; b < MLFF_EDGE_BATCH; b++) {
        const MlffHermite hw = mlffHermiteAt(geometry[b].w);
        mlffTableKindOutput(blockTable, layer, hw, 0, c, &ws[b], dws == 0 ? (real*) 0 : &dws[b]);
        mlffTableKindOutput(blockTable, layer, hw, 1, c, &wv1[b], dws == 0 ? (real*) 0 : &dwv1[b]);
        mlffTableKindOutput(blockTable, layer, hw, 2, c, &wv2[b], dws == 0 ? (real*) 0 : &dwv2[b]);
    }
}
#endif

/** Block `layer`'s part of the filter table with tabulated filters; filterTable itself (null) without. */
DEVICE inline const real* mlffBlockTable(const real* RESTRICT filterTable, int layer) {
#ifdef MLFF_TABULATED
    return filterTable + (size_t) layer * MLFF_TABLE_BLOCK_STRIDE;
#else
    (void) layer;
    return filterTable;
#endif
}

/** Shared scratch of the update's forward and backward. */
struct MlffUpdateScratch {
    real input[2 * MLFF_H];    // concat(s_mid, |v_mid|)
    real activation[MLFF_H];
    real gradOutput[3 * MLFF_H];
    real gradHidden[MLFF_H];
};

/**
 * The update MLP of atom (block) for thread c's channel: from s_mid, v_mid (registers),
 * m = |v_mid| (no epsilon), hidden = U0 [s_mid, m] + b0 and (a, g1, g2) = U2 SiLU(hidden) + b2.
 */
DEVICE inline void mlffUpdateMlp(const real* RESTRICT block, real sMid, const real* vMid, MlffUpdateScratch* scratch,
        real* m, real* hidden, real* a, real* g1, real* g2) {
    const int c = threadIdx.x;
    if (c < MLFF_H) {
        *m = sqrt(vMid[0] * vMid[0] + vMid[1] * vMid[1] + vMid[2] * vMid[2]);
        scratch->input[c] = sMid;
        scratch->input[MLFF_H + c] = *m;
    }
    __syncthreads();
    if (c < MLFF_H) {
        const real* u0t = block + MLFF_B_UPDATE_W0T_BY_FOURS; // (2H, H)
        real h = block[MLFF_B_UPDATE_B0 + c];
#pragma unroll 8
        for (int x4 = 0; x4 < 2 * MLFF_H; x4 += 4) {
            const MlffRealVector<4> u = mlffWeightsByFours<MLFF_H>(u0t, x4, c);
#pragma unroll
            for (int q = 0; q < 4 && (MLFF_H % 2 == 0 || x4 + q < 2 * MLFF_H); q++)
                h += u.v[q] * scratch->input[x4 + q];
        }
        *hidden = h;
        scratch->activation[c] = mlffSilu(h);
    }
    __syncthreads();
    if (c < MLFF_H) {
        const real* u2t = block + MLFF_B_UPDATE_W2T_BY_FOURS; // (H, 3H)
        real y0 = block[MLFF_B_UPDATE_B2 + c];
        real y1 = block[MLFF_B_UPDATE_B2 + MLFF_H + c];
        real y2 = block[MLFF_B_UPDATE_B2 + 2 * MLFF_H + c];
        mlffStreamThreeOutputs<MLFF_H>(u2t, c, [&](int c2, real u0, real u1, real u2) {
            const real act = scratch->activation[c2];
            y0 += u0 * act;
            y1 += u1 * act;
            y2 += u2 * act;
        });
        *a = y0;
        *g1 = y1;
        *g2 = y2;
    }
    __syncthreads(); // scratch is free again
}

/** v_out = v_mid * g1 + (M v_mid) * g2 for thread c's channel. */
DEVICE inline void mlffUpdateVector(const real* RESTRICT block, const real* vMid, real g1, real g2, real* vOut) {
    const real* mix = block + MLFF_B_MIXING;
#pragma unroll
    for (int a = 0; a < 3; a++)
        vOut[a] = vMid[a] * g1 + (mix[3 * a] * vMid[0] + mix[3 * a + 1] * vMid[1] + mix[3 * a + 2] * vMid[2]) * g2;
}

/**
 * Backward of the vector update v_out = v_mid g1 + (M v_mid) g2 for one channel: from gvOut =
 * dE/dv_out, the gradients dE/dg1, dE/dg2 and the direct part of dE/dv_mid (written, not added;
 * the norm's part comes from the update MLP's backward).
 */
DEVICE inline void mlffUpdateVectorBackward(const real* RESTRICT block, const real* vMid, real g1, real g2,
        const real* gvOut, real* gradG1, real* gradG2, real* gvMid) {
    const real* mix = block + MLFF_B_MIXING;
    *gradG1 = 0;
    *gradG2 = 0;
#pragma unroll
    for (int a = 0; a < 3; a++) {
        const real mixed_a = mix[3 * a] * vMid[0] + mix[3 * a + 1] * vMid[1] + mix[3 * a + 2] * vMid[2];
        *gradG1 += gvOut[a] * vMid[a];
        *gradG2 += gvOut[a] * mixed_a;
    }
#pragma unroll
    for (int b = 0; b < 3; b++)
        gvMid[b] = gvOut[b] * g1 + (mix[b] * gvOut[0] + mix[3 + b] * gvOut[1] + mix[6 + b] * gvOut[2]) * g2;
}

/**
 * Backward of the update (residual included) for thread c's channel: from the gradients of its
 * outputs gsOut, gvOut and the forward's m, hidden, g1, g2, the gradients gsMid, gvMid of its inputs.
 * The norm's gradient v/m is taken as 0 where m = 0.
 */
DEVICE inline void mlffUpdateBackward(const real* RESTRICT block, const real* vMid, real m, real hidden, real g1, real g2,
        real gsOut, const real* gvOut, MlffUpdateScratch* scratch, real* gsMid, real* gvMid) {
    const int c = threadIdx.x;
    if (c < MLFF_H) {
        real gradG1, gradG2;
        mlffUpdateVectorBackward(block, vMid, g1, g2, gvOut, &gradG1, &gradG2, gvMid);
        scratch->gradOutput[c] = gsOut;
        scratch->gradOutput[MLFF_H + c] = gradG1;
        scratch->gradOutput[2 * MLFF_H + c] = gradG2;
    }
    __syncthreads();
    if (c < MLFF_H) {
        const real* u2 = block + MLFF_B_UPDATE_W2_BY_FOURS; // (3H, H)
        real ga = 0;
#pragma unroll 8
        for (int o4 = 0; o4 < 3 * MLFF_H; o4 += 4) {
            const MlffRealVector<4> u = mlffWeightsByFours<MLFF_H>(u2, o4, c);
#pragma unroll
            for (int q = 0; q < 4 && (3 * MLFF_H % 4 == 0 || o4 + q < 3 * MLFF_H); q++)
                ga += u.v[q] * scratch->gradOutput[o4 + q];
        }
        scratch->gradHidden[c] = ga * mlffSiluGrad(hidden);
    }
    __syncthreads();
    if (c < MLFF_H) {
        const real* u0 = block + MLFF_B_UPDATE_W0_BY_FOURS; // (H, 2H)
        real gs = 0, gm = 0;
#pragma unroll 4
        for (int c4 = 0; c4 < MLFF_H; c4 += 4) {
            const MlffRealVector<4> us = mlffWeightsByFours<2 * MLFF_H>(u0, c4, c);
            const MlffRealVector<4> um = mlffWeightsByFours<2 * MLFF_H>(u0, c4, MLFF_H + c);
#pragma unroll
            for (int q = 0; q < 4 && (MLFF_H % 4 == 0 || c4 + q < MLFF_H); q++) {
                const real gh = scratch->gradHidden[c4 + q];
                gs += us.v[q] * gh;
                gm += um.v[q] * gh;
            }
        }
        *gsMid = gsOut + gs;
        if (m > 0) {
#pragma unroll
            for (int a = 0; a < 3; a++)
                gvMid[a] += gm * vMid[a] / m;
        }
    }
    __syncthreads(); // scratch is free again
}

/** Shared scratch of the readout. */
struct MlffReadoutScratch {
    real s[MLFF_H];
    real act0[MLFF_H / 2];
    real grad0[MLFF_H / 2];
    real act1[MLFF_H / 4];
    real grad1[MLFF_H / 4];
};

/**
 * Per-atom energy eps = head4(SiLU(head2(SiLU(head0(s))))) and its gradient gs = d eps / d s
 * for thread c's channel; eps is valid in thread 0.
 */
DEVICE inline void mlffReadout(const real* RESTRICT params, real s, MlffReadoutScratch* scratch, real* eps, real* gs) {
    const int c = threadIdx.x;
    if (c < MLFF_H)
        scratch->s[c] = s;
    __syncthreads();
    real hidden0 = 0;
    if (c < MLFF_H / 2) {
        const real* w0t = params + MLFF_P_HEAD_W0T; // (H, H/2)
        hidden0 = params[MLFF_P_HEAD_B0 + c];
#pragma unroll 32
        for (int c2 = 0; c2 < MLFF_H; c2++)
            hidden0 += w0t[c2 * (MLFF_H / 2) + c] * scratch->s[c2];
        scratch->act0[c] = mlffSilu(hidden0);
    }
    __syncthreads();
    if (c < MLFF_H / 4) {
        const real* w2t = params + MLFF_P_HEAD_W2T; // (H/2, H/4)
        real hidden1 = params[MLFF_P_HEAD_B2 + c];
#pragma unroll 32
        for (int p = 0; p < MLFF_H / 2; p++)
            hidden1 += w2t[p * (MLFF_H / 4) + c] * scratch->act0[p];
        scratch->act1[c] = mlffSilu(hidden1);
        scratch->grad1[c] = params[MLFF_P_HEAD_W4 + c] * mlffSiluGrad(hidden1);
    }
    __syncthreads();
    if (c == 0) {
        real sum = params[MLFF_P_HEAD_B4];
#pragma unroll 32
        for (int q = 0; q < MLFF_H / 4; q++)
            sum += params[MLFF_P_HEAD_W4 + q] * scratch->act1[q];
        *eps = sum;
    }
    if (c < MLFF_H / 2) {
        const real* w2 = params + MLFF_P_HEAD_W2; // (H/4, H/2)
        real ga = 0;
#pragma unroll 32
        for (int q = 0; q < MLFF_H / 4; q++)
            ga += w2[q * (MLFF_H / 2) + c] * scratch->grad1[q];
        scratch->grad0[c] = ga * mlffSiluGrad(hidden0);
    }
    __syncthreads();
    if (c < MLFF_H) {
        const real* w0 = params + MLFF_P_HEAD_W0; // (H/2, H)
        real g = 0;
#pragma unroll 32
        for (int p = 0; p < MLFF_H / 2; p++)
            g += w0[p * MLFF_H + c] * scratch->grad0[p];
        *gs = g;
    }
    __syncthreads();
}
