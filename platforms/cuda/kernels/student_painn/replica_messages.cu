/*
 * student_painn/replica_messages.cu: the tiled path's messages, forward and backward, one thread
 * block per replica, for replicas of at most MLFF_REPLICA_ATOMS atoms with tabulated filters (the
 * host's choice: CudaCalcMLFFForceKernel::initialize). They replace mlffMessagesForwardTiled and
 * mlffMessagesBackwardTiled, one block per atom, which read every edge's filter from the table:
 * here each pair i < j within the cutoff reads it once for both of its edges (w(ij) = w(ji),
 * n(ji) = -n(ij)), and the replica's features sit in shared memory, not re-read from L2 for each
 * edge. Each atom still sums its messages in ascending neighbour order (the pairs are taken in
 * ascending (i, j): atom k's come from (0, k) .. (k - 1, k), then (k, k + 1) ..), as the list's.
 *
 * Thread c owns channel c of every atom of the replica (threads c >= MLFF_H only join the
 * barriers), so the features in shared memory need no barrier between pairs: only thread c
 * reads or writes column c. The pairs are found here, from OpenMM's positions, so the path needs
 * no neighbour search.
 *
 * Dynamic shared memory (the host sizes it: replicaRowsBytes an array), `real`, each (A, 4, H)
 * with A = MLFF_REPLICA_ATOMS and the 4 rows of an atom (s, v_x, v_y, v_z):
 *   forward:  input (the block's input features), sum (input plus the messages: s', v');
 *   backward: input, gradIn = dE/d(s', v'), gradOut = dE/d(s, v) (gradIn plus the gathered messages);
 *             after the pairs, input and gradIn hold the warps' sums of each batch of pairs.
 */
#if defined(MLFF_TABULATED) && defined(MLFF_REPLICA_ATOMS)

#define MLFF_REPLICA_PAIRS (MLFF_REPLICA_ATOMS * (MLFF_REPLICA_ATOMS - 1) / 2 + 1) // + 1: never empty
// Pairs whose table loads a thread issues together (backward: and whose dE/dd, dE/dn the block
// sums together): the loads are what the kernels wait on. H200, 1,024 benzenes, step us: 4 pairs
// 1,312, 8 pairs 1,245, 16 forward and 8 backward 1,250 (16 backward would take 244 registers).
#define MLFF_PAIR_BATCH 8
#define MLFF_PAIR_BATCHES ((MLFF_REPLICA_PAIRS + MLFF_PAIR_BATCH - 1) / MLFF_PAIR_BATCH)

typedef real MlffReplicaRows[4][MLFF_H]; // one atom's (s, v_x, v_y, v_z), by channel

/** The replica's pairs within the cutoff, (i, j) local with i < j, in ascending (i, j). */
struct MlffReplicaPairs {
    int count;
    int2 atoms[MLFF_REPLICA_PAIRS];
    real4 geometry[MLFF_REPLICA_PAIRS]; // (u, d), u = r_j - r_i
    real4 position[MLFF_REPLICA_ATOMS];
};

/**
 * Finds the pairs of the `count` atoms from `first` on: positions from OpenMM's, then warp 0
 * tests 32 (i, j) at a time and keeps the pairs in order. Called by all threads; ends with a barrier.
 */
DEVICE inline void mlffFindReplicaPairs(int first, int count, MlffSystemPositions pos, real4 boxA, real4 boxB,
                                        real4 boxC, real4 invBoxSize, MlffReplicaPairs* pairs) {
    for (int a = threadIdx.x; a < count; a += blockDim.x)
        pairs->position[a] = pos[first + a];
    __syncthreads();
    if (threadIdx.x < 32) {
        const int lane = threadIdx.x;
        int have = 0;
        for (int base = 0; base < count * count; base += 32) {
            const int t = base + lane, i = t / count, j = t % count;
            real ux = 0, uy = 0, uz = 0;
            bool edge = false;
            if (t < count * count && i < j) {
                mlffPairDelta(pairs->position[i], pairs->position[j], boxA, boxB, boxC, invBoxSize, &ux, &uy, &uz);
                edge = mlffIsEdge(ux, uy, uz);
            }
            const unsigned int mask = __ballot_sync(0xffffffffu, edge);
            if (edge) {
                const int slot = have + __popc(mask & ((1u << lane) - 1u));
                pairs->atoms[slot] = make_int2(i, j);
                pairs->geometry[slot] = make_real4(ux, uy, uz, sqrt(ux * ux + uy * uy + uz * uz));
            }
            have += __popc(mask);
        }
        if (lane == 0)
            pairs->count = have;
    }
    __syncthreads();
}

