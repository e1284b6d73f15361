/*
 * scan.cu: an exclusive prefix sum over n integers by one thread block of MLFF_SCAN_THREADS, for
 * the cell list (cell_list.cu) and the edges' rows (student_painn/edge_filters.cu). The values go
 * in tiles of MLFF_SCAN_ROWS rows of MLFF_SCAN_THREADS, a value a thread in each row (coalesced),
 * all of a tile's loads in flight at once. Each row is scanned by warp shuffles and a scan of its
 * warp totals, the rows side by side. The 32,768 cells of the 12,000-atom droplet (H200): 13 us,
 * against 17 with tiles of one row, and 52 with a run of eight consecutive values a thread (each
 * load or store instruction of a warp then touches 32 sectors).
 */
#define MLFF_SCAN_THREADS 1024
#define MLFF_SCAN_ROWS 8

/** The values of an array, for mlffExclusiveScan. */
struct MlffCounts {
    const int* count;
    DEVICE int operator()(int k) const {
        return count[k];
    }
};

/**
 * For k = 0 .. n-1: store(k, value(0) + ... + value(k-1), value(k)). Returns the sum of all n
 * values (in every thread). Called by all threads of the block.
 */
template <class Value, class Store>
DEVICE inline int mlffExclusiveScan(int n, Value value, Store store) {
    __shared__ int warpTotals[MLFF_SCAN_ROWS][MLFF_SCAN_THREADS / 32]; // a row's, then inclusive over warps
    const int t = threadIdx.x, lane = t % 32, warp = t / 32;
    int carry = 0; // the values before this tile
    for (int tile = 0; tile < n; tile += MLFF_SCAN_ROWS * MLFF_SCAN_THREADS) {
        int values[MLFF_SCAN_ROWS], inclusive[MLFF_SCAN_ROWS]; // value tile + q MLFF_SCAN_THREADS + t
#pragma unroll
        for (int q = 0; q < MLFF_SCAN_ROWS; q++) {
            const int k = tile + q * MLFF_SCAN_THREADS + t;
            values[q] = k < n ? value(k) : 0;
        }
#pragma unroll
        for (int q = 0; q < MLFF_SCAN_ROWS; q++) {
            inclusive[q] = values[q];
            for (int offset = 1; offset < 32; offset *= 2) {
                const int add = __shfl_up_sync(0xffffffffu, inclusive[q], offset);
                if (lane >= offset)
                    inclusive[q] += add;
            }
            if (lane == 31)
                warpTotals[q][warp] = inclusive[q];
        }
        __syncthreads();
        if (warp < MLFF_SCAN_ROWS) { // warp q scans row q's warp totals
            int total = lane < MLFF_SCAN_THREADS / 32 ? warpTotals[warp][lane] : 0;
            for (int offset = 1; offset < 32; offset *= 2) {
                const int add = __shfl_up_sync(0xffffffffu, total, offset);
                if (lane >= offset)
                    total += add;
            }
            if (lane < MLFF_SCAN_THREADS / 32)
                warpTotals[warp][lane] = total;
        }
        __syncthreads();
#pragma unroll
        for (int q = 0; q < MLFF_SCAN_ROWS; q++) {
            const int k = tile + q * MLFF_SCAN_THREADS + t;
            if (k < n)
                store(k, carry + (warp > 0 ? warpTotals[q][warp - 1] : 0) + inclusive[q] - values[q], values[q]);
            carry += warpTotals[q][MLFF_SCAN_THREADS / 32 - 1]; // row q's total
        }
        __syncthreads(); // warpTotals is rewritten by the next tile
    }
    return carry;
}
