/*
 * student_painn/replica_cluster.cu: a whole evaluation of small replicas in one launch, a cluster
 * of MLFF_CLUSTER thread blocks per replica (sm_90 and later: clusters and distributed shared
 * memory). The per-layer launches of the other paths cost a kernel boundary each (about 2 us) and
 * read every feature back from global memory; here a replica's features stay in its cluster's
 * shared memory from the positions to the forces, and the phases meet at block barriers and at
 * the exchanges of cluster_exchange.cu.
 *
 * Block r of replica R's cluster owns the MLFF_SLICE = H / MLFF_CLUSTER channels c = r S + slot,
 * slot < S, for every atom of the replica, and the filter and update outputs c, H + c and 2H + c
 * of those channels ("own outputs" o = kind S + slot):
 *   - every block finds the replica's pairs (i < j within the cutoff, in ascending order) from
 *     OpenMM's positions alike, and with exact filters their radial basis;
 *   - filters: exact, every block computes the filters' hidden layer for every channel (K inputs a
 *     channel: cheaper than an exchange) and its derivative by d (forward mode: d is one scalar),
 *     then its own outputs w and dw/dd from both; tabulated, its own outputs from the table;
 *   - messages: own channels from own channels, nothing to exchange;
 *   - the update mixes channels: two exchanges a layer forward (its input, its hidden layer) and
 *     two backward (the gradients of its output and of its hidden layer); each block computes its
 *     own outputs of a layer from all of the layer's inputs (a warp an output, its lanes the inputs);
 *   - the readout: from every channel of the last s (one exchange), in every block alike;
 *   - backward: own channels; each pair's dE/dd = sum over own outputs of dE/dw dw/dd (so the
 *     filter network has no backward pass) and dE/dn, summed over the layers, turned into forces
 *     and summed over each atom's pairs in the block, then added to OpenMM's fixed-point buffer
 *     (integer adds: the blocks' parts may arrive in any order and the forces stay bitwise
 *     reproducible);
 *   - the last replica to finish (an atomic count) reduces the energies (mlffReduceEnergiesInBlock).
 * Sums run in a fixed order everywhere; the results agree with the other paths to rounding.
 *
 * Compile-time constants besides layers.cu's: MLFF_CLUSTER (blocks a replica), MLFF_REPLICA_ATOMS
 * (the largest replica), MLFF_REPLICA_CLUSTER_SHARED_BYTES (the host's bound on this file's dynamic
 * shared memory, which it allocates). Grid MLFF_NUM_REPLICAS x MLFF_CLUSTER blocks of MLFF_BLOCK
 * threads; MLFF_NUM_REPLICAS < 32 (the energies are reduced by one block).
 */

#define MLFF_SLICE (MLFF_H / MLFF_CLUSTER) // as cluster.cu's
#define MLFF_OWN_OUTPUTS (3 * MLFF_SLICE)
#define MLFF_WARPS (MLFF_BLOCK / 32)
#define MLFF_CLUSTER_PAIRS (MLFF_REPLICA_ATOMS * (MLFF_REPLICA_ATOMS - 1) / 2)
// Pairs rounded up to whole fours (at least one): the filters' products take four pairs a thread.
#define MLFF_PAIR_SLOTS (MLFF_CLUSTER_PAIRS > 0 ? (MLFF_CLUSTER_PAIRS + 3) / 4 * 4 : 4)
static_assert(MLFF_H % MLFF_CLUSTER == 0 && (MLFF_SLICE & (MLFF_SLICE - 1)) == 0 && MLFF_SLICE <= 32,
              "a block owns a power of two of channels, at most a warp's lanes (the pairs' sums over them)");
static_assert(MLFF_BLOCK % MLFF_H == 0, "each thread keeps one channel's weights of the filters' hidden layer");
static_assert(MLFF_REPLICA_ATOMS <= 32, "a warp's lanes sum for every atom of a replica at once (mlffWarpSumsByLane)");

/** The atoms a warp sums for at once: MLFF_REPLICA_ATOMS rounded up to a power of two. */
#define MLFF_ATOM_SUMS                                                                                             \
    (MLFF_REPLICA_ATOMS <= 1 ? 1 : MLFF_REPLICA_ATOMS <= 2 ? 2 : MLFF_REPLICA_ATOMS <= 4 ? 4 :                   \
     MLFF_REPLICA_ATOMS <= 8 ? 8 : MLFF_REPLICA_ATOMS <= 16 ? 16 : 32)

/**
 * The sums over a warp's lanes of v[k] for every k < V (a power of two, at most 32), lane l
 * ending with the sum of k = l / (32 / V): at each step a lane keeps half of its values and adds
 * its partner's (lane ^ offset) copy of that half, sending it the other half; then, where V < 32,
 * a butterfly over the lanes that hold the same k. V - 1 + log2(32 / V) shuffles, independent
 * within a step, where a butterfly per sum would take 5 V in a dependent chain. The order is
 * fixed, and the lanes that hold a sum hold the same bits.
 */
template <int V>
DEVICE inline real mlffWarpSumsByLane(real* v) {
    const int lane = threadIdx.x % 32;
    int offset = 16;
#pragma unroll
    for (int n = V; n > 1; n /= 2, offset /= 2) {
        const bool upper = (lane & offset) != 0;
#pragma unroll
        for (int k = 0; k < n / 2; k++) {
            const real send = upper ? v[k] : v[k + n / 2];
            const real keep = upper ? v[k + n / 2] : v[k];
            v[k] = keep + __shfl_xor_sync(0xffffffffu, send, offset);
        }
    }
    real total = v[0];
#pragma unroll
    for (; offset > 0; offset /= 2)
        total += __shfl_xor_sync(0xffffffffu, total, offset);
    return total;
}

