/*
 * student_painn/edge_filters.cu: the filter network as matrix products over pairs, for the tiled
 * path with exact filters. The filter w(ij) depends on the distance alone, so w(ij) = w(ji): each
 * pair's filter is computed once, and all of a step's pairs go through each block's filter network
 * together (matmul.cu: each weight read once per 128 pairs, on tensor cores in float; on sm_90
 * by warpgroup_matmul.cu, each weight read once per block), rather than per atom in batches of 16
 * edges.
 *
 * Edge rows: the directed edges of every atom whose neighbour list holds them all (count <=
 * capacity), atom by atom in list order: atom i's edges are rows edgeStart[i] .. + count - 1. An
 * atom whose list overflowed has no rows: it is listed in overflowedAtoms, and tiled.cu's kernels
 * take it, computing its filters themselves, exact.
 * Filter rows: one per pair, owned by the edge i -> j with i < j when j lists i too (its partner
 * j -> i then shares the row), else by whichever edge has a row; filterEdges[r] = (owner, partner
 * or -1), edgeFilterRow[e] = the filter row of edge e. Counts live on the device only
 * (edgeStart[N], filterStart[N]); the products size their grids by N x capacity and let blocks past
 * the count (filterRowCount: &filterStart[N]) return.
 * With tabulated filters the same rows hold the table's filters instead (table_rows.cu stands for
 * the products below, and no basis, hidden layer or dE/dd parts are kept).
 * Replicas whose messages take a block each (replica_messages.cu) have no list: one edge row and one
 * filter row per pair, replica by replica, written by mlffLinkReplicaPairRows (filterEdges = (r, -1)),
 * counted in its pairRowStart[R], and no edgeStart, edgeOwnedRank, edgePartner or edgeFilterRow;
 * the products below serve both.
 *
 * Per step, after the neighbour search:
 *   mlffScanEdges               one block   edgeStart; overflowedAtoms emptied
 *   mlffGatherEdges             atoms       edgeAtoms (i, j), edgeDelta (u, d); which edges own their
 *                                           pair (edgeOwnedRank) and their partners; the order the
 *                                           messages' backward walks them in (edgeWalk); filterCount;
 *                                           the atoms without rows into overflowedAtoms
 *   mlffScanFilterRows          one block   filterStart
 *   mlffLinkFilterRows          atoms       edgeFilterRow, filterEdges, edgeBasis e(d) (filter rows, K)
 * Per block l, forward:
 *   mlffEdgeFilterFromBasis     wgmma       edgeFilter[l] from edgeBasis, the hidden layer kept in
 *                                           registers (sm_90, H = 64 or 128); else, or with
 *                                           MLFF_CUDA_FILTER_HIDDEN=stored, in its place:
 *   mlffEdgeFilterHidden        matmul      edgeHidden = SiLU(edgeBasis W0^T + b0)      (filter rows, H)
 *   mlffEdgeFilterOutput        matmul      edgeFilter[l] = edgeHidden W2^T + b2        (filter rows, 3H)
 *   mlffMessagesForwardRows     atoms       the messages, w(ij) from edgeFilter[l] (row_messages.cu)
 * Per block l, backward:
 *   mlffMessagesBackwardRows    atoms       dE/dw of each pair (both directions, by the owner's
 *                                           warp) into edgeGradFilter; dE/dn of each edge into
 *                                           edgeGradN (xyz; summed over the blocks); and the update's
 *                                           direct backward as in tiled.cu (row_messages.cu)
 *   mlffEdgeFilterHiddenBackward matmul     edgeHidden = (dE/dw W2) SiLU'(edgeBasis W0^T + b0), the
 *                                           hidden layer's input recomputed in the epilogue (at block
 *                                           0 without dE/dw_v1, 0: MlffSkippedInputs)
 *   mlffEdgeBasisBackward       matmul      dE/de = edgeHidden W0 (K padded), and in its epilogue
 *                                           dE/dd = dE/de . de/dd, summed over the blocks in the owning
 *                                           edge's edgeGradN.w; at block 0 (the last of the backward
 *                                           pass), the forces of both edges
 *   or on sm_90, in their place:
 *   mlffEdgeFilterBackwardToDistance wgmma  each column tile's part of dE/dd (pairGradDistance, kept
 *                                           for every block), from dE/dw, the hidden layer's input and
 *                                           dx/dd, three warp-group products on its tile; dE/dhidden
 *                                           not stored (...FirstBlock at block 0: without dE/dw_v1, 0)
 *   mlffAddPairGradientParts    filter rows at block 0 only: every block's parts summed in order, then
 *                                           as mlffEdgeBasisBackward's epilogue at block 0, the forces
 *
 * Storage (global; rows allocated for N x capacity, edge and filter rows alike): edgeStart,
 * filterStart (N + 1) and filterCount (N) int; overflowedAtoms (N + 1) int, [0] their count, then
 * the atoms in the order of the atomics that appended them; per edge row edgeAtoms int2, edgeDelta
 * real4, edgeOwnedRank, edgePartner, edgeWalk, edgeFilterRow int, edgeGradN real4; per filter row
 * filterEdges int2, edgeBasis (K), edgeHidden (H; none where mlffEdgeFilterFromBasis and the sm_90
 * backward leave it unused), edgeGradFilter (3H), pairGradDistance (L, H / 64: sm_90), and edgeFilter
 * (L, rows, 3H: w_s, w_v1, w_v2 of each block, kept for the backward pass).
 */

/** Listed edges of atom i: its count, or 0 if its list overflowed. */
struct MlffListedEdges {
    const int* count;
    int capacity;
    DEVICE int operator()(int i) const {
        return count[i] <= capacity ? count[i] : 0;
    }
};

struct MlffStarts {
    int* start;
    DEVICE void operator()(int i, int before, int) const {
        start[i] = before;
    }
};

/** One block of MLFF_SCAN_THREADS (scan.cu): edgeStart. */
KERNEL void mlffScanEdges(const int* RESTRICT neighborCount, int neighborCapacity, int* RESTRICT edgeStart,
                          int* RESTRICT overflowedAtoms) {
    mlffStartAfterPreviousLaunch();
    const int rows = mlffExclusiveScan(MLFF_NUM_ATOMS, MlffListedEdges{neighborCount, neighborCapacity},
                                       MlffStarts{edgeStart});
    if (threadIdx.x == 0) {
        edgeStart[MLFF_NUM_ATOMS] = rows;
        overflowedAtoms[0] = 0; // mlffGatherEdges appends
    }
}

