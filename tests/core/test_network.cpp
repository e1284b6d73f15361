// test_network.cpp: mlff_compute as a whole: forces against finite differences of the energy,
// invariances, replicas, and periodic boxes against their non-periodic equivalents.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "test_support.h"

namespace {

using mlff_test::Structure;
using mlff_test::pair_near_cutoff;

struct Evaluation {
    std::vector<double> replica_energies, atom_energies, forces;
};

Evaluation evaluate(const mlff_model *model, const Structure &structure) {
    Evaluation out;
    std::size_t N = structure.atomic_numbers.size();
    out.replica_energies.assign(structure.num_replicas, 0.0);
    out.atom_energies.assign(N, 0.0);
    out.forces.assign(N * 3, 0.0);
    mlff_test::WorkspacePtr workspace(mlff_workspace_create());
    mlff_structure view = structure.view();
    mlff_result result = {out.replica_energies.data(), out.atom_energies.data(), out.forces.data()};
    mlff_error error{};
    mlff_status status = mlff_compute(model, workspace.get(), &view, &result, &error);
    EXPECT_EQ(status, MLFF_OK) << error.message;
    return out;
}

double max_abs(const std::vector<double> &v) {
    double m = 0.0;
    for (double x : v) m = std::max(m, std::fabs(x));
    return m;
}

// The largest |a - b| relative to the largest |a| (at least 1).
double max_relative_difference(const std::vector<double> &a, const std::vector<double> &b) {
    EXPECT_EQ(a.size(), b.size());
    double m = 0.0;
    for (std::size_t k = 0; k < a.size(); k++) m = std::max(m, std::fabs(a[k] - b[k]));
    return m / std::max(1.0, max_abs(a));
}

Structure random_molecule(int atoms, int max_z, double side, std::uint64_t seed, double cutoff) {
    // Retry seeds until no pair sits within 1e-3 Å of the cutoff.
    for (std::uint64_t attempt = 0;; attempt++) {
        Structure s = mlff_test::random_structure(atoms, max_z, side, 0.9, seed + 1000 * attempt);
        if (!pair_near_cutoff(s, cutoff, 1e-3)) return s;
    }
}

void expect_forces_match_finite_differences(const mlff_model *model, const Structure &structure, double tolerance) {
    Evaluation analytic = evaluate(model, structure);
    std::vector<double> numeric = mlff_test::finite_difference_forces(model, structure, 1e-5);
    double error = max_relative_difference(numeric, analytic.forces);
    EXPECT_LT(error, tolerance) << "max |F_analytic - F_numeric| / max(1, max |F|) over every coordinate";
    // The comparison's absolute resolution is `tolerance` (1e-7 here): forces above 1e-5 are still
    // checked to 1 %. (A random dimer can sit near an extremum of E(d), with forces ~1e-4.)
    EXPECT_GT(max_abs(analytic.forces), 100 * tolerance) << "forces are too small for the comparison to mean anything";
}

mlff_test::ModelSpec small_spec(std::uint64_t seed) {
    mlff_test::ModelSpec spec;
    spec.hidden = 12;
    spec.blocks = 3;
    spec.rbf = 7;
    spec.max_z = 9;
    spec.seed = seed;
    return spec;
}

// ---------------------------------------------------------------------------------------
// Forces

TEST(NetworkForces, RandomModelMatchesFiniteDifferences) {
    for (std::uint64_t seed : {1u, 2u, 3u}) {
        auto model = mlff_test::random_model_or_fail(small_spec(seed));
        ASSERT_TRUE(model);
        for (int atoms : {2, 7, 16}) {
            SCOPED_TRACE("seed " + std::to_string(seed) + ", " + std::to_string(atoms) + " atoms");
            double side = atoms == 2 ? 2.5 : 6.0; // a dimer must sit well inside the cutoff
            Structure s = random_molecule(atoms, 9, side, 10 * seed + atoms, 5.0);
            expect_forces_match_finite_differences(model.get(), s, 1e-7);
        }
    }
}

TEST(NetworkForces, LastBlockWithoutMixingMatrixMatchesFiniteDifferences) {
    mlff_test::ModelSpec spec = small_spec(4);
    spec.last_mixing = false;
    auto model = mlff_test::random_model_or_fail(spec);
    ASSERT_TRUE(model);
    expect_forces_match_finite_differences(model.get(), random_molecule(9, 9, 5.0, 44, 5.0), 1e-7);
}

TEST(NetworkForces, PeriodicBoxesMatchFiniteDifferences) {
    auto model = mlff_test::random_model_or_fail(small_spec(5));
    ASSERT_TRUE(model);
    const std::vector<std::vector<double>> boxes = {
        {11, 0, 0, 0, 10.5, 0, 0, 0, 12},          // rectangular
        {11, 0, 0, 3, 10.5, 0, -4, 2.5, 10.2},     // triclinic, reduced form
    };
    for (const auto &box : boxes) {
        Structure s = random_molecule(24, 9, 11.0, 55, 5.0); // fills the box: pairs cross its faces
        s.box = box;
        SCOPED_TRACE("box b = (" + std::to_string(box[3]) + ", " + std::to_string(box[4]) + ", 0)");
        expect_forces_match_finite_differences(model.get(), s, 1e-7);
    }
}

TEST(NetworkForces, SeedModelsMatchFiniteDifferences) {
    MLFF_SKIP_WITHOUT_SHARED();
    std::vector<mlff_test::GoldenCase> cases;
    std::string error;
    ASSERT_TRUE(mlff_test::read_golden(&cases, &error)) << error;
    for (const auto &golden : cases) {
        if (golden.geometry == "droplet30" && golden.model == "original") continue; // 90 coordinates x 2 evaluations: slow under ASan
        auto model = mlff_test::load_model_file_or_fail(mlff_test::seed_model_path(golden.model));
        ASSERT_TRUE(model);
        Structure s;
        s.atomic_numbers = golden.atomic_numbers;
        s.positions = golden.positions;
        ASSERT_FALSE(pair_near_cutoff(s, 5.0, 1e-3)) << golden.geometry;
        SCOPED_TRACE(golden.model + "/" + golden.geometry);
        expect_forces_match_finite_differences(model.get(), s, 1e-6);
    }
}

// ---------------------------------------------------------------------------------------
// Invariances

TEST(NetworkInvariance, Translation) {
    auto model = mlff_test::random_model_or_fail(small_spec(6));
    ASSERT_TRUE(model);
    Structure s = random_molecule(12, 9, 6.0, 66, 5.0), moved = s;
    for (std::size_t k = 0; k < moved.positions.size(); k++) moved.positions[k] += (k % 3 == 0 ? 13.25 : -7.5);
    Evaluation a = evaluate(model.get(), s), b = evaluate(model.get(), moved);
    EXPECT_NEAR(a.replica_energies[0], b.replica_energies[0], 1e-10 * std::fabs(a.replica_energies[0]));
    EXPECT_LT(max_relative_difference(a.forces, b.forces), 1e-10);
}

TEST(NetworkInvariance, Permutation) {
    auto model = mlff_test::random_model_or_fail(small_spec(7));
    ASSERT_TRUE(model);
    Structure s = random_molecule(10, 9, 6.0, 77, 5.0), permuted = s;
    std::vector<int> order(10);
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), std::mt19937_64(7));
    for (int k = 0; k < 10; k++) {
        permuted.atomic_numbers[k] = s.atomic_numbers[order[k]];
        for (int a = 0; a < 3; a++) permuted.positions[k * 3 + a] = s.positions[order[k] * 3 + a];
    }
    Evaluation a = evaluate(model.get(), s), b = evaluate(model.get(), permuted);
    EXPECT_NEAR(a.replica_energies[0], b.replica_energies[0], 1e-10 * std::fabs(a.replica_energies[0]));
    for (int k = 0; k < 10; k++)
        for (int c = 0; c < 3; c++) EXPECT_NEAR(b.forces[k * 3 + c], a.forces[order[k] * 3 + c], 1e-10);
}

