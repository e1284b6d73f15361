// The tiled path's messages a block per replica (replica_messages.cu: the pairs found by
// mlffFindReplicaPairs, then the messages) against the same messages a block per atom (tiled.cu:
// mlffMessagesForwardTiled, mlffMessagesBackwardTiled), both run on the CPU (CudaOnHost.h) on the
// same random features, table and replicas of 1 to 16 atoms, in double
// precision: the features and gradients must be equal bit for bit (each atom's messages are summed
// in the same order), the forces equal to the fixed point's rounding (a pair adds its two edges'
// forces as one). Built twice: without a box, and periodic (MLFF_PERIODIC) in a 10.5 Å cube.
#include <gtest/gtest.h>

#include <algorithm>
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

/** The forces in OpenMM's fixed point (1/2^32), as reals. */
std::vector<double> forcesOf(const std::vector<unsigned long long>& buffer) {
    std::vector<double> forces;
    for (unsigned long long value : buffer)
        forces.push_back((double) (long long) value / 4294967296.0);
    return forces;
}

TEST(ReplicaMessagesOnHost, EqualTheBlockPerAtomKernels) {
    const int n = MLFF_NUM_ATOMS, h = MLFF_H, layers = MLFF_L;
    std::mt19937 rng(11);
    Replicas s = makeReplicas(rng);
    ASSERT_GT(s.edges, 200) << "too few edges to test anything";
    std::printf("%d atoms in %d replicas, %ld edges, %s\n", n, MLFF_NUM_REPLICAS, s.edges,
                BoxSide > 0 ? "periodic" : "no box");
    const std::vector<real> params = randomReals(rng, MLFF_PARAMETERS_SIZE);
    const std::vector<real> table = randomReals(rng, (size_t) layers * 2 * MLFF_TABLE_NODES * 3 * h);
    const std::vector<real> stateS = randomReals(rng, (size_t) (layers + 1) * n * h);
    const std::vector<real> stateV = randomReals(rng, (size_t) (layers + 1) * n * 3 * h);
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
        // Forward: [0] a block per atom, [1] a block per replica; -7 where nothing is written.
        std::vector<real> midS[2], midV[2], updateInput[2];
        for (int k = 0; k < 2; k++) {
            midS[k].assign((size_t) layers * n * h, -7);
            midV[k].assign((size_t) layers * n * 3 * h, -7);
            updateInput[k].assign((size_t) n * 2 * h, -7);
        }
        cudaOnHostLaunch(n, MLFF_BLOCK, [&] {
            mlffMessagesForwardTiled(layer, 0, params.data(), table.data(), s.pos.data(), s.z.data(), s.replica.data(),
                                     s.start.data(), s.count.data(), s.list.data(), s.capacity, s.boxA, s.boxB, s.boxC,
                                     s.invBoxSize, stateS.data(), stateV.data(), midS[0].data(), midV[0].data(),
                                     updateInput[0].data());
        });
        cudaOnHostLaunch(MLFF_NUM_REPLICAS, MLFF_BLOCK, [&] {
            mlffMessagesForwardReplicas(layer, params.data(), table.data(), nullptr, pairCount.data(),
                                        pairAtoms.data(), pairGeometry.data(), s.z.data(), s.start.data(),
                                        stateS.data(), stateV.data(), midS[1].data(), midV[1].data(),
                                        updateInput[1].data());
        });
        EXPECT_EQ(midS[0], midS[1]);
        EXPECT_EQ(midV[0], midV[1]);
        EXPECT_EQ(updateInput[0], updateInput[1]);

        // Backward, from random gradients and kept values.
        const std::vector<real> midVKept = randomReals(rng, (size_t) layers * n * 3 * h);
        const std::vector<real> updateOutput = randomReals(rng, (size_t) layers * n * 3 * h);
        const std::vector<real> gradInS = randomReals(rng, (size_t) n * h);
        const std::vector<real> gradInV = randomReals(rng, (size_t) n * 3 * h);
        std::vector<double> replicaScale;
        for (int r = 0; r < MLFF_NUM_REPLICAS; r++)
            replicaScale.push_back(0.5 + 0.125 * r);
        const double lambdaForceScale = 0.7 * 964.8533212331002;
        std::vector<real> updateGradOutput[2], gradOutS[2], gradOutV[2];
        std::vector<unsigned long long> forceBuffer[2];
        for (int k = 0; k < 2; k++) {
            updateGradOutput[k].assign((size_t) n * 3 * h, -7);
            gradOutS[k].assign((size_t) n * h, -7);
            gradOutV[k].assign((size_t) n * 3 * h, -7);
            forceBuffer[k].assign(3 * MLFF_PADDED_NUM_ATOMS, 0);
        }
        cudaOnHostLaunch(n, MLFF_BLOCK, [&] {
            mlffMessagesBackwardTiled(layer, 0, params.data(), table.data(), s.pos.data(), s.z.data(), s.replica.data(),
                                      s.start.data(), s.count.data(), s.list.data(), s.capacity, s.boxA, s.boxB, s.boxC,
                                      s.invBoxSize, stateS.data(), stateV.data(), midVKept.data(), updateOutput.data(),
                                      gradInS.data(), gradInV.data(), updateGradOutput[0].data(), gradOutS[0].data(),
                                      gradOutV[0].data(), replicaScale.data(), lambdaForceScale, s.particle.data(),
                                      s.sortedIndex.data(), forceBuffer[0].data());
        });
        cudaOnHostLaunch(MLFF_NUM_REPLICAS, MLFF_BLOCK, [&] {
            mlffMessagesBackwardReplicas(layer, params.data(), table.data(), nullptr, pairCount.data(),
                                         pairAtoms.data(), pairGeometry.data(), s.z.data(), s.start.data(),
                                         stateS.data(), stateV.data(), midVKept.data(), updateOutput.data(),
                                         gradInS.data(), gradInV.data(), updateGradOutput[1].data(),
                                         gradOutS[1].data(), gradOutV[1].data(), nullptr, nullptr, s.particle.data(),
                                         s.sortedIndex.data(), replicaScale.data(), lambdaForceScale,
                                         forceBuffer[1].data());
        });
        EXPECT_EQ(updateGradOutput[0], updateGradOutput[1]);
        EXPECT_EQ(gradOutS[0], gradOutS[1]);
        EXPECT_EQ(gradOutV[0], gradOutV[1]);
        const std::vector<double> forces[2] = {forcesOf(forceBuffer[0]), forcesOf(forceBuffer[1])};
        double largest = 0, difference = 0;
        for (size_t k = 0; k < forces[0].size(); k++) {
            largest = std::max(largest, std::fabs(forces[0][k]));
            difference = std::max(difference, std::fabs(forces[0][k] - forces[1][k]));
        }
        EXPECT_GT(largest, 1.0) << "no forces to compare";
        // Summed in other groups: a pair's two edges before the reduction over channels and the
        // conversion to fixed point, not after.
        EXPECT_LE(difference, 1e-13 * largest);
    }
}


} // namespace
