#include "CudaCalcMLFFForceKernel.h"

#include "CudaMLFFKernelSources.h"
#include "internal/MLFFCoreModel.h"
#include "internal/MLFFUnits.h"
#include "student_painn/StudentPainnParameters.h"

#include "openmm/OpenMMException.h"
#include "openmm/common/ComputeForceInfo.h"
#include "openmm/common/ContextSelector.h"
#include "openmm/internal/ContextImpl.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <numeric>

using namespace MLFFPlugin;
using namespace OpenMM;
using std::string;
using std::vector;

namespace {

// Edges filtered together in one pass over the filter weights: more amortises each weight load,
// fewer keeps shared memory (which scales with it) within the static 48 KB in double precision.
constexpr int EdgeBatchSingle = 8;
constexpr int EdgeBatchDouble = 4;
constexpr int NeighborThreads = 128; // 4 warps, one atom each
constexpr int ReduceThreads = 256;   // MLFF_REDUCE_THREADS in neighbors.cu
constexpr int DefaultNeighborCapacity = 64;

void check(CUresult result, const char* what) {
    if (result != CUDA_SUCCESS)
        throw OpenMMException(string("MLFFForce (CUDA): ") + what + ": " + CudaContext::getErrorString(result) + " (" +
                              std::to_string(result) + ")");
}

string exactDouble(double value) {
    char text[64];
    std::snprintf(text, sizeof(text), "%.17g", value);
    return text;
}

} // namespace

/** Re-inverts the atom index after OpenMM reorders atoms (enqueued on the stream: no sync). */
class CudaCalcMLFFForceKernel::ReorderListener : public ComputeContext::ReorderListener {
public:
    explicit ReorderListener(CudaCalcMLFFForceKernel& kernel) : owner(kernel) {
    }
    void execute() override {
        owner.updateSortedIndex();
    }

private:
    CudaCalcMLFFForceKernel& owner;
};

/**
 * Tells OpenMM which particles it may swap when it reorders molecules: ML particles only with
 * ML particles of the same element and replica. (Reading positions through the atom index is
 * what keeps the results right; this only keeps the layout sensible.)
 */
class CudaCalcMLFFForceKernel::ForceInfo : public ComputeForceInfo {
public:
    explicit ForceInfo(const MLFFForce& force) {
        for (int index = 0; index < force.getNumParticles(); index++) {
            int particle, z, replica;
            force.getParticleParameters(index, particle, z, replica);
            identity[particle] = {z, replica};
        }
    }
    bool areParticlesIdentical(int particle1, int particle2) override {
        auto first = identity.find(particle1), second = identity.find(particle2);
        if (first == identity.end() || second == identity.end())
            return first == second;
        return first->second == second->second;
    }

private:
    std::map<int, std::pair<int, int>> identity; // particle -> (atomic number, replica)
};

CudaCalcMLFFForceKernel::CudaCalcMLFFForceKernel(string kernelName, const Platform& kernelPlatform, CudaContext& context)
    : CalcMLFFForceKernel(kernelName, kernelPlatform), cu(context) {
}

CudaCalcMLFFForceKernel::~CudaCalcMLFFForceKernel() {
    if (pinnedMaxNeighborCount != nullptr || maxCountEvent != nullptr) {
        ContextSelector selector(cu);
        if (pinnedMaxNeighborCount != nullptr)
            cuMemFreeHost(pinnedMaxNeighborCount);
        if (maxCountEvent != nullptr)
            cuEventDestroy(maxCountEvent);
    }
}