/** The exchanged arrays, each with its mbarrier. */
enum MlffReplicaExchange { MLFF_SEND_INPUT, MLFF_SEND_ACTIVATION, MLFF_SEND_S_OUT, MLFF_SEND_GRAD_OUTPUT,
                           MLFF_SEND_GRAD_HIDDEN, MLFF_REPLICA_EXCHANGES };

/** A block's shared memory for the whole launch (dynamic). Rows of own channels are indexed [atom][slot]. */
struct MlffReplicaClusterShared {
    // Written by every block of the cluster (mlffClusterSend). The backward's arrays share the
    // forward's: a block sends its first backward exchange only after it has the readout's s of
    // every block, which each sends once it has read its forward arrays for the last time.
    union {
        real input[MLFF_REPLICA_ATOMS][2 * MLFF_H];      // the update's input concat(s', m)
        real gradOutput[MLFF_REPLICA_ATOMS][3 * MLFF_H]; // dE/d(a, g1, g2)
    };
    union {
        real activation[MLFF_REPLICA_ATOMS][MLFF_H]; // SiLU(hidden) of the update
        real gradHidden[MLFF_REPLICA_ATOMS][MLFF_H]; // dE/dhidden
    };
    real sOut[MLFF_REPLICA_ATOMS][MLFF_H]; // the last block's s, the readout's input

    // Own channels.
    real s[MLFF_L + 1][MLFF_REPLICA_ATOMS][MLFF_SLICE];   // each block's input; s[L] the last block's output
    real v[MLFF_L][MLFF_REPLICA_ATOMS][3][MLFF_SLICE];    // each block's input (the last block's v out is dead)
    real sMid[MLFF_REPLICA_ATOMS][MLFF_SLICE];            // s' of the block being computed
    real vMid[MLFF_L][MLFF_REPLICA_ATOMS][3][MLFF_SLICE]; // each block's v', for its update's backward
    real kept[MLFF_L][3][MLFF_REPLICA_ATOMS][MLFF_SLICE]; // each block's update: hidden (before SiLU), g1, g2
    real updateOut[3][MLFF_REPLICA_ATOMS][MLFF_SLICE];    // (a, g1, g2); backward, dE/dhidden and dE/d(s', m)
    real gradS[MLFF_REPLICA_ATOMS][MLFF_SLICE];           // dE/d(s, v) of a block's output, then of its input
    real gradV[MLFF_REPLICA_ATOMS][3][MLFF_SLICE];
    real gradSMid[MLFF_REPLICA_ATOMS][MLFF_SLICE];        // dE/d(s', v') of a block
    real gradVMid[MLFF_REPLICA_ATOMS][3][MLFF_SLICE];
    // Each block's own filter outputs w, then dw/dd (four pairs a vector: MlffRealVector<4>'s alignment).
    alignas(4 * sizeof(real)) real filter[MLFF_L][2][MLFF_OWN_OUTPUTS][MLFF_PAIR_SLOTS];

    // The readout, every channel, every atom.
    real head0[MLFF_REPLICA_ATOMS][MLFF_H / 2];     // its first layer before SiLU, then dE/d of it
    real act0[MLFF_REPLICA_ATOMS][MLFF_H / 2];      // after SiLU
    real act1[MLFF_REPLICA_ATOMS][MLFF_H / 4];      // the second layer after SiLU
    real grad1[MLFF_REPLICA_ATOMS][MLFF_H / 4];     // dE/d of the second layer before SiLU

#ifndef MLFF_TABULATED
    alignas(4 * sizeof(real)) real basis[MLFF_K][MLFF_PAIR_SLOTS];     // e, pair-minor
    alignas(4 * sizeof(real)) real basisGrad[MLFF_K][MLFF_PAIR_SLOTS]; // de/dd
    alignas(4 * sizeof(real)) real hidden[MLFF_H][MLFF_PAIR_SLOTS];    // the filters' hidden layer after SiLU
    alignas(4 * sizeof(real)) real hiddenGrad[MLFF_H][MLFF_PAIR_SLOTS]; // and its derivative by d
    real w2[MLFF_H][MLFF_OWN_OUTPUTS];        // own rows of the filters' W2, transposed
#endif

    // The pairs: (i, j) with i < j, u = r_j - r_i and d (d = cutoff past the pairs found).
    real4 geometry[MLFF_PAIR_SLOTS];
    real pairGrad[MLFF_PAIR_SLOTS][4];              // own channels' dE/dd, dE/dn; then dE/du
    int2 pairAtoms[MLFF_PAIR_SLOTS];
    int atomPairs[MLFF_REPLICA_ATOMS][MLFF_REPLICA_ATOMS]; // atom i's pairs by neighbour (mlffNeighborCode)
    int atomPairCount[MLFF_REPLICA_ATOMS];
    real4 position[MLFF_REPLICA_ATOMS];
    int warpCounts[MLFF_WARPS];
    int pairCount;
    int reducesEnergies; // whether this block is the last of the launch's to finish (rank 0 blocks)
    unsigned long long arrived[MLFF_REPLICA_EXCHANGES]; // the exchanges' mbarriers
};
static_assert(sizeof(MlffReplicaClusterShared) <= MLFF_REPLICA_CLUSTER_SHARED_BYTES,
              "the host's bound on the shared memory (CudaCalcMLFFForceKernel::replicaClusterSharedBytes)");

/** The bytes each exchange of array x brings a block: the replica's atoms' rows. */
DEVICE inline unsigned int mlffReplicaExchangeBytes(int x, int atoms) {
    const int reals = x == MLFF_SEND_INPUT ? 2 * MLFF_H : x == MLFF_SEND_GRAD_OUTPUT ? 3 * MLFF_H : MLFF_H;
    return (unsigned int) (atoms * reals * sizeof(real));
}