/** Thread c's channel of atom a's four rows (s, v_x, v_y, v_z) to registers, and back (a < 0: nothing to store). */
DEVICE inline void mlffLoadRow(const MlffReplicaRows* rows, int a, real* x) {
    for (int q = 0; q < 4; q++)
        x[q] = rows[a][q][threadIdx.x];
}

DEVICE inline void mlffStoreRow(MlffReplicaRows* rows, int a, const real* x) {
    if (a >= 0)
        for (int q = 0; q < 4; q++)
            rows[a][q][threadIdx.x] = x[q];
}

// Atoms whose rows a thread loads from global memory before it stores any (to shared memory or,
// at the end of the backward pass, its results): one wait on memory for the group, not one an atom.
#define MLFF_LOAD_GROUP (MLFF_REPLICA_ATOMS < 12 ? MLFF_REPLICA_ATOMS : 12)

/** Thread c's rows of the block's input features of the replica's atoms (s, then v). */
DEVICE inline void mlffLoadReplicaInput(int layer, int first, int count, const real* RESTRICT params,
        const int* RESTRICT mlZ, const real* RESTRICT stateS, const real* RESTRICT stateV, MlffReplicaRows* input) {
    const int c = threadIdx.x;
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
    const int c = threadIdx.x;
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

/**
 * The filters of pairs base .. base + MLFF_PAIR_BATCH - 1 for thread c's channel: w[b] = (w_s,
 * w_v1, w_v2) and, if dwdd is not null, dw/dd. All 12 table loads of every pair are issued before
 * any is used (a pair past the last reads the last pair's entries, unused), so that a thread keeps
 * them all in flight: the kernels wait on these loads.
 */
DEVICE inline void mlffPairFilters(const real* RESTRICT blockTable, const MlffReplicaPairs& pairs, int base,
                                   real (*w)[3], real (*dwdd)[3]) {
    const int c = threadIdx.x;
    MlffHermite hw[MLFF_PAIR_BATCH];
    real entries[MLFF_PAIR_BATCH][3][4];
#pragma unroll
    for (int b = 0; b < MLFF_PAIR_BATCH; b++) {
        hw[b] = mlffHermiteAt(pairs.geometry[min(base + b, pairs.count - 1)].w);
#pragma unroll
        for (int t = 0; t < 3; t++)
            mlffTableEntries(blockTable, hw[b].node, t * MLFF_H + c, entries[b][t]);
    }
#pragma unroll
    for (int b = 0; b < MLFF_PAIR_BATCH; b++)
#pragma unroll
        for (int t = 0; t < 3; t++)
            mlffHermiteSum(hw[b], entries[b][t], &w[b][t], dwdd == 0 ? (real*) 0 : &dwdd[b][t]);
}

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
 * The messages of block `layer`, a thread block per replica: midS, midV and the update's input of
 * each of its atoms, as mlffMessagesForwardTiled.
 */
KERNEL void mlffMessagesForwardReplicas(int layer, const real* RESTRICT params, const real* RESTRICT filterTable,
        const real4* RESTRICT posq, const int* RESTRICT sortedIndexOfParticle, const int* RESTRICT mlParticle,
        const int* RESTRICT mlZ, const int* RESTRICT replicaStart, real4 boxA, real4 boxB, real4 boxC,
        real4 invBoxSize, const real* RESTRICT stateS, const real* RESTRICT stateV, real* RESTRICT midS,
        real* RESTRICT midV, real* RESTRICT updateInput) {
    mlffStartAfterPreviousLaunch();
    __shared__ MlffReplicaPairs pairs;
    extern __shared__ real mlffReplicaMemory[];
    MlffReplicaRows* input = reinterpret_cast<MlffReplicaRows*>(mlffReplicaMemory); // (A, 4, H)
    MlffReplicaRows* sum = input + MLFF_REPLICA_ATOMS;                              // (A, 4, H)
    const int first = replicaStart[blockIdx.x], count = replicaStart[blockIdx.x + 1] - first;
    const int c = threadIdx.x;
    const bool active = c < MLFF_H;
    if (active) {
        mlffLoadReplicaInput(layer, first, count, params, mlZ, stateS, stateV, input);
        for (int a = 0; a < count; a++)
            for (int q = 0; q < 4; q++)
                sum[a][q][c] = input[a][q][c]; // the residual
    }
    const MlffSystemPositions pos = {posq, sortedIndexOfParticle, mlParticle};
    mlffFindReplicaPairs(first, count, pos, boxA, boxB, boxC, invBoxSize, &pairs);
    if (!active)
        return;
    const real* blockTable = mlffBlockTable(filterTable, layer);
    // Atom i's rows stay in registers for its run of pairs (i, j), so that a pair reads and writes
    // only j's in shared memory: no pair waits on the previous one's store to the same row.
    int runAtom = -1; // the i of the run of pairs (i, j) being walked
    real inputI[4], sumI[4];
    for (int base = 0; base < pairs.count; base += MLFF_PAIR_BATCH) {
        real w[MLFF_PAIR_BATCH][3];
        mlffPairFilters(blockTable, pairs, base, w, (real(*)[3]) 0);
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
        mlffStoreMessages(first + a, layer, sum[a][0][c], vMid, midS, midV, updateInput);
    }
}

/**
 * A warp's part of the end of the messages' backward: sums the warps' totals of the batch from
 * `base` (lane l holds value l of mlffWarpSum32: pair l / 4, component l % 4) and adds each
 * pair's force to its two atoms (lane 4b, pair b). forceRow: the replica's atoms' rows of
 * OpenMM's force buffer.
 */
DEVICE inline void mlffAddBatchForces(const MlffReplicaPairs& pairs, int base, const real (*totals)[32],
        const int* forceRow, double forceScale, unsigned long long* RESTRICT forceBuffer) {
    const int lane = threadIdx.x % 32;
    real total = 0;
    for (int w = 0; w < MLFF_BLOCK / 32; w++)
        total += totals[w][lane];
    const real gn0 = __shfl_xor_sync(0xffffffffu, total, 1); // lanes 4b + q hold (b, q)
    const real gn1 = __shfl_xor_sync(0xffffffffu, total, 2);
    const real gn2 = __shfl_xor_sync(0xffffffffu, total, 3);
    const int b = lane / 4;
    if (lane % 4 == 0 && base + b < pairs.count) {
        const int2 ij = pairs.atoms[base + b];
        mlffAddEdgeForces(pairs.geometry[base + b], total, gn0, gn1, gn2, forceScale, forceRow[ij.x],
                          forceRow[ij.y], forceBuffer);
    }
}

/**
 * The messages' backward of block `layer`, a thread block per replica, as mlffMessagesBackwardTiled:
 * forces, then (layer > 0) block layer-1's direct update backward of each atom. Per pair, with
 * g = dE/d(s', v'): dE/d(s, v) gathers g_j w(ij) into i and g_i w(ij) into j; dE/dw sums both
 * edges' parts; dE/dn(ij) = (gv_i - gv_j) w_v2, since n(ji) = -n(ij); the pair's dE/du goes to
 * the forces of i and j once. The warps walk the pairs with no barrier between batches (each
 * keeps its sums of the batches' dE/dd, dE/dn), and sum them over the block at the end.
 */
KERNEL void mlffMessagesBackwardReplicas(int layer, const real* RESTRICT params, const real* RESTRICT filterTable,
        const real4* RESTRICT posq, const int* RESTRICT sortedIndexOfParticle, const int* RESTRICT mlParticle,
        const int* RESTRICT mlZ, const int* RESTRICT replicaStart, real4 boxA, real4 boxB, real4 boxC,
        real4 invBoxSize, const real* RESTRICT stateS, const real* RESTRICT stateV, const real* RESTRICT midV,
        const real* RESTRICT updateOutput, const real* RESTRICT gradInS, const real* RESTRICT gradInV,
        real* RESTRICT updateGradOutput, real* RESTRICT gradOutS, real* RESTRICT gradOutV,
        const double* RESTRICT replicaScale, double lambdaForceScale, unsigned long long* RESTRICT forceBuffer) {
    mlffStartAfterPreviousLaunch();
    __shared__ MlffReplicaPairs pairs;
    __shared__ int forceRow[MLFF_REPLICA_ATOMS]; // each atom's row of OpenMM's force buffer
    extern __shared__ real mlffReplicaMemory[];
    MlffReplicaRows* input = reinterpret_cast<MlffReplicaRows*>(mlffReplicaMemory); // (A, 4, H)
    MlffReplicaRows* gradIn = input + MLFF_REPLICA_ATOMS;                           // (A, 4, H)
    MlffReplicaRows* gradOut = gradIn + MLFF_REPLICA_ATOMS;                         // (A, 4, H)
    const int replica = blockIdx.x;
    const int first = replicaStart[replica], count = replicaStart[replica + 1] - first;
    const int c = threadIdx.x, lane = c % 32, warp = c / 32;
    const bool active = c < MLFF_H;
    if (active) {
        mlffLoadReplicaInput(layer, first, count, params, mlZ, stateS, stateV, input);
        mlffLoadReplicaGradient(first, count, gradInS, gradInV, gradIn, gradOut);
    }
    for (int a = threadIdx.x; a < count; a += blockDim.x)
        forceRow[a] = sortedIndexOfParticle[mlParticle[first + a]];
    const MlffSystemPositions pos = {posq, sortedIndexOfParticle, mlParticle};
    mlffFindReplicaPairs(first, count, pos, boxA, boxB, boxC, invBoxSize, &pairs); // ends with a barrier
    const double forceScale = lambdaForceScale * replicaScale[replica];
    const real* blockTable = mlffBlockTable(filterTable, layer);
    // This warp's sums of each batch's (dE/dd, dE/dn), lane l value l of mlffWarpSum32, kept until
    // the end, so that no barrier holds the warps together batch by batch.
    real batchTotal[MLFF_PAIR_BATCHES];
    // Atom i's rows stay in registers for its run of pairs (i, j), as in the forward pass.
    int runAtom = -1; // the i of the run of pairs (i, j) being walked
    real inputI[4], gradInI[4], gradOutI[4];
    for (int base = 0; base < pairs.count; base += MLFF_PAIR_BATCH) { // uniform across the block
        real w[MLFF_PAIR_BATCH][3], dwdd[MLFF_PAIR_BATCH][3];
        real partial[MLFF_PAIR_BATCH][4]; // (dE/dd, dE/dn) of each pair, this thread's channel
        if (active)
            mlffPairFilters(blockTable, pairs, base, w, dwdd);
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
            partial[b][0] = gws * dwdd[b][0] + gwv1 * dwdd[b][1] + gwv2 * dwdd[b][2];
        }
        batchTotal[base / MLFF_PAIR_BATCH] = mlffWarpSum32(partial);
    }
    if (active && layer > 0)
        mlffStoreRow(gradOut, runAtom, gradOutI);
    // The batches' sums over the block: the warps' totals where input and gradIn were (no longer
    // read), as many batches at a time as fit (all of them unless H is small against the block),
    // then the warps take the batches in turn and add their forces.
    constexpr int warps = MLFF_BLOCK / 32, totalsRoom = 2 * MLFF_REPLICA_ATOMS * 4 * MLFF_H / MLFF_BLOCK;
    static_assert(MLFF_REPLICA_ATOMS < 2 || totalsRoom > 0, "the room for one batch's totals (H >= 64 here)");
    constexpr int batchesAtOnce = totalsRoom > 0 ? totalsRoom : 1; // 0 only for replicas of one atom: no pairs
    real (*totals)[warps][32] = reinterpret_cast<real (*)[warps][32]>(mlffReplicaMemory);
    const int batches = (pairs.count + MLFF_PAIR_BATCH - 1) / MLFF_PAIR_BATCH;
    for (int from = 0; from < batches; from += batchesAtOnce) {
        const int chunk = min(batchesAtOnce, batches - from);
        __syncthreads(); // input and gradIn no longer read, or the previous chunk's totals summed
        for (int k = 0; k < chunk; k++)
            totals[k][warp][lane] = batchTotal[from + k];
        __syncthreads();
        for (int k = warp; k < chunk; k += warps)
            mlffAddBatchForces(pairs, (from + k) * MLFF_PAIR_BATCH, totals[k], forceRow, forceScale, forceBuffer);
    }
    if (layer == 0 || !active)
        return;
    for (int group = 0; group < count; group += MLFF_LOAD_GROUP) {
        MlffUpdateDirectInputs in[MLFF_LOAD_GROUP];
#pragma unroll
        for (int g = 0; g < MLFF_LOAD_GROUP; g++) // past the last atom: the last again, unused
            in[g] = mlffLoadUpdateDirectInputs(first + min(group + g, count - 1), layer, midV, updateOutput);
#pragma unroll
        for (int g = 0; g < MLFF_LOAD_GROUP; g++) {
            const int a = group + g;
            if (a >= count)
                break;
            const real gvOut[3] = {gradOut[a][1][c], gradOut[a][2][c], gradOut[a][3][c]};
            mlffUpdateBackwardDirectFrom(in[g], first + a, layer, params, gradOut[a][0][c], gvOut, updateGradOutput,
                                         gradOutS, gradOutV);
        }
    }
}

#endif