void CudaCalcMLFFForceKernel::initialize(const System& system, const MLFFForce& force) {
    (void) system;
    ContextSelector selector(cu);
    CoreModelPtr model = loadCoreModel(force.getModelBytes(),
                                       force.getModelPath().empty() ? "<model bytes>" : force.getModelPath());
    const string architecture = mlff_model_architecture(model.get());
    if (architecture != MLFF_ARCHITECTURE_STUDENT_PAINN)
        throw OpenMMException("MLFFForce (CUDA): no CUDA kernels for the architecture '" + architecture + "'");
    const mlff_student_painn& painn = *mlff_model_student_painn(model.get());
    hidden = painn.hidden_channels;
    numBlocks = painn.num_blocks;

    // ML atoms ordered by (replica, index in the force): each replica a contiguous range.
    numAtoms = force.getNumParticles();
    numReplicas = std::max(force.getNumReplicas(), 1);
    vector<int> order(numAtoms), particles(numAtoms), zs(numAtoms), replicas(numAtoms);
    for (int index = 0; index < numAtoms; index++)
        force.getParticleParameters(index, particles[index], zs[index], replicas[index]);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return replicas[a] < replicas[b]; });
    vector<int> sortedParticles(numAtoms), sortedZ(numAtoms), sortedReplicas(numAtoms), starts(numReplicas + 1, 0);
    for (int i = 0; i < numAtoms; i++) {
        sortedParticles[i] = particles[order[i]];
        sortedZ[i] = zs[order[i]];
        sortedReplicas[i] = replicas[order[i]];
        starts[sortedReplicas[i] + 1]++;
    }
    for (int r = 0; r < numReplicas; r++) {
        maxReplicaSize = std::max(maxReplicaSize, starts[r + 1]);
        starts[r + 1] += starts[r];
    }
    neighborCapacity = std::max(1, std::min(maxReplicaSize - 1, DefaultNeighborCapacity));
    if (const char* initial = std::getenv("MLFF_CUDA_INITIAL_NEIGHBOR_CAPACITY")) // test hook: force list growth
        neighborCapacity = std::max(1, std::atoi(initial));

    replicaScales.resize(numReplicas);
    for (int r = 0; r < numReplicas; r++)
        replicaScales[r] = force.getReplicaScale(r);
    energyScaleParameter = force.getEnergyScaleParameter();
    if (!energyScaleParameter.empty())
        cu.addEnergyParameterDerivative(energyScaleParameter);
    cu.addForce(new ForceInfo(force));
    cu.addReorderListener(new ReorderListener(*this));
    if (numAtoms == 0)
        return;

    // Device arrays, allocated once here (and the neighbour list again only when it must grow).
    const bool useDouble = cu.getUseDoublePrecision();
    const int realSize = useDouble ? sizeof(double) : sizeof(float);
    const size_t n = numAtoms, h = hidden, layers = numBlocks;
    StudentPainnLayout layout = layoutStudentPainn(painn);
    params.initialize(cu, layout.values.size(), realSize, "mlffParams");
    params.upload(layout.values, true);
    mlParticle.initialize<int>(cu, n, "mlffParticle");
    mlParticle.upload(sortedParticles);
    mlZ.initialize<int>(cu, n, "mlffZ");
    mlZ.upload(sortedZ);
    mlReplica.initialize<int>(cu, n, "mlffReplica");
    mlReplica.upload(sortedReplicas);
    replicaStart.initialize<int>(cu, numReplicas + 1, "mlffReplicaStart");
    replicaStart.upload(starts);
    sortedIndexOfParticle.initialize<int>(cu, cu.getPaddedNumAtoms(), "mlffSortedIndexOfParticle");
    mlPos.initialize(cu, n, 4 * realSize, "mlffPositions");
    neighborCount.initialize<int>(cu, n, "mlffNeighborCount");
    neighborList.initialize<int>(cu, n * neighborCapacity, "mlffNeighborList");
    maxNeighborCount.initialize<int>(cu, 1, "mlffMaxNeighborCount");
    stateS.initialize(cu, (layers + 1) * n * h, realSize, "mlffStateS");
    stateV.initialize(cu, (layers + 1) * n * 3 * h, realSize, "mlffStateV");
    midS.initialize(cu, layers * n * h, realSize, "mlffMidS");
    midV.initialize(cu, layers * n * 3 * h, realSize, "mlffMidV");
    atomEnergy.initialize(cu, n, realSize, "mlffAtomEnergy");
    for (int k = 0; k < 2; k++) {
        gradS[k].initialize(cu, n * h, realSize, "mlffGradS");
        gradV[k].initialize(cu, n * 3 * h, realSize, "mlffGradV");
    }
    replicaScale.initialize<double>(cu, numReplicas, "mlffReplicaScale");
    replicaScale.upload(replicaScales);
    replicaEnergy.initialize<double>(cu, numReplicas, "mlffReplicaEnergy");
    cu.clearBuffer(replicaEnergy);
    check(cuMemHostAlloc((void**) &pinnedMaxNeighborCount, sizeof(int), 0), "allocating pinned memory");
    *pinnedMaxNeighborCount = 0;
    check(cuEventCreate(&maxCountEvent, CU_EVENT_DISABLE_TIMING), "creating an event");

    // The kernels, with the model's sizes and the system's as compile-time constants.
    const int edgeBatch = useDouble ? EdgeBatchDouble : EdgeBatchSingle;
    threadsPerAtom = std::max({hidden, painn.num_rbf, 4 * edgeBatch});
    threadsPerAtom = (threadsPerAtom + 31) / 32 * 32;
    std::map<string, string> defines = layout.defines;
    defines["MLFF_BLOCK"] = std::to_string(threadsPerAtom);
    defines["MLFF_EDGE_BATCH"] = std::to_string(edgeBatch);
    defines["MLFF_NUM_ATOMS"] = std::to_string(numAtoms);
    defines["MLFF_NUM_REPLICAS"] = std::to_string(numReplicas);
    defines["MLFF_PADDED_NUM_ATOMS"] = std::to_string(cu.getPaddedNumAtoms());
    defines["MLFF_CUTOFF_SQUARED"] = exactDouble(painn.cutoff * painn.cutoff);
    defines["MLFF_KJ_PER_MOL_PER_EV"] = exactDouble(MLFFUnits::KJPerMolPerEV);
    if (force.usesPeriodicBoundaryConditions())
        defines["MLFF_PERIODIC"] = "1";
    const string source = CudaMLFFKernelSources::geometry + CudaMLFFKernelSources::neighbors +
                          CudaMLFFKernelSources::student_painn_layers + CudaMLFFKernelSources::student_painn_forward +
                          CudaMLFFKernelSources::student_painn_backward;
    CUmodule module = cu.createModule(source, defines);
    invertKernel = cu.getKernel(module, "mlffInvertAtomIndex");
    neighborKernel = cu.getKernel(module, "mlffFindNeighborsInReplica");
    forwardKernel = cu.getKernel(module, "mlffStudentForward");
    backwardKernel = cu.getKernel(module, "mlffStudentBackward");
    reduceKernel = cu.getKernel(module, "mlffReduceEnergies");
}