/**
 * Waits for exchange number `use` (0, 1, ...) of array x, then a barrier; arms the array's next
 * exchange if there is one (after the barrier: every thread has seen this phase complete).
 */
DEVICE inline void mlffReplicaReceive(MlffReplicaClusterShared& sh, int x, int use, bool another, int atoms) {
    mlffClusterReceive(&sh.arrived[x], use & 1);
    if (another && threadIdx.x == 0)
        mlffExpectBytes(&sh.arrived[x], mlffReplicaExchangeBytes(x, atoms));
}

/**
 * A warp's outputs of a small product: y = bias[row] + sum_x w[row][x] X[i][x] (w row-major, I
 * columns, global; X rows of I reals, shared) for output o = warp + n WARPS < outputs (row(o)) and
 * every atom i < atoms. Load() the weights first (lane: inputs lane + 32 k), so that they arrive
 * during a wait; then apply(): each lane's part of every atom's sum, in its inputs' order, then the
 * sums over the lanes (mlffWarpSumsByLane), and store(i, o, y) by one lane an atom.
 */
template <int I, int MaxOutputs>
struct MlffWarpRows {
    static constexpr int PerLane = (I + 31) / 32, PerWarp = (MaxOutputs + MLFF_WARPS - 1) / MLFF_WARPS;
    real w[PerWarp][PerLane];
    real bias[PerWarp];

    template <class Row>
    DEVICE void load(const real* RESTRICT m, const real* RESTRICT b, int outputs, Row row) {
        const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
#pragma unroll
        for (int n = 0; n < PerWarp; n++) {
            const int o = warp + n * MLFF_WARPS;
            const real* r = m + (size_t) (o < outputs ? row(o) : 0) * I;
#pragma unroll
            for (int k = 0; k < PerLane; k++)
                w[n][k] = o < outputs && lane + 32 * k < I ? r[lane + 32 * k] : 0;
            bias[n] = o < outputs && b != 0 ? b[row(o)] : 0;
        }
    }

    template <class Store>
    DEVICE void apply(const real* x, int outputs, int atoms, Store store) const {
        constexpr int V = MLFF_ATOM_SUMS;
        const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
#pragma unroll
        for (int n = 0; n < PerWarp; n++) {
            const int o = warp + n * MLFF_WARPS;
            if (o >= outputs)
                break;
            real sum[V];
#pragma unroll
            for (int i = 0; i < V; i++)
                sum[i] = 0;
#pragma unroll
            for (int k = 0; k < PerLane; k++)
                if (lane + 32 * k < I)
#pragma unroll
                    for (int i = 0; i < V; i++)
                        if (i < atoms)
                            sum[i] += w[n][k] * x[i * I + lane + 32 * k];
            const real total = mlffWarpSumsByLane<V>(sum);
            const int i = lane / (32 / V);
            if (lane % (32 / V) == 0 && i < atoms)
                store(i, o, bias[n] + total);
        }
    }
};

/** A pair p of atom i's, with its other atom j and whether i is the pair's j (n(ij) then flips), in one int. */
DEVICE inline int mlffNeighborCode(int p, int j, bool flip) {
    return p << 6 | (flip ? 32 : 0) | j;
}

DEVICE inline int mlffCodePair(int code) {
    return code >> 6;
}

DEVICE inline int mlffCodeAtom(int code) {
    return code & 31;
}

DEVICE inline bool mlffCodeFlips(int code) {
    return (code & 32) != 0;
}

/** Row of own output o (kind S + slot) in a matrix of 3H rows (kind H + c), for this block. */
DEVICE inline int mlffOwnRow(int o) {
    return (o / MLFF_SLICE) * MLFF_H + mlffClusterRank() * MLFF_SLICE + o % MLFF_SLICE;
}

/**
 * The replica's atoms' positions, its pairs within the cutoff in ascending (i, j), each atom's
 * pairs in ascending neighbour order, and with exact filters each pair's basis. Every block alike.
 */
DEVICE inline void mlffReplicaPairs(MlffReplicaClusterShared& sh, const real* RESTRICT params, MlffSystemPositions pos,
        int first, int atoms, real4 boxA, real4 boxB, real4 boxC, real4 invBoxSize) {
    const int t = threadIdx.x, lane = t % 32, warp = t / 32;
    for (int i = t; i < atoms; i += MLFF_BLOCK)
        sh.position[i] = pos[first + i];
    __syncthreads();
    int found = 0;
    for (int base = 0; base < atoms * atoms; base += MLFF_BLOCK) { // candidates i atoms + j, in order
        const int q = base + t, i = q / atoms, j = q % atoms;
        real ux = 0, uy = 0, uz = 0;
        bool edge = false;
        if (q < atoms * atoms && i < j) {
            mlffPairDelta(sh.position[i], sh.position[j], boxA, boxB, boxC, invBoxSize, &ux, &uy, &uz);
            edge = mlffIsEdge(ux, uy, uz);
        }
        const unsigned int ballot = __ballot_sync(0xffffffffu, edge);
        if (lane == 0)
            sh.warpCounts[warp] = __popc(ballot);
        __syncthreads();
        int index = found + __popc(ballot & ((1u << lane) - 1u));
        for (int w = 0; w < MLFF_WARPS; w++) {
            index += w < warp ? sh.warpCounts[w] : 0;
            found += sh.warpCounts[w];
        }
        if (edge) {
            sh.pairAtoms[index] = make_int2(i, j);
            sh.geometry[index] = make_real4(ux, uy, uz, sqrt(ux * ux + uy * uy + uz * uz));
        }
        __syncthreads(); // warpCounts is rewritten
    }
    for (int p = found + t; p < MLFF_PAIR_SLOTS; p += MLFF_BLOCK) {
        sh.pairAtoms[p] = make_int2(0, 0);
        sh.geometry[p] = make_real4(0, 0, 0, (real) MLFF_CUTOFF); // finite filters, never used
    }
    for (int i = t; i < atoms; i += MLFF_BLOCK) {
        int n = 0;
        for (int p = 0; p < found; p++) {
            const int2 ij = sh.pairAtoms[p];
            if (ij.x == i || ij.y == i)
                sh.atomPairs[i][n++] = mlffNeighborCode(p, ij.x == i ? ij.y : ij.x, ij.y == i);
        }
        sh.atomPairCount[i] = n;
    }
    if (t == 0)
        sh.pairCount = found;
    __syncthreads();
#ifndef MLFF_TABULATED
    for (int index = t; index < MLFF_K * MLFF_PAIR_SLOTS; index += MLFF_BLOCK) {
        const int k = index / MLFF_PAIR_SLOTS, p = index % MLFF_PAIR_SLOTS;
        mlffRadialBasis(params, sh.geometry[p].w, k, &sh.basis[k][p], &sh.basisGrad[k][p]);
    }
#else
    (void) params;
#endif
    __syncthreads();
}

