/*
 * student_painn/replica_messages.cu: the tiled path's messages, forward and backward, one thread
 * block per replica, for replicas of at most MLFF_REPLICA_ATOMS atoms (the host's choice:
 * CudaCalcMLFFForceKernel::chooseKernelPath). They replace the kernels a block per atom (tiled.cu's with
 * tabulated filters, edge_filters.cu's from rows with exact ones): here each pair i < j within the
 * cutoff reads its filter once for both of its edges (w(ij) = w(ji), n(ji) = -n(ij)), and the
 * replica's features sit in shared memory, not re-read from L2 for each edge. Each atom still sums
 * its messages in ascending neighbour order (the pairs are taken in ascending (i, j): atom k's come
 * from (0, k) .. (k - 1, k), then (k, k + 1) ..), as the list's.
 *
 * The filters: with MLFF_TABULATED from the table, per pair and channel; else from the rows of
 * edge_filters.cu's products, one row per pair (the replica's rows from pairRowStart[replica], in
 * the order of its pairs), and the backward pass writes each pair's dE/dw (3H) for the filters'
 * backward product and its dE/dn to edgeGradN (xyz, summed over the blocks, as
 * row_messages.cu's mlffMessagesBackwardRows does), whose forces mlffAddPairGradient adds
 * (edge_filters.cu).
 *
 * Per step, before the blocks: mlffFindReplicaPairs (a warp per replica) finds each replica's
 * pairs from OpenMM's positions, so the path needs no neighbour search; with exact filters
 * mlffScanReplicaPairs numbers their rows and mlffLinkReplicaPairRows writes each row's atoms,
 * displacement and radial basis for the products.
 *
 * Thread c owns channel c of every atom of the replica (threads c >= MLFF_H only join the
 * barriers), so the features in shared memory need no barrier between pairs: only thread c
 * reads or writes column c. The backward's block is MLFF_REPLICA_SPLIT parts of MLFF_BLOCK
 * threads, each part walking its share of the pairs with its own sums of the gathered gradients:
 * twice the warps a block for a third more shared memory, so more warps an SM (the backward waits
 * on its loads; the host splits where the parts' sums fit).
 *
 * Dynamic shared memory (the host sizes it: replicaRowsBytes an array), `real`, each (A, 4, H)
 * with A = MLFF_REPLICA_ATOMS and the 4 rows of an atom (s, v_x, v_y, v_z):
 *   forward:  input (the block's input features), sum (input plus the messages: s', v');
 *   backward: input, gradIn = dE/d(s', v'), and a gradOut a part, whose sum is dE/d(s, v) (the
 *             first part's from gradIn, the others' from 0, each adding its pairs' gathered
 *             messages); after the pairs, input and gradIn hold the warps' sums of each batch.
 *
 * Global pair slots (MLFF_REPLICA_PAIRS a replica): replicaPairCount (R) int, replicaPairAtoms
 * int2 (i, j local to the replica), replicaPairGeometry real4 (u = r_j - r_i, d).
 */
#ifdef MLFF_REPLICA_ATOMS

#define MLFF_REPLICA_PAIRS (MLFF_REPLICA_ATOMS * (MLFF_REPLICA_ATOMS - 1) / 2 + 1) // + 1: never empty
// Pairs whose table loads a thread issues together (backward: and whose dE/dd, dE/dn the block
// sums together): the loads are what the kernels wait on. H200, 1,024 benzenes, step us: 4 pairs
// 1,312, 8 pairs 1,245, 16 forward and 8 backward 1,250 (16 backward would take 244 registers).
#define MLFF_PAIR_BATCH 8
#define MLFF_PAIR_BATCHES ((MLFF_REPLICA_PAIRS + MLFF_PAIR_BATCH - 1) / MLFF_PAIR_BATCH)

typedef real MlffReplicaRows[4][MLFF_H]; // one atom's (s, v_x, v_y, v_z), by channel

/** A replica's pairs within the cutoff, (i, j) local with i < j, in ascending (i, j). */
struct MlffReplicaPairs {
    int count;
    int2 atoms[MLFF_REPLICA_PAIRS];
    real4 geometry[MLFF_REPLICA_PAIRS]; // (u, d), u = r_j - r_i
};

/**
 * A warp per replica (the block's warp w, replica MLFF_PAIR_FINDERS blockIdx.x + w): its atoms'
 * positions from OpenMM's, then 32 (i, j) at a time tested, the pairs kept in order, into the
 * replica's slots.
 */
