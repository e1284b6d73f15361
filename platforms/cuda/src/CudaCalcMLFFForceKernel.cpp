// CudaCalcMLFFForceKernel: its life (initialize, the arrays every path uses, the parameters
// updated in the Context) and each evaluation's order of work (execute). Its other parts:
// CudaKernelChoices.cpp (the path, the shapes, the module), CudaNeighborLists.cpp,
// CudaEdgeRows.cpp, CudaNetworkPasses.cpp and CudaLaunches.cpp.
#include "CudaCalcMLFFForceKernel.h"

#include "CudaKernelConstants.h"
#include "internal/MLFFCoreModel.h"
#include "internal/MLFFUnits.h"
#include "student_painn/StudentPainnParameters.h"

#include "openmm/OpenMMException.h"
#include "openmm/common/ComputeForceInfo.h"
#include "openmm/common/ContextSelector.h"
#include "openmm/internal/ContextImpl.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <map>
#include <memory>
#include <numeric>

using namespace MLFFPlugin;
using namespace MLFFPlugin::KernelConstants;
using namespace OpenMM;
using std::string;
using std::vector;

string CudaCalcMLFFForceKernel::exactDouble(double value) {
    char text[64];
    std::snprintf(text, sizeof(text), "%.17g", value);
    return text;
}

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
    if (pinnedMaxNeighborCount != nullptr || maxCountEvent[0] != nullptr || timer != nullptr || graphs != nullptr) {
        ContextSelector selector(cu);
        timer.reset();
        if (graphs != nullptr && reportGraphs)
            std::fprintf(stderr, "MLFFForce (CUDA): %lld of %lld evaluations through graphs, %lld graphs built%s%s\n",
                         graphs->graphLaunches(), numEvaluations, graphs->graphsBuilt(),
                         graphs->buildFailure().empty() ? "" : "; no more after: ", graphs->buildFailure().c_str());
        graphs.reset();
        if (pinnedMaxNeighborCount != nullptr)
            cuMemFreeHost(pinnedMaxNeighborCount);
        for (CUevent event : maxCountEvent)
            if (event != nullptr)
                cuEventDestroy(event);
    }
}

void CudaCalcMLFFForceKernel::initialize(const System& system, const MLFFForce& force) {
    (void) system;
    ContextSelector selector(cu);
    timer.reset(new CudaLaunchTimer());
    const string graphChoice = requestedGraphs();
    if (graphChoice != "off" && !timer->enabled() && CudaLaunchGraphs::supported())
        graphs.reset(new CudaLaunchGraphs());
    reportGraphs = graphChoice == "report";
    CoreModelPtr model = loadCoreModel(force.getModelBytes(),
                                       force.getModelPath().empty() ? "<model bytes>" : force.getModelPath());
    const string architecture = mlff_model_architecture(model.get());
    if (architecture != MLFF_ARCHITECTURE_STUDENT_PAINN)
        throw OpenMMException("MLFFForce (CUDA): no CUDA kernels for the architecture '" + architecture + "'");
    const mlff_student_painn& painn = *mlff_model_student_painn(model.get());
    hidden = painn.hidden_channels;
    numBlocks = painn.num_blocks;
    numRbf = painn.num_rbf;
    cutoff = painn.cutoff;
    periodic = force.usesPeriodicBoundaryConditions();
    const AtomOrder order = orderAtoms(force);

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

    const bool tabulated = force.getUseTabulatedFilters();
    tabulatedFilters = tabulated;
    const StudentPainnLayout layout = layoutStudentPainn(painn);
    kPadded = std::stoi(layout.defines.at("MLFF_K_PADDED"));
    params.initialize(cu, layout.values.size(), realSize(), "mlffParams");
    params.upload(layout.values, true);
    allocateAtomArrays(order);
    multiprocessors = numMultiprocessors();
    edgeRowsMaxBytes = requestedEdgeRowsMaxBytes();
    chooseKernelPath(tabulated);
    chooseBlockShapes(tabulated);
    chooseWarpgroupProducts();
    allocatePathArrays();
    std::map<string, string> defines = layout.defines;
    if (tabulated) {
        const std::map<string, string> tableDefines = uploadFilterTable(*model);
        defines.insert(tableDefines.begin(), tableDefines.end());
    }
    addKernelDefines(defines);
    // OpenMM's own flag, then an architecture that overrides its -arch (both compilers take the last).
    module = cu.createModule(kernelSource(), defines,
                             warpgroupProducts() ? "--use_fast_math -arch=compute_90a" : nullptr);
    loadKernels();
    allowSharedMemory();
    prepareWarpgroupImages(layout.defines);
}