/** One block of MLFF_SCAN_THREADS: filterStart. */
KERNEL void mlffScanFilterRows(const int* RESTRICT filterCount, int* RESTRICT filterStart) {
    mlffStartAfterPreviousLaunch();
    const int rows = mlffExclusiveScan(MLFF_NUM_ATOMS, MlffCounts{filterCount}, MlffStarts{filterStart});
    if (threadIdx.x == 0)
        filterStart[MLFF_NUM_ATOMS] = rows;
}

/** The number of entries below `value` in the (ascending) list that holds count entries. */
DEVICE inline int mlffCountBelow(const int* RESTRICT list, int count, int value) {
    int low = 0, high = count;
    while (low < high) {
        const int middle = (low + high) / 2;
        if (list[middle] < value)
            low = middle + 1;
        else
            high = middle;
    }
    return low;
}

/** The slot of atom i in the (ascending) list of atom j that holds count entries, or -1. */
DEVICE inline int mlffFindInList(const int* RESTRICT list, int count, int i) {
    const int slot = mlffCountBelow(list, count, i);
    return slot < count && list[slot] == i ? slot : -1;
}

/**
 * Where the messages' backward of atom i walks the edge in slot `slot` of i's list (ascending, its
 * first `lower` entries below i): by distance along the numbering, a lower neighbour's distance
 * counted half, ties to the lower. The atoms run roughly in the numbering's order, and a pair's
 * filter row is read by both its atoms: walked so, j reads the row soon after i did, more often
 * while the L2 still holds it (benchmarks/row_reuse.py; the backward, H100: 1,590 -> 1,532 µs an
 * evaluation of the 12,000-atom droplet). An edge's place: the neighbours on its own side of i
 * that are nearer i, plus those on the other side that come before it, counted by a binary search
 * in the list.
 */
DEVICE inline int mlffWalkPosition(const int* RESTRICT list, int count, int lower, int i, int slot) {
    const int j = list[slot];
    if (j < i) { // after the higher j' with 2 (j' - i) < i - j
        const int distance = i - j;
        return (lower - 1 - slot) + (mlffCountBelow(list, count, i + (distance + 1) / 2) - lower);
    }
    // after the lower j' with i - j' <= 2 (j - i)
    return (slot - lower) + (lower - mlffCountBelow(list, count, i - 2 * (j - i)));
}

/**
 * One warp per ML atom i with rows: each edge's atoms, displacement u = r_j - r_i and distance (the
 * arithmetic of mlffLoadEdgeBatch, so that d is the same as on the other paths); whether it owns
 * its pair's filter row (rank among i's owning edges, or -1) and its partner's edge row (or -1);
 * edgeWalk, i's list slots in the order its messages' backward walks them (mlffWalkPosition); and
 * filterCount[i], the number of pairs i owns. An atom without rows goes into overflowedAtoms.
 */
KERNEL void mlffGatherEdges(const real4* RESTRICT pos, const int* RESTRICT neighborCount,
        const int* RESTRICT neighborList, int neighborCapacity, const int* RESTRICT edgeStart, real4 boxA,
        real4 boxB, real4 boxC, real4 invBoxSize, int2* RESTRICT edgeAtoms, real4* RESTRICT edgeDelta,
        int* RESTRICT edgeOwnedRank, int* RESTRICT edgePartner, int* RESTRICT edgeWalk, int* RESTRICT filterCount,
        int* RESTRICT overflowedAtoms) {
    mlffStartAfterPreviousLaunch();
    const int i = (blockIdx.x * blockDim.x + threadIdx.x) / 32;
    const int lane = threadIdx.x % 32;
    if (i >= MLFF_NUM_ATOMS)
        return; // the whole warp leaves together
    const int count = neighborCount[i];
    int owned = 0;
    if (count <= neighborCapacity) { // else no rows
        const int first = edgeStart[i];
        const real4 ri = pos[i];
        const int* list = neighborList + (size_t) i * neighborCapacity;
        const int lower = mlffCountBelow(list, count, i);
        for (int slot = lane; slot < count; slot += 32)
            edgeWalk[first + mlffWalkPosition(list, count, lower, i, slot)] = slot;
        for (int base = 0; base < count; base += 32) {
            const int slot = base + lane;
            bool owner = false;
            int partner = -1;
            if (slot < count) {
                const int j = list[slot];
                real ux, uy, uz;
                mlffPairDelta(ri, pos[j], boxA, boxB, boxC, invBoxSize, &ux, &uy, &uz);
                edgeAtoms[first + slot] = make_int2(i, j);
                edgeDelta[first + slot] = make_real4(ux, uy, uz, sqrt(ux * ux + uy * uy + uz * uz));
                const int countJ = neighborCount[j];
                const int p = countJ <= neighborCapacity
                                      ? mlffFindInList(neighborList + (size_t) j * neighborCapacity, countJ, i) : -1;
                owner = p < 0 || i < j; // no partner row (j overflowed, or does not list i), or the lower atom
                if (owner && p >= 0)
                    partner = edgeStart[j] + p;
            }
            const unsigned int mask = __ballot_sync(0xffffffffu, owner);
            if (slot < count) {
                edgeOwnedRank[first + slot] = owner ? owned + __popc(mask & ((1u << lane) - 1u)) : -1;
                edgePartner[first + slot] = partner;
            }
            owned += __popc(mask);
        }
    }
    else if (lane == 0) // in any order: tiled.cu's kernels take each listed atom on its own
        overflowedAtoms[1 + atomicAdd(&overflowedAtoms[0], 1)] = i;
    if (lane == 0)
        filterCount[i] = owned;
}

/**
 * One warp per ML atom i with rows: for each edge that owns its pair, the filter row r, in
 * edgeFilterRow of both edges, and filterEdges[r] = (edge, partner); then (exact filters) the
 * radial basis of i's rows, K values a row, a value a lane in storage order (a lane a row, K
 * values each, wrote a line of 32 rows apart at each step, and left the lanes of unowned edges
 * idle).
 */