#define MLFF_PAIR_FINDERS 4
KERNEL void mlffFindReplicaPairs(const real4* RESTRICT posq, const int* RESTRICT sortedIndexOfParticle,
        const int* RESTRICT mlParticle, const int* RESTRICT replicaStart, real4 boxA, real4 boxB, real4 boxC,
        real4 invBoxSize, int* RESTRICT replicaPairCount, int2* RESTRICT replicaPairAtoms,
        real4* RESTRICT replicaPairGeometry) {
    mlffStartAfterPreviousLaunch();
    __shared__ real4 positions[MLFF_PAIR_FINDERS][MLFF_REPLICA_ATOMS];
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const int replica = blockIdx.x * MLFF_PAIR_FINDERS + warp;
    if (replica >= MLFF_NUM_REPLICAS)
        return; // the whole warp; no block barrier follows
    const int first = replicaStart[replica], count = replicaStart[replica + 1] - first;
    const MlffSystemPositions pos = {posq, sortedIndexOfParticle, mlParticle};
    real4* position = positions[warp];
    for (int a = lane; a < count; a += 32)
        position[a] = pos[first + a];
    __syncwarp();
    int2* atoms = replicaPairAtoms + (size_t) replica * MLFF_REPLICA_PAIRS;
    real4* geometry = replicaPairGeometry + (size_t) replica * MLFF_REPLICA_PAIRS;
    int have = 0;
    for (int base = 0; base < count * count; base += 32) {
        const int t = base + lane, i = t / count, j = t % count;
        real ux = 0, uy = 0, uz = 0;
        bool edge = false;
        if (t < count * count && i < j) {
            mlffPairDelta(position[i], position[j], boxA, boxB, boxC, invBoxSize, &ux, &uy, &uz);
            edge = mlffIsEdge(ux, uy, uz);
        }
        const unsigned int mask = __ballot_sync(0xffffffffu, edge);
        if (edge) {
            const int slot = have + __popc(mask & ((1u << lane) - 1u));
            atoms[slot] = make_int2(i, j);
            geometry[slot] = make_real4(ux, uy, uz, sqrt(ux * ux + uy * uy + uz * uz));
        }
        have += __popc(mask);
    }
    if (lane == 0)
        replicaPairCount[replica] = have;
}

/** The replica's pairs from its slots into shared memory. Called by all threads; ends with a barrier. */
DEVICE inline void mlffLoadReplicaPairs(int replica, const int* RESTRICT replicaPairCount,
        const int2* RESTRICT replicaPairAtoms, const real4* RESTRICT replicaPairGeometry, MlffReplicaPairs* pairs) {
    const int count = replicaPairCount[replica];
    const size_t slots = (size_t) replica * MLFF_REPLICA_PAIRS;
    for (int p = threadIdx.x; p < count; p += blockDim.x) {
        pairs->atoms[p] = replicaPairAtoms[slots + p];
        pairs->geometry[p] = replicaPairGeometry[slots + p];
    }
    if (threadIdx.x == 0)
        pairs->count = count;
    __syncthreads();
}

/** This thread's channel c: its place in its part of MLFF_BLOCK threads (the backward's blocks have several). */
DEVICE inline int mlffReplicaChannel() {
    return threadIdx.x % MLFF_BLOCK;
}

/** Thread c's channel of atom a's four rows (s, v_x, v_y, v_z) to registers, and back (a < 0: nothing to store). */
DEVICE inline void mlffLoadRow(const MlffReplicaRows* rows, int a, real* x) {
    for (int q = 0; q < 4; q++)
        x[q] = rows[a][q][mlffReplicaChannel()];
}

DEVICE inline void mlffStoreRow(MlffReplicaRows* rows, int a, const real* x) {
    if (a >= 0)
        for (int q = 0; q < 4; q++)
            rows[a][q][mlffReplicaChannel()] = x[q];
}

// Atoms whose rows a thread loads from global memory before it stores any (to shared memory or,
// at the end of the backward pass, its results): one wait on memory for the group, not one an atom.
#define MLFF_LOAD_GROUP (MLFF_REPLICA_ATOMS < 12 ? MLFF_REPLICA_ATOMS : 12)

/** Thread c's rows of the block's input features of the replica's atoms (s, then v). */
DEVICE inline void mlffLoadReplicaInput(int layer, int first, int count, const real* RESTRICT params,
        const int* RESTRICT mlZ, const real* RESTRICT stateS, const real* RESTRICT stateV, MlffReplicaRows* input) {
    const int c = mlffReplicaChannel();
    for (int group = 0; group < count; group += MLFF_LOAD_GROUP) {
        real x[MLFF_LOAD_GROUP][4];
#pragma unroll
        for (int g = 0; g < MLFF_LOAD_GROUP; g++) {
            const int a = first + min(group + g, count - 1); // past the last: the last again, unused
            x[g][0] = mlffBlockInputS(params, mlZ, stateS, layer, a, c);
            for (int d = 0; d < 3; d++)
                x[g][1 + d] = mlffBlockInputV(stateV, layer, a, d, c);
        }
#pragma unroll
        for (int g = 0; g < MLFF_LOAD_GROUP; g++)
            if (group + g < count)
                mlffStoreRow(input, group + g, x[g]);
    }
}

