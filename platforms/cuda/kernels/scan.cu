/*
 * scan.cu: an exclusive prefix sum over n integers by one thread block of MLFF_SCAN_THREADS, for
 * the cell list (cell_list.cu) and the edges' rows (student_painn/edge_filters.cu). The values go
 * in tiles of MLFF_SCAN_THREADS, one per thread (coalesced), scanned by warp shuffles and a scan
 * of the warp totals; the next tile's values are loaded while this one is scanned.
 */
#define MLFF_SCAN_THREADS 1024

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
    int next = t < n ? value(t) : 0;
    for (int tile = 0; tile < n; tile += MLFF_SCAN_THREADS) {
        const int k = tile + t, count = next;
        next = k + MLFF_SCAN_THREADS < n ? value(k + MLFF_SCAN_THREADS) : 0;
        int inclusive = count;
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
        if (k < n)
            store(k, carry + (warp > 0 ? warpTotals[warp - 1] : 0) + inclusive - count, count);
        carry += tileTotal;
        __syncthreads(); // warpTotals and tileTotal are rewritten by the next tile
    }
    return carry;
}