KERNEL void mlffLinkFilterRows(const real* RESTRICT params, const int* RESTRICT neighborCount, int neighborCapacity,
        const int* RESTRICT edgeStart, const int* RESTRICT filterStart, const real4* RESTRICT edgeDelta,
        const int* RESTRICT edgeOwnedRank, const int* RESTRICT edgePartner, int* RESTRICT edgeFilterRow,
        int2* RESTRICT filterEdges, real* RESTRICT edgeBasis) {
    mlffStartAfterPreviousLaunch();
    const int i = (blockIdx.x * blockDim.x + threadIdx.x) / 32;
    const int lane = threadIdx.x % 32;
    if (i >= MLFF_NUM_ATOMS)
        return;
    const int count = neighborCount[i];
    if (count > neighborCapacity)
        return; // no rows
    const int first = edgeStart[i], firstFilter = filterStart[i];
    for (int slot = lane; slot < count; slot += 32) {
        const int e = first + slot, rank = edgeOwnedRank[e];
        if (rank < 0)
            continue; // its partner's atom links it
        const int r = firstFilter + rank, partner = edgePartner[e];
        edgeFilterRow[e] = r;
        if (partner >= 0)
            edgeFilterRow[partner] = r;
        filterEdges[r] = make_int2(e, partner);
    }
#ifdef MLFF_TABULATED
    (void) params; // no network: no basis (edgeBasis is not allocated)
    (void) edgeBasis;
#else
    __syncwarp(); // filterEdges of i's rows written
    const int basisValues = (filterStart[i + 1] - firstFilter) * MLFF_K;
    for (int t = lane; t < basisValues; t += 32) {
        const real d = edgeDelta[filterEdges[firstFilter + t / MLFF_K].x].w;
        mlffRadialBasis(params, d, t % MLFF_K, &edgeBasis[(size_t) firstFilter * MLFF_K + t], 0);
    }
#endif
}

struct MlffBiasEpilogue {
    const real* bias;
    real* out; // (rows, Outputs)
    template <int Outputs, int TN>
    DEVICE void store(int row, int column, const real* sums) const {
        real values[TN];
        mlffLoadRow<TN>(bias + column, values);
#pragma unroll
        for (int t = 0; t < TN; t++)
            values[t] += sums[t];
        mlffStoreRow<TN>(out + (size_t) row * Outputs + column, values);
    }
};

struct MlffEdgeHiddenEpilogue {
    const real* bias;
    real* out; // (rows, H)
    template <int TN>
    DEVICE void columns(int row, int column, const real* sums) const {
        real h[TN];
        mlffLoadRow<TN>(bias + column, h);
#pragma unroll
        for (int t = 0; t < TN; t++)
            h[t] = mlffSilu(h[t] + sums[t]);
        mlffStoreRow<TN>(out + (size_t) row * MLFF_H + column, h);
    }
    DEVICE void operator()(int row, int column, const real* sums) const {
        columns<4>(row, column, sums);
    }
};

struct MlffEdgeFilterEpilogue : MlffBiasEpilogue {
    template <int TN>
    DEVICE void columns(int row, int column, const real* sums) const {
        store<3 * MLFF_H, TN>(row, column, sums);
    }
    DEVICE void operator()(int row, int column, const real* sums) const {
        columns<6>(row, column, sums);
    }
};

// On sm_90 the filters' products are warp-group products (the host sizes their grids and shared
// memory: warpgroup_matmul.cu).
#ifdef MLFF_WARPGROUP_FILTER_FORWARD
#define MLFF_FILTER_FORWARD_BOUNDS MLFF_WARPGROUP_BOUNDS
#else
#define MLFF_FILTER_FORWARD_BOUNDS MLFF_MATMUL_BOUNDS
#endif

/** The filters' hidden layer of each pair, after its activation. */
KERNEL void MLFF_FILTER_FORWARD_BOUNDS mlffEdgeFilterHidden(int layer, const real* RESTRICT params,
        const int* RESTRICT filterRowCount, const real* RESTRICT edgeBasis, real* RESTRICT edgeHidden,
        const unsigned int* RESTRICT weightImages) {
    const real* block = params + MLFF_P_BLOCKS + (size_t) layer * MLFF_P_BLOCK_STRIDE;
    const MlffEdgeHiddenEpilogue epilogue = {block + MLFF_B_FILTER_B0, edgeHidden};
#ifdef MLFF_WARPGROUP_FILTER_FORWARD
    constexpr int Columns = MLFF_WARPGROUP_FORWARD_COLUMNS;
    // The sums in the tensor cores whatever MLFF_TF32_SUMS_OUTSIDE says (ptxas serialized the
    // products with pairSum's registers too), here and below.
    mlffWarpgroupMatmul<MLFF_K, MLFF_H, Columns, MLFF_WARPGROUPS, MLFF_WARPGROUP_PREFETCH_AHEAD, false>(
            edgeBasis, mlffWarpgroupImagesOf<MLFF_K, MLFF_H, Columns, 0>(weightImages, layer), filterRowCount,
            epilogue); // waits once its weights are in
#else
    mlffStartAfterPreviousLaunch();
    mlffMatmul<MLFF_K, MLFF_H, 4, 128>(edgeBasis, block + MLFF_B_FILTER_W0T, *filterRowCount, epilogue);
#endif
}

#ifdef MLFF_WARPGROUP_FILTER_FORWARD
// The warp-group filters' output epilogue: b2 added, each pair's row stored straight from the
// accumulators, or (MLFF_STAGED_FILTER_STORES: with the one product from the basis) through shared
// memory, a warp's rows at a time.
#ifdef MLFF_STAGED_FILTER_STORES
typedef MlffWarpgroupStagedRows<3 * MLFF_H> MlffFilterOutputEpilogue;
#else
typedef MlffEdgeFilterEpilogue MlffFilterOutputEpilogue;
#endif

