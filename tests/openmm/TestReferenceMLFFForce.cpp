// MLFFForce's test bodies and the seed models' golden values on the Reference platform (double precision).
#include "MLFFSeedModelTests.h"
#include "ReferenceMLFFKernelFactory.h"

static const bool registered = [] {
    registerMLFFReferenceKernelFactories();
    return true;
}();

#define MLFF_REFERENCE_CASES mlff_openmm_test::PlatformCase{"Reference", {}, mlff_openmm_test::Precision::Double}
MLFF_INSTANTIATE_FORCE_TESTS(Reference, MLFF_REFERENCE_CASES);
MLFF_INSTANTIATE_SEED_MODEL_TESTS(Reference, MLFF_REFERENCE_CASES);
