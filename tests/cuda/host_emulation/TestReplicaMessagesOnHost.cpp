// The tiled path's messages a block per replica (replica_messages.cu: the pairs found by
// mlffFindReplicaPairs, then the messages) against the same messages a block per atom (tiled.cu:
// mlffMessagesForwardTiled, mlffMessagesBackwardTiled), both run on the CPU (CudaOnHost.h) on the
// same random features, table and replicas of 1 to 16 atoms, in double precision: the features and
// gradients must be equal bit for bit (each atom's messages are summed in the same order; the
// gradients to rounding where the replicas' backward walks the pairs in parts, MLFF_REPLICA_SPLIT),
// the forces equal to the fixed point's rounding (a pair adds its two edges' forces as one). Built
// twice: without a box, its backward in two parts, and periodic (MLFF_PERIODIC) in a 10.5 Å cube,
// in one part; and twice more with exact filters (MLFF_HOST_EXACT_FILTERS), where the replica
// kernels read each pair's filter from its row, against the list's kernels on the same rows
// (row_messages.cu). With the table, the list's kernels on edge rows filled from it (table_rows.cu)
// against the tiled ones. The list's backward from rows walks each atom's edges in another order
// than the list's (edgeWalk), so its gradients agree with the other paths' to rounding.
#include <gtest/gtest.h>

#include <algorithm>
#include <limits>
#include <numeric>
#include <random>

#include "KernelsOnHost.h"