void CudaCalcMLFFForceKernel::launch(CUfunction kernel, void** args, unsigned int gridSize, unsigned int blockSize,
                                     const char* what) {
    // Not cu.executeKernel: it caps the grid, and the network kernels need one block per atom.
    check(cuLaunchKernel(kernel, gridSize, 1, 1, blockSize, 1, 1, 0, cu.getCurrentStream(), args, nullptr), what);
}

void CudaCalcMLFFForceKernel::updateSortedIndex() {
    if (numAtoms == 0)
        return;
    CUdeviceptr atomIndex = cu.getAtomIndexArray().getDevicePointer();
    int total = cu.getNumAtoms();
    void* args[] = {&atomIndex, &sortedIndexOfParticle.getDevicePointer(), &total};
    launch(invertKernel, args, (unsigned int) ((total + 127) / 128), 128, "inverting the atom index");
}

void CudaCalcMLFFForceKernel::setBox(ContextImpl& context) {
    Vec3 a, b, c;
    context.getPeriodicBoxVectors(a, b, c);
    const Vec3 vectors[3] = {a * MLFFUnits::AngstromPerNm, b * MLFFUnits::AngstromPerNm, c * MLFFUnits::AngstromPerNm};
    for (int k = 0; k < 3; k++)
        boxDouble[k] = {vectors[k][0], vectors[k][1], vectors[k][2], 0.0};
    boxDouble[3] = {1 / vectors[0][0], 1 / vectors[1][1], 1 / vectors[2][2], 0.0};
    for (int k = 0; k < 4; k++)
        boxFloat[k] = {(float) boxDouble[k].x, (float) boxDouble[k].y, (float) boxDouble[k].z, 0.0f};
}

void CudaCalcMLFFForceKernel::checkNeighborCapacity() {
    // The count of an earlier step, downloaded asynchronously; read only once it has arrived.
    if (!maxCountPending || cuEventQuery(maxCountEvent) != CUDA_SUCCESS)
        return;
    maxCountPending = false;
    const int needed = *pinnedMaxNeighborCount;
    if (needed <= neighborCapacity)
        return;
    // That step was still exact (the kernels scanned the replica for the overflowing atoms); grow
    // so that later steps use the list again.
    neighborCapacity = std::min(std::max(needed + needed / 4 + 8, neighborCapacity), std::max(maxReplicaSize - 1, 1));
    neighborList.resize((size_t) numAtoms * neighborCapacity);
}