/** Thread c's rows of dE/d(s', v') of the replica's atoms, into gradIn and gradOut alike. */
DEVICE inline void mlffLoadReplicaGradient(int first, int count, const real* RESTRICT gradInS,
        const real* RESTRICT gradInV, MlffReplicaRows* gradIn, MlffReplicaRows* gradOut) {
    const int c = mlffReplicaChannel();
    for (int group = 0; group < count; group += MLFF_LOAD_GROUP) {
        real g[MLFF_LOAD_GROUP][4];
#pragma unroll
        for (int k = 0; k < MLFF_LOAD_GROUP; k++) {
            const int a = first + min(group + k, count - 1); // past the last: the last again, unused
            g[k][0] = gradInS[(size_t) a * MLFF_H + c];
            for (int d = 0; d < 3; d++)
                g[k][1 + d] = gradInV[((size_t) a * 3 + d) * MLFF_H + c];
        }
#pragma unroll
        for (int k = 0; k < MLFF_LOAD_GROUP; k++)
            if (group + k < count) {
                mlffStoreRow(gradIn, group + k, g[k]);
                mlffStoreRow(gradOut, group + k, g[k]);
            }
    }
}

#ifdef MLFF_TABULATED
/**
 * The filters of pairs base .. base + MLFF_PAIR_BATCH - 1 for thread c's channel: w[b] = (w_s,
 * w_v1, w_v2) and, if dwdd is not null, dw/dd, from the block's table; without w_v1 (0, not read:
 * the first block's) unless WithV1. All 12 table loads of every pair (8 without w_v1) are issued
 * before any is used (a pair past the last reads the last pair's entries, unused), so that a
 * thread keeps them all in flight: the kernels wait on these loads.
 */
template <bool WithV1>
DEVICE inline void mlffPairFiltersOf(const real* RESTRICT blockTable, const MlffReplicaPairs& pairs, int base,
                                     real (*w)[3], real (*dwdd)[3]) {
    const int c = mlffReplicaChannel();
    MlffHermite hw[MLFF_PAIR_BATCH];
    real entries[MLFF_PAIR_BATCH][3][4];
#pragma unroll
    for (int b = 0; b < MLFF_PAIR_BATCH; b++) {
        hw[b] = mlffHermiteAt(pairs.geometry[min(base + b, pairs.count - 1)].w);
#pragma unroll
        for (int t = 0; t < 3; t++)
            if (WithV1 || t != 1)
                mlffTableEntries(blockTable, hw[b].node, t * MLFF_H + c, entries[b][t]);
    }
#pragma unroll
    for (int b = 0; b < MLFF_PAIR_BATCH; b++)
#pragma unroll
        for (int t = 0; t < 3; t++) {
            real* dw = dwdd == 0 ? (real*) 0 : &dwdd[b][t];
            if (WithV1 || t != 1) {
                mlffHermiteSum(hw[b], entries[b][t], &w[b][t], dw);
            } else {
                w[b][t] = 0;
                if (dw != 0)
                    *dw = 0;
            }
        }
}

/** mlffPairFiltersOf for block `layer`, with w_v1 where it uses it (mlffFilterKindUsed). */
DEVICE inline void mlffPairFilters(const real* RESTRICT blockTable, const MlffReplicaPairs& pairs, int base,
                                   int layer, real (*w)[3], real (*dwdd)[3]) {
    if (mlffFilterKindUsed(layer, 1))
        mlffPairFiltersOf<true>(blockTable, pairs, base, w, dwdd);
    else
        mlffPairFiltersOf<false>(blockTable, pairs, base, w, dwdd);
}
#else
/**
 * The filters of pairs base .. base + MLFF_PAIR_BATCH - 1 for thread c's channel, w[b] = (w_s,
 * w_v1, w_v2), from the replica's rows of block `layer`'s filters (3H a pair, from its first
 * pair's), all loaded before any is used (a pair past the last reads the last pair's row, unused).
 * In the first block w_v1 is 0, not read: it multiplies v = 0 there, and the filters' product
 * leaves it unwritten (mlffEdgeFilterFromBasis).
 */
DEVICE inline void mlffPairFilters(const real* RESTRICT replicaFilters, const MlffReplicaPairs& pairs, int base,
                                   int layer, real (*w)[3]) {
    const int c = mlffReplicaChannel();
#pragma unroll
    for (int b = 0; b < MLFF_PAIR_BATCH; b++) {
        const real* row = replicaFilters + (size_t) min(base + b, pairs.count - 1) * 3 * MLFF_H;
#pragma unroll
        for (int t = 0; t < 3; t++)
            w[b][t] = mlffFilterKindUsed(layer, t) ? row[t * MLFF_H + c] : 0;
    }
}
#endif

