/*
 * student_painn/cluster.cu: the fused path with each atom's work spread over a cluster of
 * MLFF_CLUSTER thread blocks (sm_90 and later: thread block clusters and distributed shared
 * memory; the host compiles this file, and defines MLFF_CLUSTER, only there). For a small
 * system the fused kernels run one block per atom, on as many SMs as there are atoms, each
 * streaming every weight of the block; here MLFF_CLUSTER SMs share an atom, each streaming
 * 1 / MLFF_CLUSTER of the weights (docs/performance-log.md).
 *
 * Block r of atom i's cluster owns the MLFF_SLICE = H / MLFF_CLUSTER channels c = r S + slot,
 * slot < S, and the filter and update outputs c, H + c, 2H + c of those channels:
 *   - messages: every block loads the same edge batches and computes the filters' hidden layer
 *     for all channels (K inputs: cheap), then its own outputs of the filters' second layer, and
 *     the messages of its own channels, which need nothing from the others;
 *   - the update MLP mixes channels: each block computes its own outputs of a layer from all of
 *     the layer's inputs, which the blocks exchange through distributed shared memory (each
 *     writes its slice into every block of the cluster with st.async, and each waits on its own
 *     mbarrier for the whole layer);
 *   - backward: each block takes its own filter outputs back through the filter network and adds
 *     its part of each edge's dE/du to the forces (integer adds: the parts may arrive in any
 *     order and the forces stay bitwise reproducible).
 * Thread t works on slot t % S with group t / S (MLFF_GROUPS = MLFF_BLOCK / S groups) in the
 * matrix-vector products, which split their inputs (or the batch's edges) over the groups and
 * add the groups' partial sums in a fixed order; in the messages, on slot t % S and part t / S
 * (0: s, 1 to 3: a component of v; threads t < 4S).
 *
 * Same arguments, storage and results (to rounding) as mlffStudentForward and
 * mlffStudentBackward (forward.cu, backward.cu), and one more: updateKept (L, N, 3, H; the last
 * block's part unused), each block's update hidden layer, g1 and g2, which the forward keeps so
 * that the backward needs no recomputation (and no exchange) of the update's forward; and the
 * backward takes mlffReduceEnergies' arguments, for an extra cluster that the host may add to
 * its first launch (the energy reduction, which is then not launched). Grid
 * MLFF_NUM_ATOMS x MLFF_CLUSTER blocks of MLFF_BLOCK threads, launched with a cluster of
 * MLFF_CLUSTER consecutive blocks per atom, and G x 3 x S x batch reals of dynamic shared memory
 * with exact filters.
 */

#define MLFF_SLICE (MLFF_H / MLFF_CLUSTER)
#define MLFF_GROUPS (MLFF_BLOCK / MLFF_SLICE)
#define MLFF_GROUP_EDGES ((MLFF_EDGE_BATCH + MLFF_GROUPS - 1) / MLFF_GROUPS) // edges b = group + e G, e < this
static_assert(MLFF_H % MLFF_CLUSTER == 0 && MLFF_SLICE % 4 == 0, "a block's slice is whole fours of channels");
static_assert(MLFF_BLOCK % MLFF_SLICE == 0 && 4 * MLFF_SLICE <= MLFF_BLOCK, "threads cover (slot, group) and (slot, part)");

/** This block's rank in its atom's cluster (1-D clusters of consecutive blocks). */
DEVICE inline int mlffClusterRank() {
    return blockIdx.x % MLFF_CLUSTER;
}

/**
 * The two halves of the cluster's one barrier, which only says that every block of the cluster
 * has started and set up its mbarriers (no block may write into another's shared memory before):
 * arrive on entry, wait before the first write, so that the wait overlaps the messages.
 */
DEVICE inline void mlffClusterArrive() {
    asm volatile("barrier.cluster.arrive.relaxed.aligned;" ::: "memory");
}

DEVICE inline void mlffClusterWait() {
    asm volatile("barrier.cluster.wait.aligned;" ::: "memory");
}

/*
 * The exchanges of the update MLP: each block writes its slice of an array into every block of the
 * cluster with st.async, which counts the bytes on the receiving block's mbarrier for that array;
 * a block waits on its own mbarrier until the whole array has arrived. No cluster-wide barrier,
 * so no block waits for the others' global stores or for a block that is not sending to it. Each
 * array is exchanged at most once a launch, so each mbarrier completes one phase (parity 0).
 */
enum MlffExchange { MLFF_EXCHANGE_INPUT, MLFF_EXCHANGE_ACTIVATION, MLFF_EXCHANGE_OUTPUT, MLFF_EXCHANGE_GRAD_OUTPUT,
                    MLFF_EXCHANGE_GRAD_HIDDEN, MLFF_EXCHANGES };

/** The 32-bit shared-memory address of a pointer into this block's shared memory. */
DEVICE inline unsigned int mlffSharedAddress(const void* pointer) {
    unsigned int address;
    asm volatile("{ .reg .u64 a; cvta.to.shared.u64 a, %1; cvt.u32.u64 %0, a; }"
                 : "=r"(address) : "l"((unsigned long long) pointer));
    return address;
}

/**
 * By thread 0 at the kernel's start, before the cluster's first barrier (arrive then wait) that
 * precedes every exchange: each mbarrier expects its array's reals, realsOf[exchange] of them.
 */
