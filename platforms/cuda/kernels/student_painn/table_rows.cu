/*
 * student_painn/table_rows.cu: tabulated filters on the edge rows (edge_filters.cu's storage), so
 * that the messages of a large system run from rows (row_messages.cu) with a table as they do with
 * the filter network: a pair's filter is read from the table once, not once for each of its edges,
 * and the messages' kernels are the rows' (a warp per atom in the backward) rather than tiled.cu's.
 * These kernels stand for edge_filters.cu's products:
 *
 * Per step, after mlffLinkFilterRows (into linkedFilterEdges here, and no basis):
 *   mlffCountTableIntervals  rows    each linked row's table interval and rank within it
 *   mlffScanTableIntervals   one     each interval's first row
 *   mlffNumberTableRows      rows    the filter rows numbered in the order of their intervals:
 *                                    filterEdges, and edgeFilterRow of both edges
 * Per block l:
 *   mlffTableFilterRows      rows    edgeFilter[l] = w(d) of each filter row (3H: w_s, w_v1, w_v2)
 *                                    before the messages from rows
 *   mlffTableFilterBackward  rows    dE/dd = sum_o dE/dw_o dw_o/dd of each filter row, from its row
 *                                    of edgeGradFilter (mlffMessagesBackwardRows: both edges' parts),
 *                                    passed on by mlffAddPairGradient (summed over the blocks; the
 *                                    forces at block 0)
 *
 * The last two take a warp a filter row, lane l channels l, l + 32, ... of each kind, a block a
 * run of the rows and each warp a run of the block's, an interval's table entries held in
 * registers while its rows last; in interval order, a run's rows are adjacent in memory too, so
 * their rows of edgeFilter and edgeGradFilter stream. The table's entries and Hermite weights are
 * layers.cu's (mlffTableEntries, mlffHermiteSum), as the tiled kernels read them; dE/dd's sum over
 * channels is the warp's, in a fixed order, and a row's results do not depend on which warp takes
 * it or where the numbering puts it (the messages sum in list order, whatever their rows' numbers).
 *
 * Storage: per filter row rowInterval int2 (interval, rank) and linkedFilterEdges int2 (the rows'
 * allocation, edgeRowArrays); intervalCount, intervalStart (MLFF_TABLE_NODES - 1) int.
 */
#ifdef MLFF_TABULATED

static_assert(3 * MLFF_H % 32 == 0, "a lane's outputs of a filter row: 3H / 32 of them");

/** The distance of filter row r: its owning edge's. */
DEVICE inline real mlffFilterRowDistance(const int2* RESTRICT filterEdges, const real4* RESTRICT edgeDelta, int r) {
    return edgeDelta[filterEdges[r].x].w;
}

/*
 * The filter rows numbered in the order of their table intervals, once a step for every block and
 * both passes: a block's warps then take rows at nearby distances, whose entries the L1 holds (or
 * registers: MlffHeldTableEntries), rather than each pair's 12 entries of 3H from the L2 (1.8 GB a
 * block for the 12,000-atom droplet's 294,000 pairs), and rows adjacent in memory. A counting
 * sort of the rows as mlffLinkFilterRows numbered them: each row's interval and its rank among
 * that interval's rows (rowInterval, by atomics: the rows of an interval in any order, which
 * changes only where a row is stored), the intervals' starts, then each row to its new number.
 */
#define MLFF_TABLE_INTERVALS (MLFF_TABLE_NODES - 1)

/**
 * A thread a linked filter row: its table interval and rank (intervalCount: zeros before, counts
 * after). Each block counts its rows in shared memory first, then takes its place in each interval
 * with one atomic: the droplet's 294,000 rows fall in a few hundred intervals, whose counters a
 * thread a row would contend for.
 */
KERNEL void mlffCountTableIntervals(const int* RESTRICT filterRowCount, const int2* RESTRICT linkedFilterEdges,
        const real4* RESTRICT edgeDelta, int* RESTRICT intervalCount, int2* RESTRICT rowInterval) {
    mlffStartAfterPreviousLaunch();
    __shared__ int blockCount[MLFF_TABLE_INTERVALS]; // this block's rows in each interval, then its first rank there
    const int rows = *filterRowCount, r = blockIdx.x * blockDim.x + threadIdx.x;
    if (blockIdx.x * blockDim.x >= rows)
        return; // the whole block
    for (int k = threadIdx.x; k < MLFF_TABLE_INTERVALS; k += blockDim.x)
        blockCount[k] = 0;
    __syncthreads();
    int interval = 0, rank = 0;
    if (r < rows) {
        interval = mlffHermiteAt(mlffFilterRowDistance(linkedFilterEdges, edgeDelta, r)).node;
        rank = atomicAdd(&blockCount[interval], 1);
    }
    __syncthreads();
    for (int k = threadIdx.x; k < MLFF_TABLE_INTERVALS; k += blockDim.x)
        if (blockCount[k] > 0)
            blockCount[k] = atomicAdd(&intervalCount[k], blockCount[k]);
    __syncthreads();
    if (r < rows)
        rowInterval[r] = make_int2(interval, blockCount[interval] + rank);
}