namespace {

#ifdef MLFF_PERIODIC
constexpr double BoxSide = 10.5; // Å: at least twice the cutoff
constexpr double Spread = 1.0;   // nm: positions across the whole box, so that pairs wrap
#else
constexpr double BoxSide = 0;
constexpr double Spread = 0.6;
#endif
constexpr int ReplicaSizes[MLFF_NUM_REPLICAS] = {1, 2, 3, 7, 12, 13, 16};
constexpr int AtomWarpBlocks = (MLFF_NUM_ATOMS * 32 + 127) / 128; // a warp per atom, 128 threads a block

/** The system: replicas, positions (OpenMM's, in nm, and the kernels', in Å) and neighbour lists. */
struct Replicas {
    std::vector<int> start, replica, z, particle, sortedIndex;
    std::vector<real4> posq, pos; // nm (as OpenMM holds them), Å (mlPos)
    real4 boxA{}, boxB{}, boxC{}, invBoxSize{};
    std::vector<int> count, list; // the list as mlffFindNeighborsInReplica fills it: ascending j
    int capacity = 1;
    long edges = 0;
};

Replicas makeReplicas(std::mt19937& rng) {
    Replicas s;
    std::uniform_real_distribution<double> uniform(0, 1);
    s.start.assign(1, 0);
    for (int size : ReplicaSizes)
        s.start.push_back(s.start.back() + size);
    for (int r = 0; r < MLFF_NUM_REPLICAS; r++)
        s.replica.insert(s.replica.end(), ReplicaSizes[r], r);
    for (int i = 0; i < MLFF_NUM_ATOMS; i++) {
        s.z.push_back(1 + (int) (uniform(rng) * (MLFF_Z_MAX - 1)));
        s.particle.push_back(i);
        double q[3];
        for (double& x : q)
            x = std::floor(uniform(rng) * Spread * 1024) / 1024; // nm, exact when scaled to Å
        s.posq.push_back({q[0], q[1], q[2], 0});
        s.pos.push_back({10 * q[0], 10 * q[1], 10 * q[2], 0});
    }
    for (int i = 0; i < MLFF_PADDED_NUM_ATOMS; i++)
        s.sortedIndex.push_back(i);
    s.posq.resize(MLFF_PADDED_NUM_ATOMS, real4{});
    if (BoxSide > 0) {
        s.boxA = {BoxSide, 0, 0, 0};
        s.boxB = {0, BoxSide, 0, 0};
        s.boxC = {0, 0, BoxSide, 0};
        s.invBoxSize = {1 / BoxSide, 1 / BoxSide, 1 / BoxSide, 0};
    }
    std::vector<std::vector<int>> lists(MLFF_NUM_ATOMS);
    for (int i = 0; i < MLFF_NUM_ATOMS; i++) {
        const int r = s.replica[i];
        for (int j = s.start[r]; j < s.start[r + 1]; j++) {
            real ux, uy, uz;
            mlffPairDelta(s.pos[i], s.pos[j], s.boxA, s.boxB, s.boxC, s.invBoxSize, &ux, &uy, &uz);
            if (j != i && mlffIsEdge(ux, uy, uz))
                lists[i].push_back(j);
        }
        s.capacity = std::max(s.capacity, (int) lists[i].size());
    }
    s.count.assign(MLFF_NUM_ATOMS, 0);
    s.list.assign((size_t) MLFF_NUM_ATOMS * s.capacity, -1);
    for (int i = 0; i < MLFF_NUM_ATOMS; i++) {
        s.count[i] = (int) lists[i].size();
        s.edges += s.count[i];
        std::copy(lists[i].begin(), lists[i].end(), s.list.begin() + (size_t) i * s.capacity);
    }
    return s;
}

/** The largest force in OpenMM's fixed-point buffer a (1/2^32), and the largest difference of b's from a's. */
struct ForceDifference {
    double largest = 0, difference = 0;
};
ForceDifference compareForces(const std::vector<unsigned long long>& a, const std::vector<unsigned long long>& b) {
    ForceDifference result;
    for (size_t k = 0; k < a.size(); k++) {
        const double x = (double) (long long) a[k] / 4294967296.0, y = (double) (long long) b[k] / 4294967296.0;
        result.largest = std::max(result.largest, std::fabs(x));
        result.difference = std::max(result.difference, std::fabs(x - y));
    }
    return result;
}

/** The messages' outputs, -7 where nothing is written. */
struct MessagesOut {
    std::vector<real> midV = std::vector<real>((size_t) MLFF_L * MLFF_NUM_ATOMS * 3 * MLFF_H, -7);
    std::vector<real> updateInput = std::vector<real>((size_t) MLFF_NUM_ATOMS * 2 * MLFF_H, -7);
};

/** The messages' backward's outputs (the gradients it passes on), -7 where nothing is written. */
struct GradientsOut {
    std::vector<real> updateGradOutput = std::vector<real>((size_t) MLFF_NUM_ATOMS * 3 * MLFF_H, -7);
    std::vector<real> gradOutV = std::vector<real>((size_t) MLFF_NUM_ATOMS * 3 * MLFF_H, -7);
};

/** Two paths' outputs, equal bit for bit. */
void expectEqual(const MessagesOut& a, const MessagesOut& b) {
    EXPECT_EQ(a.midV, b.midV);
    EXPECT_EQ(a.updateInput, b.updateInput);
}

void expectEqual(const GradientsOut& a, const GradientsOut& b) {
    EXPECT_EQ(a.updateGradOutput, b.updateGradOutput);
    EXPECT_EQ(a.gradOutV, b.gradOutV);
}

/** The largest difference of a and b over their first n elements, relative to the largest of a. */
double relativeDifference(const std::vector<real>& a, const std::vector<real>& b, size_t n) {
    double largest = 0, difference = 0;
    for (size_t k = 0; k < n; k++) {
        largest = std::max(largest, std::fabs(a[k]));
        difference = std::max(difference, std::fabs(a[k] - b[k]));
    }
    return largest > 0 ? difference / largest : difference;
}

/** Two paths' gradients equal to rounding: within 1e-13 of the largest of the reference's, in double. */
void expectGradientsToRounding(const GradientsOut& reference, const GradientsOut& other) {
    EXPECT_LE(relativeDifference(reference.updateGradOutput, other.updateGradOutput, reference.updateGradOutput.size()),
              1e-13);
    EXPECT_LE(relativeDifference(reference.gradOutV, other.gradOutV, reference.gradOutV.size()), 1e-13);
}

/**
 * The replicas' messages' backward against a block per atom's: equal bit for bit where its block
 * walks the pairs in one part, else to rounding, since each part sums its share of an atom's
 * gather and the parts' sums are added after.
 */
void expectReplicaGradients(const GradientsOut& replicas, const GradientsOut& perAtom) {
    if (MLFF_REPLICA_SPLIT == 1)
        expectEqual(perAtom, replicas);
    else
        expectGradientsToRounding(perAtom, replicas);
}

/**
 * The messages' backward from rows against another path's: the same gradients to rounding, since
 * it sums each atom's gather in edgeWalk's order rather than the list's (in double, as the other
 * sums here in another order).
 */
void expectRowsGradients(const GradientsOut& rows, const GradientsOut& other) {
    expectGradientsToRounding(other, rows);
}

/** makeReplicas, and a line saying what it made; fails the test unless they have edges enough to test anything. */
Replicas makeTestedReplicas(std::mt19937& rng, const char* filters) {
    Replicas s = makeReplicas(rng);
    EXPECT_GT(s.edges, 200) << "too few edges to test anything";
    std::printf("%d atoms in %d replicas, %ld edges, %s, %s filters\n", MLFF_NUM_ATOMS, MLFF_NUM_REPLICAS, s.edges,
                BoxSide > 0 ? "periodic" : "no box", filters);
    return s;
}

/**
 * The edge filters' rows of both paths: the list's (edge_filters.cu: mlffScanEdges, mlffGatherEdges,
 * mlffScanFilterRows, mlffLinkFilterRows; listRows, with either kind of filters) and, with exact
 * filters, the replicas' (mlffFindReplicaPairs, mlffScanReplicaPairs, mlffLinkReplicaPairRows;
 * replicaRows). The replicas are contiguous ranges of atoms and every list is complete, so both
 * number the pairs in ascending (i, j): filter row r is the same pair.
 */
struct FilterRows {
    int rows = 0;
    std::vector<int> filterCount, rowStart;   // the list's: filterStart; the replicas': pairRowStart
    std::vector<int> edgeStart, ownedRank, partner, walk, filterRow; // the list's alone
    std::vector<int> overflowed;                               // the list's: [0] the count, then the atoms
    std::vector<int2> edgeAtoms, filterEdges;
    std::vector<real4> edgeDelta;
    std::vector<real> basis;
    std::vector<int> pairCount; // the replicas' alone: their pair slots
    std::vector<int2> pairAtoms;
    std::vector<real4> pairGeometry;
};

FilterRows listRows(const Replicas& s, const std::vector<real>& params) {
    const size_t bound = (size_t) MLFF_NUM_ATOMS * s.capacity;
    FilterRows f;
    f.edgeStart.assign(MLFF_NUM_ATOMS + 1, -1);
    f.overflowed.assign(MLFF_NUM_ATOMS + 1, -1);
    f.rowStart.assign(MLFF_NUM_ATOMS + 1, -1);
    f.filterCount.assign(MLFF_NUM_ATOMS, -1);
    f.ownedRank.assign(bound, -2);
    f.partner.assign(bound, -2);
    f.walk.assign(bound, -1);
    f.filterRow.assign(bound, -1);
    f.edgeAtoms.assign(bound, int2{-1, -1});
    f.filterEdges.assign(bound, int2{-1, -1});
    f.edgeDelta.assign(bound, real4{});
    f.basis.assign(bound * MLFF_K, 0);
    cudaOnHostLaunch(1, MLFF_SCAN_THREADS, [&] {
        mlffScanEdges(s.count.data(), s.capacity, f.edgeStart.data(), f.overflowed.data());
    });
    cudaOnHostLaunch(AtomWarpBlocks, 128, [&] {
        mlffGatherEdges(s.pos.data(), s.count.data(), s.list.data(), s.capacity, f.edgeStart.data(), s.boxA, s.boxB,
                        s.boxC, s.invBoxSize, f.edgeAtoms.data(), f.edgeDelta.data(), f.ownedRank.data(),
                        f.partner.data(), f.walk.data(), f.filterCount.data(), f.overflowed.data());
    });
    cudaOnHostLaunch(1, MLFF_SCAN_THREADS, [&] { mlffScanFilterRows(f.filterCount.data(), f.rowStart.data()); });
    cudaOnHostLaunch(AtomWarpBlocks, 128, [&] {
        mlffLinkFilterRows(params.data(), s.count.data(), s.capacity, f.edgeStart.data(), f.rowStart.data(),
                           f.edgeDelta.data(), f.ownedRank.data(), f.partner.data(), f.filterRow.data(),
                           f.filterEdges.data(), f.basis.data());
    });
    f.rows = f.rowStart[MLFF_NUM_ATOMS];
    return f;
}

#ifdef MLFF_TABULATED
/** The messages' inputs at random: the parameters, the filters' table and each block's features. */
struct TabulatedInputs {
    std::vector<real> params, table, stateS, stateV;
};
TabulatedInputs randomTabulatedInputs(std::mt19937& rng) {
    const int n = MLFF_NUM_ATOMS, h = MLFF_H, layers = MLFF_L;
    TabulatedInputs in;
    in.params = randomReals(rng, MLFF_PARAMETERS_SIZE);
    in.table = randomReals(rng, (size_t) layers * 2 * MLFF_TABLE_NODES * 3 * h);
    in.stateS = randomReals(rng, (size_t) (layers + 1) * n * h);
    in.stateV = randomReals(rng, (size_t) (layers + 1) * n * 3 * h);
    return in;
}

/** The messages' backward's other inputs at random: kept values, a block's dE/d(s', v'), scales. */
struct BackwardInputs {
    std::vector<real> midVKept, updateOutput, gradInS, gradInV;
    std::vector<double> replicaScale;
    double lambdaForceScale = 0.7 * 964.8533212331002;
};
BackwardInputs randomBackwardInputs(std::mt19937& rng) {
    const int n = MLFF_NUM_ATOMS, h = MLFF_H, layers = MLFF_L;
    BackwardInputs in;
    in.midVKept = randomReals(rng, (size_t) layers * n * 3 * h);
    in.updateOutput = randomReals(rng, (size_t) layers * n * 2 * h);
    in.gradInS = randomReals(rng, (size_t) n * h);
    in.gradInV = randomReals(rng, (size_t) n * 3 * h);
    for (int r = 0; r < MLFF_NUM_REPLICAS; r++)
        in.replicaScale.push_back(0.5 + 0.125 * r);
    return in;
}

/** The messages of block `layer` by tiled.cu's kernels (a block per atom, the table read per edge): the reference. */
void tiledMessagesForward(const Replicas& s, const TabulatedInputs& in, int layer, MessagesOut& out) {
    cudaOnHostLaunch(MLFF_NUM_ATOMS, MLFF_BLOCK, [&] {
        mlffMessagesForwardTiled(layer, nullptr, in.params.data(), in.table.data(), s.pos.data(), s.z.data(),
                                 s.replica.data(), s.start.data(), s.count.data(), s.list.data(), s.capacity, s.boxA,
                                 s.boxB, s.boxC, s.invBoxSize, in.stateS.data(), in.stateV.data(), out.midV.data(),
                                 out.updateInput.data());
    });
}

/** Their backward likewise, its forces added to forceBuffer. */
void tiledMessagesBackward(const Replicas& s, const TabulatedInputs& in, const BackwardInputs& b, int layer,
                           GradientsOut& out, unsigned long long* forceBuffer) {
    cudaOnHostLaunch(MLFF_NUM_ATOMS, MLFF_BLOCK, [&] {
        mlffMessagesBackwardTiled(layer, nullptr, in.params.data(), in.table.data(), s.pos.data(), s.z.data(),
                                  s.replica.data(), s.start.data(), s.count.data(), s.list.data(), s.capacity, s.boxA,
                                  s.boxB, s.boxC, s.invBoxSize, in.stateS.data(), in.stateV.data(),
                                  b.midVKept.data(), b.updateOutput.data(), b.gradInS.data(), b.gradInV.data(),
                                  out.updateGradOutput.data(), out.gradOutV.data(),
                                  b.replicaScale.data(), b.lambdaForceScale, s.particle.data(), s.sortedIndex.data(),
                                  forceBuffer);
    });
}

TEST(ReplicaMessagesOnHost, EqualTheBlockPerAtomKernels) {
    const int layers = MLFF_L;
    std::mt19937 rng(11);
    const Replicas s = makeTestedReplicas(rng, "tabulated");
    const TabulatedInputs in = randomTabulatedInputs(rng);
    const auto& [params, table, stateS, stateV] = in;
    constexpr int slots = MLFF_NUM_REPLICAS * MLFF_REPLICA_PAIRS;
    std::vector<int> pairCount(MLFF_NUM_REPLICAS, -1);
    std::vector<int2> pairAtoms(slots, int2{-1, -1});
    std::vector<real4> pairGeometry(slots, real4{});
    cudaOnHostLaunch((MLFF_NUM_REPLICAS + MLFF_PAIR_FINDERS - 1) / MLFF_PAIR_FINDERS, 32 * MLFF_PAIR_FINDERS, [&] {
        mlffFindReplicaPairs(s.posq.data(), s.sortedIndex.data(), s.particle.data(), s.start.data(), s.boxA, s.boxB,
                             s.boxC, s.invBoxSize, pairCount.data(), pairAtoms.data(), pairGeometry.data());
    });
    long pairs = 0;
    for (int count : pairCount)
        pairs += count;
    EXPECT_EQ(2 * pairs, s.edges); // each pair is both of its edges
    for (int layer = 0; layer < layers; layer++) {
        SCOPED_TRACE("block " + std::to_string(layer));
        MessagesOut out[2]; // [0] a block per atom, [1] a block per replica
        tiledMessagesForward(s, in, layer, out[0]);
        cudaOnHostLaunch(MLFF_NUM_REPLICAS, MLFF_BLOCK, [&] {
            mlffMessagesForwardReplicas(layer, params.data(), table.data(), nullptr, pairCount.data(),
                                        pairAtoms.data(), pairGeometry.data(), s.z.data(), s.start.data(),
                                        stateS.data(), stateV.data(), out[1].midV.data(),
                                        out[1].updateInput.data());
        });
        expectEqual(out[0], out[1]);

        // Backward, from random gradients and kept values.
        const BackwardInputs b = randomBackwardInputs(rng);
        GradientsOut grads[2];
        std::vector<unsigned long long> forceBuffer[2];
        for (int k = 0; k < 2; k++)
            forceBuffer[k].assign(3 * MLFF_PADDED_NUM_ATOMS, 0);
        tiledMessagesBackward(s, in, b, layer, grads[0], forceBuffer[0].data());
        cudaOnHostLaunch(MLFF_NUM_REPLICAS, MLFF_REPLICA_SPLIT * MLFF_BLOCK, [&] {
            mlffMessagesBackwardReplicas(layer, params.data(), table.data(), nullptr, pairCount.data(),
                                         pairAtoms.data(), pairGeometry.data(), s.z.data(), s.start.data(),
                                         stateS.data(), stateV.data(), b.midVKept.data(), b.updateOutput.data(),
                                         b.gradInS.data(), b.gradInV.data(), grads[1].updateGradOutput.data(),
                                         grads[1].gradOutV.data(), nullptr, nullptr,
                                         s.particle.data(), s.sortedIndex.data(), b.replicaScale.data(),
                                         b.lambdaForceScale, forceBuffer[1].data());
        });
        expectReplicaGradients(grads[1], grads[0]);
        const ForceDifference forces = compareForces(forceBuffer[0], forceBuffer[1]);
        EXPECT_GT(forces.largest, 1.0) << "no forces to compare";
        // Summed in other groups: a pair's two edges before the reduction over channels and the
        // conversion to fixed point, not after.
        EXPECT_LE(forces.difference, 1e-13 * forces.largest);
    }
}

// The tiled kernels for the atoms without edge rows (...Overflowed), given a list of atoms
// (edge_filters.cu's overflowedAtoms: [0] the count, then the atoms, in any order) over a grid of
// fewer blocks than atoms: each listed atom's outputs are those of a block per atom (...Tiled, which
// ignores the list), and no other atom's are written.
TEST(ReplicaMessagesOnHost, TiledKernelsTakeTheListedAtomsAlone) {
    const int n = MLFF_NUM_ATOMS, h = MLFF_H, layers = MLFF_L, layer = 1;
    std::mt19937 rng(13);
    const Replicas s = makeTestedReplicas(rng, "tabulated");
    const auto [params, table, stateS, stateV] = randomTabulatedInputs(rng);
    const std::vector<int> listed = {n - 1, 5, 0, 17, 9}; // descending and not: the order is the atomics'
    std::vector<int> list = {(int) listed.size()};
    list.insert(list.end(), listed.begin(), listed.end());
    std::vector<bool> isListed(n, false);
    for (int i : listed)
        isListed[i] = true;
    // Row i of a (N, width) array: the block per atom's where listed, else never written (-7).
    const auto expectListedRows = [&](const std::vector<real>& all, const std::vector<real>& some, size_t offset,
                                      int width, const char* name) {
        for (int i = 0; i < n; i++)
            for (int k = 0; k < width; k++) {
                const size_t at = offset + (size_t) i * width + k;
                ASSERT_EQ(some[at], isListed[i] ? all[at] : (real) -7) << name << ", atom " << i << ", entry " << k;
            }
    };

    MessagesOut out[2]; // [0] a block per atom, [1] the listed atoms over 2 blocks
    for (int k = 0; k < 2; k++)
        cudaOnHostLaunch(k == 0 ? n : 2, MLFF_BLOCK, [&] {
            (k == 0 ? mlffMessagesForwardTiled : mlffMessagesForwardOverflowed)(
                    layer, list.data(), params.data(), table.data(), s.pos.data(), s.z.data(), s.replica.data(),
                    s.start.data(), s.count.data(), s.list.data(), s.capacity, s.boxA, s.boxB, s.boxC, s.invBoxSize,
                    stateS.data(), stateV.data(), out[k].midV.data(), out[k].updateInput.data());
        });
    const size_t layerRows = (size_t) layer * n;
    expectListedRows(out[0].midV, out[1].midV, layerRows * 3 * h, 3 * h, "midV");
    expectListedRows(out[0].updateInput, out[1].updateInput, 0, 2 * h, "updateInput");

    const std::vector<real> midVKept = randomReals(rng, (size_t) layers * n * 3 * h);
    const std::vector<real> updateOutput = randomReals(rng, (size_t) layers * n * 2 * h);
    const std::vector<real> gradInS = randomReals(rng, (size_t) n * h);
    const std::vector<real> gradInV = randomReals(rng, (size_t) n * 3 * h);
    const std::vector<double> replicaScale(MLFF_NUM_REPLICAS, 1.0);
    GradientsOut grads[2];
    std::vector<unsigned long long> forceBuffer(3 * MLFF_PADDED_NUM_ATOMS, 0);
    for (int k = 0; k < 2; k++) {
        cudaOnHostLaunch(k == 0 ? n : 2, MLFF_BLOCK, [&] {
            (k == 0 ? mlffMessagesBackwardTiled : mlffMessagesBackwardOverflowed)(
                    layer, list.data(), params.data(), table.data(), s.pos.data(), s.z.data(), s.replica.data(),
                    s.start.data(), s.count.data(), s.list.data(), s.capacity, s.boxA, s.boxB, s.boxC, s.invBoxSize,
                    stateS.data(), stateV.data(), midVKept.data(), updateOutput.data(), gradInS.data(),
                    gradInV.data(), grads[k].updateGradOutput.data(), grads[k].gradOutV.data(), replicaScale.data(),
                    1.0, s.particle.data(), s.sortedIndex.data(), forceBuffer.data());
        });
    }
    expectListedRows(grads[0].updateGradOutput, grads[1].updateGradOutput, 0, 3 * h, "updateGradOutput");
    expectListedRows(grads[0].gradOutV, grads[1].gradOutV, 0, 3 * h, "gradOutV");
}

// Tabulated filters on the edge rows (table_rows.cu: the rows numbered by table interval, each
// block's filter rows from the table, dE/dd from each pair's dE/dw) with the messages from rows
// (row_messages.cu), against the tiled kernels that read the table per edge (a block per atom):
// the features equal bit for bit (the same filters, summed in list order), the gradients to
// rounding (the backward sums in edgeWalk's order), the forces, summed over the blocks per pair
// before they go to the atoms, to the fixed point's rounding.
TEST(ReplicaMessagesOnHost, TabulatedRowsEqualTheTiledKernels) {
    const int n = MLFF_NUM_ATOMS, h = MLFF_H, layers = MLFF_L;
    std::mt19937 rng(15);
    const Replicas s = makeTestedReplicas(rng, "tabulated");
    const TabulatedInputs in = randomTabulatedInputs(rng);
    const auto& [params, table, stateS, stateV] = in;
    const FilterRows list = listRows(s, params);
    ASSERT_EQ(list.overflowed[0], 0); // every list complete
    const int rows = list.rows, rowBlocks = (rows + 127) / 128, tableGrid = 3;
    std::vector<int> intervalCount(MLFF_TABLE_INTERVALS, 0), intervalStart(MLFF_TABLE_INTERVALS, -1);
    // The rows numbered again by table interval: their edges, and each edge's row.
    std::vector<int2> rowInterval(rows, int2{-1, -1}), filterEdges(rows, int2{-1, -1});
    std::vector<int> edgeFilterRow = list.filterRow;
    cudaOnHostLaunch(rowBlocks, 128, [&] {
        mlffCountTableIntervals(&rows, list.filterEdges.data(), list.edgeDelta.data(), intervalCount.data(),
                                rowInterval.data());
    });
    cudaOnHostLaunch(1, MLFF_SCAN_THREADS, [&] { mlffScanTableIntervals(intervalCount.data(), intervalStart.data()); });
    cudaOnHostLaunch(rowBlocks, 128, [&] {
        mlffNumberTableRows(&rows, rowInterval.data(), intervalStart.data(), list.filterEdges.data(),
                            filterEdges.data(), edgeFilterRow.data());
    });

    // Forward: each block's filter rows from the table, kept for the backward pass (edgeFilter); NaN
    // where unwritten (w_v1 in the first block), which no kernel may read.
    std::vector<std::vector<real>> filters(
            layers, std::vector<real>((size_t) rows * 3 * h, std::numeric_limits<real>::quiet_NaN()));
    for (int layer = 0; layer < layers; layer++) {
        SCOPED_TRACE("forward, block " + std::to_string(layer));
        MessagesOut out[2]; // [0] the tiled kernels, [1] the rows
        tiledMessagesForward(s, in, layer, out[0]);
        cudaOnHostLaunch(tableGrid, 128, [&] {
            mlffTableFilterRows(layer, table.data(), &rows, filterEdges.data(), list.edgeDelta.data(),
                                filters[layer].data(), 0);
        });
        cudaOnHostLaunch(n, MLFF_BLOCK, [&] {
            mlffMessagesForwardRows(layer, params.data(), s.z.data(), s.count.data(), s.list.data(), s.capacity,
                                    list.edgeStart.data(), list.edgeDelta.data(), edgeFilterRow.data(),
                                    filters[layer].data(), stateS.data(), stateV.data(), out[1].midV.data(),
                                    out[1].updateInput.data());
        });
        expectEqual(out[0], out[1]);
    }

    // Backward, from the last block: edgeGradN sums over the blocks, and block 0 adds the forces.
    std::vector<real> gradFilter((size_t) rows * 3 * h, -7);
    std::vector<real4> gradN((size_t) n * s.capacity, real4{});
    std::vector<unsigned long long> forceBuffer[2]; // [0] the tiled kernels, [1] the rows
    for (int k = 0; k < 2; k++)
        forceBuffer[k].assign(3 * MLFF_PADDED_NUM_ATOMS, 0);
    for (int layer = layers - 1; layer >= 0; layer--) {
        SCOPED_TRACE("backward, block " + std::to_string(layer));
        const BackwardInputs b = randomBackwardInputs(rng);
        GradientsOut grads[2];
        tiledMessagesBackward(s, in, b, layer, grads[0], forceBuffer[0].data());
        cudaOnHostLaunch(AtomWarpBlocks, 128, [&] {
            mlffMessagesBackwardRows(layer, params.data(), s.z.data(), s.count.data(), s.list.data(), s.capacity,
                                     list.edgeStart.data(), list.edgeDelta.data(), edgeFilterRow.data(),
                                     list.ownedRank.data(), list.partner.data(), list.walk.data(),
                                     filters[layer].data(), gradFilter.data(), gradN.data(), stateS.data(),
                                     stateV.data(), b.midVKept.data(), b.updateOutput.data(), b.gradInS.data(),
                                     b.gradInV.data(), grads[1].updateGradOutput.data(), grads[1].gradOutV.data());
        });
        cudaOnHostLaunch(tableGrid, 128, [&] {
            mlffTableFilterBackward(layer, table.data(), &rows, gradFilter.data(), filterEdges.data(),
                                    list.edgeAtoms.data(), list.edgeDelta.data(),
                                    gradN.data(), s.replica.data(), b.replicaScale.data(), b.lambdaForceScale,
                                    s.particle.data(), s.sortedIndex.data(), forceBuffer[1].data());
        });
        if (layer > 0) // block 0 passes on no gradient
            expectRowsGradients(grads[1], grads[0]);
    }
    const ForceDifference forces = compareForces(forceBuffer[0], forceBuffer[1]);
    EXPECT_GT(forces.largest, 1.0) << "no forces to compare";
    EXPECT_LE(forces.difference, 1e-12 * forces.largest);
}

#else
/** Parameters at random, but with positive radial widths (a width near 0 makes the basis' dE/dd inf). */
std::vector<real> randomParams(std::mt19937& rng) {
    std::vector<real> params = randomReals(rng, MLFF_PARAMETERS_SIZE);
    for (int k = 0; k < MLFF_K; k++)
        params[MLFF_P_RBF_WIDTHS + k] = 0.3 + 0.05 * k;
    return params;
}

FilterRows replicaRows(const Replicas& s, const std::vector<real>& params) {
    const size_t slots = (size_t) MLFF_NUM_REPLICAS * MLFF_REPLICA_PAIRS;
    FilterRows f;
    f.pairCount.assign(MLFF_NUM_REPLICAS, -1);
    f.pairAtoms.assign(slots, int2{-1, -1});
    f.pairGeometry.assign(slots, real4{});
    f.rowStart.assign(MLFF_NUM_REPLICAS + 1, -1);
    f.edgeAtoms.assign(slots, int2{-1, -1});
    f.filterEdges.assign(slots, int2{-1, -1});
    f.edgeDelta.assign(slots, real4{});
    f.basis.assign(slots * MLFF_K, 0);
    cudaOnHostLaunch((MLFF_NUM_REPLICAS + MLFF_PAIR_FINDERS - 1) / MLFF_PAIR_FINDERS, 32 * MLFF_PAIR_FINDERS, [&] {
        mlffFindReplicaPairs(s.posq.data(), s.sortedIndex.data(), s.particle.data(), s.start.data(), s.boxA, s.boxB,
                             s.boxC, s.invBoxSize, f.pairCount.data(), f.pairAtoms.data(), f.pairGeometry.data());
    });
    cudaOnHostLaunch(1, MLFF_SCAN_THREADS, [&] { mlffScanReplicaPairs(f.pairCount.data(), f.rowStart.data()); });
    cudaOnHostLaunch((int) ((slots + 127) / 128), 128, [&] {
        mlffLinkReplicaPairRows(params.data(), s.start.data(), f.rowStart.data(), f.pairCount.data(),
                                f.pairAtoms.data(), f.pairGeometry.data(), f.edgeAtoms.data(), f.edgeDelta.data(),
                                f.filterEdges.data(), f.basis.data());
    });
    f.rows = f.rowStart[MLFF_NUM_REPLICAS];
    return f;
}

// Atoms whose count exceeds the capacity get no edge rows and are listed in overflowedAtoms, each
// once (tiled.cu's kernels take them).
TEST(ReplicaMessagesOnHost, AtomsWithoutRowsAreListed) {
    std::mt19937 rng(14);
    Replicas s = makeTestedReplicas(rng, "exact");
    const std::vector<real> params = randomParams(rng);
    std::vector<int> expected = {0, 6, MLFF_NUM_ATOMS - 1};
    for (int i : expected)
        s.count[i] = s.capacity + 1; // as the neighbour search leaves an overflowed atom
    FilterRows list = listRows(s, params);
    ASSERT_EQ(list.overflowed[0], (int) expected.size());
    std::vector<int> listed(list.overflowed.begin() + 1, list.overflowed.begin() + 1 + list.overflowed[0]);
    std::sort(listed.begin(), listed.end());
    EXPECT_EQ(listed, expected);
    for (int i : expected)
        EXPECT_EQ(list.edgeStart[i + 1], list.edgeStart[i]) << "atom " << i << " has rows";
}

// mlffGatherEdges' edgeWalk, the order the messages' backward takes each atom's edges in: each slot
// of the atom's list once, by distance along the numbering, a lower neighbour's distance counted
// half, ties to the lower (mlffWalkPosition).
TEST(ReplicaMessagesOnHost, EdgesAreWalkedByDistanceAlongTheNumbering) {
    std::mt19937 rng(16);
    const Replicas s = makeTestedReplicas(rng, "exact");
    const FilterRows list = listRows(s, randomParams(rng));
    ASSERT_EQ(list.overflowed[0], 0); // every atom has rows
    long interleaved = 0; // atoms whose walk goes from a lower neighbour to a higher one and back
    for (int i = 0; i < MLFF_NUM_ATOMS; i++) {
        SCOPED_TRACE("atom " + std::to_string(i));
        const int first = list.edgeStart[i], count = s.count[i];
        const int* neighbours = &s.list[(size_t) i * s.capacity];
        const std::vector<int> walk(list.walk.begin() + first, list.walk.begin() + first + count);
        std::vector<int> slots = walk, expected(count);
        std::sort(slots.begin(), slots.end());
        std::iota(expected.begin(), expected.end(), 0);
        ASSERT_EQ(slots, expected) << "not each slot once";
        // Twice the weighted distance, then the neighbour: strictly increasing along the walk.
        const auto key = [&](int slot) {
            const int j = neighbours[slot];
            return std::make_pair(j < i ? i - j : 2 * (j - i), j);
        };
        int turns = 0;
        for (int k = 1; k < count; k++) {
            EXPECT_LT(key(walk[k - 1]), key(walk[k])) << "step " << k;
            turns += (neighbours[walk[k - 1]] < i) != (neighbours[walk[k]] < i);
        }
        interleaved += turns >= 2;
    }
    EXPECT_GT(interleaved, 0) << "no walk mixes lower and higher neighbours: nothing tested of the order";
}

TEST(ReplicaMessagesOnHost, FromFilterRowsEqualTheListKernels) {
    const int n = MLFF_NUM_ATOMS, h = MLFF_H, layers = MLFF_L;
    std::mt19937 rng(12);
    const Replicas s = makeTestedReplicas(rng, "exact");
    const std::vector<real> params = randomParams(rng);
    const FilterRows list = listRows(s, params), replicas = replicaRows(s, params);

    // The same pairs in the same rows, with the same displacement and basis.
    ASSERT_EQ(list.overflowed[0], 0); // every list complete
    ASSERT_EQ(2L * list.rows, s.edges);
    ASSERT_EQ(replicas.rows, list.rows);
    for (int r = 0; r < list.rows; r++) {
        const int e = list.filterEdges[r].x;
        ASSERT_EQ(replicas.filterEdges[r].x, r);
        ASSERT_EQ(replicas.filterEdges[r].y, -1);
        ASSERT_EQ(replicas.edgeAtoms[r].x, list.edgeAtoms[e].x) << "row " << r;
        ASSERT_EQ(replicas.edgeAtoms[r].y, list.edgeAtoms[e].y) << "row " << r;
        const real4 a = list.edgeDelta[e], b = replicas.edgeDelta[r];
        ASSERT_TRUE(a.x == b.x && a.y == b.y && a.z == b.z && a.w == b.w) << "row " << r;
        for (int k = 0; k < MLFF_K; k++)
            ASSERT_EQ(replicas.basis[(size_t) r * MLFF_K + k], list.basis[(size_t) r * MLFF_K + k]) << "row " << r;
    }

    const std::vector<real> stateS = randomReals(rng, (size_t) (layers + 1) * n * h);
    const std::vector<real> stateV = randomReals(rng, (size_t) (layers + 1) * n * 3 * h);
    const std::vector<real> midVKept = randomReals(rng, (size_t) layers * n * 3 * h);
    const std::vector<real> updateOutput = randomReals(rng, (size_t) layers * n * 2 * h);
    std::vector<double> replicaScale;
    for (int r = 0; r < MLFF_NUM_REPLICAS; r++)
        replicaScale.push_back(0.5 + 0.125 * r);
    const double lambdaForceScale = 0.7 * 964.8533212331002;
    const size_t listBound = (size_t) n * s.capacity, replicaBound = (size_t) MLFF_NUM_REPLICAS * MLFF_REPLICA_PAIRS;
    std::vector<real4> gradN[2] = {std::vector<real4>(listBound, real4{}), std::vector<real4>(replicaBound, real4{})};
    std::vector<unsigned long long> forceBuffer[2];
    for (int k = 0; k < 2; k++)
        forceBuffer[k].assign(3 * MLFF_PADDED_NUM_ATOMS, 0);
    // The backward pass's order, from block L-1 to 0: edgeGradN sums over the blocks, and block 0 adds the forces.
    for (int layer = layers - 1; layer >= 0; layer--) {
        SCOPED_TRACE("block " + std::to_string(layer));
        std::vector<real> filters = randomReals(rng, (size_t) list.rows * 3 * h); // this block's rows
        if (layer == 0) // w_v1 multiplies v = 0, and the filters' product leaves it unwritten: never read
            for (int r = 0; r < list.rows; r++)
                std::fill_n(filters.begin() + (size_t) r * 3 * h + h, h, std::numeric_limits<real>::quiet_NaN());
        MessagesOut out[2]; // [0] the list's kernels (row_messages.cu), [1] a block per replica
        cudaOnHostLaunch(n, MLFF_BLOCK, [&] {
            mlffMessagesForwardRows(layer, params.data(), s.z.data(), s.count.data(), s.list.data(), s.capacity,
                                    list.edgeStart.data(), list.edgeDelta.data(), list.filterRow.data(),
                                    filters.data(), stateS.data(), stateV.data(), out[0].midV.data(),
                                    out[0].updateInput.data());
        });
        cudaOnHostLaunch(MLFF_NUM_REPLICAS, MLFF_BLOCK, [&] {
            mlffMessagesForwardReplicas(layer, params.data(), filters.data(), replicas.rowStart.data(),
                                        replicas.pairCount.data(), replicas.pairAtoms.data(),
                                        replicas.pairGeometry.data(), s.z.data(), s.start.data(), stateS.data(),
                                        stateV.data(), out[1].midV.data(), out[1].updateInput.data());
        });
        expectEqual(out[0], out[1]);

        const std::vector<real> gradInS = randomReals(rng, (size_t) n * h);
        const std::vector<real> gradInV = randomReals(rng, (size_t) n * 3 * h);
        GradientsOut grads[2];
        std::vector<real> gradFilter[2];
        for (int k = 0; k < 2; k++)
            gradFilter[k].assign((size_t) list.rows * 3 * h, -7);
        cudaOnHostLaunch(AtomWarpBlocks, 128, [&] {
            mlffMessagesBackwardRows(layer, params.data(), s.z.data(), s.count.data(), s.list.data(), s.capacity,
                                     list.edgeStart.data(), list.edgeDelta.data(), list.filterRow.data(),
                                     list.ownedRank.data(), list.partner.data(), list.walk.data(),
                                     filters.data(), gradFilter[0].data(), gradN[0].data(), stateS.data(),
                                     stateV.data(), midVKept.data(), updateOutput.data(), gradInS.data(),
                                     gradInV.data(), grads[0].updateGradOutput.data(), grads[0].gradOutV.data());
        });
        cudaOnHostLaunch(MLFF_NUM_REPLICAS, MLFF_REPLICA_SPLIT * MLFF_BLOCK, [&] {
            mlffMessagesBackwardReplicas(layer, params.data(), filters.data(), replicas.rowStart.data(),
                                         replicas.pairCount.data(), replicas.pairAtoms.data(),
                                         replicas.pairGeometry.data(), s.z.data(), s.start.data(), stateS.data(),
                                         stateV.data(), midVKept.data(), updateOutput.data(), gradInS.data(),
                                         gradInV.data(), grads[1].updateGradOutput.data(), grads[1].gradOutV.data(),
                                         gradFilter[1].data(), gradN[1].data(),
                                         s.particle.data(), s.sortedIndex.data(), replicaScale.data(),
                                         lambdaForceScale, nullptr);
        });
        if (layer > 0) // block 0 passes on no gradient
            expectRowsGradients(grads[0], grads[1]);
        // dE/dw of each pair: both edges' parts, summed in another order (the list's edge by edge).
        EXPECT_LE(relativeDifference(gradFilter[0], gradFilter[1], gradFilter[0].size()), 1e-13);
        EXPECT_NE(gradFilter[0][0], -7) << "no dE/dw written";

        // The pairs' forces (mlffAddPairGradient, as the basis' backward product's epilogue calls
        // it) from the same dE/dd of each row.
        const std::vector<real> gradD = randomReals(rng, (size_t) list.rows);
        const FilterRows* paths[2] = {&list, &replicas};
        for (int k = 0; k < 2; k++) {
            const MlffPairGradientTargets to = {paths[k]->filterEdges.data(), paths[k]->edgeAtoms.data(),
                                                paths[k]->edgeDelta.data(), gradN[k].data(), s.replica.data(),
                                                replicaScale.data(), lambdaForceScale, s.particle.data(),
                                                s.sortedIndex.data(), forceBuffer[k].data()};
            for (int r = 0; r < list.rows; r++)
                mlffAddPairGradient(layer, r, gradD[r], to);
        }
    }
    const ForceDifference forces = compareForces(forceBuffer[0], forceBuffer[1]);
    EXPECT_GT(forces.largest, 1.0) << "no forces to compare";
    // A pair's dE/dn summed over channels once (gv_i - gv_j), not once an edge, then one force for both edges.
    EXPECT_LE(forces.difference, 1e-12 * forces.largest);
}
#endif

} // namespace