DEVICE inline void mlffInitExchanges(unsigned long long* arrived, const int* realsOf) {
    for (int x = 0; x < MLFF_EXCHANGES; x++) {
        const unsigned int bar = mlffSharedAddress(&arrived[x]);
        asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(bar) : "memory");
        asm volatile("{ .reg .b64 state; mbarrier.arrive.expect_tx.shared::cta.b64 state, [%0], %1; }"
                     ::"r"(bar), "r"((unsigned int) (realsOf[x] * sizeof(real))) : "memory");
    }
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
}

/** array[index] = value in every block of the cluster, this one included, counted on their mbarrier `arrived`. */
DEVICE inline void mlffClusterSend(real* array, int index, real value, unsigned long long* arrived) {
    const unsigned int local = mlffSharedAddress(&array[index]), bar = mlffSharedAddress(arrived);
#pragma unroll
    for (int rank = 0; rank < MLFF_CLUSTER; rank++) {
        unsigned int remote, remoteBar;
        asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(remote) : "r"(local), "r"(rank));
        asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(remoteBar) : "r"(bar), "r"(rank));
#ifdef USE_DOUBLE_PRECISION
        asm volatile("st.async.shared::cluster.mbarrier::complete_tx::bytes.b64 [%0], %1, [%2];"
                     ::"r"(remote), "l"(__double_as_longlong(value)), "r"(remoteBar) : "memory");
#else
        asm volatile("st.async.shared::cluster.mbarrier::complete_tx::bytes.b32 [%0], %1, [%2];"
                     ::"r"(remote), "r"(__float_as_uint(value)), "r"(remoteBar) : "memory");
#endif
    }
}

/** Waits until this block's copy of an exchanged array is complete; then a block barrier (the callers reuse partial). */
DEVICE inline void mlffClusterReceive(unsigned long long* arrived) {
    const unsigned int bar = mlffSharedAddress(arrived);
    asm volatile("{\n\t.reg .pred done;\n"
                 "MLFF_WAIT:\n\t"
                 "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], 0;\n\t"
                 "@!done bra MLFF_WAIT;\n}" ::"r"(bar) : "memory");
    __syncthreads();
}

/*
 * The products split a dimension of I inputs (or outputs) over the groups by fours: group g takes
 * the fours at 4 (g + n G), n < MLFF_GROUP_FOURS(I). A thread loads its weights of a matrix first,
 * into registers, so that they arrive while the block waits for the inputs.
 */
#define MLFF_GROUP_FOURS(I) (((I) / 4 + MLFF_GROUPS - 1) / MLFF_GROUPS)

/** Thread (slot, group)'s weights of output o of an (I, O) matrix stored by fours: its group's fours, zeros past I. */
template <int O, int I>
DEVICE inline void mlffLoadGroupWeights(const real* RESTRICT m, int o, MlffRealVector<4>* w) {
    const int group = threadIdx.x / MLFF_SLICE;
#pragma unroll
    for (int n = 0; n < MLFF_GROUP_FOURS(I); n++) {
        const int x4 = 4 * (group + n * MLFF_GROUPS);
        if (x4 < I)
            w[n] = mlffWeightsByFours<O>(m, x4, o);
        else
            w[n].v[0] = w[n].v[1] = w[n].v[2] = w[n].v[3] = 0;
    }
}

/** The sum over thread (slot, group)'s inputs of w times input (shared, I values), in order. */
template <int I>
DEVICE inline real mlffGroupDot(const MlffRealVector<4>* w, const real* input) {
    const int group = threadIdx.x / MLFF_SLICE;
    real sum = 0;
#pragma unroll
    for (int n = 0; n < MLFF_GROUP_FOURS(I); n++) {
        const int x4 = 4 * (group + n * MLFF_GROUPS);
        if (x4 < I) {
#pragma unroll
            for (int q = 0; q < 4; q++)
                sum += w[n].v[q] * input[x4 + q];
        }
    }
    return sum;
}

/** Shared scratch of one batch of edges. */
struct MlffClusterEdgeScratch {
    MlffEdgeCursor cursor;
    int edgeAtom[MLFF_EDGE_BATCH];
    real4 geometry[MLFF_EDGE_BATCH];
#ifndef MLFF_TABULATED
    alignas(16) real e[MLFF_K][MLFF_EDGE_BATCH];
    real dedd[MLFF_EDGE_BATCH][MLFF_K];
    alignas(16) real activation[MLFF_H][MLFF_EDGE_BATCH];
    alignas(16) real gradW[3 * MLFF_SLICE][MLFF_EDGE_BATCH]; // dE/dw of own outputs (kind S + slot), edge-minor
#endif
    real filter[3][MLFF_SLICE][MLFF_EDGE_BATCH]; // own outputs: (w_s, w_v1, w_v2) of slot, edge
    real warpTotals[MLFF_BLOCK / 32][MLFF_EDGE_BATCH][4];
    real edgeGrad[MLFF_EDGE_BATCH][4]; // this block's part of dE/dd, dE/dn
};

/** Shared scratch of the update and the readout; the arrays marked so are written by every block of the cluster. */
struct MlffClusterUpdateScratch {
    real input[2 * MLFF_H];      // exchanged: concat(s', m)
    real activation[MLFF_H];     // exchanged: SiLU(hidden)
    real output[MLFF_H];         // exchanged: s_out of the last block, for the readout
    real gradOutput[3 * MLFF_H]; // exchanged: dE/d(a, g1, g2)
    real gradHidden[MLFF_H];     // exchanged: dE/dhidden
    real partial[MLFF_GROUPS][3][MLFF_SLICE];
    real features[4][MLFF_SLICE]; // own channels' (s, v) or their gradients, from the message threads
    real readoutGrad[MLFF_H];
    unsigned long long arrived[MLFF_EXCHANGES]; // the exchanges' mbarriers
};

