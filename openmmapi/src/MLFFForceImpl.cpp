#include "internal/MLFFForceImpl.h"
#include "MLFFKernels.h"
#include "openmm/OpenMMException.h"
#include "openmm/internal/ContextImpl.h"

#include <string>
#include <vector>

using namespace MLFFPlugin;
using namespace OpenMM;
using std::map;
using std::string;
using std::vector;

MLFFForceImpl::MLFFForceImpl(const MLFFForce& force) : owner(force) {
}

void MLFFForceImpl::checkParticles(const MLFFForce& force, int numSystemParticles) {
    // mlIndexOf[p]: the ML particle that claimed System particle p, or -1.
    vector<int> mlIndexOf(static_cast<size_t>(numSystemParticles), -1);
    for (int i = 0; i < force.getNumParticles(); i++) {
        int particle, atomicNumber, replica;
        force.getParticleParameters(i, particle, atomicNumber, replica);
        if (particle < 0 || particle >= numSystemParticles)
            throw OpenMMException("MLFFForce: ML particle " + std::to_string(i) + " refers to particle " +
                                  std::to_string(particle) + ", which is out of range (the System has " +
                                  std::to_string(numSystemParticles) + " particles)");
        int& claimedBy = mlIndexOf[static_cast<size_t>(particle)];
        if (claimedBy >= 0)
            throw OpenMMException("MLFFForce: particle " + std::to_string(particle) + " was added twice (ML particles " +
                                  std::to_string(claimedBy) + " and " + std::to_string(i) + ")");
        claimedBy = i;
    }
}

void MLFFForceImpl::initialize(ContextImpl& context) {
    const System& system = context.getSystem();
    checkParticles(owner, system.getNumParticles());
    kernel = context.getPlatform().createKernel(CalcMLFFForceKernel::Name(), context);
    kernel.getAs<CalcMLFFForceKernel>().initialize(system, owner);
}

double MLFFForceImpl::calcForcesAndEnergy(ContextImpl& context, bool includeForces, bool includeEnergy, int groups) {
    if ((groups & (1 << owner.getForceGroup())) == 0)
        return 0.0;
    double energy = kernel.getAs<CalcMLFFForceKernel>().execute(context, includeForces, includeEnergy);
    evaluated = true;
    return energy;
}

map<string, double> MLFFForceImpl::getDefaultParameters() {
    map<string, double> parameters;
    if (!owner.getEnergyScaleParameter().empty())
        parameters[owner.getEnergyScaleParameter()] = 1.0;
    return parameters;
}

vector<string> MLFFForceImpl::getKernelNames() {
    return {CalcMLFFForceKernel::Name()};
}

vector<double> MLFFForceImpl::getReplicaEnergies(ContextImpl& context) {
    // Like CustomCVForce's values these belong to an evaluation; a Context that has not
    // evaluated this force yet evaluates it (energy only) so the answer is never stale.
    if (!evaluated)
        context.calcForcesAndEnergy(false, true, 1 << owner.getForceGroup());
    return kernel.getAs<CalcMLFFForceKernel>().getReplicaEnergies(context);
}

void MLFFForceImpl::updateParametersInContext(ContextImpl& context) {
    kernel.getAs<CalcMLFFForceKernel>().copyParametersToContext(context, owner);
    context.systemChanged();
}
