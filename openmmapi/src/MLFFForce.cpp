#include "MLFFForce.h"
#include "internal/MLFFCoreModel.h"
#include "internal/MLFFForceImpl.h"
#include "internal/MLFFUnits.h"
#include "openmm/OpenMMException.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>
#include <sstream>

using namespace MLFFPlugin;
using namespace OpenMM;
using std::string;
using std::vector;

namespace {

string readModelFile(const string& path) {
    std::ifstream file(path, std::ios::binary);
    if (!file)
        throw OpenMMException("MLFFForce: cannot open model file '" + path + "': " + std::strerror(errno));
    std::ostringstream bytes;
    bytes << file.rdbuf();
    if (file.bad())
        throw OpenMMException("MLFFForce: cannot read model file '" + path + "'");
    return bytes.str();
}

} // namespace

MLFFForce::MLFFForce(const string& model, ModelSource source) : cutoff(0.0), maxAtomicNumber(0) {
    string nameInMessages;
    if (source == ModelFile) {
        modelPath = model;
        modelBytes = readModelFile(model);
        nameInMessages = model;
    }
    else if (source == ModelBytes) {
        modelBytes = model;
        nameInMessages = "<model bytes>";
    }
    else
        throw OpenMMException("MLFFForce: unknown ModelSource " + std::to_string(static_cast<int>(source)));
    CoreModelPtr core = loadCoreModel(modelBytes, nameInMessages);
    cutoff = mlff_model_cutoff(core.get()) / MLFFUnits::AngstromPerNm;
    maxAtomicNumber = mlff_model_max_atomic_number(core.get());
}

const string& MLFFForce::getModelBytes() const {
    return modelBytes;
}

const string& MLFFForce::getModelPath() const {
    return modelPath;
}

double MLFFForce::getCutoff() const {
    return cutoff;
}

int MLFFForce::getMaxAtomicNumber() const {
    return maxAtomicNumber;
}

namespace {

void checkParticleArguments(const MLFFForce& force, int particle, int atomicNumber, int replica) {
    if (particle < 0)
        throw OpenMMException("MLFFForce: particle index " + std::to_string(particle) + " is negative");
    if (atomicNumber < 0 || atomicNumber > force.getMaxAtomicNumber())
        throw OpenMMException("MLFFForce: atomic number " + std::to_string(atomicNumber) + " of particle " +
                              std::to_string(particle) + " is not known to the model (it knows 0 to " +
                              std::to_string(force.getMaxAtomicNumber()) + ")");
    if (replica < 0)
        throw OpenMMException("MLFFForce: replica " + std::to_string(replica) + " of particle " +
                              std::to_string(particle) + " is negative");
}

} // namespace

int MLFFForce::addParticle(int particle, int atomicNumber, int replica) {
    checkParticleArguments(*this, particle, atomicNumber, replica);
    particles.push_back(ParticleInfo{particle, atomicNumber, replica});
    return static_cast<int>(particles.size()) - 1;
}

int MLFFForce::getNumParticles() const {
    return static_cast<int>(particles.size());
}

static void checkIndex(int index, size_t size) {
    if (index < 0 || static_cast<size_t>(index) >= size)
        throw OpenMMException("MLFFForce: ML particle index " + std::to_string(index) + " is out of range (the force has " +
                              std::to_string(size) + " particles)");
}

void MLFFForce::getParticleParameters(int index, int& particle, int& atomicNumber, int& replica) const {
    checkIndex(index, particles.size());
    const ParticleInfo& info = particles[static_cast<size_t>(index)];
    particle = info.particle;
    atomicNumber = info.atomicNumber;
    replica = info.replica;
}

void MLFFForce::setParticleParameters(int index, int particle, int atomicNumber, int replica) {
    checkIndex(index, particles.size());
    checkParticleArguments(*this, particle, atomicNumber, replica);
    particles[static_cast<size_t>(index)] = ParticleInfo{particle, atomicNumber, replica};
}

int MLFFForce::getNumReplicas() const {
    int largest = -1;
    for (const ParticleInfo& info : particles)
        largest = std::max(largest, info.replica);
    return largest + 1;
}

double MLFFForce::getReplicaScale(int replica) const {
    if (replica < 0)
        throw OpenMMException("MLFFForce: replica " + std::to_string(replica) + " is negative");
    return static_cast<size_t>(replica) < replicaScales.size() ? replicaScales[static_cast<size_t>(replica)] : 1.0;
}

void MLFFForce::setReplicaScale(int replica, double scale) {
    if (replica < 0)
        throw OpenMMException("MLFFForce: replica " + std::to_string(replica) + " is negative");
    if (!std::isfinite(scale))
        throw OpenMMException("MLFFForce: the scale of replica " + std::to_string(replica) + " is not finite");
    if (static_cast<size_t>(replica) >= replicaScales.size())
        replicaScales.resize(static_cast<size_t>(replica) + 1, 1.0);
    replicaScales[static_cast<size_t>(replica)] = scale;
}

void MLFFForce::setEnergyScaleParameter(const string& parameterName) {
    energyScaleParameter = parameterName;
}

const string& MLFFForce::getEnergyScaleParameter() const {
    return energyScaleParameter;
}

void MLFFForce::setUsesPeriodicBoundaryConditions(bool usePeriodic) {
    periodic = usePeriodic;
}

bool MLFFForce::usesPeriodicBoundaryConditions() const {
    return periodic;
}

void MLFFForce::setUseTabulatedFilters(bool tabulated) {
    tabulatedFilters = tabulated;
}

bool MLFFForce::getUseTabulatedFilters() const {
    return tabulatedFilters;
}

vector<double> MLFFForce::getReplicaEnergies(Context& context) const {
    return dynamic_cast<MLFFForceImpl&>(getImplInContext(context)).getReplicaEnergies(getContextImpl(context));
}

void MLFFForce::updateParametersInContext(Context& context) {
    dynamic_cast<MLFFForceImpl&>(getImplInContext(context)).updateParametersInContext(getContextImpl(context));
}

ForceImpl* MLFFForce::createImpl() const {
    return new MLFFForceImpl(*this);
}