DEVICE inline MlffFilterOutputEpilogue mlffFilterOutputEpilogue(const real* bias, real* out) {
#ifdef MLFF_STAGED_FILTER_STORES
    __shared__ MlffWarpgroupRowStage stages[4 * MLFF_WARPGROUPS]; // a warp's each
    return {bias, out, stages};
#else
    MlffEdgeFilterEpilogue epilogue;
    epilogue.bias = bias;
    epilogue.out = out;
    return epilogue;
#endif
}
#endif

KERNEL void MLFF_FILTER_FORWARD_BOUNDS mlffEdgeFilterOutput(int layer, const real* RESTRICT params,
        const int* RESTRICT filterRowCount, const real* RESTRICT edgeHidden, real* RESTRICT edgeFilter,
        const unsigned int* RESTRICT weightImages) {
    const real* block = params + MLFF_P_BLOCKS + (size_t) layer * MLFF_P_BLOCK_STRIDE;
#ifdef MLFF_WARPGROUP_FILTER_FORWARD
    MlffFilterOutputEpilogue epilogue = mlffFilterOutputEpilogue(block + MLFF_B_FILTER_B2, edgeFilter);
    constexpr int Columns = MLFF_WARPGROUP_FORWARD_COLUMNS;
    mlffWarpgroupMatmul<MLFF_H, 3 * MLFF_H, Columns, MLFF_WARPGROUPS, MLFF_WARPGROUP_PREFETCH_AHEAD, false>(
            edgeHidden, mlffWarpgroupImagesOf<MLFF_H, 3 * MLFF_H, Columns, 0>(weightImages, layer), filterRowCount,
            epilogue); // waits once its weights are in
#else
    MlffEdgeFilterEpilogue epilogue;
    epilogue.bias = block + MLFF_B_FILTER_B2;
    epilogue.out = edgeFilter;
    mlffStartAfterPreviousLaunch();
    mlffMatmul<MLFF_H, 3 * MLFF_H, 6, 128>(edgeHidden, block + MLFF_B_FILTER_W2T, *filterRowCount, epilogue);
#endif
}

#ifdef MLFF_FILTER_HIDDEN_IN_REGISTERS
// The hidden layer's channels a warp group makes at once: a product of 32 columns.
#define MLFF_HIDDEN_CHUNK 32

/**
 * h (=) a chunk's hidden sums before b0, SiLU's input less its bias: the tile's basis rows (this
 * thread's rows e0 and e1, K reals each) times the Chunk columns of W0^T at fBig and fSmall (the
 * side product's parts, from the chunk's first column). A pair of k-steps at a time, each pair's
 * products ended before the next pair is split: one fragment set rather than
 * mlffWarpgroupTileProduct's two, for the registers that the output's sums hold meanwhile.
 */
template <int Chunk>
DEVICE inline void mlffHiddenChunkProduct(const real* RESTRICT e0, const real* RESTRICT e1, unsigned long long fBig,
                                          unsigned long long fSmall, float* h) {
    constexpr int Columns = MLFF_WARPGROUP_FORWARD_COLUMNS;
    const int k = 4 * (threadIdx.x % 4);
#pragma unroll
    for (int pair = 0; pair < (MLFF_K + 15) / 16; pair++) {
        const float4 x0 = mlffWarpgroupLoadInputs<MLFF_K>(e0, 16 * pair, k),
                     x1 = mlffWarpgroupLoadInputs<MLFF_K>(e1, 16 * pair, k);
        const float x[2][4] = {{x0.x, x1.x, x0.y, x1.y}, {x0.z, x1.z, x0.w, x1.w}};
        unsigned int big[2][4], small[2][4];
#pragma unroll
        for (int q = 0; q < 2; q++)
#pragma unroll
            for (int i = 0; i < 4; i++)
                mlffSplitTf32(x[q][i], &big[q][i], &small[q][i]);
        mlffWarpgroupFence();
#pragma unroll
        for (int q = 0; q < 2; q++) {
            const int step = 2 * pair + q;
            mlffWarpgroupKStep<Chunk>(h, big[q], small[q], fBig, fSmall, mlffWarpgroupBOffset<Columns>(step, 0, 0),
                                      step > 0);
        }
        mlffWarpgroupCommit();
        mlffWarpgroupWait<0>();
    }
}

/**
 * Each pair's filters of a block in one launch, from its basis (where H is 64 or 128, unless
 * MLFF_CUDA_FILTER_HIDDEN=stored): the hidden layer SiLU(e W0^T + b0) made on the tensor cores and
 * kept in registers as the output product's A, where mlffEdgeFilterHidden writes it (H reals a pair) for
 * mlffEdgeFilterOutput to read back. A block holds a column tile of W2^T, and beside it the whole of
 * W0^T and b0 as the side product (H = the tile's columns). Each 64-row tile's hidden layer is made
 * MLFF_HIDDEN_CHUNK channels at a time, in every column tile: K inputs a pair (padded to 32), a
 * quarter of the output's products at K = 20. A thread's sums of a chunk are its rows' channels
 * 8 j + 2 t and 8 j + 2 t + 1 (t: the thread in its quad); after SiLU they are A's fragments of
 * the output's k-step j of the chunk as they stand, since W2^T's image takes each k-step's inputs in
 * that order (mlffWarpgroupBIndexOfAccumulators). A chunk's products end before the next chunk's
 * start, so that a thread holds at most the tile's sums, a chunk's and one product's fragments: the
 * registers of four warp groups an SM. The epilogue is mlffEdgeFilterOutput's.
 *
 * The column tiles are the three kinds of filter, w_s, w_v1 and w_v2. In the first block v = 0, so
 * w_v1 multiplies nothing, and the messages from rows leave it unread there (row_messages.cu,
 * replica_messages.cu): that tile is not computed, its rows' w_v1 not written, and its blocks take
 * the other two tiles' rows.
 *
 * The grid's row y takes block firstLayer + y, its filters into edgeFilter + y blockStride: the
 * filters depend on the distances alone, so every block's come from one launch, with no launch's
 * start and tail between blocks.
 */