/** Block `layer`'s own filter outputs w and dw/dd of every pair (quads < ceil(pairs / 4)) into sh.filter[layer]. */
DEVICE inline void mlffReplicaFilters(MlffReplicaClusterShared& sh, const real* RESTRICT block,
                                      const real* RESTRICT blockTable, int layer, int pairs) {
    const int t = threadIdx.x;
#ifdef MLFF_TABULATED
    (void) block;
    for (int index = t; index < MLFF_OWN_OUTPUTS * pairs; index += MLFF_BLOCK) {
        const int o = index % MLFF_OWN_OUTPUTS, p = index / MLFF_OWN_OUTPUTS;
        mlffTableOutput(blockTable, mlffHermiteAt(sh.geometry[p].w), mlffOwnRow(o), &sh.filter[layer][0][o][p],
                        &sh.filter[layer][1][o][p]);
    }
#else
    (void) blockTable;
    const int quads = (pairs + 3) / 4;
    // The hidden layer and its derivative by d for channel c = t % H (its W0 column in registers),
    // four pairs at a time: SiLU(z) and SiLU'(z) dz/dd, z = W0 e + b0.
    {
        const int c = t % MLFF_H;
        real w0[MLFF_K];
#pragma unroll
        for (int k = 0; k < MLFF_K; k++)
            w0[k] = block[MLFF_B_FILTER_W0T + k * MLFF_H + c];
        const real b0 = block[MLFF_B_FILTER_B0 + c];
        for (int index = t; index < MLFF_OWN_OUTPUTS * MLFF_H; index += MLFF_BLOCK) { // own rows of W2, transposed
            const int o = index / MLFF_H, k = index % MLFF_H;
            sh.w2[k][o] = block[MLFF_B_FILTER_W2 + (size_t) mlffOwnRow(o) * MLFF_H + k];
        }
        for (int quad = t / MLFF_H; quad < quads; quad += MLFF_BLOCK / MLFF_H) {
            real z[4] = {b0, b0, b0, b0}, dz[4] = {0, 0, 0, 0};
#pragma unroll
            for (int k = 0; k < MLFF_K; k++) {
                const MlffRealVector<4> e = *reinterpret_cast<const MlffRealVector<4>*>(&sh.basis[k][4 * quad]);
                const MlffRealVector<4> g = *reinterpret_cast<const MlffRealVector<4>*>(&sh.basisGrad[k][4 * quad]);
#pragma unroll
                for (int q = 0; q < 4; q++) {
                    z[q] += w0[k] * e.v[q];
                    dz[q] += w0[k] * g.v[q];
                }
            }
            MlffRealVector<4> act, actGrad;
#pragma unroll
            for (int q = 0; q < 4; q++) {
                act.v[q] = mlffSilu(z[q]);
                actGrad.v[q] = mlffSiluGrad(z[q]) * dz[q];
            }
            *reinterpret_cast<MlffRealVector<4>*>(&sh.hidden[c][4 * quad]) = act;
            *reinterpret_cast<MlffRealVector<4>*>(&sh.hiddenGrad[c][4 * quad]) = actGrad;
        }
    }
    __syncthreads();
    // Own outputs: w = W2 hidden + b2 and dw/dd = W2 hiddenGrad, a thread an output and four pairs.
    for (int index = t; index < MLFF_OWN_OUTPUTS * quads; index += MLFF_BLOCK) {
        const int o = index % MLFF_OWN_OUTPUTS, quad = index / MLFF_OWN_OUTPUTS;
        const real b2 = block[MLFF_B_FILTER_B2 + mlffOwnRow(o)];
        real w[4] = {b2, b2, b2, b2}, dw[4] = {0, 0, 0, 0};
#pragma unroll 8
        for (int k = 0; k < MLFF_H; k++) {
            const real weight = sh.w2[k][o];
            const MlffRealVector<4> h = *reinterpret_cast<const MlffRealVector<4>*>(&sh.hidden[k][4 * quad]);
            const MlffRealVector<4> g = *reinterpret_cast<const MlffRealVector<4>*>(&sh.hiddenGrad[k][4 * quad]);
#pragma unroll
            for (int q = 0; q < 4; q++) {
                w[q] += weight * h.v[q];
                dw[q] += weight * g.v[q];
            }
        }
        MlffRealVector<4> wv, dwv;
#pragma unroll
        for (int q = 0; q < 4; q++) {
            wv.v[q] = w[q];
            dwv.v[q] = dw[q];
        }
        *reinterpret_cast<MlffRealVector<4>*>(&sh.filter[layer][0][o][4 * quad]) = wv;
        *reinterpret_cast<MlffRealVector<4>*>(&sh.filter[layer][1][o][4 * quad]) = dwv;
    }
#endif
    __syncthreads();
}

