// MLFFForce's test bodies and the seed models' golden values on the CPU platform, which runs the
// Reference kernel on its ReferencePlatform::PlatformData (double precision), and what is the CPU
// platform's own: the core computes on the platform's threads, with the bits of one thread.
#include "MLFFSeedModelTests.h"
#include "PluginSetup.h"
#include "ReferenceMLFFKernelFactory.h"

#include "openmm/Context.h"
#include "openmm/State.h"
#include "openmm/VerletIntegrator.h"

#include <dirent.h>

#include <cstring>

static const bool registered = [] {
    mlff_openmm_test::loadCpuPlatform(); // before the factories, so they register with CPU too
    registerMLFFReferenceKernelFactories();
    return true;
}();

#define MLFF_CPU_CASES mlff_openmm_test::PlatformCase{"CPU", {{"Threads", "2"}}, mlff_openmm_test::Precision::Double}
MLFF_INSTANTIATE_FORCE_TESTS(Cpu, MLFF_CPU_CASES);
MLFF_INSTANTIATE_SEED_MODEL_TESTS(Cpu, MLFF_CPU_CASES);

namespace {

using namespace mlff_openmm_test;

/** The threads of this process now (Linux: the entries of /proc/self/task), or -1 if unknown. */
int threadsOfThisProcess() {
    DIR* tasks = opendir("/proc/self/task");
    if (tasks == nullptr)
        return -1;
    int count = 0;
    while (const dirent* entry = readdir(tasks))
        if (entry->d_name[0] != '.')
            count++;
    closedir(tasks);
    return count;
}

struct CpuRun {
    int threadsStarted; // by the force's first evaluation
    std::vector<OpenMM::Vec3> forces;
    double energy;
};

CpuRun runOnCpu(const MLSystem& s, const std::string& threads) {
    OpenMM::VerletIntegrator integrator(0.001);
    OpenMM::Context context(s.system, integrator, OpenMM::Platform::getPlatformByName("CPU"), {{"Threads", threads}});
    context.setPositions(s.positions);
    const int before = threadsOfThisProcess();
    OpenMM::State state = context.getState(OpenMM::State::Forces | OpenMM::State::Energy);
    return {threadsOfThisProcess() - before, state.getForces(), state.getPotentialEnergy()};
}

TEST(MLFFForceOnCpu, TheCoreComputesOnThePlatformsThreadsWithTheBitsOfOne) {
    if (threadsOfThisProcess() < 0)
        GTEST_SKIP() << "no /proc/self/task to count threads by";
    mlff_test::ModelSpec spec = smallModelSpec(31);
    spec.hidden = 64; // chunks of 768 pairs: shares of the filters for the core's threads (painn_network.c)
    const std::string model = mlff_test::random_model_bytes(spec);
    mlff_test::Structure structure = mlff_test::random_structure(120, 10, 11.0, 0.9, 32); // some 2,000 pairs
    std::unique_ptr<MLSystem> s = makeSystem(model, structure);
    const CpuRun one = runOnCpu(*s, "1"), three = runOnCpu(*s, "3");
    EXPECT_EQ(one.threadsStarted, 0);
    EXPECT_EQ(three.threadsStarted, 2) << "the caller's thread and two of the core's";
    EXPECT_EQ(three.energy, one.energy);
    ASSERT_EQ(three.forces.size(), one.forces.size());
    EXPECT_EQ(std::memcmp(three.forces.data(), one.forces.data(), one.forces.size() * sizeof(OpenMM::Vec3)), 0);
    EXPECT_GT(maxAbs(one.forces), 0.0);
}

} // namespace
