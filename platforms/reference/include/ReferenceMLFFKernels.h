#ifndef REFERENCE_MLFF_KERNELS_H_
#define REFERENCE_MLFF_KERNELS_H_

#include "MLFFKernels.h"
#include "internal/MLFFCoreModel.h"

#include <memory>
#include <string>
#include <vector>

namespace MLFFPlugin {

struct CoreFilterTableDeleter {
    void operator()(mlff_filter_table* table) const {
        mlff_filter_table_free(table);
    }
};
using CoreFilterTablePtr = std::unique_ptr<mlff_filter_table, CoreFilterTableDeleter>;

/**
 * CalcMLFFForceKernel on the Reference and CPU platforms: gathers the ML particles' positions
 * from the platform's ReferencePlatform::PlatformData, calls the C core (double precision)
 * and scatters the forces back, converting Å/eV to nm/kJ/mol. With
 * MLFFForce::getUseTabulatedFilters(), the filters come from a table of the core
 * (mlff_filter_table, default spacing) built once in initialize(). On the CPU platform the core
 * computes on as many threads as the platform's "Threads" property says (with the same results
 * as on one); on the Reference platform, on the caller's thread alone.
 */
class ReferenceCalcMLFFForceKernel : public CalcMLFFForceKernel {
public:
    ReferenceCalcMLFFForceKernel(std::string kernelName, const OpenMM::Platform& owningPlatform)
        : CalcMLFFForceKernel(kernelName, owningPlatform) {
    }
    void initialize(const OpenMM::System& system, const MLFFForce& force) override;
    double execute(OpenMM::ContextImpl& context, bool includeForces, bool includeEnergy) override;
    std::vector<double> getReplicaEnergies(OpenMM::ContextImpl& context) override;
    void copyParametersToContext(OpenMM::ContextImpl& context, const MLFFForce& force) override;

private:
    void startThreads(OpenMM::ContextImpl& context);

    CoreModelPtr model;
    CoreWorkspacePtr workspace;
    bool threadsStarted = false;      // startThreads has run (at the first evaluation)
    CoreFilterTablePtr filterTable;   // null: the exact filter network
    std::vector<int> systemIndices;   // (N) System particle of each ML particle
    std::vector<int> atomicNumbers;   // (N)
    std::vector<int> replicas;        // (N)
    int numReplicas = 0;
    std::vector<double> replicaScales; // (numReplicas)
    std::string energyScaleParameter;
    bool periodic = false;
    // Scratch in the core's units, reused between calls.
    std::vector<double> positionsAngstrom, forcesEVPerAngstrom, replicaEnergiesEV;
    std::vector<double> lastReplicaEnergies; // kJ/mol, scaled as in the total
};

} // namespace MLFFPlugin

#endif // REFERENCE_MLFF_KERNELS_H_
