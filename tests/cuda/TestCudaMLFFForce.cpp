// MLFFForce's shared test bodies (tests/openmm) and the golden seed-model test on the CUDA
// platform, in single, mixed and double precision.
#include "CudaPluginSetup.h"
#include "MLFFForceTests.h"
#include "MLFFSeedModelTests.h"

extern "C" void registerMLFFReferenceKernelFactories();

static const bool registered = [] {
    registerMLFFReferenceKernelFactories();
    mlff_cuda_test::loadCudaPlugins();
    return true;
}();

#define MLFF_CUDA_CASES                                                                                        \
    mlff_openmm_test::PlatformCase{"CUDA", {{"Precision", "single"}}, mlff_openmm_test::Precision::Single},    \
        mlff_openmm_test::PlatformCase{"CUDA", {{"Precision", "mixed"}}, mlff_openmm_test::Precision::Mixed},  \
        mlff_openmm_test::PlatformCase{"CUDA", {{"Precision", "double"}}, mlff_openmm_test::Precision::Double}

MLFF_INSTANTIATE_FORCE_TESTS(Cuda, MLFF_CUDA_CASES);
MLFF_INSTANTIATE_SEED_MODEL_TESTS(Cuda, MLFF_CUDA_CASES);