static_assert(MLFF_PAIR_BATCH * 4 == 32, "a batch's (dE/dd, dE/dn) are a warp's 32 lanes");

/** One halving step of mlffWarpSum32: a lane keeps the half of v selected by its lane bit Half. */
template <int Half>
DEVICE inline void mlffWarpHalve(real* v, int lane) {
    const bool upper = (lane & Half) != 0;
#pragma unroll
    for (int k = 0; k < Half; k++) {
        const real send = upper ? v[k] : v[k + Half];
        const real keep = upper ? v[k + Half] : v[k];
        v[k] = keep + __shfl_xor_sync(0xffffffffu, send, Half);
    }
}

/**
 * The warp's sum of each of a lane's 32 values value[b][q] (b < MLFF_PAIR_BATCH, q < 4), in 31
 * shuffles rather than 5 a value: each step hands half of the values still kept to the partner
 * lane, so lane l ends with the total of value l (b = l / 4, q = l % 4). Called by all 32 lanes.
 */
DEVICE inline real mlffWarpSum32(real (*value)[4]) {
    real v[32];
#pragma unroll
    for (int k = 0; k < 32; k++)
        v[k] = value[k / 4][k % 4];
    const int lane = threadIdx.x % 32;
    mlffWarpHalve<16>(v, lane);
    mlffWarpHalve<8>(v, lane);
    mlffWarpHalve<4>(v, lane);
    mlffWarpHalve<2>(v, lane);
    mlffWarpHalve<1>(v, lane);
    return v[0];
}

/** n(ij) = u / (d + eps) of a pair's geometry (u, d). */
DEVICE inline void mlffPairNormal(real4 g, real* n) {
    const real inv = 1 / (g.w + (real) MLFF_NORMAL_EPSILON);
    n[0] = g.x * inv;
    n[1] = g.y * inv;
    n[2] = g.z * inv;
}

/**
 * The filters of block `layer` that the replica's pairs read: the block's table (tabulated), or the
 * block's filter rows from the replica's first pair's (pairRowStart: edge_filters.cu's rows).
 */
DEVICE inline const real* mlffReplicaFilters(const real* RESTRICT filters, int layer, const int* RESTRICT pairRowStart,
                                             int replica) {
#ifdef MLFF_TABULATED
    (void) pairRowStart;
    (void) replica;
    return mlffBlockTable(filters, layer);
#else
    (void) layer; // the host passes this block's rows
    return filters + (size_t) pairRowStart[replica] * 3 * MLFF_H;
#endif
}

/**
 * The messages of block `layer`, a thread block per replica: midV and the update's input of
 * each of its atoms, as mlffMessagesForwardTiled. filters: the table (all blocks), or this block's
 * filter rows (pairRowStart: each replica's first; unused with a table).
 */
KERNEL void mlffMessagesForwardReplicas(int layer, const real* RESTRICT params, const real* RESTRICT filters,
        const int* RESTRICT pairRowStart, const int* RESTRICT replicaPairCount, const int2* RESTRICT replicaPairAtoms,
        const real4* RESTRICT replicaPairGeometry, const int* RESTRICT mlZ, const int* RESTRICT replicaStart,
        const real* RESTRICT stateS, const real* RESTRICT stateV, real* RESTRICT midV, real* RESTRICT updateInput) {
    mlffStartAfterPreviousLaunch();
    __shared__ MlffReplicaPairs pairs;
    extern __shared__ real mlffReplicaMemory[];
    MlffReplicaRows* input = reinterpret_cast<MlffReplicaRows*>(mlffReplicaMemory); // (A, 4, H)
    MlffReplicaRows* sum = input + MLFF_REPLICA_ATOMS;                              // (A, 4, H)
    const int replica = blockIdx.x;
    const int first = replicaStart[replica], count = replicaStart[replica + 1] - first;
    const int c = mlffReplicaChannel();
    const bool active = c < MLFF_H;
    if (active) {
        mlffLoadReplicaInput(layer, first, count, params, mlZ, stateS, stateV, input);
        for (int a = 0; a < count; a++)
            for (int q = 0; q < 4; q++)
                sum[a][q][c] = input[a][q][c]; // the residual
    }
    mlffLoadReplicaPairs(replica, replicaPairCount, replicaPairAtoms, replicaPairGeometry, &pairs);
    if (!active)
        return;
    const real* replicaFilters = mlffReplicaFilters(filters, layer, pairRowStart, replica);
    // Atom i's rows stay in registers for its run of pairs (i, j), so that a pair reads and writes
    // only j's in shared memory: no pair waits on the previous one's store to the same row.
    int runAtom = -1; // the i of the run of pairs (i, j) being walked
    real inputI[4], sumI[4];
    for (int base = 0; base < pairs.count; base += MLFF_PAIR_BATCH) {
        real w[MLFF_PAIR_BATCH][3];
#ifdef MLFF_TABULATED
        mlffPairFilters(replicaFilters, pairs, base, layer, w, (real(*)[3]) 0);
#else
        mlffPairFilters(replicaFilters, pairs, base, layer, w);
#endif
#pragma unroll
        for (int b = 0; b < MLFF_PAIR_BATCH; b++) {
            if (base + b >= pairs.count)
                break;
            const int i = pairs.atoms[base + b].x, j = pairs.atoms[base + b].y;
            if (i != runAtom) {
                mlffStoreRow(sum, runAtom, sumI);
                runAtom = i;
                mlffLoadRow(input, i, inputI);
                mlffLoadRow(sum, i, sumI);
            }
            real n[3];
            mlffPairNormal(pairs.geometry[base + b], n);
            const real ws = w[b][0], wv1 = w[b][1], wv2 = w[b][2];
            sumI[0] += input[j][0][c] * ws; // i <- j
            sum[j][0][c] += inputI[0] * ws; // j <- i, with n(ji) = -n(ij)
            for (int d = 0; d < 3; d++) {
                sumI[1 + d] += input[j][1 + d][c] * wv1 + n[d] * wv2;
                sum[j][1 + d][c] += inputI[1 + d] * wv1 - n[d] * wv2;
            }
        }
    }
    mlffStoreRow(sum, runAtom, sumI);
    for (int a = 0; a < count; a++) {
        const real vMid[3] = {sum[a][1][c], sum[a][2][c], sum[a][3][c]};
        mlffStoreMessages(first + a, layer, sum[a][0][c], vMid, midV, updateInput, c);
    }
}