/** n(ij) of pair p seen from atom i: (u, d) of the pair, and whether i is its j (n then flips). */
DEVICE inline real mlffNormalSeenFrom(real4 g, int axis, bool flip) {
    const real n = mlffEdgeNormal(g, axis);
    return flip ? -n : n;
}

/**
 * Block `layer`'s messages of own channels: s'_i = s_i + sum_j s_j w_s, v'_i = v_i + sum_j (v_j
 * w_v1 + n(ij) w_v2), over i's pairs in neighbour order; a thread an (atom, s or v_a, channel).
 */
DEVICE inline void mlffReplicaMessages(MlffReplicaClusterShared& sh, int layer, int atoms) {
    const real(*w)[MLFF_PAIR_SLOTS] = sh.filter[layer][0];
    for (int index = threadIdx.x; index < atoms * 4 * MLFF_SLICE; index += MLFF_BLOCK) {
        const int slot = index % MLFF_SLICE, part = index / MLFF_SLICE % 4, i = index / (4 * MLFF_SLICE);
        real mid = part == 0 ? sh.s[layer][i][slot] : sh.v[layer][i][part - 1][slot];
#pragma unroll 4
        for (int n = 0; n < sh.atomPairCount[i]; n++) {
            const int code = sh.atomPairs[i][n], p = mlffCodePair(code), j = mlffCodeAtom(code);
            const bool flip = mlffCodeFlips(code);
            if (part == 0)
                mid += sh.s[layer][j][slot] * w[slot][p];
            else
                mid += sh.v[layer][j][part - 1][slot] * w[MLFF_SLICE + slot][p] +
                       mlffNormalSeenFrom(sh.geometry[p], part - 1, flip) * w[2 * MLFF_SLICE + slot][p];
        }
        if (part == 0)
            sh.sMid[i][slot] = mid;
        else
            sh.vMid[layer][i][part - 1][slot] = mid;
    }
    __syncthreads();
}

/** m of own channel slot of atom i in block `layer` (no epsilon). */
DEVICE inline real mlffReplicaNorm(const MlffReplicaClusterShared& sh, int layer, int i, int slot) {
    const real x = sh.vMid[layer][i][0][slot], y = sh.vMid[layer][i][1][slot], z = sh.vMid[layer][i][2][slot];
    return sqrt(x * x + y * y + z * z);
}

/** Block `layer`'s update, forward, own channels: s, v of block layer + 1 (s alone after the last), keeping what its backward needs. */
DEVICE inline void mlffReplicaUpdate(MlffReplicaClusterShared& sh, const real* RESTRICT block, int layer, int atoms) {
    const int rank = mlffClusterRank();
    MlffWarpRows<2 * MLFF_H, MLFF_SLICE> u0;
    u0.load(block + MLFF_B_UPDATE_W0, block + MLFF_B_UPDATE_B0, MLFF_SLICE,
            [&](int o) { return rank * MLFF_SLICE + o; });
    for (int index = threadIdx.x; index < atoms * MLFF_SLICE; index += MLFF_BLOCK) {
        const int i = index / MLFF_SLICE, slot = index % MLFF_SLICE, c = rank * MLFF_SLICE + slot;
        mlffClusterSend(&sh.input[0][0], i * 2 * MLFF_H + c, sh.sMid[i][slot], &sh.arrived[MLFF_SEND_INPUT]);
        mlffClusterSend(&sh.input[0][0], i * 2 * MLFF_H + MLFF_H + c, mlffReplicaNorm(sh, layer, i, slot),
                        &sh.arrived[MLFF_SEND_INPUT]);
    }
    MlffWarpRows<MLFF_H, MLFF_OWN_OUTPUTS> u2;
    u2.load(block + MLFF_B_UPDATE_W2, block + MLFF_B_UPDATE_B2, MLFF_OWN_OUTPUTS, [](int o) { return mlffOwnRow(o); });
    mlffReplicaReceive(sh, MLFF_SEND_INPUT, layer, layer + 1 < MLFF_L, atoms);
    u0.apply(&sh.input[0][0], MLFF_SLICE, atoms, [&](int i, int o, real y) {
        sh.kept[layer][0][i][o] = y;
        mlffClusterSend(&sh.activation[0][0], i * MLFF_H + rank * MLFF_SLICE + o, mlffSilu(y),
                        &sh.arrived[MLFF_SEND_ACTIVATION]);
    });
    mlffReplicaReceive(sh, MLFF_SEND_ACTIVATION, layer, layer + 1 < MLFF_L, atoms);
    u2.apply(&sh.activation[0][0], MLFF_OWN_OUTPUTS, atoms,
             [&](int i, int o, real y) { sh.updateOut[o / MLFF_SLICE][i][o % MLFF_SLICE] = y; });
    __syncthreads();
    for (int index = threadIdx.x; index < atoms * MLFF_SLICE; index += MLFF_BLOCK) {
        const int i = index / MLFF_SLICE, slot = index % MLFF_SLICE;
        const real g1 = sh.updateOut[1][i][slot], g2 = sh.updateOut[2][i][slot];
        sh.s[layer + 1][i][slot] = sh.sMid[i][slot] + sh.updateOut[0][i][slot];
        sh.kept[layer][1][i][slot] = g1;
        sh.kept[layer][2][i][slot] = g2;
        if (layer + 1 < MLFF_L) {
            real vMid[3], vOut[3];
            for (int a = 0; a < 3; a++)
                vMid[a] = sh.vMid[layer][i][a][slot];
            mlffUpdateVector(block, vMid, g1, g2, vOut);
            for (int a = 0; a < 3; a++)
                sh.v[layer + 1][i][a][slot] = vOut[a];
        }
    }
    __syncthreads();
}