TEST(NetworkInvariance, ForcesSumToZeroAndAtomEnergiesToTheTotal) {
    auto model = mlff_test::random_model_or_fail(small_spec(8));
    ASSERT_TRUE(model);
    Evaluation e = evaluate(model.get(), random_molecule(15, 9, 6.0, 88, 5.0));
    double total = std::accumulate(e.atom_energies.begin(), e.atom_energies.end(), 0.0);
    EXPECT_NEAR(total, e.replica_energies[0], 1e-12 * std::fabs(total));
    for (int c = 0; c < 3; c++) {
        double sum = 0.0;
        for (std::size_t i = 0; i < e.forces.size() / 3; i++) sum += e.forces[i * 3 + c];
        EXPECT_NEAR(sum, 0.0, 1e-10 * max_abs(e.forces));
    }
}

// ---------------------------------------------------------------------------------------
// Replicas

TEST(NetworkReplicas, EachReplicaEqualsItsStructureAlone) {
    auto model = mlff_test::random_model_or_fail(small_spec(9));
    ASSERT_TRUE(model);
    // Two structures placed on top of each other: if replicas interacted, energies would change.
    Structure a = random_molecule(8, 9, 5.0, 91, 5.0), b = random_molecule(5, 9, 5.0, 92, 5.0);
    Structure both;
    both.num_replicas = 3; // replica 1 stays empty
    // interleave atoms of the two replicas
    std::vector<std::pair<int, int>> order; // (replica, index)
    for (int k = 0; k < 8; k++) order.push_back({0, k});
    for (int k = 0; k < 5; k++) order.insert(order.begin() + 2 * k + 1, {2, k});
    for (auto [replica, k] : order) {
        const Structure &from = replica == 0 ? a : b;
        both.atomic_numbers.push_back(from.atomic_numbers[k]);
        for (int c = 0; c < 3; c++) both.positions.push_back(from.positions[k * 3 + c]);
        both.replicas.push_back(replica);
    }
    Evaluation ea = evaluate(model.get(), a), eb = evaluate(model.get(), b), eboth = evaluate(model.get(), both);
    EXPECT_NEAR(eboth.replica_energies[0], ea.replica_energies[0], 1e-12 * std::fabs(ea.replica_energies[0]));
    EXPECT_EQ(eboth.replica_energies[1], 0.0);
    EXPECT_NEAR(eboth.replica_energies[2], eb.replica_energies[0], 1e-12 * std::fabs(eb.replica_energies[0]));
    int seen[3] = {0, 0, 0};
    for (std::size_t k = 0; k < order.size(); k++) {
        auto [replica, index] = order[k];
        const Evaluation &alone = replica == 0 ? ea : eb;
        for (int c = 0; c < 3; c++) EXPECT_NEAR(eboth.forces[k * 3 + c], alone.forces[index * 3 + c], 1e-12);
        seen[replica]++;
    }
    EXPECT_EQ(seen[0], 8);
    EXPECT_EQ(seen[2], 5);
}