int CudaCalcMLFFForceKernel::realSize() const {
    return cu.getUseDoublePrecision() ? sizeof(double) : sizeof(float);
}

CudaCalcMLFFForceKernel::AtomOrder CudaCalcMLFFForceKernel::orderAtoms(const MLFFForce& force) {
    numAtoms = force.getNumParticles();
    numReplicas = std::max(force.getNumReplicas(), 1);
    vector<int> order(numAtoms), particles(numAtoms), zs(numAtoms), replicas(numAtoms);
    for (int index = 0; index < numAtoms; index++) {
        force.getParticleParameters(index, particles[index], zs[index], replicas[index]);
        initialParticles.push_back({particles[index], zs[index], replicas[index]});
    }
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return replicas[a] < replicas[b]; });
    AtomOrder sorted;
    sorted.particles.resize(numAtoms);
    sorted.z.resize(numAtoms);
    sorted.replicas.resize(numAtoms);
    sorted.replicaStart.assign(numReplicas + 1, 0);
    for (int i = 0; i < numAtoms; i++) {
        sorted.particles[i] = particles[order[i]];
        sorted.z[i] = zs[order[i]];
        sorted.replicas[i] = replicas[order[i]];
        sorted.replicaStart[sorted.replicas[i] + 1]++;
    }
    for (int r = 0; r < numReplicas; r++) {
        maxReplicaSize = std::max(maxReplicaSize, sorted.replicaStart[r + 1]);
        sorted.replicaStart[r + 1] += sorted.replicaStart[r];
    }
    neighborCapacity = std::max(1, std::min(maxReplicaSize - 1, DefaultNeighborCapacity));
    if (const char* initial = std::getenv("MLFF_CUDA_INITIAL_NEIGHBOR_CAPACITY")) // test hook: force list growth
        neighborCapacity = std::max(1, std::atoi(initial));
    return sorted;
}