/** An interval's first row in interval order; its count back to zero, for the next step. */
struct MlffIntervalStarts {
    int* start;
    int* count;
    DEVICE void operator()(int k, int before, int) const {
        start[k] = before;
        count[k] = 0; // read by this thread alone, before (mlffExclusiveScan)
    }
};

/** One block of MLFF_SCAN_THREADS (scan.cu): intervalStart. */
KERNEL void mlffScanTableIntervals(int* RESTRICT intervalCount, int* RESTRICT intervalStart) {
    mlffStartAfterPreviousLaunch();
    mlffExclusiveScan(MLFF_TABLE_INTERVALS, MlffCounts{intervalCount},
                      MlffIntervalStarts{intervalStart, intervalCount});
}

/**
 * A thread a linked filter row r: its number p in interval order, the row's edges' in filterEdges[p]
 * and both edges' edgeFilterRow = p (mlffLinkFilterRows had linked them to r).
 */
KERNEL void mlffNumberTableRows(const int* RESTRICT filterRowCount, const int2* RESTRICT rowInterval,
        const int* RESTRICT intervalStart, const int2* RESTRICT linkedFilterEdges, int2* RESTRICT filterEdges,
        int* RESTRICT edgeFilterRow) {
    mlffStartAfterPreviousLaunch();
    const int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= *filterRowCount)
        return;
    const int2 interval = rowInterval[r], edges = linkedFilterEdges[r];
    const int p = intervalStart[interval.x] + interval.y;
    filterEdges[p] = edges;
    edgeFilterRow[edges.x] = p;
    if (edges.y >= 0)
        edgeFilterRow[edges.y] = p;
}

/**
 * body(r, hw) for each filter row r of this block's share of the rows (a run of nearby intervals,
 * an even share of the grid's), with hw the Hermite weights at its distance, in order within each
 * warp: warp w of the block takes the w-th of the share's even runs. Lane l loads the chain of the
 * run's row k + l (its owning edge, its distance) for 32 rows at once, so that a warp waits on one
 * chain of two dependent loads for 32 rows rather than one a row; the warp then takes those rows
 * one by one, each one's distance from its lane. hw.node is the same in every lane, so a body may
 * branch on it.
 */
template <class RowBody, class BatchEnd>
DEVICE inline void mlffForTableRows(const int* RESTRICT filterRowCount, const int2* RESTRICT filterEdges,
                                    const real4* RESTRICT edgeDelta, RowBody body, BatchEnd batchEnd) {
    const int rows = *filterRowCount, share = (rows + gridDim.x - 1) / gridDim.x;
    const int first = min((int) blockIdx.x * share, rows), end = min(first + share, rows);
    const int warps = blockDim.x / 32, warpRun = (end - first + warps - 1) / warps, lane = threadIdx.x % 32;
    const int runStart = min(first + (int) threadIdx.x / 32 * warpRun, end), runEnd = min(runStart + warpRun, end);
    for (int k = runStart; k < runEnd; k += 32) {
        real d = 0;
        if (k + lane < runEnd)
            d = mlffFilterRowDistance(filterEdges, edgeDelta, k + lane);
        const int batch = min(32, runEnd - k);
        for (int b = 0; b < batch; b++)
            body(k + b, mlffHermiteAt(__shfl_sync(0xffffffffu, d, b)), b);
        batchEnd(k + lane, k + lane < runEnd);
    }
}

/**
 * A lane's table entries of one interval (node), outputs lane, lane + 32, ... of the 3H: kept while
 * a warp's rows stay in that interval, which in interval order is for hundreds of rows (a
 * droplet's), so that the table's loads through the L1 are one an interval rather than one a row.
 */
struct MlffHeldTableEntries {
    int node = -1;
    real entries[3 * MLFF_H / 32][4];
    DEVICE void hold(const real* RESTRICT blockTable, int atNode) {
        if (atNode == node)
            return;
        node = atNode;
        const int lane = threadIdx.x % 32;
#pragma unroll
        for (int q = 0; q < 3 * MLFF_H / 32; q++)
            mlffTableEntries(blockTable, node, 32 * q + lane, entries[q]);
    }
};

