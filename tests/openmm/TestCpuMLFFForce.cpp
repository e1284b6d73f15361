// MLFFForce's test bodies and the seed models' golden values on the CPU platform, which runs the
// Reference kernel on its ReferencePlatform::PlatformData (double precision).
#include "MLFFSeedModelTests.h"
#include "PluginSetup.h"
#include "ReferenceMLFFKernelFactory.h"

static const bool registered = [] {
    mlff_openmm_test::loadCpuPlatform(); // before the factories, so they register with CPU too
    registerMLFFReferenceKernelFactories();
    return true;
}();

#define MLFF_CPU_CASES mlff_openmm_test::PlatformCase{"CPU", {{"Threads", "2"}}, mlff_openmm_test::Precision::Double}
MLFF_INSTANTIATE_FORCE_TESTS(Cpu, MLFF_CPU_CASES);
MLFF_INSTANTIATE_SEED_MODEL_TESTS(Cpu, MLFF_CPU_CASES);