/**
 * The readout of every atom from every channel of the last s (exchanged), in every block: each
 * atom's energy (eV; rank 0 stores it into atomEnergy) and dE/ds of own channels into sh.gradS
 * (sh.gradV = 0: the last block's v is dead).
 */
DEVICE inline void mlffReplicaReadout(MlffReplicaClusterShared& sh, const real* RESTRICT params, int atoms,
                                      real* RESTRICT atomEnergy) {
    const int rank = mlffClusterRank();
    for (int index = threadIdx.x; index < atoms * MLFF_SLICE; index += MLFF_BLOCK) {
        const int i = index / MLFF_SLICE, slot = index % MLFF_SLICE;
        mlffClusterSend(&sh.sOut[0][0], i * MLFF_H + rank * MLFF_SLICE + slot, sh.s[MLFF_L][i][slot],
                        &sh.arrived[MLFF_SEND_S_OUT]);
        for (int a = 0; a < 3; a++)
            sh.gradV[i][a][slot] = 0;
    }
    const auto identity = [](int o) { return o; };
    MlffWarpRows<MLFF_H, MLFF_H / 2> head0;
    head0.load(params + MLFF_P_HEAD_W0, params + MLFF_P_HEAD_B0, MLFF_H / 2, identity);
    mlffReplicaReceive(sh, MLFF_SEND_S_OUT, 0, false, atoms);
    head0.apply(&sh.sOut[0][0], MLFF_H / 2, atoms, [&](int i, int o, real y) {
        sh.head0[i][o] = y;
        sh.act0[i][o] = mlffSilu(y);
    });
    __syncthreads();
    MlffWarpRows<MLFF_H / 2, MLFF_H / 4> head2;
    head2.load(params + MLFF_P_HEAD_W2, params + MLFF_P_HEAD_B2, MLFF_H / 4, identity);
    head2.apply(&sh.act0[0][0], MLFF_H / 4, atoms, [&](int i, int o, real y) {
        sh.act1[i][o] = mlffSilu(y);
        sh.grad1[i][o] = params[MLFF_P_HEAD_W4 + o] * mlffSiluGrad(y);
    });
    __syncthreads();
    MlffWarpRows<MLFF_H / 4, 1> head4;
    head4.load(params + MLFF_P_HEAD_W4, params + MLFF_P_HEAD_B4, 1, identity);
    head4.apply(&sh.act1[0][0], 1, atoms, [&](int i, int o, real y) {
        if (rank == 0)
            atomEnergy[i] = y;
    });
    MlffWarpRows<MLFF_H / 4, MLFF_H / 2> head2Back; // rows of W2^T
    head2Back.load(params + MLFF_P_HEAD_W2T, (const real*) 0, MLFF_H / 2, identity);
    head2Back.apply(&sh.grad1[0][0], MLFF_H / 2, atoms,
                    [&](int i, int o, real y) { sh.act0[i][o] = y * mlffSiluGrad(sh.head0[i][o]); }); // act0 is done with
    __syncthreads();
    MlffWarpRows<MLFF_H / 2, MLFF_SLICE> head0Back; // own rows of W0^T
    head0Back.load(params + MLFF_P_HEAD_W0T, (const real*) 0, MLFF_SLICE, [&](int o) { return rank * MLFF_SLICE + o; });
    head0Back.apply(&sh.act0[0][0], MLFF_SLICE, atoms, [&](int i, int o, real y) { sh.gradS[i][o] = y; });
    __syncthreads();
}

/**
 * Backward of block `layer`'s update (residual included), own channels: from dE/d(s, v) of its
 * output (sh.gradS, sh.gradV) to dE/d(s', v') (sh.gradSMid, sh.gradVMid). The norm's gradient
 * v/m is taken as 0 where m = 0. `use` counts the backward's layers from 0.
 */
DEVICE inline void mlffReplicaUpdateBackward(MlffReplicaClusterShared& sh, const real* RESTRICT block, int layer,
                                             int use, int atoms) {
    const int rank = mlffClusterRank();
    for (int index = threadIdx.x; index < atoms * MLFF_SLICE; index += MLFF_BLOCK) {
        const int i = index / MLFF_SLICE, slot = index % MLFF_SLICE, c = rank * MLFF_SLICE + slot;
        real vMid[3], gvOut[3], gvMid[3], gradG1, gradG2;
        for (int a = 0; a < 3; a++) {
            vMid[a] = sh.vMid[layer][i][a][slot];
            gvOut[a] = sh.gradV[i][a][slot];
        }
        mlffUpdateVectorBackward(block, vMid, sh.kept[layer][1][i][slot], sh.kept[layer][2][i][slot], gvOut, &gradG1,
                                 &gradG2, gvMid);
        for (int a = 0; a < 3; a++)
            sh.gradVMid[i][a][slot] = gvMid[a];
        real* gradOutput = &sh.gradOutput[0][0];
        mlffClusterSend(gradOutput, i * 3 * MLFF_H + c, sh.gradS[i][slot], &sh.arrived[MLFF_SEND_GRAD_OUTPUT]);
        mlffClusterSend(gradOutput, i * 3 * MLFF_H + MLFF_H + c, gradG1, &sh.arrived[MLFF_SEND_GRAD_OUTPUT]);
        mlffClusterSend(gradOutput, i * 3 * MLFF_H + 2 * MLFF_H + c, gradG2, &sh.arrived[MLFF_SEND_GRAD_OUTPUT]);
    }
    const bool another = use + 1 < MLFF_L;
    MlffWarpRows<3 * MLFF_H, MLFF_SLICE> u2t; // own rows of U2^T
    u2t.load(block + MLFF_B_UPDATE_W2T, (const real*) 0, MLFF_SLICE, [&](int o) { return rank * MLFF_SLICE + o; });
    MlffWarpRows<MLFF_H, 2 * MLFF_SLICE> u0t; // own rows of U0^T: s channels, then m channels
    u0t.load(block + MLFF_B_UPDATE_W0T, (const real*) 0, 2 * MLFF_SLICE, [&](int o) {
        return (o / MLFF_SLICE) * MLFF_H + rank * MLFF_SLICE + o % MLFF_SLICE;
    });
    mlffReplicaReceive(sh, MLFF_SEND_GRAD_OUTPUT, use, another, atoms);
    u2t.apply(&sh.gradOutput[0][0], MLFF_SLICE, atoms, [&](int i, int o, real y) {
        mlffClusterSend(&sh.gradHidden[0][0], i * MLFF_H + rank * MLFF_SLICE + o, y * mlffSiluGrad(sh.kept[layer][0][i][o]),
                        &sh.arrived[MLFF_SEND_GRAD_HIDDEN]);
    });
    mlffReplicaReceive(sh, MLFF_SEND_GRAD_HIDDEN, use, another, atoms);
    u0t.apply(&sh.gradHidden[0][0], 2 * MLFF_SLICE, atoms,
              [&](int i, int o, real y) { sh.updateOut[o / MLFF_SLICE][i][o % MLFF_SLICE] = y; });
    __syncthreads();
    for (int index = threadIdx.x; index < atoms * MLFF_SLICE; index += MLFF_BLOCK) {
        const int i = index / MLFF_SLICE, slot = index % MLFF_SLICE;
        sh.gradSMid[i][slot] = sh.gradS[i][slot] + sh.updateOut[0][i][slot];
        const real m = mlffReplicaNorm(sh, layer, i, slot), gm = sh.updateOut[1][i][slot];
        if (m > 0)
            for (int a = 0; a < 3; a++)
                sh.gradVMid[i][a][slot] += gm * sh.vMid[layer][i][a][slot] / m;
    }
    __syncthreads();
}