/**
 * Whether block `layer` uses a lane's outputs q (32 q + lane of the 3H, kind q / (H / 32)): not
 * w_v1's in the first block (mlffFilterKindUsed), where the messages leave them unread and their
 * dE/dw is 0 (row_messages.cu).
 */
DEVICE inline bool mlffTableOutputUsed(int layer, int q) {
    return mlffFilterKindUsed(layer, q / (MLFF_H / 32));
}

/**
 * Block firstLayer + blockIdx.y's filters of each filter row from the table: edgeFilter + blockIdx.y
 * blockStride (rows, 3H), w_v1 left unwritten in the first block (mlffTableOutputUsed). The filters
 * depend on the distances alone, so every block's may come from one launch, the grid's rows.
 */
KERNEL void mlffTableFilterRows(int firstLayer, const real* RESTRICT filterTable, const int* RESTRICT filterRowCount,
        const int2* RESTRICT filterEdges, const real4* RESTRICT edgeDelta, real* RESTRICT edgeFilter,
        size_t blockStride) {
    mlffStartAfterPreviousLaunch();
    const int layer = firstLayer + blockIdx.y;
    edgeFilter += blockIdx.y * blockStride;
    const real* blockTable = mlffBlockTable(filterTable, layer);
    const int lane = threadIdx.x % 32;
    MlffHeldTableEntries held;
    mlffForTableRows(
            filterRowCount, filterEdges, edgeDelta,
            [&](int r, const MlffHermite& hw, int) {
                held.hold(blockTable, hw.node);
                real* row = edgeFilter + (size_t) r * 3 * MLFF_H;
#pragma unroll
                for (int q = 0; q < 3 * MLFF_H / 32; q++)
                    if (mlffTableOutputUsed(layer, q))
                        mlffHermiteSum(hw, held.entries[q], &row[32 * q + lane], (real*) 0);
            },
            [](int, bool) {});
}

/**
 * Each filter row's dE/dd of block `layer`, from its dE/dw (edgeGradFilter, 3H) and the table's
 * dw/dd, passed on by mlffAddPairGradient (to: edge_filters.cu's targets).
 */
KERNEL void mlffTableFilterBackward(int layer, const real* RESTRICT filterTable, const int* RESTRICT filterRowCount,
        const real* RESTRICT edgeGradFilter, const int2* RESTRICT filterEdges,
        const int2* RESTRICT edgeAtoms, const real4* RESTRICT edgeDelta, real4* RESTRICT edgeGradN,
        const int* RESTRICT mlReplica, const double* RESTRICT replicaScale, double lambdaForceScale,
        const int* RESTRICT mlParticle, const int* RESTRICT sortedIndexOfParticle,
        unsigned long long* RESTRICT forceBuffer) {
    mlffStartAfterPreviousLaunch();
    const real* blockTable = mlffBlockTable(filterTable, layer);
    const MlffPairGradientTargets to = {filterEdges, edgeAtoms, edgeDelta, edgeGradN, mlReplica, replicaScale,
                                        lambdaForceScale, mlParticle, sortedIndexOfParticle, forceBuffer};
    const int lane = threadIdx.x % 32;
    MlffHeldTableEntries held;
    real laneGd = 0; // dE/dd of the batch's row b = lane, passed on once the batch is done
    mlffForTableRows(
            filterRowCount, filterEdges, edgeDelta,
            [&](int r, const MlffHermite& hw, int b) {
                const real* gradW = edgeGradFilter + (size_t) r * 3 * MLFF_H;
                real g[3 * MLFF_H / 32];
#pragma unroll
                for (int q = 0; q < 3 * MLFF_H / 32; q++)
                    g[q] = mlffTableOutputUsed(layer, q) ? gradW[32 * q + lane] : 0;
                held.hold(blockTable, hw.node);
                real gd = 0;
#pragma unroll
                for (int q = 0; q < 3 * MLFF_H / 32; q++) {
                    real w, dwdd;
                    mlffHermiteSum(hw, held.entries[q], &w, &dwdd);
                    gd += g[q] * dwdd;
                }
                for (int offset = 16; offset > 0; offset /= 2)
                    gd += __shfl_xor_sync(0xffffffffu, gd, offset);
                if (lane == b)
                    laneGd = gd;
            },
            // A lane a row: the 32 rows' loads and stores (their edges' rows, at block 0 the forces)
            // in flight at once, where a row's lane 0 alone would wait on them before the next row.
            [&](int r, bool has) {
                if (has)
                    mlffAddPairGradient(layer, r, laneGd, to);
            });
}

#endif