/**
 * A warp's part of the end of the messages' backward: sums the totals of the batch from `base` of
 * the warps of the part that walked it (lane l holds value l of mlffWarpSum32: pair l / 4,
 * component l % 4), and for each pair (lane 4b, pair b) with a table adds its force to its two
 * atoms (forceRow: the replica's atoms' rows of OpenMM's force buffer); with filter rows adds its
 * dE/dn to its row of edgeGradN (xyz: summed over the blocks from the backward pass's first, whose w
 * starts the dE/dd that mlffAddPairGradient sums and turns into forces).
 */
DEVICE inline void mlffBatchEnd(const MlffReplicaPairs& pairs, int base, const real (*totals)[32], int layer,
        const int* forceRow, double forceScale, unsigned long long* RESTRICT forceBuffer, real4* RESTRICT pairGradN) {
    const int lane = threadIdx.x % 32;
    real total = 0;
    for (int w = 0; w < MLFF_BLOCK / 32; w++)
        total += totals[w][lane];
    const real gn0 = __shfl_xor_sync(0xffffffffu, total, 1); // lanes 4b + q hold (b, q)
    const real gn1 = __shfl_xor_sync(0xffffffffu, total, 2);
    const real gn2 = __shfl_xor_sync(0xffffffffu, total, 3);
    const int b = lane / 4;
    if (lane % 4 != 0 || base + b >= pairs.count)
        return;
#ifdef MLFF_TABULATED
    (void) layer;
    (void) pairGradN;
    const int2 ij = pairs.atoms[base + b];
    mlffAddEdgeForces(pairs.geometry[base + b], total, gn0, gn1, gn2, forceScale, forceRow[ij.x], forceRow[ij.y],
                      forceBuffer);
#else
    (void) forceRow;
    (void) forceScale;
    (void) forceBuffer;
    mlffAddGradN(layer, &pairGradN[base + b], gn0, gn1, gn2);
#endif
}

// A part's share of a replica's batches of pairs, at most (the parts take consecutive shares).
#define MLFF_PART_BATCHES ((MLFF_PAIR_BATCHES + MLFF_REPLICA_SPLIT - 1) / MLFF_REPLICA_SPLIT)

/** Part `part`'s share of n things, [*first, *end): consecutive shares of at most n / MLFF_REPLICA_SPLIT rounded up. */
DEVICE inline void mlffPartShare(int n, int part, int* first, int* end) {
    const int share = (n + MLFF_REPLICA_SPLIT - 1) / MLFF_REPLICA_SPLIT;
    *first = min(part * share, n);
    *end = min(*first + share, n);
}

