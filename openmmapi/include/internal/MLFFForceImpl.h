#ifndef OPENMM_MLFF_FORCE_IMPL_H_
#define OPENMM_MLFF_FORCE_IMPL_H_

#include "MLFFForce.h"
#include "openmm/Kernel.h"
#include "openmm/internal/ForceImpl.h"

#include <map>
#include <string>
#include <vector>

namespace MLFFPlugin {

/**
 * The internal implementation of MLFFForce in one Context: checks the particles against
 * the System and forwards evaluations to the platform's CalcMLFFForceKernel.
 */
class OPENMM_EXPORT_MLFF MLFFForceImpl : public OpenMM::ForceImpl {
public:
    explicit MLFFForceImpl(const MLFFForce& owner);
    void initialize(OpenMM::ContextImpl& context) override;
    const MLFFForce& getOwner() const override {
        return owner;
    }
    void updateContextState(OpenMM::ContextImpl& context, bool& forcesInvalid) override {
        (void) context;
        (void) forcesInvalid;
    }
    double calcForcesAndEnergy(OpenMM::ContextImpl& context, bool includeForces, bool includeEnergy, int groups) override;
    std::map<std::string, double> getDefaultParameters() override;
    std::vector<std::string> getKernelNames() override;
    /** The kernel's replica energies; evaluates this force first if it never was in this Context. */
    std::vector<double> getReplicaEnergies(OpenMM::ContextImpl& context);
    void updateParametersInContext(OpenMM::ContextImpl& context);

    /** Throws an OpenMMException naming the first ML particle that is not a valid, unique System particle. */
    static void checkParticles(const MLFFForce& force, int numSystemParticles);

private:
    const MLFFForce& owner;
    OpenMM::Kernel kernel;
    bool evaluated = false;
};

} // namespace MLFFPlugin

#endif // OPENMM_MLFF_FORCE_IMPL_H_
