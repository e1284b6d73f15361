// The CUDA plugin's entry points: OpenMM calls registerKernelFactories() when it loads the
// library from its plugins directory; programs that link the library directly (the tests) call
// registerMLFFCudaKernelFactories(), which has a name no other plugin shares.
#include "CudaCalcMLFFForceKernel.h"

#include "openmm/KernelFactory.h"
#include "openmm/OpenMMException.h"
#include "openmm/cuda/CudaPlatform.h"
#include "openmm/internal/ContextImpl.h"
#include "openmm/internal/windowsExport.h"

using namespace MLFFPlugin;
using namespace OpenMM;

namespace {

class CudaMLFFKernelFactory : public KernelFactory {
public:
    KernelImpl* createKernelImpl(std::string name, const Platform& platform, ContextImpl& context) const override {
        CudaPlatform::PlatformData& data = *static_cast<CudaPlatform::PlatformData*>(context.getPlatformData());
        if (name == CalcMLFFForceKernel::Name())
            return new CudaCalcMLFFForceKernel(name, platform, *data.contexts[0]);
        throw OpenMMException("MLFFForce (CUDA): no kernel named '" + name + "'");
    }
};

} // namespace

extern "C" OPENMM_EXPORT void registerMLFFCudaKernelFactories() {
    try {
        Platform& platform = Platform::getPlatformByName("CUDA");
        platform.registerKernelFactory(CalcMLFFForceKernel::Name(), new CudaMLFFKernelFactory());
    } catch (const std::exception&) {
        // The CUDA platform is not available (no GPU or driver): nothing to register.
    }
}

extern "C" OPENMM_EXPORT void registerKernelFactories() {
    registerMLFFCudaKernelFactories();
}

extern "C" OPENMM_EXPORT void registerPlatforms() {
}
