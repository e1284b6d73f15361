#ifndef MLFF_KERNELS_H_
#define MLFF_KERNELS_H_

#include "MLFFForce.h"
#include "openmm/KernelImpl.h"
#include "openmm/System.h"
#include "openmm/Platform.h"

#include <string>
#include <vector>

namespace MLFFPlugin {

/**
 * The one kernel of MLFFForce; each platform implements it (platforms/reference, platforms/cuda).
 */
class CalcMLFFForceKernel : public OpenMM::KernelImpl {
public:
    static std::string Name() {
        return "CalcMLFFForce";
    }
    CalcMLFFForceKernel(std::string kernelName, const OpenMM::Platform& owningPlatform)
        : OpenMM::KernelImpl(kernelName, owningPlatform) {
    }
    /** Load the model and lay out the particles; called once per Context. */
    virtual void initialize(const OpenMM::System& system, const MLFFForce& force) = 0;
    /**
     * Add the forces (if includeForces) to the Context's and return the energy in kJ/mol
     * (0 unless includeEnergy). Also records the per-replica energies and, when the force
     * names an energy scale parameter, dE/dlambda.
     */
    virtual double execute(OpenMM::ContextImpl& context, bool includeForces, bool includeEnergy) = 0;
    /** Per-replica energies of the last execute(), as MLFFForce::getReplicaEnergies() defines them. */
    virtual std::vector<double> getReplicaEnergies(OpenMM::ContextImpl& context) = 0;
    /** Copy changed parameters (replica scales) from the force. */
    virtual void copyParametersToContext(OpenMM::ContextImpl& context, const MLFFForce& force) = 0;
};

} // namespace MLFFPlugin

#endif /*MLFF_KERNELS_H_*/