/**
 * Backward of block `layer`'s messages, own channels: each pair's dE/dd (through dw/dd) and dE/dn
 * added to sh.pairGrad (written by the first layer of the backward pass), summed over the slots of
 * a warp's lanes; then, but for the first block, dE/d(s, v) of the block's input into sh.gradS,
 * sh.gradV (the residual, plus the gather over each atom's pairs, w(ij) = w(ji)).
 */
DEVICE inline void mlffReplicaMessagesBackward(MlffReplicaClusterShared& sh, int layer, int atoms, int pairs) {
    const real(*w)[MLFF_PAIR_SLOTS] = sh.filter[layer][0];
    const real(*dw)[MLFF_PAIR_SLOTS] = sh.filter[layer][1];
    // A pair's channels in consecutive lanes (S divides 32): rounds of whole warps for the shuffles.
    for (int base = 0; base < pairs * MLFF_SLICE; base += MLFF_BLOCK) {
        const int index = base + threadIdx.x, slot = index % MLFF_SLICE, p = index / MLFF_SLICE;
        real grad[4] = {0, 0, 0, 0}; // dE/dd, dE/dn
        if (p < pairs) {
            const int i = sh.pairAtoms[p].x, j = sh.pairAtoms[p].y;
            const real4 g = sh.geometry[p];
            const real gsI = sh.gradSMid[i][slot], gsJ = sh.gradSMid[j][slot];
            real gws = gsI * sh.s[layer][j][slot] + gsJ * sh.s[layer][i][slot], gwv1 = 0, gwv2 = 0;
            for (int a = 0; a < 3; a++) {
                const real gvI = sh.gradVMid[i][a][slot], gvJ = sh.gradVMid[j][a][slot];
                gwv1 += gvI * sh.v[layer][j][a][slot] + gvJ * sh.v[layer][i][a][slot];
                gwv2 += (gvI - gvJ) * mlffEdgeNormal(g, a);
                grad[1 + a] = w[2 * MLFF_SLICE + slot][p] * (gvI - gvJ);
            }
            grad[0] = gws * dw[slot][p] + gwv1 * dw[MLFF_SLICE + slot][p] + gwv2 * dw[2 * MLFF_SLICE + slot][p];
        }
#pragma unroll
        for (int q = 0; q < 4; q++)
            for (int offset = MLFF_SLICE / 2; offset > 0; offset /= 2)
                grad[q] += __shfl_xor_sync(0xffffffffu, grad[q], offset);
        if (p < pairs && slot == 0)
            for (int q = 0; q < 4; q++)
                sh.pairGrad[p][q] = layer == MLFF_L - 1 ? grad[q] : sh.pairGrad[p][q] + grad[q];
    }
    if (layer > 0) {
        for (int index = threadIdx.x; index < atoms * 4 * MLFF_SLICE; index += MLFF_BLOCK) {
            const int slot = index % MLFF_SLICE, part = index / MLFF_SLICE % 4, j = index / (4 * MLFF_SLICE);
            real g = part == 0 ? sh.gradSMid[j][slot] : sh.gradVMid[j][part - 1][slot];
#pragma unroll 4
            for (int n = 0; n < sh.atomPairCount[j]; n++) {
                const int code = sh.atomPairs[j][n], p = mlffCodePair(code), i = mlffCodeAtom(code);
                g += part == 0 ? sh.gradSMid[i][slot] * w[slot][p] : sh.gradVMid[i][part - 1][slot] * w[MLFF_SLICE + slot][p];
            }
            if (part == 0)
                sh.gradS[j][slot] = g;
            else
                sh.gradV[j][part - 1][slot] = g;
        }
    }
    __syncthreads();
}

/**
 * Own channels' part of the forces: each pair's dE/du from its dE/dd, dE/dn (summed over the
 * layers), then each atom's sum over its pairs (F_i = sum dE/du(ij) - sum dE/du(ki)), in
 * neighbour order, times forceScale, into OpenMM's fixed-point buffer.
 */