KERNEL void MLFF_WARPGROUP_BOUNDS mlffEdgeFilterFromBasis(int firstLayer, const real* RESTRICT params,
        const int* RESTRICT filterRowCount, const real* RESTRICT edgeBasis, real* RESTRICT edgeFilter,
        size_t blockStride, const unsigned int* RESTRICT weightImages) {
    const int layer = firstLayer + blockIdx.y;
    edgeFilter += blockIdx.y * blockStride;
    constexpr int I = MLFF_H, O = 3 * MLFF_H, J = MLFF_K, Columns = MLFF_WARPGROUP_FORWARD_COLUMNS;
    constexpr int Chunk = MLFF_HIDDEN_CHUNK;
    static_assert(Columns == MLFF_H && MLFF_H % Chunk == 0, "the whole hidden layer beside each column tile");
    // The tiles computed: w_s, w_v2 in the first block (the grid's blocks past a whole number of
    // them left idle), all three after it.
    const int columnTiles = mlffFilterKindUsed(layer, 1) ? 3 : 2, used = blockIdx.x % columnTiles;
    if (blockIdx.x >= gridDim.x / columnTiles * columnTiles)
        return; // the whole block, before any access to memory
    const int columnTile = columnTiles == 2 && used == 1 ? 2 : used;
    const real* block = params + MLFF_P_BLOCKS + (size_t) layer * MLFF_P_BLOCK_STRIDE;
    MlffFilterOutputEpilogue epilogue = mlffFilterOutputEpilogue(block + MLFF_B_FILTER_B2, edgeFilter);
    const MlffWarpgroupTiles tiles = mlffWarpgroupLoadTiles<I, O, Columns, J>(
            mlffWarpgroupImagesOf<I, O, Columns, J>(weightImages, layer), columnTile); // W2^T's tile, W0^T, b0; waits
    // The descriptors of the first k-step of W2^T's tile and of W0^T, each in two parts.
    const unsigned long long outputBig = mlffWarpgroupDescriptor(tiles.bBig),
                             outputSmall = mlffWarpgroupDescriptor(tiles.bSmall),
                             wBig = mlffWarpgroupDescriptor(tiles.fBig), wSmall = mlffWarpgroupDescriptor(tiles.fSmall);
    const int rows = *filterRowCount, t = threadIdx.x % 4;
    const MlffWarpgroupRowTiles rowTiles = mlffWarpgroupRowTiles<MLFF_WARPGROUPS>(rows, columnTiles);
    for (int tile = rowTiles.first; tile < rowTiles.count; tile += rowTiles.stride) {
        const MlffWarpgroupThreadRows mine = mlffWarpgroupThreadRows(tile, rows);
        const real *e0 = edgeBasis + (size_t) mine.r0 * J, *e1 = edgeBasis + (size_t) mine.r1 * J;
        // The warp group's next tile's basis rows into the L2 while this tile's products run: each
        // chunk's product waits on its rows' loads (the first chunk's from DRAM, the others' from the L1).
        const MlffWarpgroupThreadRows next = mlffWarpgroupThreadRows(tile + rowTiles.stride, rows);
        for (const int nextRow : {next.r0, next.r1}) {
            const MlffWarpgroupMemoryRow row = {edgeBasis + (size_t) nextRow * J};
            row.prefetch(0);
            row.prefetch(J - 1); // a row may end in the next line
        }
        float d[Columns / 2]; // the output's sums, as mlffWarpgroupMatmul's
#pragma unroll 1 // unrolled, ptxas spilled 320 bytes a thread and serialized the products
        for (int chunk = 0; chunk < MLFF_H / Chunk; chunk++) {
            // h[4 j + 2 r + c]: row row0 + 8 r, hidden channel Chunk chunk + 8 j + 2 t + c.
            float h[Chunk / 2];
            const int columnOffset = mlffWarpgroupBOffset<Columns>(0, Chunk * chunk, 0);
            mlffHiddenChunkProduct<Chunk>(e0, e1, mlffWarpgroupDescriptorAfter(wBig, columnOffset),
                                          mlffWarpgroupDescriptorAfter(wSmall, columnOffset), h);
            // The output's k-step Chunk / 8 chunk + j: inputs t and t + 4 of rows row0 and row1, in
            // mma.sync's A fragment order.
            unsigned int big[Chunk / 8][4], small[Chunk / 8][4];
#pragma unroll
            for (int j = 0; j < Chunk / 8; j++) {
                const float* b0 = tiles.c + Chunk * chunk + 8 * j + 2 * t;
                const float a[4] = {mlffSilu(h[4 * j] + b0[0]), mlffSilu(h[4 * j + 2] + b0[0]),
                                    mlffSilu(h[4 * j + 1] + b0[1]), mlffSilu(h[4 * j + 3] + b0[1])};
#pragma unroll
                for (int i = 0; i < 4; i++)
                    mlffSplitTf32(a[i], &big[j][i], &small[j][i]);
            }
            mlffWarpgroupFence();
#pragma unroll
            for (int j = 0; j < Chunk / 8; j++) {
                const int step = Chunk / 8 * chunk + j;
                mlffWarpgroupKStep<Columns>(d, big[j], small[j], outputBig, outputSmall,
                                            mlffWarpgroupBOffset<Columns>(step, 0, 0), step > 0);
            }
            mlffWarpgroupCommit();
            mlffWarpgroupWait<0>(); // its fragments free for the next chunk
        }
        mlffWarpgroupTileEpilogue<Columns>(epilogue, d, mine.row0, mine.row1, rows, tiles.firstColumn, t);
    }
}
#endif

#ifndef MLFF_WARPGROUP_FILTER_BACKWARD
/**
 * dE/dhidden = sums SiLU'(x) of a pair, where x = e W0^T + b0 is the hidden layer's input,
 * recomputed here from the pair's basis e (K multiply-adds an element, each element once: cheaper
 * than a product of its own that writes x to memory for this one to read back). Its sums round
 * otherwise than the forward product's, within float's precision.
 */
