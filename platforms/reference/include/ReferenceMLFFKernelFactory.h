#ifndef REFERENCE_MLFF_KERNEL_FACTORY_H_
#define REFERENCE_MLFF_KERNEL_FACTORY_H_

#include "openmm/KernelFactory.h"

namespace MLFFPlugin {

/** Creates ReferenceCalcMLFFForceKernel for the Reference and CPU platforms. */
class ReferenceMLFFKernelFactory : public OpenMM::KernelFactory {
public:
    OpenMM::KernelImpl* createKernelImpl(std::string name, const OpenMM::Platform& platform,
                                         OpenMM::ContextImpl& context) const override;
};

} // namespace MLFFPlugin

/**
 * Registers the factory with the Reference platform (creating it if absent) and with the CPU
 * platform when that one is loaded: for programs that link the plugin instead of loading it.
 */
extern "C" void registerMLFFReferenceKernelFactories();

#endif // REFERENCE_MLFF_KERNEL_FACTORY_H_