DEVICE inline void mlffReplicaForces(MlffReplicaClusterShared& sh, int first, int atoms, int pairs, double forceScale,
        const int* RESTRICT mlParticle, const int* RESTRICT sortedIndexOfParticle,
        unsigned long long* RESTRICT forceBuffer) {
    for (int p = threadIdx.x; p < pairs; p += MLFF_BLOCK) {
        real gu[3];
        mlffEdgeGradU(sh.geometry[p], sh.pairGrad[p][0], sh.pairGrad[p][1], sh.pairGrad[p][2], sh.pairGrad[p][3], gu);
        for (int a = 0; a < 3; a++)
            sh.pairGrad[p][a] = gu[a];
    }
    __syncthreads();
    for (int index = threadIdx.x; index < atoms * 3; index += MLFF_BLOCK) {
        const int i = index / 3, a = index % 3;
        real f = 0;
        for (int n = 0; n < sh.atomPairCount[i]; n++) {
            const int code = sh.atomPairs[i][n];
            const real gu = sh.pairGrad[mlffCodePair(code)][a];
            f += mlffCodeFlips(code) ? -gu : gu;
        }
        const int sorted = sortedIndexOfParticle[mlParticle[first + i]];
        atomicAdd(&forceBuffer[sorted + a * MLFF_PADDED_NUM_ATOMS],
                  (unsigned long long) ((long long) (forceScale * (double) f * 0x100000000)));
    }
}

KERNEL void mlffStudentReplicaCluster(const real* RESTRICT params, const real* RESTRICT filterTable,
        const real4* RESTRICT posq, const int* RESTRICT sortedIndexOfParticle, const int* RESTRICT mlParticle,
        const int* RESTRICT mlZ, const int* RESTRICT replicaStart, real4 boxA, real4 boxB, real4 boxC,
        real4 invBoxSize, int includeForces, const double* RESTRICT replicaScale, double lambdaForceScale,
        unsigned long long* RESTRICT forceBuffer, real* atomEnergy, double lambda, double* RESTRICT replicaEnergy,
        mixed* RESTRICT energyBuffer, mixed* RESTRICT energyParamDerivs, int energyParamDerivIndex,
        const int* RESTRICT neighborCount, int* RESTRICT maxNeighborCount, unsigned int* RESTRICT finishedReplicas) {
    extern __shared__ __align__(32) unsigned char mlffReplicaClusterMemory[];
    MlffReplicaClusterShared& sh = *reinterpret_cast<MlffReplicaClusterShared*>(mlffReplicaClusterMemory);
    mlffStartAfterPreviousLaunch();
    const int replica = blockIdx.x / MLFF_CLUSTER, rank = mlffClusterRank(), t = threadIdx.x;
    const int first = replicaStart[replica], atoms = replicaStart[replica + 1] - first;
    if (t == 0) {
        for (int x = 0; x < MLFF_REPLICA_EXCHANGES; x++)
            mlffInitExchange(&sh.arrived[x], mlffReplicaExchangeBytes(x, atoms));
        mlffPublishExchanges();
    }
    __syncthreads();
    mlffClusterArrive();

    const MlffSystemPositions pos = {posq, sortedIndexOfParticle, mlParticle};
    mlffReplicaPairs(sh, params, pos, first, atoms, boxA, boxB, boxC, invBoxSize);
    const int pairs = sh.pairCount;
    for (int index = t; index < atoms * MLFF_SLICE; index += MLFF_BLOCK) { // block 0's input: the embedding, v = 0
        const int i = index / MLFF_SLICE, slot = index % MLFF_SLICE;
        sh.s[0][i][slot] = params[MLFF_P_EMBEDDING + mlZ[first + i] * MLFF_H + rank * MLFF_SLICE + slot];
        for (int a = 0; a < 3; a++)
            sh.v[0][i][a][slot] = 0;
    }
    __syncthreads();
    mlffClusterWait(); // every block's mbarriers are set up

    for (int layer = 0; layer < MLFF_L; layer++) {
        const real* block = params + MLFF_P_BLOCKS + (size_t) layer * MLFF_P_BLOCK_STRIDE;
        mlffReplicaFilters(sh, block, mlffBlockTable(filterTable, layer), layer, pairs);
        mlffReplicaMessages(sh, layer, atoms);
        mlffReplicaUpdate(sh, block, layer, atoms);
    }
    mlffReplicaReadout(sh, params, atoms, atomEnergy + first);

    if (includeForces) {
        for (int layer = MLFF_L - 1, use = 0; layer >= 0; layer--, use++) {
            const real* block = params + MLFF_P_BLOCKS + (size_t) layer * MLFF_P_BLOCK_STRIDE;
            mlffReplicaUpdateBackward(sh, block, layer, use, atoms);
            mlffReplicaMessagesBackward(sh, layer, atoms, pairs);
        }
        mlffReplicaForces(sh, first, atoms, pairs, lambdaForceScale * replicaScale[replica], mlParticle,
                          sortedIndexOfParticle, forceBuffer);
    }

    // The energies: the last replica's rank-0 block to get here reduces them all.
    if (rank != 0)
        return;
    __threadfence(); // this replica's atomEnergy, before the count says it is there
    __syncthreads();
    if (t == 0)
        sh.reducesEnergies = atomicAdd(finishedReplicas, 1u) == MLFF_NUM_REPLICAS - 1;
    __syncthreads();
    if (!sh.reducesEnergies)
        return;
    __threadfence();
    mlffReduceEnergiesInBlock(atomEnergy, replicaStart, replicaScale, lambda, replicaEnergy, energyBuffer,
                              energyParamDerivs, energyParamDerivIndex, neighborCount, maxNeighborCount);
    if (t == 0)
        *finishedReplicas = 0; // for the next launch
}