/**
 * The messages' backward of block `layer`, a thread block per replica, as mlffMessagesBackwardTiled
 * (or, from filter rows, mlffMessagesBackwardRows): forces (or the pairs' dE/dw and dE/dn), then
 * (layer > 0) block layer-1's direct update backward of each atom. Per pair, with g = dE/d(s',
 * v'): dE/d(s, v) gathers g_j w(ij) into i and g_i w(ij) into j; dE/dw sums both edges' parts;
 * dE/dn(ij) = (gv_i - gv_j) w_v2, since n(ji) = -n(ij); the pair's dE/du goes to the forces of i
 * and j once. The block's MLFF_REPLICA_SPLIT parts (MLFF_BLOCK threads each) walk consecutive
 * shares of the batches of pairs, each gathering into its own gradOut; the warps walk them with no
 * barrier between batches (each keeps its sums of the batches' dE/dd, dE/dn), and sum them over
 * their part at the end. filters and pairRowStart as in mlffMessagesForwardReplicas; edgeGradFilter
 * and edgeGradN: the filter rows' (unused with a table).
 */
KERNEL void mlffMessagesBackwardReplicas(int layer, const real* RESTRICT params, const real* RESTRICT filters,
        const int* RESTRICT pairRowStart, const int* RESTRICT replicaPairCount, const int2* RESTRICT replicaPairAtoms,
        const real4* RESTRICT replicaPairGeometry, const int* RESTRICT mlZ, const int* RESTRICT replicaStart,
        const real* RESTRICT stateS, const real* RESTRICT stateV, const real* RESTRICT midV,
        const real* RESTRICT updateOutput, const real* RESTRICT gradInS, const real* RESTRICT gradInV,
        real* RESTRICT updateGradOutput, real* RESTRICT gradOutV,
        real* RESTRICT edgeGradFilter, real4* RESTRICT edgeGradN, const int* RESTRICT mlParticle,
        const int* RESTRICT sortedIndexOfParticle, const double* RESTRICT replicaScale, double lambdaForceScale,
        unsigned long long* RESTRICT forceBuffer) {
    mlffStartAfterPreviousLaunch();
    __shared__ MlffReplicaPairs pairs;
    __shared__ int forceRow[MLFF_REPLICA_ATOMS]; // each atom's row of OpenMM's force buffer
    extern __shared__ real mlffReplicaMemory[];
    MlffReplicaRows* input = reinterpret_cast<MlffReplicaRows*>(mlffReplicaMemory); // (A, 4, H)
    MlffReplicaRows* gradIn = input + MLFF_REPLICA_ATOMS;                           // (A, 4, H)
    MlffReplicaRows* gradOuts = gradIn + MLFF_REPLICA_ATOMS;                        // (MLFF_REPLICA_SPLIT, A, 4, H)
    const int replica = blockIdx.x;
    const int first = replicaStart[replica], count = replicaStart[replica + 1] - first;
    const int c = mlffReplicaChannel(), part = threadIdx.x / MLFF_BLOCK, lane = c % 32, warp = c / 32;
    const bool active = c < MLFF_H;
    MlffReplicaRows* gradOut = gradOuts + part * MLFF_REPLICA_ATOMS; // this part's
    if (active) {
        if (part == 0)
            mlffLoadReplicaInput(layer, first, count, params, mlZ, stateS, stateV, input);
        if (part == MLFF_REPLICA_SPLIT - 1)
            mlffLoadReplicaGradient(first, count, gradInS, gradInV, gradIn, gradOuts);
        if (part > 0)
            for (int a = 0; a < count; a++)
                for (int q = 0; q < 4; q++)
                    gradOut[a][q][c] = 0;
    }
    for (int a = threadIdx.x; a < count; a += blockDim.x)
        forceRow[a] = sortedIndexOfParticle[mlParticle[first + a]];
    // (ends with a barrier)
    mlffLoadReplicaPairs(replica, replicaPairCount, replicaPairAtoms, replicaPairGeometry, &pairs);
    const double forceScale = lambdaForceScale * replicaScale[replica];
    const real* replicaFilters = mlffReplicaFilters(filters, layer, pairRowStart, replica);
#ifndef MLFF_TABULATED
    real* replicaGradFilter = edgeGradFilter + (size_t) pairRowStart[replica] * 3 * MLFF_H; // (pairs, 3H)
    real4* replicaGradN = edgeGradN + pairRowStart[replica];
#else
    real4* replicaGradN = edgeGradN; // unused
#endif
    const int batches = (pairs.count + MLFF_PAIR_BATCH - 1) / MLFF_PAIR_BATCH;
    int firstBatch, endBatch;
    mlffPartShare(batches, part, &firstBatch, &endBatch);
    // This warp's sums of each of its part's batches' (dE/dd, dE/dn), lane l value l of
    // mlffWarpSum32, kept until the end, so that no barrier holds the warps together batch by batch.
    real batchTotal[MLFF_PART_BATCHES];
    // Atom i's rows stay in registers for its run of pairs (i, j), as in the forward pass.
    int runAtom = -1; // the i of the run of pairs (i, j) being walked
    real inputI[4], gradInI[4], gradOutI[4];
    for (int k = firstBatch; k < endBatch; k++) { // uniform across the part
        const int base = k * MLFF_PAIR_BATCH;
        real w[MLFF_PAIR_BATCH][3];
        real partial[MLFF_PAIR_BATCH][4]; // (dE/dd, dE/dn) of each pair, this thread's channel
#ifdef MLFF_TABULATED
        real dwdd[MLFF_PAIR_BATCH][3];
        if (active)
            mlffPairFilters(replicaFilters, pairs, base, layer, w, dwdd);
#else
        if (active)
            mlffPairFilters(replicaFilters, pairs, base, layer, w);
#endif
#pragma unroll
        for (int b = 0; b < MLFF_PAIR_BATCH; b++) {
            partial[b][0] = partial[b][1] = partial[b][2] = partial[b][3] = 0;
            if (!active || base + b >= pairs.count)
                continue;
            const int i = pairs.atoms[base + b].x, j = pairs.atoms[base + b].y;
            if (i != runAtom) {
                if (layer > 0)
                    mlffStoreRow(gradOut, runAtom, gradOutI);
                runAtom = i;
                mlffLoadRow(input, i, inputI);
                mlffLoadRow(gradIn, i, gradInI);
                if (layer > 0)
                    mlffLoadRow(gradOut, i, gradOutI);
            }
            real n[3], gradInJ[4], inputJ[4];
            mlffPairNormal(pairs.geometry[base + b], n);
            mlffLoadRow(gradIn, j, gradInJ);
            mlffLoadRow(input, j, inputJ);
            const real ws = w[b][0], wv1 = w[b][1], wv2 = w[b][2];
            if (layer > 0) { // the embedding and v = 0 have no gradient to pass on
                gradOutI[0] += gradInJ[0] * ws;
                gradOut[j][0][c] += gradInI[0] * ws;
                for (int d = 0; d < 3; d++) {
                    gradOutI[1 + d] += gradInJ[1 + d] * wv1;
                    gradOut[j][1 + d][c] += gradInI[1 + d] * wv1;
                }
            }
            const real gws = gradInI[0] * inputJ[0] + gradInJ[0] * inputI[0];
            real gwv1 = 0, gwv2 = 0;
#pragma unroll
            for (int d = 0; d < 3; d++) {
                const real gvDifference = gradInI[1 + d] - gradInJ[1 + d];
                gwv1 += gradInI[1 + d] * inputJ[1 + d] + gradInJ[1 + d] * inputI[1 + d];
                gwv2 += gvDifference * n[d];
                partial[b][1 + d] = gvDifference * wv2;
            }
#ifdef MLFF_TABULATED
            partial[b][0] = gws * dwdd[b][0] + gwv1 * dwdd[b][1] + gwv2 * dwdd[b][2];
#else
            real* gradW = replicaGradFilter + (size_t) (base + b) * 3 * MLFF_H; // dE/dw, for the filters' backward
            gradW[c] = gws;
            if (mlffFilterKindUsed(layer, 1)) // else 0, and no filters' backward reads it
                gradW[MLFF_H + c] = gwv1;
            gradW[2 * MLFF_H + c] = gwv2;
#endif
        }
        batchTotal[k - firstBatch] = mlffWarpSum32(partial);
    }
    if (active && layer > 0)
        mlffStoreRow(gradOut, runAtom, gradOutI);
    // The batches' sums over their parts: the warps' totals where input and gradIn were (no longer
    // read), as many batches at a time as fit (all of them unless H is small against the block),
    // then the block's warps take the batches in turn and finish them.
    constexpr int warps = MLFF_BLOCK / 32, totalsRoom = 2 * MLFF_REPLICA_ATOMS * 4 * MLFF_H / MLFF_BLOCK;
    static_assert(MLFF_REPLICA_ATOMS < 2 || totalsRoom > 0, "the room for one batch's totals (H >= 64 here)");
    constexpr int batchesAtOnce = totalsRoom > 0 ? totalsRoom : 1; // 0 only for replicas of one atom: no pairs
    real (*totals)[warps][32] = reinterpret_cast<real (*)[warps][32]>(mlffReplicaMemory);
    for (int from = 0; from < batches; from += batchesAtOnce) {
        const int chunk = min(batchesAtOnce, batches - from);
        __syncthreads(); // input and gradIn no longer read, or the previous chunk's totals summed
        for (int k = max(from, firstBatch); k < min(from + chunk, endBatch); k++)
            totals[k - from][warp][lane] = batchTotal[k - firstBatch];
        __syncthreads();
        for (int k = threadIdx.x / 32; k < chunk; k += MLFF_REPLICA_SPLIT * warps)
            mlffBatchEnd(pairs, (from + k) * MLFF_PAIR_BATCH, totals[k], layer, forceRow, forceScale, forceBuffer,
                         replicaGradN);
    }
    if (layer == 0)
        return;
    __syncthreads(); // every part's gradOut stored
    if (!active)
        return;
    // dE/d(s, v) of each atom, the parts' gradOut summed in order; each part takes a share of the atoms.
    int firstAtom, endAtom;
    mlffPartShare(count, part, &firstAtom, &endAtom);
    for (int group = firstAtom; group < endAtom; group += MLFF_LOAD_GROUP) {
        MlffUpdateDirectInputs in[MLFF_LOAD_GROUP];
#pragma unroll
        for (int g = 0; g < MLFF_LOAD_GROUP; g++) // past the share's last atom: that atom again, unused
            in[g] = mlffLoadUpdateDirectInputs(first + min(group + g, endAtom - 1), layer, midV, updateOutput, c);
#pragma unroll
        for (int g = 0; g < MLFF_LOAD_GROUP; g++) {
            const int a = group + g;
            if (a >= endAtom)
                break;
            real gradSum[4];
            mlffLoadRow(gradOuts, a, gradSum);
            for (int p = 1; p < MLFF_REPLICA_SPLIT; p++)
                for (int q = 0; q < 4; q++)
                    gradSum[q] += gradOuts[p * MLFF_REPLICA_ATOMS + a][q][c];
            const real gvOut[3] = {gradSum[1], gradSum[2], gradSum[3]};
            mlffUpdateBackwardDirectFrom(in[g], first + a, layer, params, gradSum[0], gvOut, updateGradOutput,
                                         gradOutV, c);
        }
    }
}

