// scan.cu's block-wide exclusive prefix sum, run on the CPU (CudaOnHost.h): for lengths around the
// edges of its rows (MLFF_SCAN_THREADS values) and tiles (MLFF_SCAN_ROWS rows), every value's store
// must get the sum of the values before it and the value itself, once, and the call must return
// the total.
#include <gtest/gtest.h>

#include <random>

#include "KernelsOnHost.h"

namespace {

constexpr int Tile = MLFF_SCAN_THREADS * MLFF_SCAN_ROWS;

/** What mlffExclusiveScan passes to its store: the sum before k and k's value, and how often. */
struct RecordedStores {
    int* before;
    int* value;
    int* calls;
    void operator()(int k, int sumBefore, int valueOfK) const {
        before[k] = sumBefore;
        value[k] = valueOfK;
        calls[k]++; // each k belongs to one thread
    }
};

TEST(ScanOnHost, ExclusiveSumsAcrossTiles) {
    std::mt19937 rng(11);
    std::uniform_int_distribution<int> counts(0, 40);
    for (int n : {0, 1, 33, MLFF_SCAN_THREADS, MLFF_SCAN_THREADS + 1, 2 * MLFF_SCAN_THREADS + 31, Tile - 1, Tile,
                  Tile + 1, 3 * Tile + 100}) {
        SCOPED_TRACE("n = " + std::to_string(n));
        std::vector<int> values(n), before(n, -1), stored(n, -1), calls(n, 0), totals(MLFF_SCAN_THREADS, -1);
        for (int& v : values)
            v = counts(rng);
        cudaOnHostLaunch(1, MLFF_SCAN_THREADS, [&] {
            totals[threadIdx.x] = mlffExclusiveScan(n, MlffCounts{values.data()},
                                                    RecordedStores{before.data(), stored.data(), calls.data()});
        });
        int sum = 0;
        for (int k = 0; k < n; k++) {
            ASSERT_EQ(calls[k], 1) << "value " << k;
            ASSERT_EQ(stored[k], values[k]) << "value " << k;
            ASSERT_EQ(before[k], sum) << "value " << k;
            sum += values[k];
        }
        for (int t = 0; t < MLFF_SCAN_THREADS; t++)
            ASSERT_EQ(totals[t], sum) << "thread " << t;
    }
}

} // namespace
