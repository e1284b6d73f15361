// table_rows.cu's kernels, run on the CPU (CudaOnHost.h) in double precision, on random filter
// rows at distances over the whole table (some at or past the cutoff, some on its nodes): the
// counting sort must number every row once, in the order of its table interval, with its edges
// and both edges' edgeFilterRow, and leave its counters at zero for the next step; each row the
// grid's blocks take must hold the table's filters at its distance, and its dE/dd the sum of its
// dE/dw times the table's dw/dd, added to its owning edge's edgeGradN.w as the blocks before the
// last add it. Each warp takes 59 to 63 rows, a batch of 32 and a shorter one (the kernels load
// the rows' distances a lane a row). Rows crowded into a few intervals, as a droplet's are
// (hundreds an interval), check the same where a block's share of the rows lies in a few
// intervals, whose entries the kernels keep in registers while a warp's rows stay in one.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <set>

#include "KernelsOnHost.h"

namespace {

constexpr int H = MLFF_H, Rows = 1500, Threads = 256;
constexpr int RowsGrid = (Rows + 2 * Threads - 1) / Threads; // more than the rows: blocks past them return

/**
 * Filter rows r as mlffLinkFilterRows links them, owned by edge Rows - 1 - r (so that rows and edges
 * differ), two in three with a partner edge Rows + r, at distances drawn from [shortest, longest)
 * Å; unless `crowded`, some on nodes and at the cutoff.
 */
struct FilterRows {
    std::vector<int2> linkedFilterEdges;
    std::vector<real4> edgeDelta; // 2 Rows edges: the owners', then the partners' (-u)
    FilterRows(std::mt19937& rng, double shortest = 0.5, double longest = 5.2, bool crowded = false) {
        std::uniform_real_distribution<double> distance(shortest, longest), direction(-1, 1);
        for (int r = 0; r < Rows; r++) {
            double d = distance(rng);
            if (r % 97 == 0 && !crowded)
                d = (r / 97 % 40) * MLFF_TABLE_SPACING + 1.0; // on a node
            if (r % 101 == 0 && !crowded)
                d = MLFF_CUTOFF; // the last node, exactly
            const double x = direction(rng), y = direction(rng), z = direction(rng);
            const double scale = d / std::sqrt(x * x + y * y + z * z);
            linkedFilterEdges.push_back(make_int2(Rows - 1 - r, r % 3 == 0 ? -1 : Rows + r));
            edgeDelta.push_back(make_real4(x * scale, y * scale, z * scale, d));
        }
        std::reverse(edgeDelta.begin(), edgeDelta.end()); // edge e = Rows - 1 - r holds row r's geometry
        for (int r = 0; r < Rows; r++) {
            const real4 u = edgeDelta[Rows - 1 - r];
            edgeDelta.push_back(make_real4(-u.x, -u.y, -u.z, u.w));
        }
    }
};

/** The rows as numbered by interval: each one's edges, and each edge's row. */
struct NumberedRows {
    std::vector<int2> filterEdges = std::vector<int2>(Rows, make_int2(-1, -1));
    std::vector<int> edgeFilterRow = std::vector<int>(2 * Rows, -1);
    const FilterRows& linked;
    explicit NumberedRows(const FilterRows& linkedRows) : linked(linkedRows) {}
    real distance(int p) const {
        return linked.edgeDelta[filterEdges[p].x].w;
    }
};

/** One step's numbering, with the kernels' grids as the host launches them. */
NumberedRows numberRows(const FilterRows& rows, std::vector<int>& intervalCount) {
    const int count = Rows;
    std::vector<int2> rowInterval(RowsGrid * Threads, make_int2(-1, -1));
    std::vector<int> intervalStart(MLFF_TABLE_INTERVALS, -1);
    NumberedRows numbered(rows);
    cudaOnHostLaunch(RowsGrid, Threads, [&] {
        mlffCountTableIntervals(&count, rows.linkedFilterEdges.data(), rows.edgeDelta.data(), intervalCount.data(),
                                rowInterval.data());
    });
    cudaOnHostLaunch(1, MLFF_SCAN_THREADS, [&] { mlffScanTableIntervals(intervalCount.data(), intervalStart.data()); });
    cudaOnHostLaunch(RowsGrid, Threads, [&] {
        mlffNumberTableRows(&count, rowInterval.data(), intervalStart.data(), rows.linkedFilterEdges.data(),
                            numbered.filterEdges.data(), numbered.edgeFilterRow.data());
    });
    return numbered;
}

int intervalOf(real d) {
    return mlffHermiteAt(d).node;
}

TEST(TableRowsOnHost, NumbersTheRowsByTableInterval) {
    std::mt19937 rng(21);
    const FilterRows rows(rng);
    std::vector<int> intervalCount(MLFF_TABLE_INTERVALS, 0);
    for (int step = 0; step < 2; step++) { // the second step starts from the counters the first left
        SCOPED_TRACE("step " + std::to_string(step));
        const NumberedRows numbered = numberRows(rows, intervalCount);
        std::vector<int> seen(Rows, 0); // each linked row, by its owning edge Rows - 1 - r
        for (int p = 0; p < Rows; p++) {
            const int2 edges = numbered.filterEdges[p];
            ASSERT_GE(edges.x, 0) << "row " << p;
            ASSERT_LT(edges.x, Rows) << "row " << p;
            const int r = Rows - 1 - edges.x;
            seen[r]++;
            ASSERT_EQ(edges.y, rows.linkedFilterEdges[r].y) << "row " << p;
            ASSERT_EQ(numbered.edgeFilterRow[edges.x], p) << "row " << p;
            if (edges.y >= 0)
                ASSERT_EQ(numbered.edgeFilterRow[edges.y], p) << "row " << p << ", its partner edge";
            if (p > 0)
                ASSERT_LE(intervalOf(numbered.distance(p - 1)), intervalOf(numbered.distance(p))) << "row " << p;
        }
        for (int r = 0; r < Rows; r++)
            ASSERT_EQ(seen[r], 1) << "linked row " << r;
        for (int k = 0; k < MLFF_TABLE_INTERVALS; k++)
            ASSERT_EQ(intervalCount[k], 0) << "interval " << k;
    }
}

/** Each row's filters and dE/dd from the table kernels, against the table read row by row. */
void checkFiltersAndDistanceGradients(std::mt19937& rng, const FilterRows& rows) {
    std::vector<int> intervalCount(MLFF_TABLE_INTERVALS, 0);
    const NumberedRows numbered = numberRows(rows, intervalCount);
    const std::vector<real> table = randomReals(rng, (size_t) MLFF_L * MLFF_TABLE_BLOCK_STRIDE);
    const std::vector<real> gradFilter = randomReals(rng, (size_t) Rows * 3 * H);
    const int count = Rows, layer = 1, tableGrid = 3; // an uneven share of the rows a block
    std::vector<real> filters((size_t) Rows * 3 * H, -7);
    cudaOnHostLaunch(tableGrid, Threads, [&] {
        mlffTableFilterRows(layer, table.data(), &count, numbered.filterEdges.data(), rows.edgeDelta.data(),
                            filters.data(), 0);
    });
    // Block `layer` > 0 of the backward pass: each row's dE/dd added to its owner's edgeGradN.w.
    std::vector<real4> gradN(2 * Rows, make_real4(0, 0, 0, 0.25));
    cudaOnHostLaunch(tableGrid, Threads, [&] {
        mlffTableFilterBackward(layer, table.data(), &count, gradFilter.data(), numbered.filterEdges.data(), nullptr,
                                rows.edgeDelta.data(), gradN.data(), nullptr, nullptr, 1.0, nullptr, nullptr, nullptr);
    });
    const real* blockTable = mlffBlockTable(table.data(), layer);
    for (int r = 0; r < Rows; r++) {
        SCOPED_TRACE("row " + std::to_string(r) + ", d = " + std::to_string(numbered.distance(r)));
        const MlffHermite hw = mlffHermiteAt(numbered.distance(r));
        double gd = 0, scale = 0;
        for (int o = 0; o < 3 * H; o++) {
            real w, dwdd;
            mlffTableOutput(blockTable, hw, o, &w, &dwdd);
            ASSERT_EQ(filters[(size_t) r * 3 * H + o], w) << "output " << o;
            gd += gradFilter[(size_t) r * 3 * H + o] * dwdd;
            scale += std::abs(gradFilter[(size_t) r * 3 * H + o] * dwdd);
        }
        const int2 edges = numbered.filterEdges[r];
        const real4 gn = gradN[edges.x];
        EXPECT_NEAR(gn.w, 0.25 + gd, 1e-13 * scale); // the warp sums in another order
        EXPECT_EQ(gn.x, 0); // dE/dn is the messages' backward's, untouched
        if (edges.y >= 0)
            EXPECT_EQ(gradN[edges.y].w, 0.25) << "the partner edge"; // the owner's alone carries dE/dd
    }
}

TEST(TableRowsOnHost, RowsHoldTheTablesFiltersAndGiveTheirDistanceGradients) {
    std::mt19937 rng(22);
    checkFiltersAndDistanceGradients(rng, FilterRows(rng));
}

TEST(TableRowsOnHost, RowsCrowdedInAFewIntervalsToo) {
    std::mt19937 rng(23);
    // 1,500 rows in 5 intervals: each block's share of 500 rows lies in two or three of them.
    const FilterRows rows(rng, 1.0, 1.0 + 5 * MLFF_TABLE_SPACING, true);
    std::set<int> intervals;
    for (int r = 0; r < Rows; r++)
        intervals.insert(intervalOf(rows.edgeDelta[r].w));
    ASSERT_EQ(intervals.size(), 5u);
    checkFiltersAndDistanceGradients(rng, rows);
}

// Every block's filters from one launch, a row of its grid a block, each block's rows blockStride
// apart: the same, bit for bit, as each block's own launch.
TEST(TableRowsOnHost, EveryBlocksFiltersInOneLaunch) {
    std::mt19937 rng(24);
    const FilterRows rows(rng);
    std::vector<int> intervalCount(MLFF_TABLE_INTERVALS, 0);
    const NumberedRows numbered = numberRows(rows, intervalCount);
    const std::vector<real> table = randomReals(rng, (size_t) MLFF_L * MLFF_TABLE_BLOCK_STRIDE);
    const int count = Rows, tableGrid = 3;
    const size_t blockStride = (size_t) (Rows + 7) * 3 * H; // a bound past the rows, as the plugin's
    std::vector<real> everyBlock(MLFF_L * blockStride, -7), ownLaunches(MLFF_L * blockStride, -7);
    cudaOnHostLaunch(
            tableGrid, Threads,
            [&] {
                mlffTableFilterRows(0, table.data(), &count, numbered.filterEdges.data(), rows.edgeDelta.data(),
                                    everyBlock.data(), blockStride);
            },
            MLFF_L);
    for (int layer = 0; layer < MLFF_L; layer++)
        cudaOnHostLaunch(tableGrid, Threads, [&] {
            mlffTableFilterRows(layer, table.data(), &count, numbered.filterEdges.data(), rows.edgeDelta.data(),
                                ownLaunches.data() + layer * blockStride, 0);
        });
    for (int layer = 0; layer < MLFF_L; layer++) {
        const size_t first = layer * blockStride;
        EXPECT_NE(ownLaunches[first + 3 * H], -7) << "block " << layer << ": its filters written"; // row 1's w_s
        for (size_t k = first; k < first + blockStride; k++)
            ASSERT_EQ(everyBlock[k], ownLaunches[k]) << "block " << layer << ", element " << k - first;
    }
}

} // namespace
