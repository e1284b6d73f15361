#include "ReferenceMLFFKernels.h"
#include "internal/MLFFUnits.h"
#include "openmm/OpenMMException.h"
#include "openmm/internal/ContextImpl.h"
#include "openmm/reference/ReferencePlatform.h"

#include <algorithm>
#include <map>

using namespace MLFFPlugin;
using namespace OpenMM;
using std::string;
using std::vector;

namespace {

ReferencePlatform::PlatformData& platformData(ContextImpl& context) {
    return *static_cast<ReferencePlatform::PlatformData*>(context.getPlatformData());
}

} // namespace

void ReferenceCalcMLFFForceKernel::initialize(const System& system, const MLFFForce& force) {
    (void) system; // MLFFForceImpl has checked the particles against it
    string nameInMessages = force.getModelPath().empty() ? "<model bytes>" : force.getModelPath();
    model = loadCoreModel(force.getModelBytes(), nameInMessages);
    workspace.reset(mlff_workspace_create());
    if (!workspace)
        throw OpenMMException("MLFFForce: out of memory creating the core's workspace");
    filterTable.reset();
    if (force.getUseTabulatedFilters()) {
        mlff_filter_table* table = nullptr;
        mlff_error error{};
        if (mlff_filter_table_create(model.get(), 0.0, &table, &error) != MLFF_OK)
            throw OpenMMException(string("MLFFForce: tabulating the filters: ") + error.message);
        filterTable.reset(table);
    }
    int numParticles = force.getNumParticles();
    systemIndices.resize(static_cast<size_t>(numParticles));
    atomicNumbers.resize(static_cast<size_t>(numParticles));
    replicas.resize(static_cast<size_t>(numParticles));
    for (int i = 0; i < numParticles; i++) {
        size_t k = static_cast<size_t>(i);
        force.getParticleParameters(i, systemIndices[k], atomicNumbers[k], replicas[k]);
    }
    numReplicas = force.getNumReplicas();
    replicaScales.resize(static_cast<size_t>(numReplicas));
    for (int r = 0; r < numReplicas; r++)
        replicaScales[static_cast<size_t>(r)] = force.getReplicaScale(r);
    energyScaleParameter = force.getEnergyScaleParameter();
    periodic = force.usesPeriodicBoundaryConditions();
    positionsAngstrom.resize(3 * systemIndices.size());
    forcesEVPerAngstrom.resize(3 * systemIndices.size());
    replicaEnergiesEV.resize(static_cast<size_t>(numReplicas));
    lastReplicaEnergies.assign(static_cast<size_t>(numReplicas), 0.0);
}

void ReferenceCalcMLFFForceKernel::startThreads(ContextImpl& context) {
    // Read at the first evaluation, not in initialize(): while the Context is being made, its
    // platform's property values cannot be read through it yet.
    int threads = 1;
    if (getPlatform().getName() == "CPU")
        threads = std::max(1, std::stoi(getPlatform().getPropertyValue(context.getOwner(), "Threads")));
    mlff_error error{};
    if (mlff_workspace_set_num_threads(workspace.get(), threads, &error) != MLFF_OK)
        throw OpenMMException("MLFFForce: starting the CPU platform's " + std::to_string(threads) + " threads: " +
                              error.message);
    threadsStarted = true;
}

