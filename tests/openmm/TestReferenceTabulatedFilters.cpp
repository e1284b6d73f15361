// TestReferenceTabulatedFilters.cpp: MLFFForce::setUseTabulatedFilters on the Reference and CPU
// platforms (docs/tabulated-filters.md). A Context with tabulated filters against one without:
// energies within 1e-6 relative and forces within 1e-5 relative (of the largest force component),
// for random models and the seed models; the Context's tabulated answer is the core's
// (mlff_compute_tabulated with the default spacing), it survives XML serialization, and
// updateParametersInContext cannot switch it.
#include "MLFFTestHelpers.h"
#include "PluginSetup.h"
#include "ReferenceMLFFKernelFactory.h"

#include <fstream>
#include <memory>

namespace {

using namespace mlff_openmm_test;

const bool registered = [] {
    loadCpuPlatform(); // before the factories, so they register with CPU too
    registerMLFFReferenceKernelFactories();
    return true;
}();

// A random model whose basis is as narrow as the `original` seed model's (K = 20, width 0.25 Å).
mlff_test::ModelSpec narrowSpec(std::uint64_t seed) {
    mlff_test::ModelSpec spec = smallModelSpec(seed);
    spec.blocks = 3;
    spec.rbf = 20;
    return spec;
}

struct Answer {
    double energy = 0.0; // kJ/mol
    std::vector<OpenMM::Vec3> forces;
    std::vector<double> replicaEnergies;
};

// Every particle of `structure` is an ML particle of the System.
std::unique_ptr<MLFFForce> makeForce(const std::string& bytes, const mlff_test::Structure& structure, bool tabulated) {
    std::unique_ptr<MLFFForce> force(new MLFFForce(bytes, MLFFForce::ModelBytes));
    for (size_t i = 0; i < structure.atomic_numbers.size(); i++)
        force->addParticle(static_cast<int>(i), structure.atomic_numbers[i],
                           structure.replicas.empty() ? 0 : structure.replicas[i]);
    force->setUseTabulatedFilters(tabulated);
    return force;
}

Answer evaluate(const std::string& platformName, MLFFForce* force, const mlff_test::Structure& structure) {
    OpenMM::System system;
    std::vector<OpenMM::Vec3> positions;
    for (size_t i = 0; i < structure.atomic_numbers.size(); i++) {
        system.addParticle(1.0);
        positions.push_back(nm(structure.positions, i));
    }
    system.addForce(force); // the System owns it now
    OpenMM::VerletIntegrator integrator(0.001);
    OpenMM::Platform& platform = OpenMM::Platform::getPlatformByName(platformName);
    std::map<std::string, std::string> properties;
    if (platformName == "CPU")
        properties["Threads"] = "2";
    OpenMM::Context context(system, integrator, platform, properties);
    context.setPositions(positions);
    OpenMM::State state = context.getState(OpenMM::State::Energy | OpenMM::State::Forces);
    Answer answer;
    answer.energy = state.getPotentialEnergy();
    answer.forces = state.getForces();
    answer.replicaEnergies = force->getReplicaEnergies(context);
    return answer;
}

Answer evaluate(const std::string& platformName, const std::string& bytes, const mlff_test::Structure& structure,
                bool tabulated) {
    return evaluate(platformName, makeForce(bytes, structure, tabulated).release(), structure);
}

double maxForceDifference(const std::vector<OpenMM::Vec3>& a, const std::vector<OpenMM::Vec3>& b) {
    EXPECT_EQ(a.size(), b.size());
    double largest = 0.0;
    for (size_t i = 0; i < a.size() && i < b.size(); i++)
        for (int d = 0; d < 3; d++)
            largest = std::max(largest, std::fabs(a[i][d] - b[i][d]));
    return largest;
}

// Tabulated within 1e-6 relative (energy) and 1e-5 relative (forces, of max |F|) of exact, and
// not identical to it (the table is really used).
void expectTabulatedNearExact(const Answer& exact, const Answer& tabulated) {
    double energyDeviation = std::fabs(tabulated.energy - exact.energy) / std::fabs(exact.energy);
    double forceScale = maxAbs(exact.forces);
    ASSERT_GT(forceScale, 1e-2) << "forces too small for a relative comparison (kJ/mol/nm)";
    double forceDeviation = maxForceDifference(tabulated.forces, exact.forces) / forceScale;
    EXPECT_LT(energyDeviation, 1e-6);
    EXPECT_LT(forceDeviation, 1e-5);
    EXPECT_GT(forceDeviation, 0.0) << "tabulated and exact forces are identical: is the table used?";
    ::testing::Test::RecordProperty("energy_deviation", std::to_string(energyDeviation));
    ::testing::Test::RecordProperty("force_deviation", std::to_string(forceDeviation));
}

mlff_test::Structure molecule(int atoms, std::uint64_t seed) {
    return mlff_test::random_structure(atoms, 10, 6.0, 0.9, seed);
}

class TabulatedFilters : public ::testing::TestWithParam<std::string> {
protected:
    void SetUp() override {
        try {
            OpenMM::Platform::getPlatformByName(GetParam());
        }
        catch (const OpenMM::OpenMMException&) {
            GTEST_SKIP() << "platform " << GetParam() << " is not available here";
        }
    }
};

TEST_P(TabulatedFilters, OffByDefault) {
    const std::string bytes = mlff_test::random_model_bytes(narrowSpec(1));
    mlff_test::Structure s = molecule(8, 1);
    MLFFForce force(bytes, MLFFForce::ModelBytes);
    EXPECT_FALSE(force.getUseTabulatedFilters());
    // the default is the exact path: equal to the core's mlff_compute to rounding of units
    const CoreAnswer core = coreAnswer(bytes, s);
    Answer exact = evaluate(GetParam(), bytes, s, false);
    EXPECT_NEAR(exact.energy, core.total() * units::KJPerMolPerEV, 1e-9 * std::fabs(exact.energy));
}

TEST_P(TabulatedFilters, RandomModelsMatchTheExactFilters) {
    for (std::uint64_t seed : {2u, 3u}) {
        const std::string bytes = mlff_test::random_model_bytes(narrowSpec(seed));
        mlff_test::Structure s = molecule(14, 10 + seed);
        SCOPED_TRACE("seed " + std::to_string(seed));
        expectTabulatedNearExact(evaluate(GetParam(), bytes, s, false), evaluate(GetParam(), bytes, s, true));
    }
}

TEST_P(TabulatedFilters, ReplicasAndPeriodicBoxMatchTheExactFilters) {
    const std::string bytes = mlff_test::random_model_bytes(narrowSpec(4));
    mlff_test::Structure s = molecule(12, 40);
    s.num_replicas = 3;
    for (size_t i = 0; i < s.atomic_numbers.size(); i++)
        s.replicas.push_back(static_cast<int>(i % 3));
    Answer exact = evaluate(GetParam(), bytes, s, false), tabulated = evaluate(GetParam(), bytes, s, true);
    expectTabulatedNearExact(exact, tabulated);
    ASSERT_EQ(tabulated.replicaEnergies.size(), 3u);
    for (size_t r = 0; r < 3; r++)
        EXPECT_NEAR(tabulated.replicaEnergies[r], exact.replicaEnergies[r], 1e-6 * std::fabs(exact.replicaEnergies[r]));

    // periodic: a 1.2 nm cube filled with atoms, pairs across its faces
    mlff_test::Structure box = mlff_test::random_structure(20, 10, 12.0, 1.2, 41);
    auto exactForce = makeForce(bytes, box, false), tabulatedForce = makeForce(bytes, box, true);
    exactForce->setUsesPeriodicBoundaryConditions(true);
    tabulatedForce->setUsesPeriodicBoundaryConditions(true);
    auto periodicEvaluate = [&](MLFFForce* force) {
        OpenMM::System system;
        system.setDefaultPeriodicBoxVectors(OpenMM::Vec3(1.2, 0, 0), OpenMM::Vec3(0, 1.2, 0), OpenMM::Vec3(0, 0, 1.2));
        std::vector<OpenMM::Vec3> positions;
        for (size_t i = 0; i < box.atomic_numbers.size(); i++) {
            system.addParticle(1.0);
            positions.push_back(nm(box.positions, i));
        }
        system.addForce(force);
        OpenMM::VerletIntegrator integrator(0.001);
        OpenMM::Context context(system, integrator, OpenMM::Platform::getPlatformByName(GetParam()));
        context.setPositions(positions);
        OpenMM::State state = context.getState(OpenMM::State::Energy | OpenMM::State::Forces);
        Answer answer;
        answer.energy = state.getPotentialEnergy();
        answer.forces = state.getForces();
        return answer;
    };
    SCOPED_TRACE("periodic box");
    Answer periodicExact = periodicEvaluate(exactForce.release());
    Answer periodicTabulated = periodicEvaluate(tabulatedForce.release());
    expectTabulatedNearExact(periodicExact, periodicTabulated);
}

// The Context's tabulated answer is the core's with the default table.
TEST_P(TabulatedFilters, MatchesTheCoreWithTheDefaultTable) {
    const std::string bytes = mlff_test::random_model_bytes(narrowSpec(5));
    mlff_test::Structure s = molecule(10, 50);
    mlff_test::ModelPtr model = mlff_test::load_model_or_fail(bytes);
    ASSERT_TRUE(model);
    mlff_filter_table* rawTable = nullptr;
    mlff_error error{};
    ASSERT_EQ(mlff_filter_table_create(model.get(), 0.0, &rawTable, &error), MLFF_OK) << error.message;
    std::unique_ptr<mlff_filter_table, void (*)(mlff_filter_table*)> table(rawTable, mlff_filter_table_free);
    mlff_test::WorkspacePtr workspace(mlff_workspace_create());
    double energyEV = 0.0;
    std::vector<double> forcesEV(s.positions.size());
    mlff_structure view = s.view();
    mlff_result result{&energyEV, nullptr, forcesEV.data()};
    ASSERT_EQ(mlff_compute_tabulated(model.get(), table.get(), workspace.get(), &view, &result, &error), MLFF_OK)
        << error.message;

    Answer tabulated = evaluate(GetParam(), bytes, s, true);
    EXPECT_NEAR(tabulated.energy, energyEV * units::KJPerMolPerEV, 1e-12 * std::fabs(tabulated.energy));
    for (size_t i = 0; i < s.atomic_numbers.size(); i++)
        for (int d = 0; d < 3; d++)
            EXPECT_NEAR(tabulated.forces[i][d], forcesEV[3 * i + d] * units::ForceToOpenMM, 1e-9 * maxAbs(tabulated.forces));
}

TEST_P(TabulatedFilters, SurvivesSerialization) {
    const std::string bytes = mlff_test::random_model_bytes(narrowSpec(6));
    mlff_test::Structure s = molecule(9, 60);
    auto force = makeForce(bytes, s, true);
    std::stringstream xml;
    OpenMM::XmlSerializer::serialize<MLFFForce>(force.get(), "Force", xml);
    std::unique_ptr<MLFFForce> copy(OpenMM::XmlSerializer::deserialize<MLFFForce>(xml));
    ASSERT_TRUE(copy->getUseTabulatedFilters());
    Answer original = evaluate(GetParam(), force.release(), s), restored = evaluate(GetParam(), copy.release(), s);
    EXPECT_EQ(restored.energy, original.energy);
    EXPECT_EQ(maxForceDifference(restored.forces, original.forces), 0.0);
}

TEST_P(TabulatedFilters, UpdateParametersCannotSwitchTabulation) {
    const std::string bytes = mlff_test::random_model_bytes(narrowSpec(7));
    mlff_test::Structure s = molecule(6, 70);
    OpenMM::System system;
    std::vector<OpenMM::Vec3> positions;
    for (size_t i = 0; i < s.atomic_numbers.size(); i++) {
        system.addParticle(1.0);
        positions.push_back(nm(s.positions, i));
    }
    MLFFForce* force = makeForce(bytes, s, true).release();
    system.addForce(force);
    OpenMM::VerletIntegrator integrator(0.001);
    OpenMM::Context context(system, integrator, OpenMM::Platform::getPlatformByName(GetParam()));
    context.setPositions(positions);
    double before = context.getState(OpenMM::State::Energy).getPotentialEnergy();
    force->updateParametersInContext(context); // unchanged: fine
    force->setUseTabulatedFilters(false);
    MLFF_EXPECT_THROW_WITH(force->updateParametersInContext(context), "tabulated");
    EXPECT_EQ(context.getState(OpenMM::State::Energy).getPotentialEnergy(), before);
}

TEST_P(TabulatedFilters, SeedModelsMatchTheExactFilters) {
    MLFF_SKIP_WITHOUT_SHARED();
    std::vector<mlff_test::GoldenCase> cases;
    std::string error;
    ASSERT_TRUE(mlff_test::read_golden(&cases, &error)) << error;
    int checked = 0;
    for (const mlff_test::GoldenCase& golden : cases) {
        const std::string path = mlff_test::seed_model_path(golden.model);
        const std::string bytes = mlff_test::read_file_bytes(path);
        ASSERT_FALSE(bytes.empty()) << "seed model " << path << " is missing (made by the seed_models fixture)";
        SCOPED_TRACE(golden.model + " on " + golden.geometry);
        mlff_test::Structure s;
        s.atomic_numbers = golden.atomic_numbers;
        s.positions = golden.positions;
        Answer exact = evaluate(GetParam(), bytes, s, false), tabulated = evaluate(GetParam(), bytes, s, true);
        expectTabulatedNearExact(exact, tabulated);
        // and the exact path is still the golden one
        EXPECT_NEAR(exact.energy, golden.energy * units::KJPerMolPerEV, 1e-9 * std::fabs(exact.energy));
        checked++;
    }
    EXPECT_GT(checked, 0);
}

std::string platformName(const ::testing::TestParamInfo<std::string>& param) {
    return param.param;
}

INSTANTIATE_TEST_SUITE_P(Platforms, TabulatedFilters, ::testing::Values(std::string("Reference"), std::string("CPU")),
                         platformName);

} // namespace
