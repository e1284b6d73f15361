// MLFFForce on the CUDA platform against the Reference platform (the C core, double precision),
// in single, mixed and double precision: seed and random models, periodic boxes, replicas,
// reordering during MD, several Contexts, partial evaluations, bitwise determinism, neighbour
// list growth, and NVE drift.
#include "CudaPluginSetup.h"
#include "CudaReferenceComparison.h"

#include "openmm/HarmonicBondForce.h"
#include "openmm/NonbondedForce.h"

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <tuple>

extern "C" void registerMLFFReferenceKernelFactories();

namespace mlff_cuda_test {
namespace {

const bool registered = [] {
    registerMLFFReferenceKernelFactories();
    loadCudaPlugins();
    return true;
}();

mlff_test::ModelSpec modelSpec(int hidden, int rbf, int blocks, std::uint64_t seed) {
    mlff_test::ModelSpec spec;
    spec.hidden = hidden;
    spec.rbf = rbf;
    spec.blocks = blocks;
    spec.max_z = 10;
    spec.seed = seed;
    return spec;
}

/** `copies` perturbed copies of `molecule`, replica r holding copy r (sizes may differ: see below). */
mlff_test::Structure replicate(const std::vector<mlff_test::Structure>& molecules) {
    mlff_test::Structure all;
    all.num_replicas = static_cast<int>(molecules.size());
    for (size_t r = 0; r < molecules.size(); r++) {
        const mlff_test::Structure& m = molecules[r];
        all.atomic_numbers.insert(all.atomic_numbers.end(), m.atomic_numbers.begin(), m.atomic_numbers.end());
        all.positions.insert(all.positions.end(), m.positions.begin(), m.positions.end());
        all.replicas.insert(all.replicas.end(), m.atomic_numbers.size(), static_cast<int>(r));
    }
    return all;
}

/** The closest pair (Å) within each replica of `perReplica` consecutive atoms, by minimum image in a cube of 14 Å. */
double closestPairAngstrom(const std::vector<OpenMM::Vec3>& positions, size_t perReplica) {
    double closest = 1e30;
    for (size_t i = 0; i < positions.size(); i++)
        for (size_t j = i + 1; j < positions.size() && j / perReplica == i / perReplica; j++) {
            OpenMM::Vec3 d = (positions[j] - positions[i]) * units::AngstromPerNm;
            for (int k = 0; k < 3; k++)
                d[k] -= 14.0 * std::round(d[k] / 14.0);
            closest = std::min(closest, std::sqrt(d.dot(d)));
        }
    return closest;
}

/**
 * Parameters: the precision, and the network's kernel path (MLFF_CUDA_KERNELS: "fused", a block
 * per atom; "cluster", a cluster of blocks per atom, on sm_90 and later; or, for every model whose
 * H is a multiple of 64, which most tests here use for that reason, "tiled", the tiled path with
 * filters per atom, and "edges", the tiled path with edge rows: exact filters as products over
 * pairs, tabulated ones read into the rows once a pair). Where the GPU has warp-group products (sm_90,
 * float), "edges" takes them for every product (MLFF_CUDA_PRODUCTS=warpgroup: the plugin would
 * leave the update's products of these small systems on mma.sync), "edges_mma" is "edges" with
 * every product on mma.sync (MLFF_CUDA_PRODUCTS=mma; the readout then on the FMA pipes, where
 * "tiled" and "edges" take its warp-group products at H = 64 or 128), so that both stay tested there, and
 * "edges_two_products" is "edges" with the filters' forward as two products, the hidden layer stored
 * between them (MLFF_CUDA_FILTER_HIDDEN=stored), where "edges" makes it one product from the basis
 * for the models whose H is 64 or 128 (most of those here).
 */
class CudaVsReference : public ::testing::TestWithParam<std::tuple<std::string, std::string>> {
protected:
    void SetUp() override {
        if (!loadCudaPlugins())
            GTEST_SKIP() << "no CUDA platform here (no GPU driver)";
        if (path() == "cluster" && computeCapabilityMajor() < 9)
            GTEST_SKIP() << "thread block clusters need compute capability 9.0";
        setenv("MLFF_CUDA_KERNELS", kernels().c_str(), 1);
        const bool warpgroupProducts = precision() != "double" && computeCapabilityMajor() == 9;
        if ((path() == "edges_mma" || path() == "edges_two_products") && !warpgroupProducts)
            GTEST_SKIP() << "no warp-group products here: the same kernels as 'edges'";
        if (path() == "edges_mma")
            setenv("MLFF_CUDA_PRODUCTS", "mma", 1);
        if (path() == "edges" || path() == "edges_two_products")
            if (warpgroupProducts)
                setenv("MLFF_CUDA_PRODUCTS", "warpgroup", 1);
        if (path() == "edges_two_products")
            setenv("MLFF_CUDA_FILTER_HIDDEN", "stored", 1);
    }
    void TearDown() override {
        for (const char* setting : {"MLFF_CUDA_KERNELS", "MLFF_CUDA_PRODUCTS", "MLFF_CUDA_FILTER_HIDDEN",
                                    "MLFF_CUDA_INITIAL_NEIGHBOR_CAPACITY", "MLFF_CUDA_EDGE_ROWS_MAX_BYTES"})
            unsetenv(setting);
    }
    std::string precision() const {
        return std::get<0>(GetParam());
    }
    std::string path() const {
        return std::get<1>(GetParam());
    }
    /** MLFF_CUDA_KERNELS of the path. */
    std::string kernels() const {
        return path() == "edges_mma" || path() == "edges_two_products" ? "edges" : path();
    }
    /**
     * Whether a step whose neighbour list overflowed gives the same bits as one whose list held
     * every edge: not with edge rows, where the overflowed atoms' messages come from their own
     * kernels, which sum in another order (the host then grows the list two evaluations on, always).
     */
    bool overflowKeepsBits() const {
        return kernels() != "edges";
    }
    /**
     * A Context at s's positions whose neighbour list starts at a capacity of 2 (a test hook), so
     * that its first evaluation overflows for every atom of the 40-atom molecule below.
     */
    std::unique_ptr<OpenMM::Context> contextOverflowingAtOnce(MLSystem& s, OpenMM::Integrator& integrator) {
        setenv("MLFF_CUDA_INITIAL_NEIGHBOR_CAPACITY", "2", 1);
        auto context = makeContext(s.system, integrator, precision());
        unsetenv("MLFF_CUDA_INITIAL_NEIGHBOR_CAPACITY");
        context->setPositions(s.positions);
        return context;
    }
    /** The model and the 40-atom molecule of the list's overflow tests: more than a block per replica takes. */
    static std::string overflowModel() {
        return mlff_test::random_model_bytes(modelSpec(64, 12, 2, 11));
    }
    static mlff_test::Structure overflowMolecule() {
        return mlff_test::random_structure(40, 10, 8.0, 1.0, 61);
    }
    /** Builds, evaluates on both platforms, compares. */
    void compare(const std::string& bytes, const mlff_test::Structure& structure, const std::string& what) {
        auto s = makeSystem(bytes, structure);
        Evaluation reference = evaluateOn(*s, "reference");
        Evaluation cuda = evaluateOn(*s, precision());
        expectMatchesReference(cuda, reference, precision(), what);
    }
};

// Random models of every size class on random molecules (some pairs beyond the cutoff).
TEST_P(CudaVsReference, RandomModelsAndStructures) {
    const int sizes[][3] = {{8, 6, 2}, {16, 8, 3}, {32, 10, 2}, {64, 12, 2}, {128, 20, 3}};
    int seed = 1;
    for (const auto& size : sizes) {
        const std::string bytes = mlff_test::random_model_bytes(modelSpec(size[0], size[1], size[2], 100 + seed));
        // Not 2 atoms: a random dimer can sit near an extremum of E(d), where its one pair force
        // nearly vanishes and an error relative to it measures nothing (seen: 0.12 kJ/mol/nm,
        // absolute error 1.4e-5 in float32). One- and two-atom replicas are in `Replicas`.
        for (int atoms : {3, 12, 40}) {
            mlff_test::Structure molecule = mlff_test::random_structure(atoms, 10, atoms < 20 ? 4.0 : 9.0, 1.0, 200 + seed++);
            compare(bytes, molecule,
                    "H=" + std::to_string(size[0]) + " L=" + std::to_string(size[2]) + " N=" + std::to_string(atoms));
        }
    }
}

// The trained seed models on the golden geometries (converted by the seed_models fixture).
TEST_P(CudaVsReference, SeedModelsOnGoldenGeometries) {
    MLFF_SKIP_WITHOUT_SHARED();
    std::vector<mlff_test::GoldenCase> cases;
    std::string error;
    ASSERT_TRUE(mlff_test::read_golden(&cases, &error)) << error;
    for (const std::string name : {"original", "tiny", "ultra_tiny"}) {
        const std::string bytes = mlff_test::read_file_bytes(mlff_test::seed_model_path(name));
        ASSERT_FALSE(bytes.empty()) << name;
        for (const mlff_test::GoldenCase& golden : cases) {
            if (golden.model != "original")
                continue; // the geometries are the same for every model: use each once
            mlff_test::Structure molecule;
            molecule.atomic_numbers = golden.atomic_numbers;
            molecule.positions = golden.positions;
            compare(bytes, molecule, name + " " + golden.geometry);
        }
    }
}

TEST_P(CudaVsReference, PeriodicRectangularBox) {
    const std::string bytes = mlff_test::random_model_bytes(modelSpec(64, 12, 2, 7));
    mlff_test::Structure box = mlff_test::random_structure(80, 10, 12.0, 1.2, 31);
    box.box = {12.0, 0, 0, 0, 12.5, 0, 0, 0, 11.0};
    compare(bytes, box, "rectangular box, 80 atoms");
}

TEST_P(CudaVsReference, PeriodicTriclinicBox) {
    const std::string bytes = mlff_test::random_model_bytes(modelSpec(64, 12, 2, 8));
    mlff_test::Structure box = mlff_test::random_structure(80, 10, 12.0, 1.2, 32);
    box.box = {12.0, 0, 0, 3.0, 11.5, 0, -2.5, 4.0, 11.0}; // OpenMM's reduced form
    compare(bytes, box, "triclinic box, 80 atoms");
}

// Replicas: 1, 2 and 64 copies of a molecule, and replicas of different sizes, with replica
// scales, an energy-scale parameter and its derivative.
TEST_P(CudaVsReference, Replicas) {
    const std::string bytes = mlff_test::random_model_bytes(modelSpec(64, 12, 2, 9));
    for (int copies : {1, 2, 64}) {
        std::vector<mlff_test::Structure> molecules;
        for (int r = 0; r < copies; r++)
            molecules.push_back(mlff_test::random_structure(9, 10, 4.0, 1.0, 40)); // same molecule...
        for (int r = 0; r < copies; r++)
            molecules[r].positions[0] += 0.01 * r; // ...each copy a little different
        compare(bytes, replicate(molecules), std::to_string(copies) + " replicas of 9 atoms");
    }
    // Replicas of different sizes, with scales and lambda (and dE/dlambda); 40 replicas are summed
    // a warp per replica (mlffReplicaEnergies), 20 by one block.
    for (int numReplicas : {20, 40}) {
        std::vector<mlff_test::Structure> mixed;
        for (int r = 0; r < numReplicas; r++)
            mixed.push_back(mlff_test::random_structure(1 + (r * 7) % 13, 10, 4.0, 1.0, 50 + r));
        mlff_test::Structure structure = replicate(mixed);
        const std::string what = std::to_string(numReplicas) + " replicas of 1 to 13 atoms";
        compare(bytes, structure, what);

        auto s = makeSystem(bytes, structure);
        for (int r = 0; r < structure.num_replicas; r++)
            s->force->setReplicaScale(r, 0.5 + 0.1 * r);
        s->force->setEnergyScaleParameter("lambda_ml");
        Evaluation results[2];
        std::map<std::string, double> derivatives[2];
        const std::string platforms[2] = {"reference", precision()};
        for (int p = 0; p < 2; p++) {
            OpenMM::VerletIntegrator integrator(0.0005);
            auto context = makeContext(s->system, integrator, platforms[p]);
            context->setPositions(s->positions);
            context->setParameter("lambda_ml", 0.7);
            results[p] = evaluate(*context, *s->force);
            derivatives[p] = context->getState(OpenMM::State::ParameterDerivatives).getEnergyParameterDerivatives();
        }
        expectMatchesReference(results[1], results[0], precision(), what + ", scales, lambda = 0.7");
        ASSERT_EQ(derivatives[1].count("lambda_ml"), 1u);
        EXPECT_LE(relativeError(derivatives[1]["lambda_ml"], derivatives[0]["lambda_ml"]),
                  boundsFor(precision()).energy)
            << what << ": " << derivatives[1]["lambda_ml"] << " vs " << derivatives[0]["lambda_ml"];
        EXPECT_NEAR(results[0].energy, 0.7 * derivatives[0]["lambda_ml"], 1e-9 * std::fabs(results[0].energy));
    }
}

// A large molecule (a dense 'droplet'): more neighbours than the list's first capacity, so
// the first step overflows and is computed by the fallback, and later ones by the grown list.
TEST_P(CudaVsReference, DropletWithNeighbourListGrowth) {
    const std::string bytes = mlff_test::random_model_bytes(modelSpec(64, 12, 2, 10));
    mlff_test::Structure droplet = mlff_test::random_structure(400, 10, 15.0, 1.0, 60);
    auto s = makeSystem(bytes, droplet);
    Evaluation reference = evaluateOn(*s, "reference");
    OpenMM::VerletIntegrator integrator(0.0005);
    auto context = makeContext(s->system, integrator, precision());
    context->setPositions(s->positions);
    std::vector<Evaluation> steps;
    for (int step = 0; step < 4; step++)
        steps.push_back(evaluate(*context, *s->force));
    expectMatchesReference(steps[0], reference, precision(), "droplet 400 atoms, first step");
    expectMatchesReference(steps[3], reference, precision(), "droplet 400 atoms, grown list");
    // The fallback scans in the list's order, so both paths give the same bits. With edge filters
    // only once the list has grown: there the host reads the count of the evaluation before last,
    // so the first step's overflow grows the list for the third.
    const size_t grownFrom = overflowKeepsBits() ? 0 : 2;
    for (size_t step = grownFrom + 1; step < steps.size(); step++) {
        for (size_t i = 0; i < steps[0].forces.size(); i++)
            for (int d = 0; d < 3; d++)
                EXPECT_EQ(steps[grownFrom].forces[i][d], steps[step].forces[i][d]) << "step " << step << ", atom " << i;
        EXPECT_EQ(steps[grownFrom].energy, steps[step].energy) << "step " << step;
    }
}

// Replicas of CellListMinAtoms (256) atoms or more use the cell list (cell_list.cu), which numbers
// the atoms anew by cell at each evaluation: periodic boxes whose heights give an axis one cell
// (3 x 3 x 1 and, triclinic, 3 x 1 x 5: 4 slices along c or 2 cells along b are too few to reach
// without repeats) and 5 x 5 x 10 or 5 x 4 x 9 cells; not periodic, a replica long enough that
// cells 16 slices apart share a bucket, and one Context whose atoms move between evaluations; and
// several large replicas in one Context, periodic or not. The random structures list their atoms
// in no spatial order.
TEST_P(CudaVsReference, CellList) {
    const std::string bytes = mlff_test::random_model_bytes(modelSpec(64, 12, 2, 13));
    mlff_test::Structure small = mlff_test::random_structure(300, 10, 16.0, 1.0, 70);
    small.box = {16.0, 0, 0, 0, 16.5, 0, 0, 0, 12.0};
    compare(bytes, small, "cell list, rectangular box 3x3x1 cells (c too short for 5 slices), 300 atoms");
    small.box = {16.0, 0, 0, 4.0, 15.0, 0, -3.0, 5.0, 14.0};
    compare(bytes, small, "cell list, triclinic box 3x1x5 cells, 300 atoms");
    mlff_test::Structure large = mlff_test::random_structure(1000, 10, 25.5, 1.0, 71);
    large.box = {25.5, 0, 0, 0, 26.0, 0, 0, 0, 25.2};
    compare(bytes, large, "cell list, rectangular box 5x5x10 cells, 1000 atoms");
    large.box = {25.5, 0, 0, -6.0, 25.0, 0, 5.0, -7.0, 24.0};
    compare(bytes, large, "cell list, triclinic box 5x4x9 cells, 1000 atoms");

    // The box changed within one Context, as a barostat changes it: the cell grid follows it, and
    // where it would need more cells than were allocated (N = 300 here) it is coarsened (45 Å: 8 x 9
    // x 17 cells wanted).
    {
        auto s = makeSystem(bytes, small);
        OpenMM::VerletIntegrator integrator(0.0005);
        auto context = makeContext(s->system, integrator, precision());
        context->setPositions(s->positions);
        for (double side : {16.0, 21.0, 45.0}) {
            mlff_test::Structure boxed = small;
            boxed.box = {side, 0, 0, 0, side + 0.5, 0, 0, 0, side - 1.0};
            context->setPeriodicBoxVectors(OpenMM::Vec3(side, 0, 0) / units::AngstromPerNm,
                                           OpenMM::Vec3(0, side + 0.5, 0) / units::AngstromPerNm,
                                           OpenMM::Vec3(0, 0, side - 1.0) / units::AngstromPerNm);
            auto atThatBox = makeSystem(bytes, boxed);
            expectMatchesReference(evaluate(*context, *s->force), evaluateOn(*atThatBox, "reference"), precision(),
                                   "cell list, the box changed to " + std::to_string((int) side) + " Å in the Context");
        }
    }

    // Not periodic: 1,024 buckets for 300 atoms, 8 x 8 x 16 cells (5 x 5 x 2.5 Å) before the buckets
    // repeat, so that a replica 64 Å long along z has cells 16 apart in one bucket.
    mlff_test::Structure cube = mlff_test::random_structure(300, 10, 16.0, 1.0, 70);
    mlff_test::Structure stretched = cube;
    for (size_t k = 2; k < stretched.positions.size(); k += 3)
        stretched.positions[k] *= 4.0;
    compare(bytes, stretched, "cell list, not periodic, 16 x 16 x 64 Å (cells 16 apart share a bucket), 300 atoms");
    {
        auto s = makeSystem(bytes, cube);
        OpenMM::VerletIntegrator integrator(0.0005);
        auto context = makeContext(s->system, integrator, precision());
        context->setPositions(s->positions);
        expectMatchesReference(evaluate(*context, *s->force), evaluateOn(*s, "reference"), precision(),
                               "cell list, not periodic, 300 atoms");
        auto moved = makeSystem(bytes, stretched); // the same atoms elsewhere: other cells, another numbering
        context->setPositions(moved->positions);
        expectMatchesReference(evaluate(*context, *s->force), evaluateOn(*moved, "reference"), precision(),
                               "cell list, not periodic, 300 atoms moved in the Context");
    }

    std::vector<mlff_test::Structure> molecules;
    for (int r = 0; r < 3; r++)
        molecules.push_back(mlff_test::random_structure(260 + 20 * r, 10, 14.0, 1.0, 72 + r));
    mlff_test::Structure replicas = replicate(molecules); // overlapping in space: replicas must not see each other
    compare(bytes, replicas, "cell list, 3 overlapping replicas of 260 to 300 atoms");
    replicas.box = {15.0, 0, 0, 0, 15.0, 0, 0, 0, 15.0};
    compare(bytes, replicas, "cell list, 3 replicas in periodic boxes");
}

// Tabulated filters (MLFFForce::setUseTabulatedFilters): CUDA against the Reference platform's
// tabulated path within the precision's bounds, and in double precision against the exact
// filters within issue 7's bounds (energy 1e-6 relative, forces 1e-5 relative to their norm). On
// the 'tiled' path the message kernels read the table; on 'edges' it fills the edge rows
// (table_rows.cu) that the messages from rows read.
TEST_P(CudaVsReference, TabulatedFilters) {
    const std::string bytes = mlff_test::random_model_bytes(modelSpec(64, 12, 3, 14));
    mlff_test::Structure molecule = mlff_test::random_structure(40, 10, 9.0, 1.0, 80);
    mlff_test::Structure box = mlff_test::random_structure(300, 10, 16.0, 1.0, 81);
    box.box = {16.0, 0, 0, 3.0, 15.5, 0, -2.0, 4.0, 15.0};
    for (const auto& named : {std::make_pair(std::string("molecule, 40 atoms"), molecule),
                              std::make_pair(std::string("triclinic box, 300 atoms (cell list)"), box)}) {
        auto s = makeSystem(bytes, named.second);
        const Evaluation exact = evaluateOn(*s, "reference");
        s->force->setUseTabulatedFilters(true);
        const Evaluation reference = evaluateOn(*s, "reference");
        const Evaluation cuda = evaluateOn(*s, precision());
        expectMatchesReference(cuda, reference, precision(), "tabulated, " + named.first);
        if (precision() == "double") {
            const ForceDeviation deviation = forceDeviation(cuda.forces, cuda.energy, exact.forces, exact.energy);
            const double energyError = deviation.energyRelative, forceError = deviation.forceRmsRelative;
            std::printf("[tabulated-vs-exact] double %-44s energy %.3e  forces %.3e\n", named.first.c_str(), energyError,
                        forceError);
            EXPECT_LE(energyError, 1e-6) << named.first;
            EXPECT_LE(forceError, 1e-5) << named.first;
        }
    }
}

// Many small replicas: on the tiled path their messages take a thread block per replica
// (replica_messages.cu), which reads its pairs from mlffFindReplicaPairs, with tabulated filters
// (path 'tiled'; the other paths run the same tabulated) or with exact filters from the edge
// filters' rows, a row a pair (path 'edges'). Replicas of 1 to 13 atoms with replica scales,
// without a box and in a periodic one where each molecule straddles the box's corner, so that its
// pairs are found by minimum image.
TEST_P(CudaVsReference, SmallReplicas) {
    const bool tabulated = kernels() != "edges";
    const std::string bytes = mlff_test::random_model_bytes(modelSpec(64, 12, 3, 15));
    std::vector<mlff_test::Structure> molecules;
    for (int r = 0; r < 40; r++)
        molecules.push_back(mlff_test::random_structure(1 + (r * 5) % 13, 10, 4.0, 1.0, 90 + r));
    mlff_test::Structure open = replicate(molecules);
    mlff_test::Structure periodic = open;
    const double side = 12.0;
    periodic.box = {side, 0, 0, 0, side, 0, 0, 0, side};
    for (double& x : periodic.positions) // from [0, 4) to [-2, 2), then into the box
        x = std::fmod(x - 2.0 + side, side);
    const std::string kind = tabulated ? "tabulated, " : "exact, ";
    for (const auto& named : {std::make_pair(std::string("40 replicas of 1 to 13 atoms"), open),
                              std::make_pair(std::string("the same across a periodic box's corner"), periodic)}) {
        auto s = makeSystem(bytes, named.second);
        s->force->setUseTabulatedFilters(tabulated);
        for (int r = 0; r < named.second.num_replicas; r++)
            s->force->setReplicaScale(r, 0.5 + 0.05 * r);
        const Evaluation reference = evaluateOn(*s, "reference");
        const Evaluation cuda = evaluateOn(*s, precision());
        expectMatchesReference(cuda, reference, precision(), kind + named.first);
    }
}

// Forcing a tiny first capacity makes every atom overflow; results must not change at all (with
// edge rows: not once the list has grown, and the overflowed step still matches Reference). With
// exact filters and tabulated ones (on 'edges', the overflowed atoms' messages then read the table
// in tiled.cu's kernels while the other atoms' read rows). 40 atoms: more than a block per replica
// takes (ReplicaMessagesMaxAtoms), which has no list.
TEST_P(CudaVsReference, OverflowedListGivesTheSameBits) {
    for (bool tabulated : {false, true}) {
        SCOPED_TRACE(tabulated ? "tabulated filters" : "exact filters");
        auto s = makeSystem(overflowModel(), overflowMolecule());
        s->force->setUseTabulatedFilters(tabulated);
        Evaluation normal = evaluateOn(*s, precision());
        OpenMM::VerletIntegrator integrator(0.0005);
        auto context = contextOverflowingAtOnce(*s, integrator);
        Evaluation overflowed = evaluate(*context, *s->force);
        Evaluation grown = evaluate(*context, *s->force);
        grown = evaluate(*context, *s->force); // grown by now on every path (edge rows: two evaluations on)
        EXPECT_EQ(grown.energy, normal.energy);
        for (size_t i = 0; i < normal.forces.size(); i++)
            for (int d = 0; d < 3; d++)
                EXPECT_EQ(grown.forces[i][d], normal.forces[i][d]) << i;
        if (!overflowKeepsBits()) {
            expectMatchesReference(overflowed, evaluateOn(*s, "reference"), precision(), "overflowed list");
            continue;
        }
        EXPECT_EQ(overflowed.energy, normal.energy);
        for (size_t i = 0; i < normal.forces.size(); i++)
            for (int d = 0; d < 3; d++)
                EXPECT_EQ(overflowed.forces[i][d], normal.forces[i][d]) << i;
    }
}

// Edge rows that cannot grow with the list (MLFF_CUDA_EDGE_ROWS_MAX_BYTES, a test hook: their
// allocation fails part way, as cuMemAlloc's does once the GPU's memory is spent): from then on the
// tiled kernels compute every atom's filters. A capacity of 2 overflows the list at once and the
// host grows it two evaluations on (the edge rows' rule), so evaluations 0 and 1 run on the rows
// and the later ones on the tiled kernels: each matches Reference, and the later ones give the bits
// of a Context on the tiled path. The limit, 800 KB, holds the first rows (40 atoms x 2, under 6 KB
// a row in double) and not the grown ones (40 x 11 at the least, over 2.3 KB a row in float). A
// limit that is not a number of bytes is an error naming the variable.
TEST_P(CudaVsReference, EdgeRowsThatCannotGrowGiveWayToTiledKernels) {
    if (kernels() != "edges")
        GTEST_SKIP() << "no edge rows on this path";
    {
        auto s = makeSystem(overflowModel(), overflowMolecule());
        OpenMM::VerletIntegrator integrator(0.0005);
        setenv("MLFF_CUDA_EDGE_ROWS_MAX_BYTES", "-1", 1);
        MLFF_EXPECT_THROW_WITH(makeContext(s->system, integrator, precision()), "MLFF_CUDA_EDGE_ROWS_MAX_BYTES", "'-1'");
        unsetenv("MLFF_CUDA_EDGE_ROWS_MAX_BYTES");
    }
    for (bool tabulated : {false, true}) {
        SCOPED_TRACE(tabulated ? "tabulated filters" : "exact filters");
        auto s = makeSystem(overflowModel(), overflowMolecule());
        s->force->setUseTabulatedFilters(tabulated);
        const Evaluation reference = evaluateOn(*s, "reference");
        setenv("MLFF_CUDA_KERNELS", "tiled", 1);
        const Evaluation tiled = evaluateOn(*s, precision());
        setenv("MLFF_CUDA_KERNELS", kernels().c_str(), 1);
        setenv("MLFF_CUDA_EDGE_ROWS_MAX_BYTES", "800000", 1);
        OpenMM::VerletIntegrator integrator(0.0005);
        auto context = contextOverflowingAtOnce(*s, integrator);
        unsetenv("MLFF_CUDA_EDGE_ROWS_MAX_BYTES");
        for (int step = 0; step < 4; step++) {
            const Evaluation cuda = evaluate(*context, *s->force);
            expectMatchesReference(cuda, reference, precision(),
                                   "rows that cannot grow, evaluation " + std::to_string(step));
            if (step < 2)
                continue;
            EXPECT_EQ(cuda.energy, tiled.energy) << "evaluation " << step;
            EXPECT_EQ(0, std::memcmp(cuda.forces.data(), tiled.forces.data(), tiled.forces.size() * sizeof(OpenMM::Vec3)))
                << "evaluation " << step;
        }
    }
}

// Two evaluations of the same positions: bitwise equal forces and energy.
TEST_P(CudaVsReference, Deterministic) {
    const std::string bytes = mlff_test::random_model_bytes(modelSpec(64, 12, 3, 12));
    mlff_test::Structure molecule = mlff_test::random_structure(60, 10, 10.0, 1.0, 62);
    auto s = makeSystem(bytes, molecule);
    OpenMM::VerletIntegrator integrator(0.0005);
    auto context = makeContext(s->system, integrator, precision());
    context->setPositions(s->positions);
    Evaluation first = evaluate(*context, *s->force);
    for (int repeat = 0; repeat < 5; repeat++) {
        Evaluation again = evaluate(*context, *s->force);
        EXPECT_EQ(again.energy, first.energy);
        ASSERT_EQ(0, std::memcmp(again.forces.data(), first.forces.data(), first.forces.size() * sizeof(OpenMM::Vec3)))
            << "repeat " << repeat;
    }
}

// An evaluation's launches go as one CUDA graph where they repeat (CudaLaunchGraphs): the same bits
// as the launches one by one (MLFF_CUDA_GRAPHS=off), step by step, while the kernels' arguments
// change under the graphs: the neighbour list grows (a capacity of 2 at first), the box grows (the
// cell list's grid with it), the energy-scale parameter changes. Two systems: 300 atoms in a
// periodic box (the cell list, and its memset, in the graph), and 40 small replicas (on 'tiled' and
// 'edges', their messages a block per replica). And the graphs are used: most evaluations go
// through one (MLFF_CUDA_GRAPHS=report prints how many when the Context ends). A setting that is
// none of "on", "off" and "report" is an error naming the variable.
TEST_P(CudaVsReference, GraphsGiveTheBitsOfLaunchesOneByOne) {
    const std::string bytes = mlff_test::random_model_bytes(modelSpec(64, 12, 2, 17));
    {
        auto s = makeSystem(bytes, mlff_test::random_structure(10, 10, 5.0, 1.0, 73));
        OpenMM::VerletIntegrator integrator(0.0005);
        setenv("MLFF_CUDA_GRAPHS", "sometimes", 1);
        MLFF_EXPECT_THROW_WITH(makeContext(s->system, integrator, precision()), "MLFF_CUDA_GRAPHS", "'sometimes'");
        unsetenv("MLFF_CUDA_GRAPHS");
    }
    mlff_test::Structure box = mlff_test::random_structure(300, 10, 16.0, 1.0, 72);
    box.box = {16.0, 0, 0, 0, 16.5, 0, 0, 0, 12.0};
    std::vector<mlff_test::Structure> molecules;
    for (int r = 0; r < 40; r++)
        molecules.push_back(mlff_test::random_structure(1 + (r * 5) % 13, 10, 4.0, 1.0, 130 + r));
    for (const auto& named : {std::make_pair(std::string("300 atoms in a box"), box),
                              std::make_pair(std::string("40 replicas of 1 to 13 atoms"), replicate(molecules))}) {
        SCOPED_TRACE(named.first);
        auto s = makeSystem(bytes, named.second);
        s->force->setEnergyScaleParameter("lambda_ml");
        const int iterations = 12;
        std::vector<Evaluation> runs[2];
        std::string printed[2];
        const char* settings[2] = {"off", "report"};
        for (int run = 0; run < 2; run++) {
            setenv("MLFF_CUDA_GRAPHS", settings[run], 1);
            ::testing::internal::CaptureStderr();
            {
                OpenMM::VerletIntegrator integrator(0.0005);
                auto context = contextOverflowingAtOnce(*s, integrator);
                for (int iteration = 0; iteration < iterations; iteration++) {
                    if (iteration == 4 && !named.second.box.empty()) {
                        OpenMM::Vec3 a, b, c;
                        context->getState(0).getPeriodicBoxVectors(a, b, c);
                        context->setPeriodicBoxVectors(a * 1.3, b * 1.3, c * 1.3);
                    }
                    if (iteration == 7)
                        context->setParameter("lambda_ml", 0.7);
                    runs[run].push_back(evaluate(*context, *s->force));
                    integrator.step(1); // a second evaluation, forces only
                }
            }
            printed[run] = ::testing::internal::GetCapturedStderr();
            unsetenv("MLFF_CUDA_GRAPHS");
        }
        for (int iteration = 0; iteration < iterations; iteration++) {
            const Evaluation &alone = runs[0][iteration], &graphed = runs[1][iteration];
            EXPECT_EQ(graphed.energy, alone.energy) << "iteration " << iteration;
            EXPECT_EQ(graphed.replicaEnergies, alone.replicaEnergies) << "iteration " << iteration;
            ASSERT_EQ(0, std::memcmp(graphed.forces.data(), alone.forces.data(),
                                     alone.forces.size() * sizeof(OpenMM::Vec3)))
                << "iteration " << iteration;
        }
        EXPECT_EQ(printed[0].find("through graphs"), std::string::npos) << printed[0];
        long long graphed = -1, evaluations = -1, built = -1;
        const size_t line = printed[1].find("MLFFForce (CUDA): ");
        ASSERT_NE(line, std::string::npos) << printed[1];
        ASSERT_EQ(3, std::sscanf(printed[1].c_str() + line,
                                 "MLFFForce (CUDA): %lld of %lld evaluations through graphs, %lld graphs built",
                                 &graphed, &evaluations, &built))
            << printed[1];
        EXPECT_EQ(evaluations, 2 * iterations);
        // New launches go one by one, and repeated ones through a graph built the second time: at
        // most 10 evaluations one by one (2 at the start, 2 or 4 as the list grows, 2 after the box,
        // 2 after lambda), the rest through graphs.
        EXPECT_GE(graphed, evaluations - 10) << printed[1];
        EXPECT_LE(built, 10) << printed[1];
    }
}

// Energy-only and forces-only requests agree with a full one.
TEST_P(CudaVsReference, EnergyOnlyAndForcesOnly) {
    const std::string bytes = mlff_test::random_model_bytes(modelSpec(64, 12, 2, 13));
    mlff_test::Structure molecule = mlff_test::random_structure(20, 10, 6.0, 1.0, 63);
    auto s = makeSystem(bytes, molecule);
    Evaluation reference = evaluateOn(*s, "reference");
    OpenMM::VerletIntegrator integrator(0.0005);
    auto context = makeContext(s->system, integrator, precision());
    context->setPositions(s->positions);
    Evaluation split;
    split.energy = context->getState(OpenMM::State::Energy).getPotentialEnergy();
    split.replicaEnergies = s->force->getReplicaEnergies(*context);
    split.forces = context->getState(OpenMM::State::Forces).getForces();
    expectMatchesReference(split, reference, precision(), "energy-only, then forces-only");
    Evaluation full = evaluate(*context, *s->force);
    EXPECT_EQ(full.energy, split.energy);
    EXPECT_EQ(0, std::memcmp(full.forces.data(), split.forces.data(), full.forces.size() * sizeof(OpenMM::Vec3)));
}

// Two Contexts (different models and systems) alive in one process, evaluated in turn.
TEST_P(CudaVsReference, TwoContexts) {
    const std::string bytes1 = mlff_test::random_model_bytes(modelSpec(16, 8, 2, 14));
    const std::string bytes2 = mlff_test::random_model_bytes(modelSpec(64, 12, 3, 15));
    auto s1 = makeSystem(bytes1, mlff_test::random_structure(10, 10, 5.0, 1.0, 64));
    auto s2 = makeSystem(bytes2, mlff_test::random_structure(25, 10, 7.0, 1.0, 65));
    Evaluation reference1 = evaluateOn(*s1, "reference"), reference2 = evaluateOn(*s2, "reference");
    OpenMM::VerletIntegrator integrator1(0.0005), integrator2(0.0005);
    auto context1 = makeContext(s1->system, integrator1, precision());
    auto context2 = makeContext(s2->system, integrator2, precision());
    context1->setPositions(s1->positions);
    context2->setPositions(s2->positions);
    for (int round = 0; round < 2; round++) {
        expectMatchesReference(evaluate(*context1, *s1->force), reference1, precision(), "context 1 of 2");
        expectMatchesReference(evaluate(*context2, *s2->force), reference2, precision(), "context 2 of 2");
    }
}

// 1,000 MD steps in a periodic box where OpenMM reorders atoms (it does so only when a
// nonbonded force with a cutoff is present: here one with all parameters zero), with 2
// replicas; then the forces at the final positions against Reference.
TEST_P(CudaVsReference, AfterThousandStepsWithReordering) {
    if (path() != "fused" && path() != "cluster")
        GTEST_SKIP() << "an H=16 model, which runs on the fused paths only";
    const std::string bytes = mlff_test::random_model_bytes(modelSpec(16, 8, 2, 16));
    std::vector<mlff_test::Structure> halves = {mlff_test::random_structure(48, 10, 14.0, 1.5, 66),
                                                mlff_test::random_structure(48, 10, 14.0, 1.5, 67)};
    mlff_test::Structure structure = replicate(halves);
    structure.box = {14.0, 0, 0, 0, 14.0, 0, 0, 0, 14.0};
    auto s = makeSystem(bytes, structure, 100.0); // heavy atoms: gentle dynamics under a random model
    // A NonbondedForce (without interactions) makes OpenMM reorder atoms.
    auto* nonbonded = new OpenMM::NonbondedForce();
    nonbonded->setNonbondedMethod(OpenMM::NonbondedForce::CutoffPeriodic);
    nonbonded->setCutoffDistance(0.6);
    for (int i = 0; i < s->system.getNumParticles(); i++)
        nonbonded->addParticle(0.0, 0.1, 0.0);
    s->system.addForce(nonbonded);
    OpenMM::VerletIntegrator integrator(0.0002);
    auto context = makeContext(s->system, integrator, precision());
    context->setPositions(s->positions);
    context->setVelocitiesToTemperature(300.0, 5);
    integrator.step(1000);
    OpenMM::State state = context->getState(OpenMM::State::Positions | OpenMM::State::Energy | OpenMM::State::Forces);
    Evaluation cuda{state.getPotentialEnergy(), state.getForces(), s->force->getReplicaEnergies(*context)};
    s->positions = state.getPositions();
    std::printf("[after-md] %s closest pair %.3f Å\n", precision().c_str(), closestPairAngstrom(s->positions, 48));
    Evaluation reference = evaluateOn(*s, "reference");
    // Reading positions through a stale atom index would give errors of order one. In float32 the
    // bound is 1e-3 here, not 1e-4: the random model has no repulsion, and after the MD two atoms sit
    // 0.66 Å apart. In single precision the Reference sees exactly the positions the kernels saw, yet
    // one atom of 96 came out at 3e-4 of the force norm while every other atom agreed to ~1e-6 and
    // double precision to 1e-10: float32 rounding amplified by the model's conditioning at that atom
    // (steep filters at short range; the per-channel norm |v| without epsilon).
    expectMatchesReference(cuda, reference, precision(), "after 1000 MD steps (reordered), 2 replicas",
                           precision() == "double" ? boundsFor("double").force : 1e-3);
}

INSTANTIATE_TEST_SUITE_P(Cuda, CudaVsReference,
                         ::testing::Combine(::testing::Values("single", "mixed", "double"),
                                            ::testing::Values("fused", "cluster", "tiled", "edges", "edges_mma",
                                                              "edges_two_products")),
                         [](const ::testing::TestParamInfo<std::tuple<std::string, std::string>>& param) {
                             return std::get<0>(param.param) + "_" + std::get<1>(param.param);
                         });

/**
 * The launches' names that MLFF_CUDA_TIMING prints when a Context of `s` ends, one evaluation on
 * the CUDA platform in single precision with the environment `settings` (unset again after).
 */
std::string timedLaunches(MLSystem& s, const std::map<std::string, std::string>& settings) {
    for (const auto& setting : settings)
        setenv(setting.first.c_str(), setting.second.c_str(), 1);
    setenv("MLFF_CUDA_TIMING", "1", 1);
    ::testing::internal::CaptureStderr();
    {
        OpenMM::VerletIntegrator integrator(0.0005);
        auto context = makeContext(s.system, integrator, "single");
        context->setPositions(s.positions);
        evaluate(*context, *s.force);
    }
    const std::string printed = ::testing::internal::GetCapturedStderr();
    for (const auto& setting : settings)
        unsetenv(setting.first.c_str());
    unsetenv("MLFF_CUDA_TIMING");
    return printed;
}

// The filters' forward is one product from the basis where H allows (64 or 128), with no setting
// or MLFF_CUDA_FILTER_HIDDEN=registers, and two with "stored": so that CudaVsReference's "edges"
// and "edges_two_products" compare different kernels with the Reference, not the same ones twice.
TEST(CudaFilterHidden, OneProductFromTheBasisUnlessStored) {
    if (!loadCudaPlugins())
        GTEST_SKIP() << "no CUDA platform here (no GPU driver)";
    if (computeCapabilityMajor() != 9)
        GTEST_SKIP() << "warp-group products need compute capability 9.0";
    auto s = makeSystem(mlff_test::random_model_bytes(modelSpec(64, 12, 2, 23)),
                        mlff_test::random_structure(40, 10, 9.0, 1.0, 24));
    const std::map<std::string, std::string> edges = {{"MLFF_CUDA_KERNELS", "edges"},
                                                      {"MLFF_CUDA_PRODUCTS", "warpgroup"}};
    std::map<std::string, std::string> registers = edges, stored = edges;
    registers["MLFF_CUDA_FILTER_HIDDEN"] = "registers";
    stored["MLFF_CUDA_FILTER_HIDDEN"] = "stored";
    const std::string unset = timedLaunches(*s, edges), one = timedLaunches(*s, registers),
                      two = timedLaunches(*s, stored);
    for (const std::string& printed : {unset, one}) {
        EXPECT_NE(printed.find("the filters from the basis"), std::string::npos) << printed;
        EXPECT_EQ(printed.find("the filters' hidden layer"), std::string::npos) << printed;
    }
    EXPECT_NE(two.find("the filters' hidden layer"), std::string::npos) << two;
    EXPECT_NE(two.find("the filters' output"), std::string::npos) << two;
    EXPECT_EQ(two.find("the filters from the basis"), std::string::npos) << two;
}

// NVE in mixed precision drifts no more than on the Reference platform. The molecule is held
// together by springs (as in tests/openmm's NVE test) so that no pair crosses the cutoff.
TEST(CudaNVE, MixedPrecisionDriftComparableToReference) {
    if (!loadCudaPlugins())
        GTEST_SKIP() << "no CUDA platform here (no GPU driver)";
    const std::string bytes = mlff_test::random_model_bytes(modelSpec(32, 10, 2, 17));
    mlff_test::Structure molecule = mlff_test::random_structure(6, 8, 2.5, 1.1, 68);
    double drift[2], fluctuation[2];
    const std::string platforms[2] = {"reference", "mixed"};
    for (int p = 0; p < 2; p++) {
        auto s = makeSystem(bytes, molecule, 14.0);
        auto* springs = new OpenMM::HarmonicBondForce();
        for (size_t i = 0; i < s->positions.size(); i++)
            for (size_t j = 0; j < i; j++) {
                OpenMM::Vec3 d = s->positions[i] - s->positions[j];
                springs->addBond(static_cast<int>(i), static_cast<int>(j), std::sqrt(d.dot(d)), 5e4);
            }
        s->system.addForce(springs);
        OpenMM::VerletIntegrator integrator(0.00025);
        auto context = makeContext(s->system, integrator, platforms[p]);
        context->setPositions(s->positions);
        context->setVelocitiesToTemperature(300.0, 9);
        const int steps = 2000, window = 200;
        std::vector<double> total;
        for (int step = 0; step < steps; step++) {
            integrator.step(1);
            OpenMM::State state = context->getState(OpenMM::State::Energy);
            total.push_back(state.getPotentialEnergy() + state.getKineticEnergy());
        }
        double first = 0, last = 0, lo = total[0], hi = total[0];
        for (int k = 0; k < window; k++) {
            first += total[k] / window;
            last += total[steps - window + k] / window;
        }
        for (double e : total) {
            lo = std::min(lo, e);
            hi = std::max(hi, e);
        }
        drift[p] = std::fabs(last - first);
        fluctuation[p] = hi - lo;
        std::printf("[nve] %-9s drift %.3e kJ/mol, fluctuation %.3e kJ/mol over %d steps\n", platforms[p].c_str(),
                    drift[p], fluctuation[p], steps);
    }
    // Comparable: within 3x the Reference drift, or within float32 rounding of the total
    // energy per step accumulated over the run when the Reference drift is ~0.
    EXPECT_LE(drift[1], 3 * drift[0] + 1e-3) << "mixed precision drifts more than the Reference platform";
    EXPECT_LE(fluctuation[1], 3 * fluctuation[0] + 1e-3);
}

} // namespace
} // namespace mlff_cuda_test