void CudaCalcMLFFForceKernel::allocateAtomArrays(const AtomOrder& order) {
    const int real = realSize();
    const size_t n = numAtoms, h = hidden, layers = numBlocks;
    mlParticle.initialize<int>(cu, n, "mlffParticle");
    mlParticle.upload(order.particles);
    mlZ.initialize<int>(cu, n, "mlffZ");
    mlZ.upload(order.z);
    mlReplica.initialize<int>(cu, n, "mlffReplica");
    mlReplica.upload(order.replicas);
    replicaStart.initialize<int>(cu, numReplicas + 1, "mlffReplicaStart");
    replicaStart.upload(order.replicaStart);
    sortedIndexOfParticle.initialize<int>(cu, cu.getPaddedNumAtoms(), "mlffSortedIndexOfParticle");
    mlPos.initialize(cu, n, 4 * real, "mlffPositions");
    neighborCount.initialize<int>(cu, n, "mlffNeighborCount");
    neighborList.initialize<int>(cu, n * neighborCapacity, "mlffNeighborList");
    stateS.initialize(cu, (layers + 1) * n * h, real, "mlffStateS");
    stateV.initialize(cu, (layers + 1) * n * 3 * h, real, "mlffStateV");
    midV.initialize(cu, layers * n * 3 * h, real, "mlffMidV");
    atomEnergy.initialize(cu, n, real, "mlffAtomEnergy");
    for (int k = 0; k < 2; k++) {
        gradS[k].initialize(cu, n * h, real, "mlffGradS");
        gradV[k].initialize(cu, n * 3 * h, real, "mlffGradV");
    }
    useCellList = maxReplicaSize >= CellListMinAtoms;
    if (useCellList) {
        if (periodic)
            numCells = std::max((int) n, 9 * (2 * CellSlices + 1) * numReplicas); // setBox coarsens the grid to fit
        else {
            // Buckets a replica: a power of two, at least twice its atoms and 128 (cell_list.cu's
            // mlffCellIndex: a block of at least 4 x 4 x 8 cells).
            long long cells = 128;
            while (cells < 2LL * maxReplicaSize)
                cells *= 2;
            if (cells * numReplicas > std::numeric_limits<int>::max())
                throw OpenMMException("MLFFForce (CUDA): " + std::to_string(numReplicas) + " replicas of up to " +
                                      std::to_string(maxReplicaSize) + " atoms need more cells than an int counts");
            replicaCells = (int) cells;
            numCells = replicaCells * numReplicas;
        }
        cellCount.initialize<int>(cu, numCells, "mlffCellCount");
        cellStart.initialize<int>(cu, numCells, "mlffCellStart");
        cellAtoms.initialize<int>(cu, n, "mlffCellAtoms");
        cellOfAtom.initialize<int>(cu, n, "mlffCellOfAtom");
        binnedPos.initialize(cu, n, 4 * real, "mlffBinnedPositions");
        cellOrderParticle.initialize<int>(cu, n, "mlffCellOrderParticle");
        cellOrderZ.initialize<int>(cu, n, "mlffCellOrderZ");
        std::vector<int> origins(numReplicas);
        for (int r = 0; r < numReplicas; r++)
            origins[r] = order.particles[order.replicaStart[r]];
        replicaOriginParticle.initialize<int>(cu, numReplicas, "mlffReplicaOriginParticle");
        replicaOriginParticle.upload(origins);
        neighborScratch.initialize<int>(cu, n * neighborCapacity, "mlffNeighborScratch");
        cellsInUse = numCells;
    }
    replicaScale.initialize<double>(cu, numReplicas, "mlffReplicaScale");
    replicaScale.upload(replicaScales);
    replicaEnergy.initialize<double>(cu, numReplicas, "mlffReplicaEnergy");
    cu.clearBuffer(replicaEnergy);
    // The reduction writes the largest neighbour count straight into these pinned host ints through
    // their device address: no copy in the stream, which would delay the integrator's next kernel.
    check(cuMemHostAlloc((void**) &pinnedMaxNeighborCount, CountSlots * sizeof(int), CU_MEMHOSTALLOC_DEVICEMAP),
          "allocating pinned memory");
    std::fill(pinnedMaxNeighborCount, pinnedMaxNeighborCount + CountSlots, 0);
    check(cuMemHostGetDevicePointer(&mappedMaxNeighborCount, (void*) pinnedMaxNeighborCount, 0),
          "mapping pinned memory");
    for (CUevent& event : maxCountEvent)
        check(cuEventCreate(&event, CU_EVENT_DISABLE_TIMING), "creating an event");
}

