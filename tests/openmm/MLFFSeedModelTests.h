// MLFFSeedModelTests.h: the seed models (converted from ../shared by the `seed_models`
// fixture) through a Context reproduce the golden float64 PyTorch values, converted to
// OpenMM's units. Instantiate like MLFFForceTests.h:
//     MLFF_INSTANTIATE_SEED_MODEL_TESTS(Reference, mlff_openmm_test::PlatformCase{...});
#pragma once

#include "MLFFForceTests.h"

#include <fstream>

namespace mlff_openmm_test {

class MLFFSeedModelTest : public MLFFForceTest {};

TEST_P(MLFFSeedModelTest, GoldenEnergiesAndForces) {
    MLFF_SKIP_WITHOUT_SHARED();
    std::vector<mlff_test::GoldenCase> cases;
    std::string error;
    ASSERT_TRUE(mlff_test::read_golden(&cases, &error)) << error;
    int checked = 0;
    for (const mlff_test::GoldenCase& golden : cases) {
        const std::string path = mlff_test::seed_model_path(golden.model);
        if (!std::ifstream(path)) {
            ADD_FAILURE() << "seed model " << path << " is missing (made by the seed_models fixture)";
            continue;
        }
        SCOPED_TRACE(golden.model + " on " + golden.geometry);
        OpenMM::System system;
        std::vector<OpenMM::Vec3> positions;
        auto* force = new MLFFForce(path);
        for (size_t i = 0; i < golden.atomic_numbers.size(); i++) {
            force->addParticle(system.addParticle(1.0), golden.atomic_numbers[i]);
            positions.push_back(nm(golden.positions, i));
        }
        system.addForce(force);
        OpenMM::VerletIntegrator integrator(0.001);
        auto context = createContext(system, integrator);
        context->setPositions(positions);
        OpenMM::State state = context->getState(OpenMM::State::Energy | OpenMM::State::Forces);
        // Single precision is compared with PyTorch's float32 energy: the float64 one differs
        // from it by more than float32 rounding of a total of this size.
        const double goldenEnergy = GetParam().precision == Precision::Double ? golden.energy : golden.energy_f32;
        expectEnergyNear(state.getPotentialEnergy(), goldenEnergy * units::KJPerMolPerEV, "energy");
        std::vector<OpenMM::Vec3> expected;
        for (size_t i = 0; i < golden.atomic_numbers.size(); i++)
            expected.push_back(OpenMM::Vec3(golden.forces[3 * i], golden.forces[3 * i + 1], golden.forces[3 * i + 2]) * units::ForceToOpenMM);
        expectForcesNear(state.getForces(), expected, "forces");
        checked++;
    }
    EXPECT_GT(checked, 0);
}

} // namespace mlff_openmm_test

#define MLFF_INSTANTIATE_SEED_MODEL_TESTS(prefix, ...)                                                          \
    namespace mlff_openmm_test {                                                                                \
    INSTANTIATE_TEST_SUITE_P(prefix, MLFFSeedModelTest, ::testing::Values(__VA_ARGS__), platformCaseName); \
    }
