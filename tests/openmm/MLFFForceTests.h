// MLFFForceTests.h: the platform-independent test bodies of MLFFForce, written once and
// instantiated per platform and precision, OpenMM-style:
//
//     #include "MLFFForceTests.h"
//     MLFF_INSTANTIATE_FORCE_TESTS(Reference,
//         mlff_openmm_test::PlatformCase{"Reference", {}, mlff_openmm_test::Precision::Double});
//
// Every expected value comes from the C core (the oracle, double precision) through
// tests/core/test_support.h, or from finite differences of the Context's own energy.
// Include this header in exactly one translation unit of a test executable; the executable
// must register the platforms and the plugin's kernel factory before the tests run.
#pragma once

#include "MLFFTestHelpers.h"

namespace mlff_openmm_test {

// ------------------------------------------------------------------------------------------
// The fixture

class MLFFForceTest : public ::testing::TestWithParam<PlatformCase> {
protected:
    void SetUp() override {
        try {
            OpenMM::Platform::getPlatformByName(GetParam().platform);
        }
        catch (const OpenMM::OpenMMException&) {
            GTEST_SKIP() << "platform " << GetParam().platform << " is not available here";
        }
    }
    Tolerances tolerances() const {
        return tolerancesFor(GetParam().precision);
    }
    std::unique_ptr<OpenMM::Context> createContext(OpenMM::System& system, OpenMM::Integrator& integrator) {
        OpenMM::Platform& platform = OpenMM::Platform::getPlatformByName(GetParam().platform);
        return std::unique_ptr<OpenMM::Context>(new OpenMM::Context(system, integrator, platform, GetParam().properties));
    }
    /** Energies agree within the precision's tolerance (kJ/mol). */
    void expectEnergyNear(double actual, double expected, const std::string& what) const {
        double bound = tolerances().energy * std::max(std::fabs(expected), 1.0);
        EXPECT_NEAR(actual, expected, bound) << what;
    }
    void expectForcesNear(const std::vector<OpenMM::Vec3>& actual, const std::vector<OpenMM::Vec3>& expected,
                          const std::string& what) const {
        ASSERT_EQ(actual.size(), expected.size());
        double bound = tolerances().force * std::max(maxAbs(expected), 1.0);
        for (size_t i = 0; i < actual.size(); i++)
            for (int d = 0; d < 3; d++)
                EXPECT_NEAR(actual[i][d], expected[i][d], bound) << what << ": particle " << i << " component " << d;
    }
};

// ------------------------------------------------------------------------------------------
// Bodies

// ML/MM: the ML particles are a shuffled subset of the System; the MM particles and an MM
// force (another force group) are untouched by MLFFForce.
TEST_P(MLFFForceTest, EnergyAndForcesMatchCore) {
    const std::string bytes = mlff_test::random_model_bytes(smallModelSpec());
    mlff_test::Structure molecule = mlff_test::random_structure(7, 10, 4.0, 1.0, 11);
    const CoreAnswer core = coreAnswer(bytes, molecule);
    ASSERT_EQ(core.replicaEnergies.size(), 1u);

    const int numParticles = 10;
    const std::vector<int> systemIndexOf = {8, 0, 3, 5, 1, 9, 6}; // ML particle -> System particle
    OpenMM::System system;
    std::vector<OpenMM::Vec3> positions(numParticles);
    for (int i = 0; i < numParticles; i++) {
        system.addParticle(12.0);
        positions[static_cast<size_t>(i)] = OpenMM::Vec3(2.0 + 0.3 * i, -1.0, 0.5);
    }
    auto* force = new MLFFForce(bytes, MLFFForce::ModelBytes);
    for (size_t i = 0; i < systemIndexOf.size(); i++) {
        force->addParticle(systemIndexOf[i], molecule.atomic_numbers[i]);
        positions[static_cast<size_t>(systemIndexOf[i])] = nm(molecule.positions, i);
    }
    system.addForce(force);
    auto* bonds = new OpenMM::HarmonicBondForce();
    bonds->addBond(2, 4, 0.15, 1000.0); // ML particle to MM particle
    bonds->addBond(4, 7, 0.12, 2000.0);
    bonds->setForceGroup(1);
    system.addForce(bonds);

    OpenMM::VerletIntegrator integrator(0.001);
    auto context = createContext(system, integrator);
    context->setPositions(positions);
    OpenMM::State ml = context->getState(OpenMM::State::Energy | OpenMM::State::Forces, false, 1 << 0);
    OpenMM::State mm = context->getState(OpenMM::State::Energy | OpenMM::State::Forces, false, 1 << 1);
    OpenMM::State all = context->getState(OpenMM::State::Energy | OpenMM::State::Forces);

    expectEnergyNear(ml.getPotentialEnergy(), core.total() * units::KJPerMolPerEV, "ML energy");
    std::vector<OpenMM::Vec3> expected(numParticles, OpenMM::Vec3());
    for (size_t i = 0; i < systemIndexOf.size(); i++)
        expected[static_cast<size_t>(systemIndexOf[i])] = coreForce(core, i);
    expectForcesNear(ml.getForces(), expected, "ML forces");
    for (int i : {2, 4, 7}) {
        ASSERT_EQ(std::find(systemIndexOf.begin(), systemIndexOf.end(), i), systemIndexOf.end());
        EXPECT_EQ(ml.getForces()[static_cast<size_t>(i)], OpenMM::Vec3()) << "MM particle " << i;
    }
    expectEnergyNear(all.getPotentialEnergy(), ml.getPotentialEnergy() + mm.getPotentialEnergy(), "ML + MM energy");
    std::vector<OpenMM::Vec3> sum(numParticles);
    for (int i = 0; i < numParticles; i++)
        sum[static_cast<size_t>(i)] = ml.getForces()[static_cast<size_t>(i)] + mm.getForces()[static_cast<size_t>(i)];
    expectForcesNear(all.getForces(), sum, "ML + MM forces");
}

// Two MLFFForces in one System, each with its own model, particles (interleaved in the System,
// overlapping in space) and force group: each group gives its force's core answer alone, and all
// groups the sum.
TEST_P(MLFFForceTest, TwoForcesInOneSystem) {
    const std::string bytes[2] = {mlff_test::random_model_bytes(smallModelSpec(7)),
                                  mlff_test::random_model_bytes(smallModelSpec(8))};
    const mlff_test::Structure molecules[2] = {mlff_test::random_structure(6, 10, 4.0, 1.0, 71),
                                               mlff_test::random_structure(5, 10, 4.0, 1.0, 72)};
    OpenMM::System system;
    std::vector<OpenMM::Vec3> positions;
    std::vector<int> particles[2]; // each force's ML particle -> System particle
    MLFFForce* forces[2];
    for (int f = 0; f < 2; f++) {
        forces[f] = new MLFFForce(bytes[f], MLFFForce::ModelBytes);
        forces[f]->setForceGroup(f);
    }
    const size_t most = std::max(molecules[0].atomic_numbers.size(), molecules[1].atomic_numbers.size());
    for (size_t i = 0; i < most; i++)
        for (int f = 0; f < 2; f++)
            if (i < molecules[f].atomic_numbers.size()) {
                particles[f].push_back(system.addParticle(12.0));
                forces[f]->addParticle(particles[f].back(), molecules[f].atomic_numbers[i]);
                positions.push_back(nm(molecules[f].positions, i));
            }
    for (MLFFForce* force : forces)
        system.addForce(force);

    OpenMM::VerletIntegrator integrator(0.001);
    auto context = createContext(system, integrator);
    context->setPositions(positions);
    double energySum = 0;
    std::vector<OpenMM::Vec3> forceSum(positions.size());
    for (int f = 0; f < 2; f++) {
        const CoreAnswer core = coreAnswer(bytes[f], molecules[f]);
        OpenMM::State group = context->getState(OpenMM::State::Energy | OpenMM::State::Forces, false, 1 << f);
        const std::string what = "force " + std::to_string(f) + " of 2";
        expectEnergyNear(group.getPotentialEnergy(), core.total() * units::KJPerMolPerEV, what + ": energy");
        std::vector<OpenMM::Vec3> expected(positions.size());
        for (size_t i = 0; i < particles[f].size(); i++)
            expected[static_cast<size_t>(particles[f][i])] = coreForce(core, i);
        expectForcesNear(group.getForces(), expected, what + ": forces");
        energySum += group.getPotentialEnergy();
        for (size_t i = 0; i < positions.size(); i++)
            forceSum[i] += group.getForces()[i];
    }
    OpenMM::State all = context->getState(OpenMM::State::Energy | OpenMM::State::Forces);
    expectEnergyNear(all.getPotentialEnergy(), energySum, "both forces: energy");
    expectForcesNear(all.getForces(), forceSum, "both forces: forces");
}

// Replicas overlap in space yet never interact: each equals the core on its structure alone.
TEST_P(MLFFForceTest, ReplicasMatchCoreIndependently) {
    const std::string bytes = mlff_test::random_model_bytes(smallModelSpec());
    const int numReplicas = 3;
    std::vector<mlff_test::Structure> molecules;
    for (int r = 0; r < numReplicas; r++)
        molecules.push_back(mlff_test::random_structure(4 + r, 10, 3.5, 1.0, 100 + static_cast<std::uint64_t>(r)));

    OpenMM::System system;
    std::vector<OpenMM::Vec3> positions;
    auto* force = new MLFFForce(bytes, MLFFForce::ModelBytes);
    std::vector<std::vector<int>> systemIndices(numReplicas);
    // Interleave the replicas' particles in the System.
    for (size_t atom = 0; atom < 6; atom++)
        for (int r = 0; r < numReplicas; r++) {
            const mlff_test::Structure& m = molecules[static_cast<size_t>(r)];
            if (atom >= m.atomic_numbers.size())
                continue;
            int index = system.addParticle(1.0);
            positions.push_back(nm(m.positions, atom));
            force->addParticle(index, m.atomic_numbers[atom], r);
            systemIndices[static_cast<size_t>(r)].push_back(index);
        }
    EXPECT_EQ(force->getNumReplicas(), numReplicas);
    system.addForce(force);
    OpenMM::VerletIntegrator integrator(0.001);
    auto context = createContext(system, integrator);
    context->setPositions(positions);
    OpenMM::State state = context->getState(OpenMM::State::Energy | OpenMM::State::Forces);
    std::vector<double> replicaEnergies = force->getReplicaEnergies(*context);
    ASSERT_EQ(replicaEnergies.size(), static_cast<size_t>(numReplicas));

    double sum = 0;
    for (int r = 0; r < numReplicas; r++) {
        const CoreAnswer core = coreAnswer(bytes, molecules[static_cast<size_t>(r)]);
        ASSERT_EQ(core.replicaEnergies.size(), 1u);
        expectEnergyNear(replicaEnergies[static_cast<size_t>(r)], core.total() * units::KJPerMolPerEV, "replica " + std::to_string(r));
        std::vector<OpenMM::Vec3> actual, expected;
        for (size_t i = 0; i < systemIndices[static_cast<size_t>(r)].size(); i++) {
            actual.push_back(state.getForces()[static_cast<size_t>(systemIndices[static_cast<size_t>(r)][i])]);
            expected.push_back(coreForce(core, i));
        }
        expectForcesNear(actual, expected, "replica " + std::to_string(r));
        sum += replicaEnergies[static_cast<size_t>(r)];
    }
    expectEnergyNear(sum, state.getPotentialEnergy(), "replica energies sum to the total");
}

// Replica scales multiply each replica's energy and forces, in the Context after
// updateParametersInContext; the replica energies still sum to the total.
TEST_P(MLFFForceTest, ReplicaScalesAndUpdateParametersInContext) {
    const std::string bytes = mlff_test::random_model_bytes(smallModelSpec());
    const std::vector<double> scales = {0.5, -1.25, 2.0};
    mlff_test::Structure molecule = mlff_test::random_structure(5, 10, 3.5, 1.0, 21);
    OpenMM::System system;
    std::vector<OpenMM::Vec3> positions;
    auto* force = new MLFFForce(bytes, MLFFForce::ModelBytes);
    for (int r = 0; r < 3; r++)
        for (size_t i = 0; i < molecule.atomic_numbers.size(); i++) {
            // The same molecule in every replica, shifted by a translation (which leaves E unchanged).
            positions.push_back(nm(molecule.positions, i) + OpenMM::Vec3(0.1 * r, 0, 0));
            force->addParticle(system.addParticle(1.0), molecule.atomic_numbers[i], r);
        }
    system.addForce(force);
    OpenMM::VerletIntegrator integrator(0.001);
    auto context = createContext(system, integrator);
    context->setPositions(positions);
    OpenMM::State before = context->getState(OpenMM::State::Energy | OpenMM::State::Forces);
    std::vector<double> unscaled = force->getReplicaEnergies(*context);
    ASSERT_EQ(unscaled.size(), 3u);

    for (int r = 0; r < 3; r++)
        force->setReplicaScale(r, scales[static_cast<size_t>(r)]);
    // Not yet in the Context: the old scales (1) still apply.
    expectEnergyNear(context->getState(OpenMM::State::Energy).getPotentialEnergy(), before.getPotentialEnergy(), "before update");
    force->updateParametersInContext(*context);
    OpenMM::State after = context->getState(OpenMM::State::Energy | OpenMM::State::Forces);
    std::vector<double> scaled = force->getReplicaEnergies(*context);
    ASSERT_EQ(scaled.size(), 3u);
    double sum = 0, expectedTotal = 0;
    std::vector<OpenMM::Vec3> expectedForces;
    for (int r = 0; r < 3; r++) {
        double s = scales[static_cast<size_t>(r)];
        expectEnergyNear(scaled[static_cast<size_t>(r)], s * unscaled[static_cast<size_t>(r)], "scaled replica " + std::to_string(r));
        sum += scaled[static_cast<size_t>(r)];
        expectedTotal += s * unscaled[static_cast<size_t>(r)];
        for (size_t i = 0; i < molecule.atomic_numbers.size(); i++)
            expectedForces.push_back(before.getForces()[static_cast<size_t>(r) * molecule.atomic_numbers.size() + i] * s);
    }
    expectEnergyNear(after.getPotentialEnergy(), expectedTotal, "scaled total");
    expectEnergyNear(sum, after.getPotentialEnergy(), "scaled replica energies sum to the total");
    expectForcesNear(after.getForces(), expectedForces, "scaled forces");

    // Particles can't change in a Context.
    force->setParticleParameters(0, 0, molecule.atomic_numbers[0] == 1 ? 2 : 1, 0);
    MLFF_EXPECT_THROW_WITH(force->updateParametersInContext(*context), "updateParametersInContext", "ML particle 0");
}

class MLFFForcePeriodicTest : public MLFFForceTest {
protected:
    // Atoms spread over the whole box, so that many pairs interact only through an image.
    void checkAgainstCore(const std::vector<double>& boxAngstrom, std::uint64_t seed) {
        const std::string bytes = mlff_test::random_model_bytes(smallModelSpec());
        mlff_test::Structure structure = mlff_test::random_structure(12, 10, boxAngstrom[0], 1.2, seed);
        structure.box = boxAngstrom;
        const CoreAnswer core = coreAnswer(bytes, structure);
        ASSERT_EQ(core.replicaEnergies.size(), 1u);

        auto s = makeSystem(bytes, structure, 1.0);
        ASSERT_TRUE(s->system.usesPeriodicBoundaryConditions());
        OpenMM::VerletIntegrator integrator(0.001);
        auto context = createContext(s->system, integrator);
        context->setPositions(s->positions);
        OpenMM::State state = context->getState(OpenMM::State::Energy | OpenMM::State::Forces);
        expectMatchesCore(state, core, "periodic");

        // Moving particles by whole box vectors changes nothing.
        OpenMM::Vec3 a, b, c;
        s->system.getDefaultPeriodicBoxVectors(a, b, c);
        std::vector<OpenMM::Vec3> positions = s->positions;
        positions[0] += a - b;
        positions[3] += c * 2.0;
        positions[5] -= a + b + c;
        context->setPositions(positions);
        OpenMM::State shifted = context->getState(OpenMM::State::Energy | OpenMM::State::Forces);
        expectEnergyNear(shifted.getPotentialEnergy(), state.getPotentialEnergy(), "energy after moving particles by box vectors");
        expectForcesNear(shifted.getForces(), state.getForces(), "forces after moving particles by box vectors");

        // The box changed within the Context, as a barostat changes it: box and positions scaled
        // by 1.1, against the core at the new box.
        mlff_test::Structure scaled = structure;
        for (double& x : scaled.positions)
            x *= 1.1;
        for (double& x : scaled.box)
            x *= 1.1;
        context->setPeriodicBoxVectors(a * 1.1, b * 1.1, c * 1.1);
        for (OpenMM::Vec3& r : positions)
            r *= 1.1;
        context->setPositions(positions);
        expectMatchesCore(context->getState(OpenMM::State::Energy | OpenMM::State::Forces), coreAnswer(bytes, scaled),
                          "a box scaled within the Context");
    }
    /** The State's energy and forces against the core's answer (eV, eV/Å). */
    void expectMatchesCore(const OpenMM::State& state, const CoreAnswer& core, const std::string& what) {
        expectEnergyNear(state.getPotentialEnergy(), core.total() * units::KJPerMolPerEV, what + ": energy");
        std::vector<OpenMM::Vec3> expected;
        for (size_t i = 0; 3 * i < core.forces.size(); i++)
            expected.push_back(coreForce(core, i));
        expectForcesNear(state.getForces(), expected, what + ": forces");
    }
};

TEST_P(MLFFForcePeriodicTest, RectangularBoxMatchesCore) {
    checkAgainstCore({11.0, 0, 0, 0, 12.0, 0, 0, 0, 10.5}, 31);
}

TEST_P(MLFFForcePeriodicTest, TriclinicBoxMatchesCore) {
    checkAgainstCore({11.0, 0, 0, 3.0, 11.5, 0, -2.5, 3.5, 10.5}, 32);
}

// The core refuses a box thinner than twice the cutoff; the Context says so.
TEST_P(MLFFForcePeriodicTest, BoxThinnerThanTwiceTheCutoffIsAnError) {
    const std::string bytes = mlff_test::random_model_bytes(smallModelSpec());
    OpenMM::System system;
    system.setDefaultPeriodicBoxVectors(OpenMM::Vec3(0.8, 0, 0), OpenMM::Vec3(0, 1.2, 0), OpenMM::Vec3(0, 0, 1.2));
    auto* force = new MLFFForce(bytes, MLFFForce::ModelBytes);
    force->setUsesPeriodicBoundaryConditions(true);
    force->addParticle(system.addParticle(1.0), 1);
    force->addParticle(system.addParticle(1.0), 8);
    system.addForce(force);
    OpenMM::VerletIntegrator integrator(0.001);
    auto context = createContext(system, integrator);
    context->setPositions({OpenMM::Vec3(0, 0, 0), OpenMM::Vec3(0.1, 0, 0)});
    bool threw = false;
    try {
        context->getState(OpenMM::State::Energy);
    }
    catch (const OpenMM::OpenMMException& e) {
        threw = true;
        EXPECT_NE(std::string(e.what()).find("MLFFForce"), std::string::npos) << e.what();
        EXPECT_NE(lowercase(e.what()).find("box"), std::string::npos) << e.what();
    }
    EXPECT_TRUE(threw);
}

// Forces are minus the gradient of the Context's own energy (central differences).
TEST_P(MLFFForceTest, ForcesMatchFiniteDifferences) {
    const std::string bytes = mlff_test::random_model_bytes(smallModelSpec(3));
    mlff_test::Structure molecule = mlff_test::random_structure(6, 10, 3.5, 1.0, 41);
    auto s = makeSystem(bytes, molecule, 1.0);
    const std::vector<OpenMM::Vec3>& positions = s->positions;
    OpenMM::VerletIntegrator integrator(0.001);
    auto context = createContext(s->system, integrator);
    context->setPositions(positions);
    std::vector<OpenMM::Vec3> forces = context->getState(OpenMM::State::Forces).getForces();
    const double h = tolerances().fdStep;
    const double bound = tolerances().finiteDiff * std::max(maxAbs(forces), 1.0);
    for (size_t i = 0; i < positions.size(); i++)
        for (int d = 0; d < 3; d++) {
            std::vector<OpenMM::Vec3> moved = positions;
            moved[i][d] = positions[i][d] + h;
            context->setPositions(moved);
            double plus = context->getState(OpenMM::State::Energy).getPotentialEnergy();
            moved[i][d] = positions[i][d] - h;
            context->setPositions(moved);
            double minus = context->getState(OpenMM::State::Energy).getPotentialEnergy();
            EXPECT_NEAR(forces[i][d], -(plus - minus) / (2 * h), bound) << "particle " << i << " component " << d;
        }
}

// lambda scales the energy and forces; dE/dlambda is the unscaled energy and matches a
// finite difference in lambda.
TEST_P(MLFFForceTest, EnergyScaleParameterAndItsDerivative) {
    const std::string bytes = mlff_test::random_model_bytes(smallModelSpec());
    mlff_test::Structure molecule = mlff_test::random_structure(5, 10, 3.5, 1.0, 51);
    molecule.replicas = {0, 1, 0, 1, 0};
    molecule.num_replicas = 2;
    auto s = makeSystem(bytes, molecule, 1.0);
    MLFFForce* force = s->force;
    force->setEnergyScaleParameter("lambda_ml");
    force->setReplicaScale(1, 0.75);
    OpenMM::VerletIntegrator integrator(0.001);
    auto context = createContext(s->system, integrator);
    context->setPositions(s->positions);
    EXPECT_EQ(context->getParameter("lambda_ml"), 1.0) << "the parameter's default";
    const auto all = OpenMM::State::Energy | OpenMM::State::Forces | OpenMM::State::ParameterDerivatives;
    OpenMM::State full = context->getState(all);
    const double lambda = 0.3;
    context->setParameter("lambda_ml", lambda);
    OpenMM::State scaled = context->getState(all);

    expectEnergyNear(scaled.getPotentialEnergy(), lambda * full.getPotentialEnergy(), "lambda * E");
    std::vector<OpenMM::Vec3> expectedForces;
    for (const OpenMM::Vec3& f : full.getForces())
        expectedForces.push_back(f * lambda);
    expectForcesNear(scaled.getForces(), expectedForces, "lambda * F");
    std::vector<double> replicaEnergies = force->getReplicaEnergies(*context);
    ASSERT_EQ(replicaEnergies.size(), 2u);
    expectEnergyNear(replicaEnergies[0] + replicaEnergies[1], scaled.getPotentialEnergy(), "replica energies sum to the total");

    std::map<std::string, double> derivatives = scaled.getEnergyParameterDerivatives();
    ASSERT_EQ(derivatives.count("lambda_ml"), 1u);
    expectEnergyNear(derivatives["lambda_ml"], full.getPotentialEnergy(), "dE/dlambda");
    const double h = 1e-3;
    context->setParameter("lambda_ml", lambda + h);
    double plus = context->getState(OpenMM::State::Energy).getPotentialEnergy();
    context->setParameter("lambda_ml", lambda - h);
    double minus = context->getState(OpenMM::State::Energy).getPotentialEnergy();
    expectEnergyNear(derivatives["lambda_ml"], (plus - minus) / (2 * h), "dE/dlambda against a finite difference");
}

// The force's group decides when it is evaluated; energy-only and force-only requests give
// the same numbers as a full one.
TEST_P(MLFFForceTest, ForceGroupsAndIncludeFlags) {
    const std::string bytes = mlff_test::random_model_bytes(smallModelSpec());
    mlff_test::Structure molecule = mlff_test::random_structure(5, 10, 3.5, 1.0, 61);
    auto s = makeSystem(bytes, molecule, 1.0);
    s->force->setForceGroup(3);
    OpenMM::VerletIntegrator integrator(0.001);
    auto context = createContext(s->system, integrator);
    context->setPositions(s->positions);
    const double expected = coreAnswer(bytes, molecule).total() * units::KJPerMolPerEV;

    OpenMM::State energyOnly = context->getState(OpenMM::State::Energy, false, 1 << 3);
    expectEnergyNear(energyOnly.getPotentialEnergy(), expected, "group 3 energy");
    OpenMM::State forcesOnly = context->getState(OpenMM::State::Forces, false, 1 << 3);
    OpenMM::State both = context->getState(OpenMM::State::Energy | OpenMM::State::Forces);
    expectEnergyNear(both.getPotentialEnergy(), expected, "all groups");
    expectForcesNear(forcesOnly.getForces(), both.getForces(), "forces requested alone");
    EXPECT_GT(maxAbs(both.getForces()), 0.0);

    OpenMM::State otherGroups = context->getState(OpenMM::State::Energy | OpenMM::State::Forces, false, ~(1 << 3));
    EXPECT_EQ(otherGroups.getPotentialEnergy(), 0.0);
    EXPECT_EQ(maxAbs(otherGroups.getForces()), 0.0);
}

// A checkpoint taken after some MD gives the same energy, forces and replica energies bit for bit
// when loaded into the same Context after more steps and into a second Context; so does
// reinitialize(true).
TEST_P(MLFFForceTest, CheckpointsAndReinitialization) {
    const std::string bytes = mlff_test::random_model_bytes(smallModelSpec());
    mlff_test::Structure molecule = mlff_test::random_structure(6, 10, 4.0, 1.0, 81);
    auto s = makeSystem(bytes, molecule, 12.0);
    OpenMM::VerletIntegrator integrator(0.0005);
    auto context = createContext(s->system, integrator);
    context->setPositions(s->positions);
    context->setVelocitiesToTemperature(300.0, 3);
    integrator.step(10);
    std::ostringstream checkpoint;
    context->createCheckpoint(checkpoint);
    const int types = OpenMM::State::Energy | OpenMM::State::Forces;
    const OpenMM::State saved = context->getState(types);
    const std::vector<double> savedReplicaEnergies = s->force->getReplicaEnergies(*context);
    const auto expectSaved = [&](OpenMM::Context& restored, const std::string& what) {
        const OpenMM::State state = restored.getState(types);
        EXPECT_EQ(state.getPotentialEnergy(), saved.getPotentialEnergy()) << what;
        EXPECT_EQ(state.getForces(), saved.getForces()) << what;
        EXPECT_EQ(s->force->getReplicaEnergies(restored), savedReplicaEnergies) << what;
    };

    integrator.step(10);
    std::istringstream again(checkpoint.str());
    context->loadCheckpoint(again);
    expectSaved(*context, "the checkpoint loaded into its own Context");
    OpenMM::VerletIntegrator otherIntegrator(0.0005);
    auto other = createContext(s->system, otherIntegrator);
    std::istringstream elsewhere(checkpoint.str());
    other->loadCheckpoint(elsewhere);
    expectSaved(*other, "the checkpoint loaded into another Context");
    context->reinitialize(true);
    expectSaved(*context, "the Context reinitialized");
}

// getReplicaEnergies before any evaluation evaluates the force.
TEST_P(MLFFForceTest, ReplicaEnergiesBeforeAnyEvaluation) {
    const std::string bytes = mlff_test::random_model_bytes(smallModelSpec());
    const mlff_test::Structure molecule = mlff_test::random_structure(4, 10, 3.0, 1.0, 71);
    mlff_test::Structure inReplica1 = molecule;
    inReplica1.replicas.assign(molecule.atomic_numbers.size(), 1);
    inReplica1.num_replicas = 2;
    auto s = makeSystem(bytes, inReplica1, 1.0);
    OpenMM::VerletIntegrator integrator(0.001);
    auto context = createContext(s->system, integrator);
    context->setPositions(s->positions);
    std::vector<double> energies = s->force->getReplicaEnergies(*context);
    ASSERT_EQ(energies.size(), 2u) << "replica 0 exists (empty) because replica 1 does";
    EXPECT_EQ(energies[0], 0.0);
    expectEnergyNear(energies[1], coreAnswer(bytes, molecule).total() * units::KJPerMolPerEV, "replica 1");
}

// A System written to XML and read back gives the same energy in a new Context.
TEST_P(MLFFForceTest, DeserializedSystemGivesTheSameEnergy) {
    const std::string bytes = mlff_test::random_model_bytes(smallModelSpec());
    mlff_test::Structure molecule = mlff_test::random_structure(5, 10, 3.5, 1.0, 81);
    molecule.replicas = {0, 1, 0, 1, 0};
    molecule.num_replicas = 2;
    auto s = makeSystem(bytes, molecule, 1.0);
    s->force->setReplicaScale(0, 0.5);
    std::stringstream xml;
    OpenMM::XmlSerializer::serialize<OpenMM::System>(&s->system, "System", xml);
    std::unique_ptr<OpenMM::System> copy(OpenMM::XmlSerializer::deserialize<OpenMM::System>(xml));
    OpenMM::VerletIntegrator integrator1(0.001), integrator2(0.001);
    auto context1 = createContext(s->system, integrator1);
    auto context2 = createContext(*copy, integrator2);
    context1->setPositions(s->positions);
    context2->setPositions(s->positions);
    double e1 = context1->getState(OpenMM::State::Energy).getPotentialEnergy();
    double e2 = context2->getState(OpenMM::State::Energy).getPotentialEnergy();
    EXPECT_EQ(e1, e2);
}

// NVE: velocity Verlet must conserve the total energy. Random models are not bound
// molecules, so stiff MM springs between every pair (rest lengths at the start) hold the
// molecule together: no pair can then cross the cutoff (5 Å), whose energy jump
// (docs/student-painn.md, "Not smooth at the cutoff") would break conservation — the test
// checks that it never happened. With dt = 0.25 fs the fastest spring period (~50 fs) is
// sampled ~200 times per period, so Verlet's bounded fluctuation is ~1e-4 of the kinetic
// energy; a drift (mean of the last 100 steps minus that of the first 100) above the
// precision's nveDrift * <KE> means inconsistent forces.
TEST_P(MLFFForceTest, EnergyIsConservedInNVE) {
    const std::string bytes = mlff_test::random_model_bytes(smallModelSpec(5));
    mlff_test::Structure molecule = mlff_test::random_structure(5, 8, 2.5, 1.1, 91);
    OpenMM::System system;
    std::vector<OpenMM::Vec3> positions;
    auto* force = new MLFFForce(bytes, MLFFForce::ModelBytes);
    auto* springs = new OpenMM::HarmonicBondForce();
    for (size_t i = 0; i < molecule.atomic_numbers.size(); i++) {
        force->addParticle(system.addParticle(2.0 * molecule.atomic_numbers[i]), molecule.atomic_numbers[i]);
        positions.push_back(nm(molecule.positions, i));
    }
    for (size_t i = 0; i < positions.size(); i++)
        for (size_t j = 0; j < i; j++) {
            OpenMM::Vec3 d = positions[i] - positions[j];
            springs->addBond(static_cast<int>(i), static_cast<int>(j), std::sqrt(d.dot(d)), 5e4);
        }
    system.addForce(force);
    system.addForce(springs);
    OpenMM::VerletIntegrator integrator(0.00025);
    auto context = createContext(system, integrator);
    context->setPositions(positions);
    context->setVelocitiesToTemperature(300.0, 1234);

    const int steps = 1000, window = 100;
    std::vector<double> total, kinetic;
    double largestDistance = 0;
    for (int step = 0; step < steps; step++) {
        OpenMM::State state = context->getState(OpenMM::State::Energy | OpenMM::State::Positions);
        total.push_back(state.getPotentialEnergy() + state.getKineticEnergy());
        kinetic.push_back(state.getKineticEnergy());
        const std::vector<OpenMM::Vec3>& p = state.getPositions();
        for (size_t i = 0; i < p.size(); i++)
            for (size_t j = 0; j < i; j++) {
                OpenMM::Vec3 d = p[i] - p[j];
                largestDistance = std::max(largestDistance, std::sqrt(d.dot(d)));
            }
        integrator.step(1);
    }
    ASSERT_LT(largestDistance, force->getCutoff()) << "a pair crossed the cutoff, the test's premise fails";
    double first = 0, last = 0, meanKinetic = 0;
    for (int i = 0; i < window; i++) {
        first += total[static_cast<size_t>(i)] / window;
        last += total[static_cast<size_t>(steps - window + i)] / window;
    }
    for (double k : kinetic)
        meanKinetic += k / steps;
    ASSERT_GT(meanKinetic, 0.0);
    const double drift = std::fabs(last - first) / meanKinetic;
    EXPECT_LT(drift, tolerances().nveDrift) << "total energy " << first << " -> " << last << " kJ/mol, <KE> " << meanKinetic;
    RecordProperty("relative_drift", std::to_string(drift));
}

} // namespace mlff_openmm_test

/** Instantiates every fixture of this header for the given PlatformCase values. */
#define MLFF_INSTANTIATE_FORCE_TESTS(prefix, ...)                                                     \
    namespace mlff_openmm_test {                                                                      \
    INSTANTIATE_TEST_SUITE_P(prefix, MLFFForceTest, ::testing::Values(__VA_ARGS__), platformCaseName); \
    INSTANTIATE_TEST_SUITE_P(prefix, MLFFForcePeriodicTest, ::testing::Values(__VA_ARGS__), platformCaseName); \
    }