#ifndef MLFF_TABULATED
/** One block of MLFF_SCAN_THREADS (scan.cu): pairRowStart, each replica's first filter row (and the total at R). */
KERNEL void mlffScanReplicaPairs(const int* RESTRICT replicaPairCount, int* RESTRICT pairRowStart) {
    mlffStartAfterPreviousLaunch();
    const int rows = mlffExclusiveScan(MLFF_NUM_REPLICAS, MlffCounts{replicaPairCount}, MlffStarts{pairRowStart});
    if (threadIdx.x == 0)
        pairRowStart[MLFF_NUM_REPLICAS] = rows;
}

/**
 * A thread per pair slot: each pair's filter row, as edge_filters.cu's products and
 * mlffAddPairGradient read it, one edge row per filter row (filterEdges = (row, -1): a pair's dE/dn
 * and forces count once): the atoms (ML indices), u and d, and the radial basis. The warp writes its
 * 32 slots' basis together, a lane a value in turn (value K s + k of the warp's: slot s's value k),
 * so that consecutive lanes store consecutive floats: with a thread's K values stored in a row,
 * each of the warp's stores had touched 32 sectors (23.9 us at 1,024 exact benzenes); a thread a
 * value took 14.4 us, K times the threads, each loading its slot's count, row and geometry.
 */
