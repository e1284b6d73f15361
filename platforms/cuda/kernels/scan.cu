/*
 * scan.cu: an exclusive prefix sum over n integers by one thread block of MLFF_SCAN_THREADS, for
 * the cell list (cell_list.cu) and the edges' rows (student_painn/edge_filters.cu). The values go
 * in tiles of MLFF_SCAN_VALUES a thread: each thread loads its run of consecutive values at once
 * (their loads all in flight: a tile of a value a thread, waiting on each tile's loads, took 17 us
 * for the 32,768 cells of the 12,000-atom droplet), sums them, and the runs' totals are scanned by
 * warp shuffles and a scan of the warp totals.
 */
#define MLFF_SCAN_THREADS 1024
#define MLFF_SCAN_VALUES 8

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
    __shared__ int warpTotals[MLFF_SCAN_THREADS / 32];
    __shared__ int tileTotal;
    const int t = threadIdx.x, lane = t % 32, warp = t / 32;
    int carry = 0; // the values before this tile
    for (int tile = 0; tile < n; tile += MLFF_SCAN_THREADS * MLFF_SCAN_VALUES) {
        const int first = tile + t * MLFF_SCAN_VALUES; // this thread's run
        int values[MLFF_SCAN_VALUES], run = 0;
#pragma unroll
        for (int q = 0; q < MLFF_SCAN_VALUES; q++)
            values[q] = first + q < n ? value(first + q) : 0;
#pragma unroll
        for (int q = 0; q < MLFF_SCAN_VALUES; q++)
            run += values[q];
        int inclusive = run;
        for (int offset = 1; offset < 32; offset *= 2) {
            const int add = __shfl_up_sync(0xffffffffu, inclusive, offset);
            if (lane >= offset)
                inclusive += add;
        }
        if (lane == 31)
            warpTotals[warp] = inclusive;
        __syncthreads();
        if (warp == 0) {
            int total = lane < MLFF_SCAN_THREADS / 32 ? warpTotals[lane] : 0;
            for (int offset = 1; offset < 32; offset *= 2) {
                const int add = __shfl_up_sync(0xffffffffu, total, offset);
                if (lane >= offset)
                    total += add;
            }
            if (lane < MLFF_SCAN_THREADS / 32)
                warpTotals[lane] = total; // inclusive over warps
            if (lane == 31)
                tileTotal = total;
        }
        __syncthreads();
        int before = carry + (warp > 0 ? warpTotals[warp - 1] : 0) + inclusive - run;
#pragma unroll
        for (int q = 0; q < MLFF_SCAN_VALUES; q++)
            if (first + q < n) {
                store(first + q, before, values[q]);
                before += values[q];
            }
        carry += tileTotal;
        __syncthreads(); // warpTotals and tileTotal are rewritten by the next tile
    }
    return carry;
}