/** mlffInitExchanges for this file's arrays, by thread 0. */
DEVICE inline void mlffInitUpdateExchanges(MlffClusterUpdateScratch* update) {
    if (threadIdx.x == 0) {
        const int realsOf[MLFF_EXCHANGES] = {2 * MLFF_H, MLFF_H, MLFF_H, 3 * MLFF_H, MLFF_H};
        mlffInitExchanges(update->arrived, realsOf);
    }
}

/** Thread (slot, group)'s weights of its own filter outputs (exact filters), loaded before they are needed. */
struct MlffClusterFilterWeights {
    MlffRealVector<4> w2[3][MLFF_GROUP_FOURS(MLFF_H)]; // of outputs kind H + c, its group's inputs
    real bias[3];
};

DEVICE inline void mlffLoadClusterFilterWeights(const real* RESTRICT block, MlffClusterFilterWeights* weights) {
    const int c = mlffClusterRank() * MLFF_SLICE + threadIdx.x % MLFF_SLICE;
#pragma unroll
    for (int kind = 0; kind < 3; kind++) {
        mlffLoadGroupWeights<3 * MLFF_H, MLFF_H>(block + MLFF_B_FILTER_W2T_BY_FOURS, kind * MLFF_H + c,
                                                 weights->w2[kind]); // (H, 3H)
        weights->bias[kind] = block[MLFF_B_FILTER_B2 + kind * MLFF_H + c];
    }
}

/**
 * Thread (slot, group)'s own filter outputs w[kind][e] for edges b = group + e G of the batch:
 * exact, from the hidden layer's activations (mlffFilterHidden, shared), each thread summing the
 * batch over its group's inputs into partial (dynamic shared memory, (G, 3, S, batch)) and then
 * its own edges over the groups, in order; tabulated, from the table, with dw/dd if dw is not
 * null (in the first block w_v1 too, which multiplies v = 0 there: left unread, one benzene's step
 * took 1 µs more on an H100). Ends with a barrier.
 */
DEVICE inline void mlffClusterFilterOutputs(const MlffClusterFilterWeights* weights, const real* RESTRICT blockTable,
        const MlffClusterEdgeScratch* edges, real* partial, real (*w)[MLFF_GROUP_EDGES], real (*dw)[MLFF_GROUP_EDGES]) {
    const int slot = threadIdx.x % MLFF_SLICE, group = threadIdx.x / MLFF_SLICE;
#ifdef MLFF_TABULATED
    (void) weights;
    (void) partial;
    const int c = mlffClusterRank() * MLFF_SLICE + slot;
#pragma unroll
    for (int e = 0; e < MLFF_GROUP_EDGES; e++) {
        const int b = min(group + e * MLFF_GROUPS, MLFF_EDGE_BATCH - 1); // past the batch: a copy, never used
        const MlffHermite hw = mlffHermiteAt(edges->geometry[b].w);
#pragma unroll
        for (int kind = 0; kind < 3; kind++)
            mlffTableOutput(blockTable, hw, kind * MLFF_H + c, &w[kind][e], dw == 0 ? (real*) 0 : &dw[kind][e]);
    }
#else
    (void) blockTable;
    (void) dw;
    real sum[3][MLFF_EDGE_BATCH];
#pragma unroll
    for (int kind = 0; kind < 3; kind++)
#pragma unroll
        for (int b = 0; b < MLFF_EDGE_BATCH; b++)
            sum[kind][b] = 0;
#pragma unroll
    for (int n = 0; n < MLFF_GROUP_FOURS(MLFF_H); n++) {
        const int k4 = 4 * (group + n * MLFF_GROUPS);
        if (k4 < MLFF_H) {
#pragma unroll
            for (int q = 0; q < 4; q++) {
                real a[MLFF_EDGE_BATCH];
                mlffLoadEdgeRow(edges->activation[k4 + q], a);
#pragma unroll
                for (int kind = 0; kind < 3; kind++)
#pragma unroll
                    for (int b = 0; b < MLFF_EDGE_BATCH; b++)
                        sum[kind][b] += weights->w2[kind][n].v[q] * a[b];
            }
        }
    }
#pragma unroll
    for (int kind = 0; kind < 3; kind++)
        mlffStoreEdgeRow(partial + ((size_t) (group * 3 + kind) * MLFF_SLICE + slot) * MLFF_EDGE_BATCH, sum[kind]);
    __syncthreads();
#pragma unroll
    for (int e = 0; e < MLFF_GROUP_EDGES; e++) {
        const int b = min(group + e * MLFF_GROUPS, MLFF_EDGE_BATCH - 1);
#pragma unroll
        for (int kind = 0; kind < 3; kind++) {
            real value = weights->bias[kind];
            for (int g = 0; g < MLFF_GROUPS; g++)
                value += partial[((size_t) (g * 3 + kind) * MLFF_SLICE + slot) * MLFF_EDGE_BATCH + b];
            w[kind][e] = value;
        }
    }
#endif
    __syncthreads(); // partial is free again
}

/**
 * The update MLP's own outputs, valid in threads t < S (slot t): from sMid, m of slot t (threads
 * t < S), which it first writes into every block's update->input, hidden and (a, g1, g2) =
 * U2 SiLU(U0 [s', m] + b0) + b2. Called by all threads of every block of the cluster.
 */