double CudaCalcMLFFForceKernel::execute(ContextImpl& context, bool includeForces, bool includeEnergy) {
    (void) includeEnergy; // the energy is always reduced: it is one small launch, and getReplicaEnergies needs it
    if (numAtoms == 0)
        return 0.0;
    ContextSelector selector(cu);
    if (!hasInitializedIndex) {
        updateSortedIndex();
        hasInitializedIndex = true;
    }
    checkNeighborCapacity();
    setBox(context);
    const bool useDouble = cu.getUseDoublePrecision();
    void* box[4];
    for (int k = 0; k < 4; k++)
        box[k] = useDouble ? (void*) &boxDouble[k] : (void*) &boxFloat[k];
    lastLambda = energyScaleParameter.empty() ? 1.0 : context.getParameter(energyScaleParameter);

    CUdeviceptr posq = cu.getPosq().getDevicePointer();
    CUdeviceptr force = cu.getLongForceBuffer().getDevicePointer();
    CUdeviceptr energyBuffer = cu.getEnergyBuffer().getDevicePointer();
    CUdeviceptr paramDerivs = 0;
    int paramDerivIndex = 0;
    if (!energyScaleParameter.empty()) {
        const vector<string>& names = cu.getEnergyParamDerivNames();
        paramDerivIndex = (int) (std::find(names.begin(), names.end(), energyScaleParameter) - names.begin());
        paramDerivs = cu.getEnergyParamDerivBuffer().getDevicePointer();
    }

    {
        void* args[] = {&posq, &sortedIndexOfParticle.getDevicePointer(), &mlParticle.getDevicePointer(),
                        &mlReplica.getDevicePointer(), &replicaStart.getDevicePointer(), box[0], box[1], box[2], box[3],
                        &mlPos.getDevicePointer(), &neighborCount.getDevicePointer(), &neighborList.getDevicePointer(),
                        &neighborCapacity};
        const unsigned int grid = (unsigned int) (((size_t) numAtoms * 32 + NeighborThreads - 1) / NeighborThreads);
        launch(neighborKernel, args, grid, NeighborThreads, "finding neighbours");
    }
    for (int layer = 0; layer < numBlocks; layer++) {
        void* args[] = {&layer, &params.getDevicePointer(), &mlPos.getDevicePointer(), &mlZ.getDevicePointer(),
                        &mlReplica.getDevicePointer(), &replicaStart.getDevicePointer(),
                        &neighborCount.getDevicePointer(), &neighborList.getDevicePointer(), &neighborCapacity,
                        box[0], box[1], box[2], box[3], &stateS.getDevicePointer(), &stateV.getDevicePointer(),
                        &midS.getDevicePointer(), &midV.getDevicePointer(), &atomEnergy.getDevicePointer(),
                        &gradS[0].getDevicePointer(), &gradV[0].getDevicePointer()};
        launch(forwardKernel, args, numAtoms, threadsPerAtom, "the forward pass");
    }
    if (includeForces) {
        double lambdaForceScale = lastLambda * MLFFUnits::ForceToOpenMM;
        int in = 0;
        for (int layer = numBlocks - 1; layer >= 0; layer--, in = 1 - in) {
            void* args[] = {&layer, &params.getDevicePointer(), &mlPos.getDevicePointer(), &mlZ.getDevicePointer(),
                            &mlReplica.getDevicePointer(), &replicaStart.getDevicePointer(),
                            &neighborCount.getDevicePointer(), &neighborList.getDevicePointer(), &neighborCapacity,
                            box[0], box[1], box[2], box[3], &stateS.getDevicePointer(), &stateV.getDevicePointer(),
                            &midS.getDevicePointer(), &midV.getDevicePointer(), &gradS[in].getDevicePointer(),
                            &gradV[in].getDevicePointer(), &gradS[1 - in].getDevicePointer(),
                            &gradV[1 - in].getDevicePointer(), &replicaScale.getDevicePointer(), &lambdaForceScale,
                            &mlParticle.getDevicePointer(), &sortedIndexOfParticle.getDevicePointer(), &force};
            launch(backwardKernel, args, numAtoms, threadsPerAtom, "the backward pass");
        }
    }
    {
        void* args[] = {&atomEnergy.getDevicePointer(), &replicaStart.getDevicePointer(), &replicaScale.getDevicePointer(),
                        &lastLambda, &replicaEnergy.getDevicePointer(), &energyBuffer, &paramDerivs, &paramDerivIndex,
                        &neighborCount.getDevicePointer(), &maxNeighborCount.getDevicePointer()};
        launch(reduceKernel, args, 1, ReduceThreads, "reducing the energy");
    }
    check(cuMemcpyDtoHAsync(pinnedMaxNeighborCount, maxNeighborCount.getDevicePointer(), sizeof(int),
                            cu.getCurrentStream()),
          "downloading the neighbour count");
    check(cuEventRecord(maxCountEvent, cu.getCurrentStream()), "recording an event");
    maxCountPending = true;
    return 0.0; // the energy went into OpenMM's energy buffer
}

vector<double> CudaCalcMLFFForceKernel::getReplicaEnergies(ContextImpl& context) {
    (void) context;
    vector<double> energies(numReplicas, 0.0);
    if (numAtoms == 0)
        return energies;
    ContextSelector selector(cu);
    replicaEnergy.download(energies);
    for (int r = 0; r < numReplicas; r++)
        energies[r] *= lastLambda * replicaScales[r] * MLFFUnits::KJPerMolPerEV;
    return energies;
}

void CudaCalcMLFFForceKernel::copyParametersToContext(ContextImpl& context, const MLFFForce& force) {
    (void) context;
    if (force.getNumParticles() != numAtoms || std::max(force.getNumReplicas(), 1) != numReplicas)
        throw OpenMMException("MLFFForce: updateParametersInContext cannot change the particles or replicas");
    for (int r = 0; r < numReplicas; r++)
        replicaScales[r] = force.getReplicaScale(r);
    if (numAtoms == 0)
        return;
    ContextSelector selector(cu);
    replicaScale.upload(replicaScales);
}
