#include "ReferenceMLFFKernelFactory.h"
#include "ReferenceMLFFKernels.h"
#include "openmm/OpenMMException.h"
#include "openmm/Platform.h"
#include "openmm/reference/ReferencePlatform.h"

using namespace MLFFPlugin;
using namespace OpenMM;

// The CPU platform runs on ReferencePlatform::PlatformData too, so one kernel serves both.
static bool servesPlatform(const std::string& name) {
    return name == "Reference" || name == "CPU";
}

extern "C" OPENMM_EXPORT void registerPlatforms() {
}

extern "C" OPENMM_EXPORT void registerKernelFactories() {
    for (int i = 0; i < Platform::getNumPlatforms(); i++) {
        Platform& platform = Platform::getPlatform(i);
        if (servesPlatform(platform.getName()))
            platform.registerKernelFactory(CalcMLFFForceKernel::Name(), new ReferenceMLFFKernelFactory());
    }
}

extern "C" OPENMM_EXPORT void registerMLFFReferenceKernelFactories() {
    try {
        Platform::getPlatformByName("Reference");
    }
    catch (...) {
        Platform::registerPlatform(new ReferencePlatform());
    }
    registerKernelFactories();
}

KernelImpl* ReferenceMLFFKernelFactory::createKernelImpl(std::string name, const Platform& platform,
                                                         ContextImpl& context) const {
    (void) context;
    if (name == CalcMLFFForceKernel::Name())
        return new ReferenceCalcMLFFForceKernel(name, platform);
    throw OpenMMException("ReferenceMLFFKernelFactory: no kernel named '" + name + "'");
}