DEVICE inline void mlffClusterUpdateMlp(const real* RESTRICT block, real sMid, real m,
        MlffClusterUpdateScratch* update, real* hidden, real* a, real* g1, real* g2) {
    const int t = threadIdx.x, slot = t % MLFF_SLICE, group = t / MLFF_SLICE;
    const int c = mlffClusterRank() * MLFF_SLICE + slot;
    real bias[4] = {0, 0, 0, 0};
    if (t < MLFF_SLICE) {
        bias[0] = block[MLFF_B_UPDATE_B0 + c];
        for (int kind = 0; kind < 3; kind++)
            bias[1 + kind] = block[MLFF_B_UPDATE_B2 + kind * MLFF_H + c];
    }
    MlffRealVector<4> u0[MLFF_GROUP_FOURS(2 * MLFF_H)], u2[3][MLFF_GROUP_FOURS(MLFF_H)];
    mlffLoadGroupWeights<MLFF_H, 2 * MLFF_H>(block + MLFF_B_UPDATE_W0T_BY_FOURS, c, u0); // (2H, H)
    for (int kind = 0; kind < 3; kind++)
        mlffLoadGroupWeights<3 * MLFF_H, MLFF_H>(block + MLFF_B_UPDATE_W2T_BY_FOURS, kind * MLFF_H + c, u2[kind]); // (H, 3H)
    if (t < MLFF_SLICE) {
        mlffClusterSend(update->input, c, sMid, &update->arrived[MLFF_EXCHANGE_INPUT]);
        mlffClusterSend(update->input, MLFF_H + c, m, &update->arrived[MLFF_EXCHANGE_INPUT]);
    }
    mlffClusterReceive(&update->arrived[MLFF_EXCHANGE_INPUT]);
    update->partial[group][0][slot] = mlffGroupDot<2 * MLFF_H>(u0, update->input);
    __syncthreads();
    if (t < MLFF_SLICE) {
        real h = bias[0];
        for (int g = 0; g < MLFF_GROUPS; g++)
            h += update->partial[g][0][t];
        *hidden = h;
        mlffClusterSend(update->activation, c, mlffSilu(h), &update->arrived[MLFF_EXCHANGE_ACTIVATION]);
    }
    mlffClusterReceive(&update->arrived[MLFF_EXCHANGE_ACTIVATION]);
    for (int kind = 0; kind < 3; kind++)
        update->partial[group][kind][slot] = mlffGroupDot<MLFF_H>(u2[kind], update->activation);
    __syncthreads();
    if (t < MLFF_SLICE) {
        real out[3];
        for (int kind = 0; kind < 3; kind++) {
            out[kind] = bias[1 + kind];
            for (int g = 0; g < MLFF_GROUPS; g++)
                out[kind] += update->partial[g][kind][t];
        }
        *a = out[0];
        *g1 = out[1];
        *g2 = out[2];
    }
    __syncthreads(); // partial is free again
}

/**
 * Backward of the update (residual included) for own channels, valid in threads t < S: from
 * gsOut, gvOut = dE/d(s_out, v_out) and the forward's vMid, m, hidden, g1, g2 of slot t,
 * gsMid, gvMid = dE/d(s', v'). The norm's gradient v/m is taken as 0 where m = 0. Called by all
 * threads of every block of the cluster.
 */
DEVICE inline void mlffClusterUpdateBackward(const real* RESTRICT block, const real* vMid, real m, real hidden,
        real g1, real g2, real gsOut, const real* gvOut, MlffClusterUpdateScratch* update, real* gsMid, real* gvMid) {
    const int t = threadIdx.x, slot = t % MLFF_SLICE, group = t / MLFF_SLICE;
    const int c = mlffClusterRank() * MLFF_SLICE + slot;
    MlffRealVector<4> u2[MLFF_GROUP_FOURS(3 * MLFF_H)], u0s[MLFF_GROUP_FOURS(MLFF_H)], u0m[MLFF_GROUP_FOURS(MLFF_H)];
    mlffLoadGroupWeights<MLFF_H, 3 * MLFF_H>(block + MLFF_B_UPDATE_W2_BY_FOURS, c, u2);              // (3H, H)
    mlffLoadGroupWeights<2 * MLFF_H, MLFF_H>(block + MLFF_B_UPDATE_W0_BY_FOURS, c, u0s);         // (H, 2H)
    mlffLoadGroupWeights<2 * MLFF_H, MLFF_H>(block + MLFF_B_UPDATE_W0_BY_FOURS, MLFF_H + c, u0m);
    if (t < MLFF_SLICE) {
        real gradG1, gradG2;
        mlffUpdateVectorBackward(block, vMid, g1, g2, gvOut, &gradG1, &gradG2, gvMid);
        unsigned long long* arrived = &update->arrived[MLFF_EXCHANGE_GRAD_OUTPUT];
        mlffClusterSend(update->gradOutput, c, gsOut, arrived);
        mlffClusterSend(update->gradOutput, MLFF_H + c, gradG1, arrived);
        mlffClusterSend(update->gradOutput, 2 * MLFF_H + c, gradG2, arrived);
    }
    mlffClusterReceive(&update->arrived[MLFF_EXCHANGE_GRAD_OUTPUT]);
    update->partial[group][0][slot] = mlffGroupDot<3 * MLFF_H>(u2, update->gradOutput);
    __syncthreads();
    if (t < MLFF_SLICE) {
        real ga = 0;
        for (int g = 0; g < MLFF_GROUPS; g++)
            ga += update->partial[g][0][t];
        mlffClusterSend(update->gradHidden, c, ga * mlffSiluGrad(hidden), &update->arrived[MLFF_EXCHANGE_GRAD_HIDDEN]);
    }
    mlffClusterReceive(&update->arrived[MLFF_EXCHANGE_GRAD_HIDDEN]);
    const real ps = mlffGroupDot<MLFF_H>(u0s, update->gradHidden), pm = mlffGroupDot<MLFF_H>(u0m, update->gradHidden);
    update->partial[group][0][slot] = ps;
    update->partial[group][1][slot] = pm;
    __syncthreads();
    if (t < MLFF_SLICE) {
        real gs = 0, gm = 0;
        for (int g = 0; g < MLFF_GROUPS; g++) {
            gs += update->partial[g][0][t];
            gm += update->partial[g][1][t];
        }
        *gsMid = gsOut + gs;
        if (m > 0) {
#pragma unroll
            for (int a = 0; a < 3; a++)
                gvMid[a] += gm * vMid[a] / m;
        }
    }
    __syncthreads(); // partial is free again
}