// ---------------------------------------------------------------------------------------
// Periodic boxes

TEST(NetworkPeriodic, HugeBoxEqualsNonPeriodic) {
    auto model = mlff_test::random_model_or_fail(small_spec(10));
    ASSERT_TRUE(model);
    Structure s = random_molecule(14, 9, 6.0, 101, 5.0), periodic = s;
    periodic.box = {200, 0, 0, 0, 200, 0, 0, 0, 200};
    Evaluation a = evaluate(model.get(), s), b = evaluate(model.get(), periodic);
    EXPECT_NEAR(a.replica_energies[0], b.replica_energies[0], 1e-12 * std::fabs(a.replica_energies[0]));
    EXPECT_LT(max_relative_difference(a.forces, b.forces), 1e-12);
}

TEST(NetworkPeriodic, WrappedStructureEqualsUnwrapped) {
    auto model = mlff_test::random_model_or_fail(small_spec(11));
    ASSERT_TRUE(model);
    const std::vector<std::vector<double>> boxes = {
        {12, 0, 0, 0, 11, 0, 0, 0, 13},
        {12, 0, 0, -5, 11, 0, 4, -3, 12.5},
    };
    for (const auto &box : boxes) {
        // A molecule straddling the box's corner, then every atom shifted by whole box vectors.
        // It spans at most 3 sqrt(3) = 5.2 Å, and every box height is >= 11 Å, so no periodic
        // image comes within the cutoff: the periodic result must equal the isolated one.
        Structure s = random_molecule(12, 9, 3.0, 111, 5.0);
        for (std::size_t k = 0; k < s.positions.size(); k++) s.positions[k] -= 1.5;
        s.box = box;
        Structure wrapped = s;
        std::mt19937_64 rng(5);
        std::uniform_int_distribution<int> shift(-2, 2);
        for (std::size_t i = 0; i < 12; i++) {
            int n[3] = {shift(rng), shift(rng), shift(rng)};
            for (int v = 0; v < 3; v++)
                for (int c = 0; c < 3; c++) wrapped.positions[i * 3 + c] += n[v] * box[v * 3 + c];
        }
        Evaluation a = evaluate(model.get(), s), b = evaluate(model.get(), wrapped);
        EXPECT_NEAR(a.replica_energies[0], b.replica_energies[0], 1e-11 * std::fabs(a.replica_energies[0]));
        EXPECT_LT(max_relative_difference(a.forces, b.forces), 1e-10);
        Structure isolated = s;
        isolated.box.clear();
        Evaluation c = evaluate(model.get(), isolated);
        EXPECT_NEAR(a.replica_energies[0], c.replica_energies[0], 1e-11 * std::fabs(c.replica_energies[0]));
    }
}