double ReferenceCalcMLFFForceKernel::execute(ContextImpl& context, bool includeForces, bool includeEnergy) {
    if (numReplicas == 0)
        return 0.0;
    if (!threadsStarted)
        startThreads(context);
    ReferencePlatform::PlatformData& data = platformData(context);
    const vector<Vec3>& positions = *data.positions;
    for (size_t i = 0; i < systemIndices.size(); i++)
        for (size_t d = 0; d < 3; d++)
            positionsAngstrom[3 * i + d] = positions[static_cast<size_t>(systemIndices[i])][static_cast<int>(d)] * MLFFUnits::AngstromPerNm;
    double box[9];
    if (periodic)
        for (int v = 0; v < 3; v++)
            for (int d = 0; d < 3; d++)
                box[3 * v + d] = data.periodicBoxVectors[v][d] * MLFFUnits::AngstromPerNm;

    mlff_structure structure{};
    structure.num_atoms = static_cast<int>(systemIndices.size());
    structure.positions = positionsAngstrom.data();
    structure.atomic_numbers = atomicNumbers.data();
    structure.replicas = replicas.data();
    structure.num_replicas = numReplicas;
    structure.box = periodic ? box : nullptr;
    mlff_result result{};
    result.replica_energies = replicaEnergiesEV.data();
    result.forces = includeForces ? forcesEVPerAngstrom.data() : nullptr;
    mlff_error error{};
    if (mlff_compute_tabulated(model.get(), filterTable.get(), workspace.get(), &structure, &result, &error) != MLFF_OK)
        throw OpenMMException(string("MLFFForce: ") + error.message + " (atoms are numbered as the force's ML particles)");

    double lambda = energyScaleParameter.empty() ? 1.0 : context.getParameter(energyScaleParameter);
    double unscaledTotal = 0.0; // sum_r scale_r * E_r, kJ/mol: dE/dlambda
    for (size_t r = 0; r < replicaEnergiesEV.size(); r++) {
        double scaled = replicaScales[r] * replicaEnergiesEV[r] * MLFFUnits::KJPerMolPerEV;
        unscaledTotal += scaled;
        lastReplicaEnergies[r] = lambda * scaled;
    }
    if (includeForces) {
        vector<Vec3>& forces = *data.forces;
        for (size_t i = 0; i < systemIndices.size(); i++) {
            double factor = lambda * replicaScales[static_cast<size_t>(replicas[i])] * MLFFUnits::ForceToOpenMM;
            Vec3& f = forces[static_cast<size_t>(systemIndices[i])];
            for (size_t d = 0; d < 3; d++)
                f[static_cast<int>(d)] += factor * forcesEVPerAngstrom[3 * i + d];
        }
    }
    if (!energyScaleParameter.empty())
        (*data.energyParameterDerivatives)[energyScaleParameter] += unscaledTotal;
    return includeEnergy ? lambda * unscaledTotal : 0.0;
}

vector<double> ReferenceCalcMLFFForceKernel::getReplicaEnergies(ContextImpl& context) {
    (void) context;
    return lastReplicaEnergies;
}

void ReferenceCalcMLFFForceKernel::copyParametersToContext(ContextImpl& context, const MLFFForce& force) {
    (void) context;
    if (force.getNumParticles() != static_cast<int>(systemIndices.size()))
        throw OpenMMException("MLFFForce: updateParametersInContext cannot change the number of particles (reinitialize the Context)");
    for (int i = 0; i < force.getNumParticles(); i++) {
        int particle, atomicNumber, replica;
        force.getParticleParameters(i, particle, atomicNumber, replica);
        size_t k = static_cast<size_t>(i);
        if (particle != systemIndices[k] || atomicNumber != atomicNumbers[k] || replica != replicas[k])
            throw OpenMMException("MLFFForce: updateParametersInContext cannot change ML particle " + std::to_string(i) +
                                  " (reinitialize the Context)");
    }
    if (force.getUseTabulatedFilters() != static_cast<bool>(filterTable))
        throw OpenMMException("MLFFForce: updateParametersInContext cannot change whether filters are tabulated (reinitialize the Context)");
    if (force.getEnergyScaleParameter() != energyScaleParameter)
        throw OpenMMException("MLFFForce: updateParametersInContext cannot change the energy scale parameter (reinitialize the Context)");
    for (int r = 0; r < numReplicas; r++)
        replicaScales[static_cast<size_t>(r)] = force.getReplicaScale(r);
}