/** Component `axis` (0 to 2) of n(ij) for an edge's geometry (u, d). */
DEVICE inline real mlffEdgeNormal(real4 g, int axis) {
    const real u = axis == 0 ? g.x : axis == 1 ? g.y : g.z;
    return u * (1 / (g.w + (real) MLFF_NORMAL_EPSILON));
}

/**
 * The batch's own filter outputs into edges->filter, and in registers w (and dw, tabulated) of
 * thread (slot, group); partial is the dynamic shared memory of mlffClusterFilterOutputs. Called
 * by all threads after mlffLoadEdgeBatch and a barrier; ends with a barrier.
 */
DEVICE inline void mlffClusterFilters(const real* RESTRICT params, const real* RESTRICT block,
        const real* RESTRICT blockTable, MlffClusterEdgeScratch* edges, real* partial, bool needDedd, real* hidden,
        real (*w)[MLFF_GROUP_EDGES], real (*dw)[MLFF_GROUP_EDGES]) {
    const int slot = threadIdx.x % MLFF_SLICE, group = threadIdx.x / MLFF_SLICE;
    MlffClusterFilterWeights weights;
#ifndef MLFF_TABULATED
    mlffLoadClusterFilterWeights(block, &weights); // in flight during the hidden layer
    mlffFilterHidden(params, block, edges->geometry, edges->e, needDedd ? edges->dedd : (real(*)[MLFF_K]) 0,
                     edges->activation, hidden);
#else
    (void) params;
    (void) block;
    (void) needDedd;
    (void) hidden;
#endif
    mlffClusterFilterOutputs(&weights, blockTable, edges, partial, w, dw);
#pragma unroll
    for (int e = 0; e < MLFF_GROUP_EDGES; e++) {
        const int b = group + e * MLFF_GROUPS;
        if (b < MLFF_EDGE_BATCH)
            for (int kind = 0; kind < 3; kind++)
                edges->filter[kind][slot][b] = w[kind][e];
    }
    __syncthreads();
}