struct MlffEdgeHiddenBackwardEpilogue {
    const real* basis; // (rows, K)
    const real* w0t;   // (K, H)
    const real* b0;    // (H)
    real* gradHidden;  // (rows, H)
    template <int TN>
    DEVICE void columns(int row, int column, const real* sums, const real* inputs) const {
        real g[TN];
#pragma unroll
        for (int t = 0; t < TN; t++)
            g[t] = sums[t] * mlffSiluGrad(inputs[t]);
        mlffStoreRow<TN>(gradHidden + (size_t) row * MLFF_H + column, g);
    }
    DEVICE void operator()(int row, int column, const real* sums) const {
        real x[4];
        mlffLoadRow<4>(b0 + column, x);
        const real* e = basis + (size_t) row * MLFF_K;
        for (int k = 0; k < MLFF_K; k++) {
            real w[4];
            mlffLoadRow<4>(w0t + (size_t) k * MLFF_H + column, w);
            const real ek = e[k];
#pragma unroll
            for (int t = 0; t < 4; t++)
                x[t] += ek * w[t];
        }
        columns<4>(row, column, sums, x);
    }
};

/**
 * dE/dhidden = (dE/dw W2) SiLU'(hidden's input) of each pair, into edgeGradHidden, for
 * mlffEdgeBasisBackward (on sm_90, mlffEdgeFilterBackwardToDistance does both at once). In the
 * first block dE/dw_v1, inputs H .. 2H - 1, is 0 and unwritten (mlffFilterKindUsed): skipped.
 */
KERNEL void MLFF_MATMUL_BOUNDS mlffEdgeFilterHiddenBackward(int layer, const real* RESTRICT params,
        const int* RESTRICT filterRowCount, const real* RESTRICT edgeGradFilter, const real* RESTRICT edgeBasis,
        real* RESTRICT edgeGradHidden) {
    static_assert(MLFF_H % MLFF_MATMUL_DEPTH == 0, "w_v1's inputs are whole steps of the product");
    const real* block = params + MLFF_P_BLOCKS + (size_t) layer * MLFF_P_BLOCK_STRIDE;
    const MlffEdgeHiddenBackwardEpilogue epilogue = {edgeBasis, block + MLFF_B_FILTER_W0T, block + MLFF_B_FILTER_B0,
                                                     edgeGradHidden};
    const MlffSkippedInputs skipped = {MLFF_H, mlffFilterKindUsed(layer, 1) ? 0 : MLFF_H};
    mlffStartAfterPreviousLaunch();
    mlffMatmul<3 * MLFF_H, MLFF_H, 4, 128>(edgeGradFilter, block + MLFF_B_FILTER_W2, *filterRowCount, epilogue,
                                           skipped);
}
#endif

/** Where a pair's dE/dd goes (mlffAddPairGradient): its edges' rows, and OpenMM's force buffer. */
struct MlffPairGradientTargets {
    const int2* filterEdges;   // (rows): the owning edge, and its partner or -1
    const int2* edgeAtoms;     // (edge rows): i, j (ML indices)
    const real4* edgeDelta;    // (edge rows): u, d
    real4* edgeGradN;          // (edge rows): dE/dn (xyz) and the owner's dE/dd (w), summed over the blocks
    const int* mlReplica;
    const double* replicaScale;
    double lambdaForceScale;
    const int* mlParticle;
    const int* sortedIndexOfParticle;
    unsigned long long* forceBuffer;
};

/**
 * A pair's (filter row's) dE/dd of block `layer`, added to the owning edge's edgeGradN.w, where it
 * sums over the blocks (as their dE/dn do in xyz). At block 0, the last of the backward pass, dE/du
 * of the owning edge (dE/dd with its dE/dn) and of its partner (its dE/dn alone: the pair's dE/dd
 * counts once) go to the forces of both atoms (fixed-point adds: order-independent), once a step
 * rather than once a block, and as one sum: F_i += dE/du(ij) - dE/du(ji), F_j -= the same, six
 * atomics a pair rather than twelve.
 */
DEVICE inline void mlffAddPairGradient(int layer, int row, real gd, const MlffPairGradientTargets& to) {
    const int2 edges = to.filterEdges[row];
    real4 gn = to.edgeGradN[edges.x];
    gn.w += gd;
    if (layer > 0) {
        to.edgeGradN[edges.x].w = gn.w;
        return;
    }
    const int2 atoms = to.edgeAtoms[edges.x];
    const double forceScale = to.lambdaForceScale * to.replicaScale[to.mlReplica[atoms.x]];
    real gu[3];
    mlffEdgeGradU(to.edgeDelta[edges.x], gn.w, gn.x, gn.y, gn.z, gu);
    double f[3] = {gu[0], gu[1], gu[2]};
    if (edges.y >= 0) { // the partner j -> i, u = r_i - r_j
        const real4 gnPartner = to.edgeGradN[edges.y];
        mlffEdgeGradU(to.edgeDelta[edges.y], 0, gnPartner.x, gnPartner.y, gnPartner.z, gu);
        for (int a = 0; a < 3; a++)
            f[a] -= gu[a];
    }
    for (int a = 0; a < 3; a++)
        f[a] *= forceScale;
    mlffAddForce(to.forceBuffer, to.sortedIndexOfParticle[to.mlParticle[atoms.x]], f[0], f[1], f[2]);
    mlffAddForce(to.forceBuffer, to.sortedIndexOfParticle[to.mlParticle[atoms.y]], -f[0], -f[1], -f[2]);
}

#ifdef MLFF_WARPGROUP_FILTER_BACKWARD
/**
 * A pair's de/dd, the radial basis' derivatives at its distance d, as a row of a warp-group
 * product's A (mlffWarpgroupTileProduct's Row): computed, not loaded, zero from K on.
 */
struct MlffBasisDerivativeRow {
    const real* params;
    real d;
    template <int Inputs>
    DEVICE float4 inputs(int first, int k) const {
        real x[4];
#pragma unroll
        for (int q = 0; q < 4; q++) {
            const int n = first + k + q;
            real e, dedd;
            mlffRadialBasis(params, d, min(n, MLFF_K - 1), &e, &dedd); // without a branch: see the products
            x[q] = n < MLFF_K ? dedd : 0;
        }
        return make_float4(x[0], x[1], x[2], x[3]);
    }
    DEVICE void prefetch(int) const {
    }
};

#define MLFF_BACKWARD_COLUMN_TILES (MLFF_H / MLFF_WARPGROUP_BACKWARD_COLUMNS)