KERNEL void mlffLinkReplicaPairRows(const real* RESTRICT params, const int* RESTRICT replicaStart,
        const int* RESTRICT pairRowStart, const int* RESTRICT replicaPairCount, const int2* RESTRICT replicaPairAtoms,
        const real4* RESTRICT replicaPairGeometry, int2* RESTRICT edgeAtoms, real4* RESTRICT edgeDelta,
        int2* RESTRICT filterEdges, real* RESTRICT edgeBasis) {
    mlffStartAfterPreviousLaunch();
    const size_t slot = (size_t) blockIdx.x * blockDim.x + threadIdx.x;
    const int replica = (int) (slot / MLFF_REPLICA_PAIRS), p = (int) (slot % MLFF_REPLICA_PAIRS);
    int row = -1; // none: a slot past the replica's pairs, or past the last replica
    real d = 0;
    if (replica < MLFF_NUM_REPLICAS && p < replicaPairCount[replica]) {
        row = pairRowStart[replica] + p;
        const int first = replicaStart[replica];
        const int2 ij = replicaPairAtoms[slot];
        const real4 g = replicaPairGeometry[slot];
        d = g.w;
        edgeAtoms[row] = make_int2(first + ij.x, first + ij.y);
        edgeDelta[row] = g;
        filterEdges[row] = make_int2(row, -1);
    }
    const int lane = threadIdx.x % 32; // the whole warp, to the end: the slots past the last are rows of none
    for (int value = lane; value < 32 * MLFF_K; value += 32) {
        const int s = value / MLFF_K, k = value % MLFF_K;
        const int rowOfS = __shfl_sync(0xffffffffu, row, s);
        const real dOfS = __shfl_sync(0xffffffffu, d, s);
        if (rowOfS >= 0)
            mlffRadialBasis(params, dOfS, k, &edgeBasis[(size_t) rowOfS * MLFF_K + k], 0);
    }
}
#endif

#endif