KERNEL void mlffStudentForwardCluster(int layer, const real* RESTRICT params, const real* RESTRICT filterTable,
        const real4* RESTRICT pos,
        const int* RESTRICT mlZ, const int* RESTRICT mlReplica, const int* RESTRICT replicaStart,
        const int* RESTRICT neighborCount, const int* RESTRICT neighborList, int neighborCapacity,
        real4 boxA, real4 boxB, real4 boxC, real4 invBoxSize,
        real* RESTRICT stateS, real* RESTRICT stateV, real* RESTRICT midS, real* RESTRICT midV,
        real* RESTRICT atomEnergy, real* RESTRICT gradMidS, real* RESTRICT gradMidV, real* RESTRICT updateKept,
        const real4* RESTRICT posq, const int* RESTRICT sortedIndexOfParticle, const int* RESTRICT mlParticle,
        real4* RESTRICT listedPos, int* RESTRICT listedCount, int* RESTRICT listedNeighbors) {
    __shared__ MlffClusterEdgeScratch edges;
    __shared__ MlffClusterUpdateScratch update;
    __shared__ MlffReadoutScratch readout;
    extern __shared__ real partial[]; // (G, 3, S, batch): mlffClusterFilterOutputs
    mlffInitUpdateExchanges(&update);
    mlffClusterArrive();
    mlffStartAfterPreviousLaunch();

    const int i = blockIdx.x / MLFF_CLUSTER;
    const int t = threadIdx.x, slot = t % MLFF_SLICE, part = t / MLFF_SLICE;
    const int c = mlffClusterRank() * MLFF_SLICE + slot;
    const bool messageThread = t < 4 * MLFF_SLICE;
    const real* block = params + MLFF_P_BLOCKS + (size_t) layer * MLFF_P_BLOCK_STRIDE;
    const real* blockTable = mlffBlockTable(filterTable, layer);

    // Messages: thread (slot, part) sums s' (part 0) or v'_a (part a + 1) of channel c, in list order.
    real mid = 0;
    if (messageThread)
        mid = part == 0 ? mlffBlockInputS(params, mlZ, stateS, layer, i, c) : mlffBlockInputV(stateV, layer, i, part - 1, c);
    // With MLFF_CLUSTER_FINDS_NEIGHBORS the first launch scans i's replica as after an overflow,
    // from OpenMM's positions (the same batches: mlffLoadEdgeBatch), and lists what it finds for
    // the later launches, in place of the neighbour search's launch.
    const bool findNeighbors = MLFF_CLUSTER_FINDS_NEIGHBORS && layer == 0;
    const MlffSystemPositions systemPos = {posq, sortedIndexOfParticle, mlParticle};
    const real4 ri = findNeighbors ? systemPos[i] : pos[i];
    const int replica = mlReplica[i];
    const int count = findNeighbors ? 0 : neighborCount[i];
    const bool overflowed = findNeighbors || count > neighborCapacity;
    const int num = mlffNumNeighborCandidates(count, overflowed, replica, replicaStart);
    int listed = 0; // edges found so far (findNeighbors)
    mlffStartEdges(&edges.cursor);
    for (int batch = 0; num > 0; batch++) {
        if (findNeighbors)
            mlffLoadEdgeBatch(i, batch, num, true, replicaStart[replica], neighborList, neighborCapacity, systemPos, ri,
                              boxA, boxB, boxC, invBoxSize, &edges.cursor, edges.edgeAtom, edges.geometry);
        else
            mlffLoadEdgeBatch(i, batch, num, overflowed, replicaStart[replica], neighborList, neighborCapacity, pos, ri,
                              boxA, boxB, boxC, invBoxSize, &edges.cursor, edges.edgeAtom, edges.geometry);
        __syncthreads();
        if (findNeighbors) {
            if (mlffClusterRank() == 0 && t < MLFF_EDGE_BATCH && edges.edgeAtom[t] >= 0 && listed + t < neighborCapacity)
                listedNeighbors[(size_t) i * neighborCapacity + listed + t] = edges.edgeAtom[t];
            for (int b = 0; b < MLFF_EDGE_BATCH; b++)
                listed += edges.edgeAtom[b] >= 0 ? 1 : 0;
        }
        real x[MLFF_EDGE_BATCH]; // s_j or v_j,a of the message threads, in flight during the filters
#pragma unroll
        for (int b = 0; b < MLFF_EDGE_BATCH; b++) {
            const int j = edges.edgeAtom[b];
            x[b] = j < 0 || !messageThread ? 0
                   : part == 0             ? mlffBlockInputS(params, mlZ, stateS, layer, j, c)
                                           : mlffBlockInputV(stateV, layer, j, part - 1, c);
        }
        real hidden[MLFF_EDGE_BATCH], w[3][MLFF_GROUP_EDGES];
        mlffClusterFilters(params, block, blockTable, &edges, partial, false, hidden, w, (real(*)[MLFF_GROUP_EDGES]) 0);
        if (messageThread) {
#pragma unroll
            for (int b = 0; b < MLFF_EDGE_BATCH; b++) {
                if (edges.edgeAtom[b] < 0)
                    continue;
                if (part == 0)
                    mid += x[b] * edges.filter[0][slot][b];
                else
                    mid += x[b] * edges.filter[1][slot][b] +
                           mlffEdgeNormal(edges.geometry[b], part - 1) * edges.filter[2][slot][b];
            }
        }
        __syncthreads(); // the next batch reuses the shared arrays
        if (!mlffMoreEdges(&edges.cursor, batch + 1, num))
            break;
    }
    if (findNeighbors && mlffClusterRank() == 0 && t == 0) {
        listedCount[i] = listed; // the true count, as the neighbour search's, even past the capacity
        listedPos[i] = ri;
    }
    if (messageThread) {
        update.features[part][slot] = mid;
        if (part == 0)
            midS[((size_t) layer * MLFF_NUM_ATOMS + i) * MLFF_H + c] = mid;
        else
            midV[(((size_t) layer * MLFF_NUM_ATOMS + i) * 3 + part - 1) * MLFF_H + c] = mid;
    }
    __syncthreads();

    // Update, own channels in threads t < S.
    real sMid = 0, vMid[3] = {0, 0, 0}, m = 0;
    if (t < MLFF_SLICE) {
        sMid = update.features[0][t];
        for (int a = 0; a < 3; a++)
            vMid[a] = update.features[1 + a][t];
        m = sqrt(vMid[0] * vMid[0] + vMid[1] * vMid[1] + vMid[2] * vMid[2]);
    }
    mlffClusterWait();
    real hiddenU = 0, da = 0, g1 = 0, g2 = 0;
    mlffClusterUpdateMlp(block, sMid, m, &update, &hiddenU, &da, &g1, &g2);
    const real sOut = sMid + da;
    if (t < MLFF_SLICE && layer + 1 < MLFF_L) { // for the backward pass of this block's update (the last's is below)
        real* kept = updateKept + ((size_t) layer * MLFF_NUM_ATOMS + i) * 3 * MLFF_H + c;
        kept[0] = hiddenU;
        kept[MLFF_H] = g1;
        kept[2 * MLFF_H] = g2;
    }
    if (layer + 1 < MLFF_L) {
        if (t < MLFF_SLICE) {
            real vOut[3];
            mlffUpdateVector(block, vMid, g1, g2, vOut);
            mlffStoreBlockInput(stateS, stateV, layer + 1, i, c, sOut, vOut);
        }
        return;
    }

    // Last block: the readout (in every block, from every channel's s_out), then d eps_i / d(s', v')
    // of own channels (the vector update is dead).
    if (t < MLFF_SLICE)
        mlffClusterSend(update.output, c, sOut, &update.arrived[MLFF_EXCHANGE_OUTPUT]);
    mlffClusterReceive(&update.arrived[MLFF_EXCHANGE_OUTPUT]);
    real eps = 0, gs = 0;
    mlffReadout(params, t < MLFF_H ? update.output[t] : 0, &readout, &eps, &gs);
    if (t == 0 && mlffClusterRank() == 0)
        atomEnergy[i] = eps;
    if (t < MLFF_H)
        update.readoutGrad[t] = gs;
    __syncthreads();
    const real gsOut = t < MLFF_SLICE ? update.readoutGrad[c] : 0;
    const real zero[3] = {0, 0, 0};
    real gsMid = 0, gvMid[3] = {0, 0, 0};
    mlffClusterUpdateBackward(block, vMid, m, hiddenU, g1, g2, gsOut, zero, &update, &gsMid, gvMid);
    if (t < MLFF_SLICE)
        mlffStoreAtomGradient(gradMidS, gradMidV, i, c, gsMid, gvMid);
}

