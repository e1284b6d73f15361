// test_golden: the converted seed models (../shared, via the `seed_models` fixture) reproduce
// the float64 PyTorch energies and forces of seed_models_golden.npz through mlff_compute:
// |dE| <= 1e-8 eV and max |dF| <= 1e-7 eV/Å on every geometry. Skips without MLFF_SHARED_DIR.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "test_support.h"

using namespace mlff_test;

namespace {

const double kEnergyTolerance = 1e-8; // eV
const double kForceTolerance = 1e-7;  // eV/Å

struct SeedModel {
    const char *name;
    int hidden, blocks, rbf;
};

// docs/student-painn.md, "Hyperparameters"
const SeedModel kSeedModels[] = {{"original", 128, 3, 20}, {"tiny", 64, 2, 12}, {"ultra_tiny", 32, 2, 10}};

class SeedModelFile : public ::testing::TestWithParam<SeedModel> {};

TEST_P(SeedModelFile, HasTheDocumentedHyperparameters) {
    MLFF_SKIP_WITHOUT_SHARED();
    const SeedModel &seed = GetParam();
    ModelPtr model = load_model_file_or_fail(seed_model_path(seed.name));
    ASSERT_TRUE(model);
    EXPECT_STREQ(mlff_model_architecture(model.get()), "student-painn");
    EXPECT_EQ(mlff_model_hidden_channels(model.get()), seed.hidden);
    EXPECT_EQ(mlff_model_num_blocks(model.get()), seed.blocks);
    EXPECT_EQ(mlff_model_num_rbf(model.get()), seed.rbf);
    EXPECT_EQ(mlff_model_max_atomic_number(model.get()), 100);
    EXPECT_EQ(mlff_model_cutoff(model.get()), 5.0);
}

INSTANTIATE_TEST_SUITE_P(Seed, SeedModelFile, ::testing::ValuesIn(kSeedModels),
                         [](const ::testing::TestParamInfo<SeedModel> &param) { return std::string(param.param.name); });

class GoldenValues : public ::testing::TestWithParam<std::string> {};

TEST_P(GoldenValues, EnergyAndForcesMatchPyTorchFloat64) {
    MLFF_SKIP_WITHOUT_SHARED();
    std::vector<GoldenCase> cases;
    std::string error;
    ASSERT_TRUE(read_golden(&cases, &error)) << error;
    ModelPtr model = load_model_file_or_fail(seed_model_path(GetParam()));
    ASSERT_TRUE(model);

    std::vector<std::string> checked;
    for (const GoldenCase &golden : cases) {
        if (golden.model != GetParam()) continue;
        SCOPED_TRACE(golden.model + "/" + golden.geometry);
        Structure structure;
        structure.atomic_numbers = golden.atomic_numbers;
        structure.positions = golden.positions;
        double energy = 0.0;
        std::vector<double> forces;
        ASSERT_TRUE(compute_energy_forces(model.get(), structure, &energy, &forces));
        EXPECT_LE(std::fabs(energy - golden.energy), kEnergyTolerance)
            << "energy " << energy << " eV, golden " << golden.energy << " eV";
        double max_error = 0.0;
        std::size_t worst = 0;
        for (std::size_t k = 0; k < forces.size(); ++k) {
            const double e = std::fabs(forces[k] - golden.forces[k]);
            if (!(e <= max_error)) { // NaN counts as the worst
                max_error = e;
                worst = k;
            }
        }
        EXPECT_LE(max_error, kForceTolerance) << "worst force component: atom " << worst / 3 << " " << "xyz"[worst % 3]
                                              << " = " << forces[worst] << ", golden " << golden.forces[worst];
        checked.push_back(golden.geometry);
    }
    // The four geometries of docs/student-painn.md, so the test can't pass by checking nothing.
    std::sort(checked.begin(), checked.end());
    EXPECT_EQ(checked.size(), 4u) << "golden geometries found for " << GetParam();
    for (const char *geometry : {"benzene", "water", "ethanol"})
        EXPECT_TRUE(std::find(checked.begin(), checked.end(), geometry) != checked.end()) << geometry;
}

INSTANTIATE_TEST_SUITE_P(Seed, GoldenValues, ::testing::Values("original", "tiny"),
                         [](const ::testing::TestParamInfo<std::string> &param) { return param.param; });

} // namespace