void CudaCalcMLFFForceKernel::allocatePathArrays() {
    const int real = realSize();
    const size_t n = numAtoms, h = hidden, layers = numBlocks;
    if (useReplicaMessages) { // they find their own pairs: no neighbour search, and no count to grow the list by
        cu.clearBuffer(neighborCount);
        pairsPerReplica = maxReplicaSize * (maxReplicaSize - 1) / 2 + 1; // MLFF_REPLICA_PAIRS
        const size_t slots = (size_t) numReplicas * pairsPerReplica;
        replicaPairCount.initialize<int>(cu, numReplicas, "mlffReplicaPairCount");
        replicaPairAtoms.initialize(cu, slots, 2 * sizeof(int), "mlffReplicaPairAtoms");
        replicaPairGeometry.initialize(cu, slots, 4 * real, "mlffReplicaPairGeometry");
        if (useEdgeFilters)
            pairRowStart.initialize<int>(cu, numReplicas + 1, "mlffPairRowStart");
    }
    if (useEdgeFilters) {
        if (!useReplicaMessages) {
            edgeStart.initialize<int>(cu, n + 1, "mlffEdgeStart");
            filterStart.initialize<int>(cu, n + 1, "mlffFilterStart");
            filterCount.initialize<int>(cu, n, "mlffFilterCount");
            overflowedAtoms.initialize<int>(cu, n + 1, "mlffOverflowedAtoms");
        }
        allocateEdgeRows();
    }
    if (useTiled) {
        updateInput.initialize(cu, n * 2 * h, real, "mlffUpdateInput");
        updateHidden.initialize(cu, layers * n * h, real, "mlffUpdateHidden");
        updateActivation.initialize(cu, n * h, real, "mlffUpdateActivation");
        // Each block's gates (g1, g2) for its backward, but the last's: its output is a alone, straight
        // into stateS (mlffUpdateOutputForwardLast).
        updateOutput.initialize(cu, std::max(layers - 1, (size_t) 1) * n * 2 * h, real, "mlffUpdateOutput");
        updateGradOutput.initialize(cu, n * 3 * h, real, "mlffUpdateGradOutput");
    }
    else // the tiled path keeps each block's s' in updateInput alone (tiled.cu)
        midS.initialize(cu, layers * n * h, real, "mlffMidS");
    if (useClusters) // each block's update hidden layer, g1 and g2, for its backward
        updateKept.initialize(cu, layers * n * 3 * h, real, "mlffUpdateKept");
}

std::map<string, string> CudaCalcMLFFForceKernel::uploadFilterTable(const mlff_model& model) {
    mlff_filter_table* raw = nullptr;
    mlff_error error{};
    if (mlff_filter_table_create(&model, 0.0, &raw, &error) != MLFF_OK)
        throw OpenMMException(string("MLFFForce (CUDA): tabulating the filters: ") + error.message);
    std::unique_ptr<mlff_filter_table, void (*)(mlff_filter_table*)> table(raw, mlff_filter_table_free);
    const int blocks = mlff_filter_table_num_blocks(raw), nodes = mlff_filter_table_num_nodes(raw);
    const size_t perArray = (size_t) nodes * mlff_filter_table_num_outputs(raw);
    vector<double> values;
    values.reserve(2 * blocks * perArray);
    for (int l = 0; l < blocks; l++) { // (L, nodes, 3H, 2): each output's value and derivative side by side
        const double* y = mlff_filter_table_values(raw, l);
        const double* d = mlff_filter_table_derivatives(raw, l);
        for (size_t k = 0; k < perArray; k++) {
            values.push_back(y[k]);
            values.push_back(d[k]);
        }
    }
    filterTable.initialize(cu, values.size(), realSize(), "mlffFilterTable");
    filterTable.upload(values, true);
    if (useEdgeFilters) { // the edge rows sorted by their table interval each step (table_rows.cu)
        tableIntervalCount.initialize<int>(cu, nodes - 1, "mlffTableIntervalCount");
        cu.clearBuffer(tableIntervalCount); // zeros: each step's count leaves them so
        tableIntervalStart.initialize<int>(cu, nodes - 1, "mlffTableIntervalStart");
    }
    return {{"MLFF_TABULATED", "1"},
            {"MLFF_TABLE_NODES", std::to_string(nodes)},
            {"MLFF_TABLE_SPACING", exactDouble(mlff_filter_table_spacing(raw))},
            {"MLFF_TABLE_INV_SPACING", exactDouble(mlff_filter_table_inv_spacing(raw))}};
}

double CudaCalcMLFFForceKernel::execute(ContextImpl& context, bool includeForces, bool includeEnergy) {
    (void) includeEnergy; // the energy is always reduced: it is one small launch, and getReplicaEnergies needs it
    if (numAtoms == 0)
        return 0.0;
    ContextSelector selector(cu);
    timer->beginEvaluation(cu.getCurrentStream());
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

    if (graphs != nullptr) {
        graphs->begin();
        try {
            enqueueEvaluation(box, includeForces);
        }
        catch (...) {
            graphs->discard(); // so that later launches (the reorder listener's) are issued, not recorded
            throw;
        }
        graphs->submit(cu.getCurrentStream());
    }
    else
        enqueueEvaluation(box, includeForces);
    const int slot = (int) (numEvaluations++ % CountSlots);
    check(cuEventRecord(maxCountEvent[slot], cu.getCurrentStream()), "recording an event"); // the count is in host memory
    maxCountPending[slot] = true;
    timer->endEvaluation();
    return 0.0; // the energy went into OpenMM's energy buffer
}