/**
 * The filters' backward carried on to each pair's dE/dd, on warp-group products, so that dE/dhidden
 * is never stored nor read back by a product of its own (mlffEdgeBasisBackward, on mma.sync). With
 * x = e W0^T + b0 the hidden layer's input and g = dE/dhidden = (dE/dw W2) SiLU'(x),
 *   dE/dd = sum_h g_h dx_h/dd,   dx/dd = (de/dd) W0^T,
 * so each 64-row tile takes three products on a block's column tile of H: x by the side product (the
 * pairs' basis rows, W0^T's tile and b0 in shared memory), the main one (dE/dw by W2's tile), then
 * dx/dd by the same W0^T tile from the basis' derivatives, which the threads compute. Each
 * thread's sum over its columns, summed over the four threads of a row, is the column tile's part
 * of the row's dE/dd of block `layer`: pairGradDistance (rows, L, MLFF_BACKWARD_COLUMN_TILES), which
 * mlffAddPairGradientParts sums once, after block 0.
 */
template <bool FirstBlock>
DEVICE inline void mlffFilterBackwardToDistance(int layer, const real* RESTRICT params,
        const int* RESTRICT filterRowCount, const real* RESTRICT edgeGradFilter, const real* RESTRICT edgeBasis,
        const int2* RESTRICT filterEdges, const real4* RESTRICT edgeDelta, real* RESTRICT pairGradDistance,
        const unsigned int* RESTRICT weightImages) {
    constexpr int I = 3 * MLFF_H, J = MLFF_K, Columns = MLFF_WARPGROUP_BACKWARD_COLUMNS;
    constexpr int columnTiles = MLFF_BACKWARD_COLUMN_TILES, sideInputs = (J + 15) / 16 * 16;
    const MlffWarpgroupTiles tiles = mlffWarpgroupLoadTiles<I, MLFF_H, Columns, J>(
            mlffWarpgroupImagesOf<I, MLFF_H, Columns, J>(weightImages, layer)); // W2, W0^T and b0; then waits
    const int rows = *filterRowCount, columnTile = blockIdx.x % columnTiles, t = threadIdx.x % 4;
    const MlffWarpgroupRowTiles rowTiles = mlffWarpgroupRowTiles<MLFF_WARPGROUPS>(rows, columnTiles);
    for (int tile = rowTiles.first; tile < rowTiles.count; tile += rowTiles.stride) {
        const MlffWarpgroupThreadRows mine = mlffWarpgroupThreadRows(tile, rows);
        const int row0 = mine.row0, row1 = mine.row1, r0 = mine.r0, r1 = mine.r1;
        const real d0 = edgeDelta[filterEdges[r0].x].w, d1 = edgeDelta[filterEdges[r1].x].w;
        // grad[4 j + 2 r + c], side[...]: row row0 + 8 r, column 8 j + 2 t + c of the tile.
        float grad[Columns / 2], side[Columns / 2];
        MlffWarpgroupFragments fragments;
        // The sums in the tensor cores whatever MLFF_TF32_SUMS_OUTSIDE says (as mlffEdgeFilterHidden's).
        mlffWarpgroupTileProduct<J, Columns, 0, 0, 0, 0, false>(MlffWarpgroupMemoryRow{edgeBasis + (size_t) r0 * J},
                                                                MlffWarpgroupMemoryRow{edgeBasis + (size_t) r1 * J},
                                                                tiles.fBig, tiles.fSmall, side, fragments);
        // In the first block dE/dw_v1, inputs H .. 2H - 1, is 0 and unwritten (mlffFilterKindUsed).
        constexpr int skipped = FirstBlock ? MLFF_H : 0;
        constexpr int firstSet = sideInputs / 16 % 2;
        mlffWarpgroupTileProduct<I, Columns, firstSet, MLFF_WARPGROUP_PREFETCH_AHEAD, skipped, skipped, false>(
                MlffWarpgroupMemoryRow{edgeGradFilter + (size_t) r0 * I},
                MlffWarpgroupMemoryRow{edgeGradFilter + (size_t) r1 * I}, tiles.bBig, tiles.bSmall, grad, fragments);
        mlffWarpgroupWait<0>();
#pragma unroll
        for (int i = 0; i < Columns / 2; i++)
            grad[i] *= mlffSiluGrad(side[i] + tiles.c[8 * (i / 4) + 2 * t + i % 2]); // g
        // dx/dd into side (every product before has ended: either fragment set is free).
        mlffWarpgroupTileProduct<J, Columns, 0, 0, 0, 0, false>(MlffBasisDerivativeRow{params, d0},
                                                                MlffBasisDerivativeRow{params, d1}, tiles.fBig,
                                                                tiles.fSmall, side, fragments);
        mlffWarpgroupWait<0>();
        real sum0 = 0, sum1 = 0;
#pragma unroll
        for (int j = 0; j < Columns / 8; j++) {
            sum0 += grad[4 * j] * side[4 * j] + grad[4 * j + 1] * side[4 * j + 1];
            sum1 += grad[4 * j + 2] * side[4 * j + 2] + grad[4 * j + 3] * side[4 * j + 3];
        }
        for (int offset = 1; offset < 4; offset *= 2) { // the row's other columns, in the quad's threads
            sum0 += __shfl_xor_sync(0xffffffffu, sum0, offset);
            sum1 += __shfl_xor_sync(0xffffffffu, sum1, offset);
        }
        if (t == 0 && row0 < rows)
            pairGradDistance[((size_t) row0 * MLFF_L + layer) * columnTiles + columnTile] = sum0;
        if (t == 0 && row1 < rows)
            pairGradDistance[((size_t) row1 * MLFF_L + layer) * columnTiles + columnTile] = sum1;
    }
}

/** The blocks after the first: mlffFilterBackwardToDistance. */
KERNEL void MLFF_WARPGROUP_BOUNDS mlffEdgeFilterBackwardToDistance(int layer, const real* RESTRICT params,
        const int* RESTRICT filterRowCount, const real* RESTRICT edgeGradFilter, const real* RESTRICT edgeBasis,
        const int2* RESTRICT filterEdges, const real4* RESTRICT edgeDelta, real* RESTRICT pairGradDistance,
        const unsigned int* RESTRICT weightImages) {
    mlffFilterBackwardToDistance<false>(layer, params, filterRowCount, edgeGradFilter, edgeBasis, filterEdges,
                                        edgeDelta, pairGradDistance, weightImages);
}