TEST(NetworkPeriodic, PeriodicImagesInteract) {
    // A dimer split across a small box's face: with the box the atoms are 2 Å apart through the
    // face, without it 8 Å (beyond the cutoff). The energies must differ.
    auto model = mlff_test::random_model_or_fail(small_spec(12));
    ASSERT_TRUE(model);
    Structure s;
    s.atomic_numbers = {1, 8};
    s.positions = {1, 5, 5, 9, 5, 5};
    Evaluation apart = evaluate(model.get(), s);
    s.box = {10, 0, 0, 0, 10, 0, 0, 0, 10};
    Evaluation together = evaluate(model.get(), s);
    Structure close;
    close.atomic_numbers = {1, 8};
    close.positions = {1, 5, 5, -1, 5, 5};
    Evaluation reference = evaluate(model.get(), close);
    EXPECT_NEAR(together.replica_energies[0], reference.replica_energies[0], 1e-12 * std::fabs(reference.replica_energies[0]));
    EXPECT_GT(std::fabs(together.replica_energies[0] - apart.replica_energies[0]), 1e-6);
}

// ---------------------------------------------------------------------------------------
// Errors

mlff_error compute_error(const mlff_model *model, const Structure &s) {
    mlff_test::WorkspacePtr workspace(mlff_workspace_create());
    std::vector<double> energies(std::max(1, s.num_replicas)), forces(s.atomic_numbers.size() * 3);
    mlff_structure view = s.view();
    mlff_result result = {energies.data(), nullptr, forces.data()};
    mlff_error error{};
    error.status = mlff_compute(model, workspace.get(), &view, &result, &error);
    return error;
}

TEST(NetworkErrors, UnknownAtomicNumberNamesTheAtom) {
    auto model = mlff_test::random_model_or_fail(small_spec(13));
    ASSERT_TRUE(model);
    Structure s = random_molecule(4, 9, 5.0, 131, 5.0);
    s.atomic_numbers[2] = 10; // Z_max is 9
    mlff_error error = compute_error(model.get(), s);
    EXPECT_EQ(error.status, MLFF_ERROR_INVALID_ARGUMENT);
    EXPECT_NE(std::string(error.message).find("atom 2 has atomic number 10"), std::string::npos) << error.message;
    EXPECT_NE(std::string(error.message).find("0 to 9"), std::string::npos) << error.message;
}

TEST(NetworkErrors, CoincidentAtomsAreNamed) {
    auto model = mlff_test::random_model_or_fail(small_spec(14));
    ASSERT_TRUE(model);
    Structure s = random_molecule(4, 9, 5.0, 141, 5.0);
    for (int c = 0; c < 3; c++) s.positions[3 * 3 + c] = s.positions[1 * 3 + c];
    mlff_error error = compute_error(model.get(), s);
    EXPECT_EQ(error.status, MLFF_ERROR_INVALID_ARGUMENT);
    EXPECT_NE(std::string(error.message).find("atoms 1 and 3 are at the same position"), std::string::npos)
        << error.message;
}

TEST(NetworkErrors, MissingOutputsAreRejected) {
    auto model = mlff_test::random_model_or_fail(small_spec(15));
    ASSERT_TRUE(model);
    mlff_test::WorkspacePtr workspace(mlff_workspace_create());
    Structure s = random_molecule(3, 9, 5.0, 151, 5.0);
    mlff_structure view = s.view();
    mlff_result result = {nullptr, nullptr, nullptr};
    mlff_error error{};
    EXPECT_EQ(mlff_compute(model.get(), workspace.get(), &view, &result, &error), MLFF_ERROR_INVALID_ARGUMENT);
    EXPECT_NE(std::string(error.message).find("replica_energies"), std::string::npos) << error.message;
}

TEST(NetworkCompute, EnergyWithoutForcesEqualsEnergyWithForces) {
    auto model = mlff_test::random_model_or_fail(small_spec(16));
    ASSERT_TRUE(model);
    Structure s = random_molecule(9, 9, 5.0, 161, 5.0);
    Evaluation full = evaluate(model.get(), s);
    mlff_test::WorkspacePtr workspace(mlff_workspace_create());
    mlff_structure view = s.view();
    double energy = 0.0;
    mlff_result result = {&energy, nullptr, nullptr};
    mlff_error error{};
    ASSERT_EQ(mlff_compute(model.get(), workspace.get(), &view, &result, &error), MLFF_OK) << error.message;
    EXPECT_EQ(energy, full.replica_energies[0]);
}

} // namespace