KERNEL void mlffStudentBackwardCluster(int layer, const real* RESTRICT params, const real* RESTRICT filterTable,
        const real4* RESTRICT pos,
        const int* RESTRICT mlZ, const int* RESTRICT mlReplica, const int* RESTRICT replicaStart,
        const int* RESTRICT neighborCount, const int* RESTRICT neighborList, int neighborCapacity,
        real4 boxA, real4 boxB, real4 boxC, real4 invBoxSize,
        const real* RESTRICT stateS, const real* RESTRICT stateV, const real* RESTRICT midS, const real* RESTRICT midV,
        const real* RESTRICT gradInS, const real* RESTRICT gradInV, real* RESTRICT gradOutS, real* RESTRICT gradOutV,
        const double* RESTRICT replicaScale, double lambdaForceScale, const int* RESTRICT mlParticle,
        const int* RESTRICT sortedIndexOfParticle, unsigned long long* RESTRICT forceBuffer,
        const real* RESTRICT updateKept, const real* RESTRICT atomEnergy, double lambda,
        double* RESTRICT replicaEnergy, mixed* RESTRICT energyBuffer, mixed* RESTRICT energyParamDerivs,
        int energyParamDerivIndex, int* RESTRICT maxNeighborCount) {
    if (blockIdx.x / MLFF_CLUSTER == MLFF_NUM_ATOMS) {
        // An extra cluster, in the first backward launch only: the energy reduction
        // (mlffReduceEnergies), on SMs the atoms leave idle, the energies being complete.
        mlffStartAfterPreviousLaunch();
        if (mlffClusterRank() == 0)
            mlffReduceEnergiesInBlock(atomEnergy, replicaStart, replicaScale, lambda, replicaEnergy, energyBuffer,
                                      energyParamDerivs, energyParamDerivIndex, neighborCount, maxNeighborCount);
        return;
    }
    __shared__ MlffClusterEdgeScratch edges;
    __shared__ MlffClusterUpdateScratch update;
    extern __shared__ real partial[]; // (G, 3, S, batch): mlffClusterFilterOutputs
    if (layer > 0) { // the only launch with no exchange is the last
        mlffInitUpdateExchanges(&update);
        mlffClusterArrive();
    }
    mlffStartAfterPreviousLaunch();

    const int i = blockIdx.x / MLFF_CLUSTER;
    const int t = threadIdx.x, slot = t % MLFF_SLICE, group = t / MLFF_SLICE, part = group;
    const int c = mlffClusterRank() * MLFF_SLICE + slot;
    const bool messageThread = t < 4 * MLFF_SLICE;
    const real* block = params + MLFF_P_BLOCKS + (size_t) layer * MLFF_P_BLOCK_STRIDE;
    const real* blockTable = mlffBlockTable(filterTable, layer);

    // dE/d(s'_i, v'_i) of channel c, in every thread (each forms dE/dw of its own edges).
    real gsI, gvI[3];
    gsI = gradInS[(size_t) i * MLFF_H + c];
    for (int a = 0; a < 3; a++)
        gvI[a] = gradInV[((size_t) i * 3 + a) * MLFF_H + c];
    // Thread (slot, part) gathers dE/ds_i (part 0) or dE/dv_i,a (part a + 1) of channel c, from the residual.
    real gathered = 0;
    if (messageThread)
        gathered = part == 0 ? gsI : part == 1 ? gvI[0] : part == 2 ? gvI[1] : gvI[2];

    const real4 ri = pos[i];
    const int replica = mlReplica[i];
    const double forceScale = lambdaForceScale * replicaScale[replica];
    const int sortedI = sortedIndexOfParticle[mlParticle[i]];
    const int count = neighborCount[i];
    const bool overflowed = count > neighborCapacity;
    const int num = mlffNumNeighborCandidates(count, overflowed, replica, replicaStart);
    mlffStartEdges(&edges.cursor);
    for (int batch = 0; num > 0; batch++) {
        mlffLoadEdgeBatch(i, batch, num, overflowed, replicaStart[replica], neighborList, neighborCapacity, pos, ri,
                          boxA, boxB, boxC, invBoxSize, &edges.cursor, edges.edgeAtom, edges.geometry);
        __syncthreads();
        real x[MLFF_EDGE_BATCH]; // gs'_j or gv'_j,a of the message threads, in flight during the filters
#pragma unroll
        for (int b = 0; b < MLFF_EDGE_BATCH; b++) {
            const int j = edges.edgeAtom[b];
            x[b] = j < 0 || !messageThread || layer == 0 ? 0
                   : part == 0 ? gradInS[(size_t) j * MLFF_H + c]
                               : gradInV[((size_t) j * 3 + part - 1) * MLFF_H + c];
        }
        real hidden[MLFF_EDGE_BATCH], w[3][MLFF_GROUP_EDGES], dw[3][MLFF_GROUP_EDGES];
        mlffClusterFilters(params, block, blockTable, &edges, partial, true, hidden, w, dw);

        // Thread (slot, group)'s edges: dE/dw of own outputs (exact: to shared memory; tabulated:
        // times dw/dd, its part of dE/dd) and its part of dE/dn.
        real partial[MLFF_EDGE_BATCH][4];
#pragma unroll
        for (int b = 0; b < MLFF_EDGE_BATCH; b++)
            partial[b][0] = partial[b][1] = partial[b][2] = partial[b][3] = 0;
#pragma unroll
        for (int b = 0; b < MLFF_EDGE_BATCH; b++) { // compile-time b: partial stays in registers
            if (b % MLFF_GROUPS != group)
                continue;
            const int e = b / MLFF_GROUPS;
            const int j = edges.edgeAtom[b];
            real gw[3] = {0, 0, 0};
            if (j >= 0) {
                const real4 g = edges.geometry[b];
                gw[0] = gsI * mlffBlockInputS(params, mlZ, stateS, layer, j, c);
                for (int a = 0; a < 3; a++) {
                    gw[1] += gvI[a] * mlffBlockInputV(stateV, layer, j, a, c);
                    gw[2] += gvI[a] * mlffEdgeNormal(g, a);
                    partial[b][1 + a] = gvI[a] * w[2][e];
                }
            }
#ifdef MLFF_TABULATED
            partial[b][0] = gw[0] * dw[0][e] + gw[1] * dw[1][e] + gw[2] * dw[2][e];
#else
            for (int kind = 0; kind < 3; kind++)
                edges.gradW[kind * MLFF_SLICE + slot][b] = gw[kind];
#endif
        }
        __syncthreads();

        // The gather into i, own channels, in list order: dE/ds_i += gs'_j w_s(ij), dE/dv_i += gv'_j w_v1(ij).
        if (messageThread && layer > 0) {
#pragma unroll
            for (int b = 0; b < MLFF_EDGE_BATCH; b++)
                if (edges.edgeAtom[b] >= 0)
                    gathered += x[b] * edges.filter[part == 0 ? 0 : 1][slot][b];
        }
#ifndef MLFF_TABULATED
        // The filter network's backward from own outputs, for hidden channel t: dE/dhidden =
        // (W2^T dE/dw) SiLU'(hidden), over own outputs only; dE/dd's part sum_t dE/dhidden_t (W0 de/dd)_t.
        if (t < MLFF_H) {
            const real* w2 = block + MLFF_B_FILTER_W2_BY_FOURS; // (3H, H)
            const int first = mlffClusterRank() * MLFF_SLICE;
            real ga[MLFF_EDGE_BATCH];
#pragma unroll
            for (int b = 0; b < MLFF_EDGE_BATCH; b++)
                ga[b] = 0;
#pragma unroll
            for (int kind = 0; kind < 3; kind++) {
#pragma unroll
                for (int s4 = 0; s4 < MLFF_SLICE; s4 += 4) {
                    const MlffRealVector<4> u = mlffWeightsByFours<MLFF_H>(w2, kind * MLFF_H + first + s4, t);
#pragma unroll
                    for (int q = 0; q < 4; q++) {
                        real g[MLFF_EDGE_BATCH];
                        mlffLoadEdgeRow(edges.gradW[kind * MLFF_SLICE + s4 + q], g);
#pragma unroll
                        for (int b = 0; b < MLFF_EDGE_BATCH; b++)
                            ga[b] += u.v[q] * g[b];
                    }
                }
            }
#pragma unroll
            for (int b = 0; b < MLFF_EDGE_BATCH; b++)
                partial[b][0] += mlffFilterDistanceGradient(block, t, ga[b], hidden[b], edges.dedd[b]);
        }
#endif
        mlffBlockSum4(partial, edges.warpTotals, edges.edgeGrad);
        if (t < MLFF_EDGE_BATCH && edges.edgeAtom[t] >= 0) { // this block's part of the edge's forces
            const real* grad = edges.edgeGrad[t];
            mlffAddEdgeForces(edges.geometry[t], grad[0], grad[1], grad[2], grad[3], forceScale, sortedI,
                              sortedIndexOfParticle[mlParticle[edges.edgeAtom[t]]], forceBuffer);
        }
        __syncthreads(); // the next batch reuses the shared arrays
        if (!mlffMoreEdges(&edges.cursor, batch + 1, num))
            break;
    }
    if (layer == 0)
        return; // the embedding and v = 0 have no gradient to pass on

    // Backward of block layer-1's update, from its post-message features and what its forward kept.
    if (messageThread)
        update.features[part][slot] = gathered;
    __syncthreads();
    const real* previous = params + MLFF_P_BLOCKS + (size_t) (layer - 1) * MLFF_P_BLOCK_STRIDE;
    real gsIn = 0, gvIn[3] = {0, 0, 0}, vMid[3] = {0, 0, 0}, m = 0, hiddenU = 0, g1 = 0, g2 = 0;
    if (t < MLFF_SLICE) {
        gsIn = update.features[0][t];
        for (int a = 0; a < 3; a++) {
            gvIn[a] = update.features[1 + a][t];
            vMid[a] = midV[(((size_t) (layer - 1) * MLFF_NUM_ATOMS + i) * 3 + a) * MLFF_H + c];
        }
        m = sqrt(vMid[0] * vMid[0] + vMid[1] * vMid[1] + vMid[2] * vMid[2]);
        const real* kept = updateKept + ((size_t) (layer - 1) * MLFF_NUM_ATOMS + i) * 3 * MLFF_H + c;
        hiddenU = kept[0];
        g1 = kept[MLFF_H];
        g2 = kept[2 * MLFF_H];
    }
    mlffClusterWait();
    real gsMid = 0, gvMid[3] = {0, 0, 0};
    mlffClusterUpdateBackward(previous, vMid, m, hiddenU, g1, g2, gsIn, gvIn, &update, &gsMid, gvMid);
    if (t < MLFF_SLICE)
        mlffStoreAtomGradient(gradOutS, gradOutV, i, c, gsMid, gvMid);
}