/**
 * The first block (`layer` 0): mlffFilterBackwardToDistance without dE/dw_v1's k-steps, a third of
 * the main product. A kernel of its own, since both products in one leave ptxas too few registers
 * for either, and it serializes them; the same arguments, so that one list serves both.
 */
KERNEL void MLFF_WARPGROUP_BOUNDS mlffEdgeFilterBackwardToDistanceFirstBlock(int layer, const real* RESTRICT params,
        const int* RESTRICT filterRowCount, const real* RESTRICT edgeGradFilter, const real* RESTRICT edgeBasis,
        const int2* RESTRICT filterEdges, const real4* RESTRICT edgeDelta, real* RESTRICT pairGradDistance,
        const unsigned int* RESTRICT weightImages) {
    mlffFilterBackwardToDistance<true>(layer, params, filterRowCount, edgeGradFilter, edgeBasis, filterEdges,
                                       edgeDelta, pairGradDistance, weightImages);
}

/**
 * Each pair's dE/dd, once, after block 0 (`layer` 0): the column tiles' parts that
 * mlffEdgeFilterBackwardToDistance kept for every block, each block's parts summed in order, then
 * the blocks' from the last, the order in which edgeGradN.w summed them when this ran after every
 * block (the same bits, one launch in place of L), passed on by mlffAddPairGradient. A thread a
 * pair. Its arguments are mlffEdgeBasisBackward's (params unused), which it stands for.
 */
KERNEL void mlffAddPairGradientParts(int layer, const real* RESTRICT params, const int* RESTRICT filterRowCount,
        const real* RESTRICT pairGradDistance, const int2* RESTRICT filterEdges, const int2* RESTRICT edgeAtoms,
        const real4* RESTRICT edgeDelta, real4* RESTRICT edgeGradN, const int* RESTRICT mlReplica,
        const double* RESTRICT replicaScale, double lambdaForceScale, const int* RESTRICT mlParticle,
        const int* RESTRICT sortedIndexOfParticle, unsigned long long* RESTRICT forceBuffer) {
    (void) params;
    mlffStartAfterPreviousLaunch();
    const int row = blockIdx.x * blockDim.x + threadIdx.x;
    if (row >= *filterRowCount)
        return;
    const real* parts = pairGradDistance + (size_t) row * MLFF_L * MLFF_BACKWARD_COLUMN_TILES;
    real gd = 0;
    for (int block = MLFF_L - 1; block >= 0; block--) {
        real gdOfBlock = 0;
        for (int part = 0; part < MLFF_BACKWARD_COLUMN_TILES; part++)
            gdOfBlock += parts[block * MLFF_BACKWARD_COLUMN_TILES + part];
        gd += gdOfBlock;
    }
    const MlffPairGradientTargets to = {filterEdges, edgeAtoms, edgeDelta, edgeGradN, mlReplica, replicaScale,
                                        lambdaForceScale, mlParticle, sortedIndexOfParticle, forceBuffer};
    mlffAddPairGradient(layer, row, gd, to);
}
#endif

// A pair's dE/de in one tile of 16 threads, TN = K_PADDED / 16 columns each: K up to 96 (the
// widest tile; the host uses edge filters only then).
#define MLFF_PAIR_GRADIENT_TN (MLFF_K_PADDED / 16)
#if MLFF_K_PADDED <= 96 && !defined(MLFF_WARPGROUP_FILTER_BACKWARD)

/**
 * The product's dE/de of a pair (thread tx of the 16 that hold a row has its columns from TN tx)
 * turned at once into dE/dd = dE/de . de/dd, summed over the half-warp, and passed on by its first
 * thread (mlffAddPairGradient): dE/de is never stored.
 */
struct MlffPairGradientEpilogue {
    int layer;
    const real* params;
    MlffPairGradientTargets to;
    DEVICE void operator()(int row, int column, const real* sums) const {
        const real d = to.edgeDelta[to.filterEdges[row].x].w;
        real gd = 0;
#pragma unroll
        for (int q = 0; q < MLFF_PAIR_GRADIENT_TN; q++)
            if (column + q < MLFF_K) {
                real e, dedd;
                mlffRadialBasis(params, d, column + q, &e, &dedd);
                gd += sums[q] * dedd;
            }
        // The 16 lanes of this half-warp hold this row's 32 columns and call together (one row each
        // time, the same for all 16), whatever the other half does.
        const unsigned int halfWarp = 0xffffu << (threadIdx.x & 16);
#pragma unroll
        for (int offset = 8; offset > 0; offset /= 2)
            gd += __shfl_xor_sync(halfWarp, gd, offset);
        if (column == 0)
            mlffAddPairGradient(layer, row, gd, to);
    }
};

/** dE/de of each pair = dE/dhidden W0, and from it each pair's dE/dd and (block 0) forces: MlffPairGradientEpilogue. */
KERNEL void MLFF_MATMUL_BOUNDS mlffEdgeBasisBackward(int layer, const real* RESTRICT params,
        const int* RESTRICT filterRowCount, const real* RESTRICT edgeGradHidden, const int2* RESTRICT filterEdges,
        const int2* RESTRICT edgeAtoms, const real4* RESTRICT edgeDelta, real4* RESTRICT edgeGradN,
        const int* RESTRICT mlReplica, const double* RESTRICT replicaScale, double lambdaForceScale,
        const int* RESTRICT mlParticle, const int* RESTRICT sortedIndexOfParticle,
        unsigned long long* RESTRICT forceBuffer) {
    mlffStartAfterPreviousLaunch();
    const real* block = params + MLFF_P_BLOCKS + (size_t) layer * MLFF_P_BLOCK_STRIDE;
    const MlffPairGradientEpilogue epilogue = {
        layer, params,
        {filterEdges, edgeAtoms, edgeDelta, edgeGradN, mlReplica, replicaScale, lambdaForceScale, mlParticle,
         sortedIndexOfParticle, forceBuffer}};
    mlffMatmul<MLFF_H, MLFF_K_PADDED, MLFF_PAIR_GRADIENT_TN, 128>(edgeGradHidden, block + MLFF_B_FILTER_W0_PADDED,
                                                                  *filterRowCount, epilogue);
}
#endif