void CudaCalcMLFFForceKernel::enqueueEvaluation(void** box, bool includeForces) {
    CUdeviceptr force = cu.getLongForceBuffer().getDevicePointer();
    findNeighbors(box);
    if (useReplicaMessages)
        prepareReplicaPairs(box);
    else if (useEdgeFilters)
        prepareEdgeRows(box);
    if (useTiled)
        executeTiled(box, includeForces, force);
    else
        executeFused(box, includeForces, force);
    if (!(includeForces && reduceInBackward)) { // else the first backward launch did it
        if (replicaEnergiesKernel != nullptr) { // a warp per replica, then one block sums the replicas
            void* args[] = {&atomEnergy.getDevicePointer(), &replicaStart.getDevicePointer(),
                            &replicaEnergy.getDevicePointer()};
            const unsigned int threads = 256, grid = (unsigned int) (((size_t) numReplicas * 32 + threads - 1) / threads);
            launch(replicaEnergiesKernel, args, grid, threads, "the replicas' energies");
        }
        EnergyTargets energy = energyTargets();
        void* args[] = {&atomEnergy.getDevicePointer(), &replicaStart.getDevicePointer(), &replicaScale.getDevicePointer(),
                        &lastLambda, &replicaEnergy.getDevicePointer(), &energy.buffer, &energy.paramDerivs,
                        &energy.paramDerivIndex, &neighborCount.getDevicePointer(), &maxCountTarget};
        launch(reduceKernel, args, 1, reduceThreads, "reducing the energy");
    }
}

CudaCalcMLFFForceKernel::EnergyTargets CudaCalcMLFFForceKernel::energyTargets() {
    EnergyTargets energy;
    energy.buffer = cu.getEnergyBuffer().getDevicePointer();
    if (!energyScaleParameter.empty()) {
        const vector<string>& names = cu.getEnergyParamDerivNames();
        energy.paramDerivIndex = (int) (std::find(names.begin(), names.end(), energyScaleParameter) - names.begin());
        energy.paramDerivs = cu.getEnergyParamDerivBuffer().getDevicePointer();
    }
    return energy;
}

void CudaCalcMLFFForceKernel::updateSortedIndex() {
    if (numAtoms == 0)
        return;
    CUdeviceptr atomIndex = cu.getAtomIndexArray().getDevicePointer();
    int total = cu.getNumAtoms();
    void* args[] = {&atomIndex, &sortedIndexOfParticle.getDevicePointer(), &total};
    launch(invertKernel, args, (unsigned int) ((total + 127) / 128), 128, "inverting the atom index");
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
    if (force.getNumParticles() != numAtoms)
        throw OpenMMException("MLFFForce: updateParametersInContext cannot change the number of particles (reinitialize the Context)");
    for (int i = 0; i < numAtoms; i++) {
        int particle, atomicNumber, replica;
        force.getParticleParameters(i, particle, atomicNumber, replica);
        if (particle != initialParticles[i].particle || atomicNumber != initialParticles[i].atomicNumber ||
            replica != initialParticles[i].replica)
            throw OpenMMException("MLFFForce: updateParametersInContext cannot change ML particle " + std::to_string(i) +
                                  " (reinitialize the Context)");
    }
    if (force.getUseTabulatedFilters() != filterTable.isInitialized())
        throw OpenMMException("MLFFForce: updateParametersInContext cannot change whether filters are tabulated (reinitialize the Context)");
    if (force.getEnergyScaleParameter() != energyScaleParameter)
        throw OpenMMException("MLFFForce: updateParametersInContext cannot change the energy scale parameter (reinitialize the Context)");
    for (int r = 0; r < numReplicas; r++)
        replicaScales[r] = force.getReplicaScale(r);
    if (numAtoms == 0)
        return;
    ContextSelector selector(cu);
    replicaScale.upload(replicaScales);
}
