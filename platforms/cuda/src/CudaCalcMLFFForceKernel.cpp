#include "CudaCalcMLFFForceKernel.h"

#include "CudaMLFFKernelSources.h"
#include "ProductShapes.h"
#include "internal/MLFFCoreModel.h"
#include "internal/MLFFUnits.h"
#include "student_painn/StudentPainnParameters.h"

#include "openmm/OpenMMException.h"
#include "openmm/common/ComputeForceInfo.h"
#include "openmm/common/ContextSelector.h"
#include "openmm/internal/ContextImpl.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <map>
#include <memory>
#include <numeric>

using namespace MLFFPlugin;
using namespace MLFFPlugin::ProductShapes;
using namespace OpenMM;
using std::string;
using std::vector;

namespace {

// Edges filtered together in one pass over the filter weights: more amortises each weight load,
// fewer keeps shared memory (which scales with it) within the static 48 KB in double precision.
// 16 rather than 8 in float: one benzene 316 -> 219 us a force evaluation, a 12,000-atom droplet
// the same (H200, H=128).
constexpr int EdgeBatchSingle = 16;
constexpr int EdgeBatchDouble = 4;
// Tabulated filters load no weights, so a batch shares only barriers: with many atoms, small
// batches need fewer registers and leave room for more blocks (4 rather than 16: 1,024 benzenes
// 3.3 -> 2.8 ms, a 12,000-atom droplet 6.3 -> 5.1 ms, 768 atoms 430 -> 360 us); with few, the
// fewer rounds of a large batch win (one benzene 140 us with 16, 200 with 4). H200, H=128.
constexpr int EdgeBatchTabulatedSmall = 16;
constexpr int EdgeBatchTabulatedLarge = 4;
constexpr int TabulatedLargeAtoms = 256;
constexpr int NeighborThreads = 128; // 4 warps, one atom each
// The energy reduction (neighbors.cu): with many replicas a warp per replica across the GPU
// (mlffReplicaEnergies), then a block sums the replicas; with few, the block sums each replica in
// turn. Its reductions are warp shuffles and two barriers, whatever its size, so it takes the
// largest: 256 threads took 17 us for the 12,000-atom droplet's atoms, each loading 47; 1,024 take 10.
constexpr int ReduceByWarpMinReplicas = 32;
constexpr int ReduceThreads = 1024;
constexpr int DefaultNeighborCapacity = 64;
// The tiled path's readout (tiled.cu): each weight load serves up to this many atoms, as many as
// its static shared memory (A x 2.5H reals) allows. H200, H = 128, float, 1,024 benzenes, the
// readout's us an evaluation: 8 atoms 71, 16 atoms 48, 32 atoms 35.
constexpr int ReadoutMaxAtomsPerBlock = 32;
constexpr size_t StaticSharedBytes = 48 * 1024;
constexpr int CellListMinAtoms = 256;  // replicas this large use the cell list (cell_list.cu)
// Systems with this many ML atoms use the tiled path (tiled.cu), whose matrix products read each
// weight once per 128 rows; below it the fused path's fewer launches win. Measured (H200, H=128,
// step us, commit c6e76d8): with tabulated filters the fused path is faster at 768 atoms (64
// benzenes 282 against 367, a droplet 577 against 659), the tiled one at 3,072 (589 against 985).
// With exact filters the tiled path runs them as products over pairs (edge_filters.cu), faster
// from 768 atoms (64 benzenes 612 against 682, a droplet 1,037 against 1,745) but not at 192
// (265 against 533) or a 96-atom droplet (446 against 616). Since tabulated filters also take the
// edge rows (table_rows.cu), a 768-atom droplet is faster tiled than fused (541 against 581, H200);
// 64 benzenes were not measured again, so the threshold stays.
constexpr int TiledMinAtoms = 1024;
constexpr int EdgeFiltersMinAtoms = 768;
// Replicas this small, on the tiled path with tabulated filters or edge filters, take a thread
// block each for their messages (replica_messages.cu), so that each pair's table reads or filter
// row serve both its edges. Bounded by the pair list's static shared memory, and by the features'
// dynamic shared memory (three (A, 4, H) arrays in the backward pass) so that two blocks fit an
// SM's 228 KB. Only with at least a replica per SM (unless MLFF_CUDA_KERNELS=tiled, tabulated, or
// edges, exact), since each block walks its pairs in turn: H200, H=128, tabulated, step us against
// a block per atom: 1,024 benzenes 1,245 against 1,539, 256 benzenes 542 against 579, but 64
// benzenes 426 against 342 (with 16 pairs a batch forward; between 64 and 256 not measured).
constexpr int ReplicaMessagesMaxAtoms = 32;
constexpr size_t ReplicaMessagesMaxSharedBytes = 112 * 1024;
constexpr int PairFinderReplicas = 4; // mlffFindReplicaPairs' warps (replicas) a block, MLFF_PAIR_FINDERS
constexpr int EdgeThreads = 128; // edge_filters.cu's and row_messages.cu's warp-per-atom and thread-per-pair kernels
// Edges whose rows each warp of the messages' backward from rows stages in shared memory at once
// (MLFF_ROW_STAGES, row_messages.cu): the one it works on and those whose copies are in flight.
constexpr int RowStages = 2;
// The rows of H reals each of those edges stages, MLFF_STAGE_ROWS (the kernel checks it): its filter
// row (3), j's gradients (4) and inputs (4).
constexpr int RowStageRows = 11;
// Blocks per atom on the fused path with clusters (cluster.cu): the portable limit of a cluster.
// Clusters pay while every atom's blocks run at once, about two blocks an SM: measured (H100,
// H=128, exact filters, step us, fused against clusters) faster for 12 and 24 atoms (200 against
// 115, 201 against 132), even at 48 (205 against 204; tabulated 123 against 104), slower from 96
// (208 against 312; 192 atoms 268 against 624).
constexpr int MaxClusterSize = 8;
constexpr int ClusterMaxBlocksPerSM = 2;
// The matrix products' blocks, grids and shared memory are ProductShapes.h's. The filters'
// backward warp-group product's columns a block (MLFF_WARPGROUP_BACKWARD_COLUMNS): 64, so that its 3H
// inputs' tile and the side product's (K) fit a block's shared memory at H = 128 (208 KB).
constexpr int WarpgroupBackwardColumns = 64;
// The update's products' columns a block (MLFF_WARPGROUP_UPDATE_COLUMNS): 64, so that its widest
// input (3H) fits at H = 128 (192 KB), and so that its few rows spread over more SMs.
constexpr int WarpgroupUpdateColumns = 64;
// The update's products over atoms are warp-group products only from this many atoms: below, they
// lose (presumably since each block loads its whole column tile of weights, up to 192 KB, for a
// few row tiles). Measured (H200, H = 128, step us, the update's products on wgmma
// against mma.sync, every other product alike): 64 benzenes (768 atoms) exact 443 against 415;
// 256 benzenes (3,072) exact 618 against 654, tabulated 367 against 368; a 3,000-atom droplet,
// exact, 1,894 and 1,967 against 1,894 and 1,909. Between 768 and 3,000 atoms not measured.
constexpr int WarpgroupUpdateMinAtoms = 2048;
constexpr int TableRowThreads = 256; // table_rows.cu's blocks: a warp a filter row
constexpr int ScanThreads = 1024;      // MLFF_SCAN_THREADS in scan.cu
// Cells are this much wider than the cutoff, so that rounding in a cell's bounds can never put
// the two atoms of an edge two cells apart.
constexpr double CellMargin = 1.0001;

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
    if (pinnedMaxNeighborCount != nullptr || maxCountEvent[0] != nullptr || timer != nullptr) {
        ContextSelector selector(cu);
        timer.reset();
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
    midS.initialize(cu, layers * n * h, real, "mlffMidS");
    midV.initialize(cu, layers * n * 3 * h, real, "mlffMidV");
    atomEnergy.initialize(cu, n, real, "mlffAtomEnergy");
    for (int k = 0; k < 2; k++) {
        gradS[k].initialize(cu, n * h, real, "mlffGradS");
        gradV[k].initialize(cu, n * 3 * h, real, "mlffGradV");
    }
    useCellList = maxReplicaSize >= CellListMinAtoms;
    if (useCellList) {
        if (periodic)
            numCells = std::max((int) n, 27 * numReplicas); // setBox coarsens the grid to fit
        else
            for (numCells = 1; numCells < 2 * (int) n; numCells *= 2) // hash buckets: a power of two
                ;
        cellCount.initialize<int>(cu, numCells, "mlffCellCount");
        cellStart.initialize<int>(cu, numCells, "mlffCellStart");
        cellAtoms.initialize<int>(cu, n, "mlffCellAtoms");
        cellOfAtom.initialize<int>(cu, n, "mlffCellOfAtom");
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
        // Not the last block's: its output is a alone, straight into stateS (mlffUpdateOutputForwardLast).
        updateOutput.initialize(cu, std::max(layers - 1, (size_t) 1) * n * 3 * h, real, "mlffUpdateOutput");
        updateGradOutput.initialize(cu, n * 3 * h, real, "mlffUpdateGradOutput");
    }
    if (useClusters) // each block's update hidden layer, g1 and g2, for its backward
        updateKept.initialize(cu, layers * n * 3 * h, real, "mlffUpdateKept");
}

void CudaCalcMLFFForceKernel::chooseBlockShapes(bool tabulated) {
    const bool useDouble = cu.getUseDoublePrecision();
    edgeBatch = useDouble ? EdgeBatchDouble : EdgeBatchSingle;
    if (!useDouble && tabulated)
        edgeBatch = numAtoms >= TabulatedLargeAtoms ? EdgeBatchTabulatedLarge : EdgeBatchTabulatedSmall;
    threadsPerAtom = std::max({hidden, numRbf, 4 * edgeBatch});
    threadsPerAtom = (threadsPerAtom + 31) / 32 * 32;
    if (useClusters) {
        clusterSize = clusterSizeFor(threadsPerAtom);
        const bool small = numAtoms * clusterSize <= ClusterMaxBlocksPerSM * multiprocessors;
        useClusters = clusterSize > 1 && (clusterPathRequested() || small);
        if (clusterSize == 1 && clusterPathRequested())
            throw OpenMMException("MLFFForce (CUDA): MLFF_CUDA_KERNELS is 'cluster', but the cluster kernels need "
                                  "compute capability 9.0 and an H that splits into blocks of whole fours of "
                                  "channels (this GPU: " + std::to_string(cu.getComputeCapability()) +
                                  ", H = " + std::to_string(hidden) + ")");
    }
    if (useClusters) {
        // The first forward launch finds the neighbours (a replica this small is scanned whole).
        clusterFindsNeighbors = !useCellList;
        // The filters' partial sums, (G, 3, S, batch) with G S = threadsPerAtom (cluster.cu).
        clusterSharedBytes = tabulated ? 0 : (unsigned int) (threadsPerAtom * 3 * edgeBatch * realSize());
    }
    readoutAtomsPerBlock = ReadoutMaxAtomsPerBlock; // a multiple of 4 (tiled.cu's atom groups)
    while (readoutAtomsPerBlock > 4 && (size_t) readoutAtomsPerBlock * 5 * hidden / 2 * realSize() > StaticSharedBytes)
        readoutAtomsPerBlock /= 2;
    matmulTensorCores = !useDouble && cu.getComputeCapability() >= 8.0;
    reduceThreads = ReduceThreads;
    // With clusters the first backward launch does the reduction in an extra cluster, in a block
    // of threadsPerAtom: its standalone launch (energy only) then sums in the same order.
    reduceInBackward = useClusters && numReplicas < ReduceByWarpMinReplicas;
    if (reduceInBackward)
        for (reduceThreads = 32; 2 * reduceThreads <= threadsPerAtom;)
            reduceThreads *= 2;
    dependentLaunches = cu.getComputeCapability() >= 9.0;
}

int CudaCalcMLFFForceKernel::basisInputs() const {
    return (numRbf + 15) / 16 * 16;
}

int CudaCalcMLFFForceKernel::warpgroupBackwardInputs() const {
    return 3 * hidden + basisInputs(); // W2's, and W0^T's of the side product
}

void CudaCalcMLFFForceKernel::chooseWarpgroupProducts() {
    // The tiled path's products as warp-group products where the GPU has them (wgmma: sm_90
    // exactly, in a module built for sm_90a) and their column tiles fit a block's shared memory:
    // the filters' forward ones (the hidden layer and the output) and their backward, and the
    // update's, given enough atoms (or MLFF_CUDA_PRODUCTS=warpgroup).
    warpgroupForwardColumns = hidden % 128 == 0 ? 128 : 64;
    const string products = requestedProducts();
    if (!products.empty() && products != "mma" && products != "warpgroup")
        throw OpenMMException("MLFFForce (CUDA): MLFF_CUDA_PRODUCTS is '" + products + "'; expected 'mma' or 'warpgroup'");
    int sharedPerBlock = 0;
    check(cuDeviceGetAttribute(&sharedPerBlock, CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN, cu.getDevice()),
          "querying the shared memory a block may have");
    const auto fits = [&](unsigned int bytes) { return bytes <= (unsigned int) sharedPerBlock; };
    const bool warpgroups = useTiled && matmulTensorCores && cu.getComputeCapability() == 9.0 && products != "mma";
    const bool filterProducts = useEdgeFilters && !tabulatedFilters; // edge_filters.cu's (a table has none)
    warpgroupFilterForward = warpgroups && filterProducts &&
                             fits(warpgroupSharedBytes(std::max(hidden, basisInputs()), warpgroupForwardColumns));
    warpgroupFilterBackward = warpgroups && filterProducts &&
                              fits(warpgroupSharedBytes(warpgroupBackwardInputs(), WarpgroupBackwardColumns, true));
    int widestUpdate = 0; // the update product with the most inputs (its kernels are not loaded yet: unused here)
    for (const UpdateProduct& product : updateProducts())
        widestUpdate = std::max(widestUpdate, product.inputs);
    const bool manyAtoms = products == "warpgroup" || numAtoms >= WarpgroupUpdateMinAtoms;
    warpgroupUpdate = warpgroups && manyAtoms && fits(warpgroupSharedBytes(widestUpdate, WarpgroupUpdateColumns));
    if (products == "warpgroup" && useTiled && !(warpgroupUpdate && (warpgroupFilterForward || !filterProducts)))
        throw OpenMMException("MLFFForce (CUDA): MLFF_CUDA_PRODUCTS is 'warpgroup', but warp-group products need "
                              "compute capability 9.0 exactly, float, and shared memory for " +
                              std::to_string(widestUpdate) + " x " + std::to_string(WarpgroupUpdateColumns) +
                              " weights in two parts (this GPU: " +
                              std::to_string(cu.getComputeCapability()) + ", H = " + std::to_string(hidden) + ")");
}

void CudaCalcMLFFForceKernel::addKernelDefines(std::map<string, string>& defines) const {
    defines["MLFF_BLOCK"] = std::to_string(threadsPerAtom);
    defines["MLFF_EDGE_BATCH"] = std::to_string(edgeBatch);
    defines["MLFF_NUM_ATOMS"] = std::to_string(numAtoms);
    defines["MLFF_NUM_REPLICAS"] = std::to_string(numReplicas);
    defines["MLFF_PADDED_NUM_ATOMS"] = std::to_string(cu.getPaddedNumAtoms());
    defines["MLFF_CUTOFF_SQUARED"] = exactDouble(cutoff * cutoff);
    defines["MLFF_KJ_PER_MOL_PER_EV"] = exactDouble(MLFFUnits::KJPerMolPerEV);
    defines["MLFF_NUM_CELLS"] = std::to_string(std::max(numCells, 1));
    defines["MLFF_CELL_SIZE"] = exactDouble(cutoff * CellMargin);
    if (periodic)
        defines["MLFF_PERIODIC"] = "1";
    defines["MLFF_ROW_STAGES"] = std::to_string(RowStages);
    defines["MLFF_STAGE_ROWS"] = std::to_string(RowStageRows);
    if (useReplicaMessages)
        defines["MLFF_REPLICA_ATOMS"] = std::to_string(maxReplicaSize);
    defines["MLFF_READOUT_ATOMS"] = std::to_string(readoutAtomsPerBlock);
    if (matmulTensorCores)
        defines["MLFF_MATMUL_TENSOR_CORES"] = "1";
    if (warpgroupProducts())
        defines["MLFF_WARPGROUPS"] = std::to_string(Warpgroups);
    if (warpgroupFilterForward) {
        defines["MLFF_WARPGROUP_FILTER_FORWARD"] = "1";
        defines["MLFF_WARPGROUP_FORWARD_COLUMNS"] = std::to_string(warpgroupForwardColumns);
    }
    if (warpgroupFilterBackward) {
        defines["MLFF_WARPGROUP_FILTER_BACKWARD"] = "1";
        defines["MLFF_WARPGROUP_BACKWARD_COLUMNS"] = std::to_string(WarpgroupBackwardColumns);
    }
    if (warpgroupUpdate) {
        defines["MLFF_WARPGROUP_UPDATE"] = "1";
        defines["MLFF_WARPGROUP_UPDATE_COLUMNS"] = std::to_string(WarpgroupUpdateColumns);
    }
    if (numReplicas >= ReduceByWarpMinReplicas)
        defines["MLFF_REDUCE_BY_WARP"] = "1";
    defines["MLFF_REDUCE_THREADS"] = std::to_string(reduceThreads);
    if (useClusters) {
        defines["MLFF_CLUSTER"] = std::to_string(clusterSize);
        defines["MLFF_CLUSTER_FINDS_NEIGHBORS"] = clusterFindsNeighbors ? "1" : "0";
    }
}

string CudaCalcMLFFForceKernel::kernelSource() const {
    string source = CudaMLFFKernelSources::dependent_launch + CudaMLFFKernelSources::async_copy +
                    CudaMLFFKernelSources::geometry + CudaMLFFKernelSources::neighbors + CudaMLFFKernelSources::scan +
                    CudaMLFFKernelSources::cell_list + CudaMLFFKernelSources::student_painn_layers +
                    CudaMLFFKernelSources::student_painn_forward + CudaMLFFKernelSources::student_painn_backward;
    if (useClusters) // only then: clusters need sm_90
        source += CudaMLFFKernelSources::student_painn_cluster;
    if (useTiled) // only then: its tiles need H to be a multiple of 64
        source += CudaMLFFKernelSources::matmul +
                  (warpgroupProducts() ? CudaMLFFKernelSources::warpgroup_matmul : "") +
                  CudaMLFFKernelSources::student_painn_tiled +
                  CudaMLFFKernelSources::student_painn_edge_filters +
                  CudaMLFFKernelSources::student_painn_table_rows +
                  CudaMLFFKernelSources::student_painn_row_messages +
                  CudaMLFFKernelSources::student_painn_replica_messages;
    return source;
}

void CudaCalcMLFFForceKernel::loadKernels() {
    invertKernel = cu.getKernel(module, "mlffInvertAtomIndex");
    neighborKernel = cu.getKernel(module, "mlffFindNeighborsInReplica");
    forwardKernel = cu.getKernel(module, useClusters ? "mlffStudentForwardCluster" : "mlffStudentForward");
    backwardKernel = cu.getKernel(module, useClusters ? "mlffStudentBackwardCluster" : "mlffStudentBackward");
    reduceKernel = cu.getKernel(module, "mlffReduceEnergies");
    if (numReplicas >= ReduceByWarpMinReplicas)
        replicaEnergiesKernel = cu.getKernel(module, "mlffReplicaEnergies");
    if (useTiled) {
        loadMessageKernels();
        hiddenForwardKernel = cu.getKernel(module, "mlffUpdateHiddenForward");
        outputForwardKernel = cu.getKernel(module, "mlffUpdateOutputForward");
        lastOutputForwardKernel = cu.getKernel(module, "mlffUpdateOutputForwardLast");
        readoutKernel = cu.getKernel(module, "mlffReadoutTiled");
        hiddenBackwardKernel = cu.getKernel(module, "mlffUpdateHiddenBackward");
        lastHiddenBackwardKernel = cu.getKernel(module, "mlffUpdateHiddenBackwardLast");
        inputBackwardKernel = cu.getKernel(module, "mlffUpdateInputBackward");
    }
    if (warpgroupProducts())
        prepareWarpgroupTilesKernel = cu.getKernel(module, "mlffPrepareWarpgroupTiles");
    if (useReplicaMessages) {
        findReplicaPairsKernel = cu.getKernel(module, "mlffFindReplicaPairs");
        if (useEdgeFilters) {
            scanReplicaPairsKernel = cu.getKernel(module, "mlffScanReplicaPairs");
            linkReplicaPairRowsKernel = cu.getKernel(module, "mlffLinkReplicaPairRows");
        }
    }
    if (useEdgeFilters && tabulatedFilters) { // the table's filters into the rows, and dE/dd from them
        edgeFilterKernel = cu.getKernel(module, "mlffTableFilterRows");
        pairGradientKernel = cu.getKernel(module, "mlffTableFilterBackward");
        countTableIntervalsKernel = cu.getKernel(module, "mlffCountTableIntervals");
        scanTableIntervalsKernel = cu.getKernel(module, "mlffScanTableIntervals");
        sortTableRowsKernel = cu.getKernel(module, "mlffSortTableRows");
    }
    else if (useEdgeFilters) {
        edgeHiddenKernel = cu.getKernel(module, "mlffEdgeFilterHidden");
        edgeFilterKernel = cu.getKernel(module, "mlffEdgeFilterOutput");
        // On sm_90 the filters' backward goes on to each pair's dE/dd, in parts that the second sums.
        filterBackwardKernel = cu.getKernel(module, warpgroupFilterBackward ? "mlffEdgeFilterBackwardToDistance"
                                                                           : "mlffEdgeFilterHiddenBackward");
        pairGradientKernel =
                cu.getKernel(module, warpgroupFilterBackward ? "mlffAddPairGradientParts" : "mlffEdgeBasisBackward");
    }
    if (useEdgeFilters && !useReplicaMessages) { // the list's edges and rows; the replicas link their own
        scanEdgesKernel = cu.getKernel(module, "mlffScanEdges");
        gatherEdgesKernel = cu.getKernel(module, "mlffGatherEdges");
        scanFilterRowsKernel = cu.getKernel(module, "mlffScanFilterRows");
        linkFilterRowsKernel = cu.getKernel(module, "mlffLinkFilterRows");
        messagesForwardRowsKernel = cu.getKernel(module, "mlffMessagesForwardRows");
        messagesBackwardRowsKernel = cu.getKernel(module, "mlffMessagesBackwardRows");
    }
    if (useCellList) {
        assignCellsKernel = cu.getKernel(module, "mlffAssignCells");
        scanCellsKernel = cu.getKernel(module, "mlffScanCells");
        fillCellsKernel = cu.getKernel(module, "mlffFillCells");
        cellNeighborKernel = cu.getKernel(module, "mlffFindNeighborsInCells");
    }
}

void CudaCalcMLFFForceKernel::loadMessageKernels() {
    // A block per replica, or per atom; with edge rows, only for the atoms without (tiled.cu).
    const std::string atoms = useReplicaMessages ? "Replicas" : useEdgeFilters ? "Overflowed" : "Tiled";
    messagesForwardKernel = cu.getKernel(module, "mlffMessagesForward" + atoms);
    messagesBackwardKernel = cu.getKernel(module, "mlffMessagesBackward" + atoms);
}

void CudaCalcMLFFForceKernel::allowSharedMemory() {
    if (useClusters) // with the static, above the default 48 KB in float
        for (CUfunction kernel : {forwardKernel, backwardKernel})
            check(cuFuncSetAttribute(kernel, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, (int) clusterSharedBytes),
                  "allowing the cluster kernels their shared memory");
    if (matmulTensorCores) // their tiles' shared memory is dynamic and above the default 48 KB
        for (CUfunction kernel : {hiddenForwardKernel, outputForwardKernel, lastOutputForwardKernel, hiddenBackwardKernel,
                                  lastHiddenBackwardKernel, inputBackwardKernel, edgeHiddenKernel, edgeFilterKernel,
                                  filterBackwardKernel, pairGradientKernel})
            if (kernel != nullptr)
                check(cuFuncSetAttribute(kernel, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                         (int) matmulSharedBytes(MatmulMaxRowsTensorCores, MatmulMaxColumns)),
                      "allowing the matrix products their shared memory");
    // After the loop above, which set the mma.sync tiles' size:
    if (warpgroupFilterForward) {
        check(cuFuncSetAttribute(edgeHiddenKernel, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                 (int) warpgroupSharedBytes(basisInputs(), warpgroupForwardColumns)),
              "allowing the filters' hidden product its shared memory");
        check(cuFuncSetAttribute(edgeFilterKernel, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                 (int) warpgroupSharedBytes(hidden, warpgroupForwardColumns)),
              "allowing the filters' output product its shared memory");
    }
    if (warpgroupFilterBackward)
        check(cuFuncSetAttribute(filterBackwardKernel, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                 (int) warpgroupSharedBytes(warpgroupBackwardInputs(), WarpgroupBackwardColumns, true)),
              "allowing the filters' backward product its shared memory");
    if (warpgroupUpdate)
        for (const UpdateProduct& product : updateProducts())
            check(cuFuncSetAttribute(product.kernel, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                     (int) warpgroupSharedBytes(product.inputs, WarpgroupUpdateColumns)),
                  "allowing the update's products their shared memory");
    if (messagesBackwardRowsKernel != nullptr)
        check(cuFuncSetAttribute(messagesBackwardRowsKernel, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                 (int) rowStagesBytes()),
              "allowing the messages' backward from rows its shared memory");
    if (useReplicaMessages) { // above the default 48 KB in float from 8 atoms of H = 128
        check(cuFuncSetAttribute(messagesForwardKernel, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                 (int) (2 * replicaRowsBytes)),
              "allowing the replicas' messages their shared memory");
        check(cuFuncSetAttribute(messagesBackwardKernel, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                 (int) (3 * replicaRowsBytes)),
              "allowing the replicas' messages' backward its shared memory");
    }
}

void CudaCalcMLFFForceKernel::prepareWarpgroupImages(const std::map<string, string>& layoutDefines) {
    if (!warpgroupProducts())
        return;
    // Each product's B, and where it has one its side product's F and c (offsets in a block of params).
    struct Product {
        CUfunction kernel;
        const char* b;
        int inputs, outputs, columns;
        const char *f, *c;
        int sideInputs;
    };
    vector<Product> products;
    const int h = hidden;
    if (warpgroupFilterForward) {
        products.push_back({edgeHiddenKernel, "MLFF_B_FILTER_W0T", numRbf, h, warpgroupForwardColumns, nullptr, nullptr, 0});
        products.push_back({edgeFilterKernel, "MLFF_B_FILTER_W2T", h, 3 * h, warpgroupForwardColumns, nullptr, nullptr, 0});
    }
    if (warpgroupFilterBackward)
        products.push_back({filterBackwardKernel, "MLFF_B_FILTER_W2", 3 * h, h, WarpgroupBackwardColumns,
                            "MLFF_B_FILTER_W0T", "MLFF_B_FILTER_B0", numRbf});
    if (warpgroupUpdate)
        for (const UpdateProduct& product : updateProducts())
            products.push_back({product.kernel, product.weights, product.inputs, product.outputs,
                                WarpgroupUpdateColumns, nullptr, nullptr, 0});
    const auto offsetOf = [&](const char* define) { return (size_t) std::stoll(layoutDefines.at(define)); };
    const auto padded = [](int inputs) { return (inputs + 15) / 16 * 16; };
    const auto imageBytes = [&](const Product& p) { // a block's: one image a column tile
        return (size_t) (p.outputs / p.columns) *
               warpgroupSharedBytes(padded(p.inputs) + padded(p.sideInputs), p.columns, p.sideInputs > 0);
    };
    size_t bytes = 0;
    for (const Product& product : products) {
        warpgroupImageOffset[product.kernel] = bytes;
        bytes += numBlocks * imageBytes(product);
    }
    warpgroupImages.initialize(cu, bytes / sizeof(unsigned int), sizeof(unsigned int), "mlffWarpgroupImages");
    const size_t blocks = offsetOf("MLFF_P_BLOCKS"), blockStride = offsetOf("MLFF_P_BLOCK_STRIDE");
    for (Product& product : products)
        for (int layer = 0; layer < numBlocks; layer++) {
            const auto weights = [&](const char* define) -> CUdeviceptr {
                return define == nullptr ? 0
                                       : params.getDevicePointer() +
                                                 (blocks + layer * blockStride + offsetOf(define)) * realSize();
            };
            CUdeviceptr b = weights(product.b), f = weights(product.f), c = weights(product.c);
            CUdeviceptr image = warpgroupImagesOf(product.kernel) + layer * imageBytes(product);
            void* args[] = {&b, &product.inputs, &product.outputs, &product.columns, &f, &product.sideInputs, &c, &image};
            launch(prepareWarpgroupTilesKernel, args, (unsigned int) (product.outputs / product.columns), 256,
                   "splitting the warp-group products' weights (once)");
        }
}

CUdeviceptr CudaCalcMLFFForceKernel::warpgroupImagesOf(CUfunction kernel) {
    const auto found = warpgroupImageOffset.find(kernel);
    return found == warpgroupImageOffset.end() ? 0 : warpgroupImages.getDevicePointer() + found->second;
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

void CudaCalcMLFFForceKernel::chooseKernelPath(bool tabulated) {
    const bool tilesFit = hidden % 64 == 0; // matmul.cu's tiles: 64 columns (H outputs) or 96 (3H)
    // A developer's override, for benchmarks and tests: "fused" (a block per atom); "cluster" (a
    // cluster of blocks per atom); "tiled" (filters per atom); or "edges" (tiled, with edge rows:
    // exact filters as products over pairs, tabulated ones read into the rows once a pair). The
    // last two apply wherever the tiles fit.
    const string path = requestedKernelPath();
    if (path.empty())
        useTiled = tilesFit && numAtoms >= (tabulated ? TiledMinAtoms : EdgeFiltersMinAtoms);
    else if (path == "fused" || path == "cluster" || path == "tiled" || path == "edges")
        useTiled = tilesFit && (path == "tiled" || path == "edges");
    else
        throw OpenMMException("MLFFForce (CUDA): MLFF_CUDA_KERNELS is '" + path +
                              "'; expected 'fused', 'cluster', 'tiled' or 'edges'");
    // Clusters where the GPU has them and the system is small (initialize decides, once the
    // block's size is known).
    useClusters = !useTiled && (path.empty() || path == "cluster");
    // Edge rows: exact filters as products over pairs, whose basis' backward product keeps each
    // pair's dE/de in one tile (edge_filters.cu): K <= 96; or tabulated filters read once a pair
    // into them (table_rows.cu), whose messages from rows were faster than the tiled kernels' own
    // table reads at every size measured (H200, H=128, step us: water droplets of 768, 3,000 and
    // 12,000 atoms 541, 1,232 and 4,010 against 581 (fused), 1,248 and 4,463; periodic water boxes
    // of 3,000 and 24,000 atoms 1,398 and 9,604 against 1,542 and 9,778).
    useEdgeFilters = useTiled && path != "tiled" && (tabulated || kPadded <= MatmulMaxColumns);
    if (useEdgeFilters && path.empty()) {
        // The rows keep every block's filters (L x 3H reals a pair): only where they fit well.
        size_t freeBytes = 0, totalBytes = 0;
        check(cuMemGetInfo(&freeBytes, &totalBytes), "querying the free memory");
        const size_t rowsBytes = edgeRowBytes((size_t) numAtoms * 2 * neighborCapacity);
        useEdgeFilters = rowsBytes <= std::min(freeBytes / 2, edgeRowsMaxBytes);
        useTiled = useEdgeFilters || numAtoms >= TiledMinAtoms; // without them, the tiled path's own threshold
    }
    replicaRowsBytes = (size_t) maxReplicaSize * 4 * hidden * realSize();
    useReplicaMessages = useTiled && (tabulated || useEdgeFilters) && maxReplicaSize <= ReplicaMessagesMaxAtoms &&
                         3 * replicaRowsBytes <= ReplicaMessagesMaxSharedBytes &&
                         (path == (tabulated ? "tiled" : "edges") || numReplicas >= multiprocessors);
    if (tabulated && useReplicaMessages) // a block per replica reads the table itself
        useEdgeFilters = false;
}

string CudaCalcMLFFForceKernel::requestedKernelPath() {
    const char* choice = std::getenv("MLFF_CUDA_KERNELS");
    return choice == nullptr ? "" : choice;
}

string CudaCalcMLFFForceKernel::requestedProducts() {
    const char* choice = std::getenv("MLFF_CUDA_PRODUCTS");
    return choice == nullptr ? "" : choice;
}

size_t CudaCalcMLFFForceKernel::requestedEdgeRowsMaxBytes() {
    const char* limit = std::getenv("MLFF_CUDA_EDGE_ROWS_MAX_BYTES");
    if (limit == nullptr)
        return std::numeric_limits<size_t>::max();
    char* end = nullptr;
    errno = 0;
    const unsigned long long bytes = std::strtoull(limit, &end, 10);
    if (end == limit || *end != '\0' || !std::isdigit((unsigned char) limit[0]) || errno != 0)
        throw OpenMMException(string("MLFFForce (CUDA): MLFF_CUDA_EDGE_ROWS_MAX_BYTES is '") + limit +
                              "'; expected a number of bytes");
    return (size_t) bytes;
}

bool CudaCalcMLFFForceKernel::clusterPathRequested() {
    return requestedKernelPath() == "cluster";
}

int CudaCalcMLFFForceKernel::numMultiprocessors() const {
    int count = 0;
    check(cuDeviceGetAttribute(&count, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, cu.getDevice()),
          "querying the number of multiprocessors");
    return count;
}

int CudaCalcMLFFForceKernel::clusterSizeFor(int threads) const {
    // Clusters need sm_90. cluster.cu gives each block of an atom's cluster a slice of whole fours
    // of channels (its weights are read four inputs to a load), and its threads cover the slice's
    // (channel, group) pairs exactly and (channel, s or v component) pairs at least.
    if (cu.getComputeCapability() < 9.0)
        return 1;
    for (int size = MaxClusterSize; size > 1; size--) {
        const int slice = hidden / size;
        if (hidden % size == 0 && slice % 4 == 0 && threads % slice == 0 && 4 * slice <= threads)
            return size;
    }
    return 1;
}

std::vector<CudaCalcMLFFForceKernel::RowArray> CudaCalcMLFFForceKernel::edgeRowArrays() {
    const int real = realSize(), intSize = sizeof(int);
    const size_t h = hidden, k = numRbf, layers = numBlocks;
    std::vector<RowArray> arrays = {{&edgeAtoms, 1, 2 * intSize, "mlffEdgeAtoms"},
                                    {&edgeDelta, 1, 4 * real, "mlffEdgeDelta"},
                                    {&edgeOwnedRank, 1, intSize, "mlffEdgeOwnedRank"},
                                    {&edgePartner, 1, intSize, "mlffEdgePartner"},
                                    {&edgeFilterRow, 1, intSize, "mlffEdgeFilterRow"},
                                    {&edgeGradN, 1, 4 * real, "mlffEdgeGradN"},
                                    {&filterEdges, 1, 2 * intSize, "mlffFilterEdges"},
                                    {&edgeGradFilter, 3 * h, real, "mlffEdgeGradFilter"},
                                    {&edgeFilter, layers * 3 * h, real, "mlffEdgeFilter"}};
    if (tabulatedFilters) { // the rows by table interval (table_rows.cu)
        arrays.push_back({&tableRowInterval, 1, 2 * intSize, "mlffTableRowInterval"});
        arrays.push_back({&sortedTableRows, 1, intSize, "mlffSortedTableRows"});
        return arrays;
    }
    // The filter network's: the basis, the hidden layer, and dE/dd's parts of every block, a column
    // tile of the filters' warp-group backward each (H a multiple of 64 there).
    arrays.push_back({&edgeBasis, k, real, "mlffEdgeBasis"});
    arrays.push_back({&edgeHidden, h, real, "mlffEdgeHidden"});
    arrays.push_back({&pairGradDistance, layers * std::max<size_t>(1, h / WarpgroupBackwardColumns), real,
                      "mlffPairGradDistance"});
    return arrays;
}

size_t CudaCalcMLFFForceKernel::edgeRowBytes(size_t rows) {
    size_t perRow = 0;
    for (const RowArray& row : edgeRowArrays())
        perRow += row.perRow * row.elementSize;
    return perRow * rows;
}

size_t CudaCalcMLFFForceKernel::edgeRowsBound() const {
    // Every listed edge and every pair: at most N x capacity each (edge_filters.cu); or a row a
    // pair, at most A (A - 1) / 2 a replica (no fewer than N x capacity / 2: capacity < A).
    return useReplicaMessages ? (size_t) numReplicas * pairsPerReplica : (size_t) numAtoms * neighborCapacity;
}

CUdeviceptr CudaCalcMLFFForceKernel::filterRowCount() {
    return useReplicaMessages ? pairRowStart.getDevicePointer() + numReplicas * sizeof(int)
                              : filterStart.getDevicePointer() + numAtoms * sizeof(int);
}

void CudaCalcMLFFForceKernel::allocateEdgeRows() {
    const size_t rows = edgeRowsBound();
    size_t bytes = 0;
    for (const RowArray& row : edgeRowArrays()) {
        bytes += rows * row.perRow * row.elementSize;
        if (bytes > edgeRowsMaxBytes) // the test hook's limit: fail part way, as cuMemAlloc would
            throw OpenMMException("MLFFForce (CUDA): the edge rows need more than MLFF_CUDA_EDGE_ROWS_MAX_BYTES = " +
                                  std::to_string(edgeRowsMaxBytes) + " bytes");
        if (row.array->isInitialized())
            row.array->resize(rows * row.perRow);
        else
            row.array->initialize(cu, rows * row.perRow, row.elementSize, row.name);
    }
}

void CudaCalcMLFFForceKernel::launchWith(CUfunction kernel, void** args, unsigned int gridSize, unsigned int blockSize,
                                         unsigned int sharedBytes, int blocksPerCluster, const char* what) {
    // Not cu.executeKernel: it caps the grid, and the network kernels need one block per atom.
    CUlaunchAttribute attributes[2] = {};
    unsigned int numAttributes = 0;
    if (blocksPerCluster > 1) {
        CUlaunchAttribute& cluster = attributes[numAttributes++];
        cluster.id = CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION;
        cluster.value.clusterDim.x = (unsigned int) blocksPerCluster;
        cluster.value.clusterDim.y = cluster.value.clusterDim.z = 1;
    }
    if (dependentLaunches) { // every kernel waits for the one before it (dependent_launch.cu)
        CUlaunchAttribute& dependent = attributes[numAttributes++];
        dependent.id = CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
        dependent.value.programmaticStreamSerializationAllowed = 1;
    }
    CUlaunchConfig config = {};
    config.gridDimX = gridSize;
    config.gridDimY = config.gridDimZ = 1;
    config.blockDimX = blockSize;
    config.blockDimY = config.blockDimZ = 1;
    config.sharedMemBytes = sharedBytes;
    config.hStream = cu.getCurrentStream();
    config.attrs = attributes;
    config.numAttrs = numAttributes;
    timer->before(what, cu.getCurrentStream());
    check(cuLaunchKernelEx(&config, kernel, args, nullptr), what);
    timer->after(cu.getCurrentStream());
}

size_t CudaCalcMLFFForceKernel::rowStagesBytes() const {
    return (size_t) (EdgeThreads / 32) * RowStages * RowStageRows * hidden * realSize();
}

void CudaCalcMLFFForceKernel::launch(CUfunction kernel, void** args, unsigned int gridSize, unsigned int blockSize,
                                     const char* what) {
    launchWith(kernel, args, gridSize, blockSize, 0, 1, what);
}

void CudaCalcMLFFForceKernel::launchPerAtom(CUfunction kernel, void** args, const char* what, bool extraCluster) {
    if (!useClusters)
        launch(kernel, args, numAtoms, threadsPerAtom, what);
    else
        launchWith(kernel, args, (unsigned int) ((numAtoms + (extraCluster ? 1 : 0)) * clusterSize), threadsPerAtom,
                   clusterSharedBytes, clusterSize, what);
}

void CudaCalcMLFFForceKernel::launchMatmul(CUfunction kernel, void** args, size_t rows, int outputs,
                                           int columnsPerTile, int tensorCoreRowsPerTile, const char* what) {
    const int rowsPerTile = matmulTensorCores ? tensorCoreRowsPerTile : MatmulRowsFma;
    const unsigned int sharedBytes = matmulTensorCores ? matmulSharedBytes(rowsPerTile, columnsPerTile) : 0;
    launchWith(kernel, args, matmulBlocks(rows, outputs, rowsPerTile, columnsPerTile), MatmulThreads, sharedBytes, 1,
               what);
}

void CudaCalcMLFFForceKernel::launchWarpgroupMatmul(CUfunction kernel, void** args, size_t rows, int inputs,
                                                    int outputs, int columns, bool sideProduct, const char* what) {
    launchWith(kernel, args, warpgroupBlocks(rows, outputs, columns, multiprocessors), WarpgroupThreads * Warpgroups,
               warpgroupSharedBytes(inputs, columns, sideProduct), 1, what);
}

std::array<CudaCalcMLFFForceKernel::UpdateProduct, 4> CudaCalcMLFFForceKernel::updateProducts() const {
    const int h = hidden;
    return {{{hiddenForwardKernel, 2 * h, h, "MLFF_B_UPDATE_W0T", "the update's hidden layer"},
             {lastOutputForwardKernel, h, h, "MLFF_B_UPDATE_W2T_SCALAR", "the last update's output"},
             {lastHiddenBackwardKernel, h, h, "MLFF_B_UPDATE_W2", "the last update's backward to its hidden layer"},
             {hiddenBackwardKernel, 3 * h, h, "MLFF_B_UPDATE_W2", "the update's backward to its hidden layer"}}};
}

void CudaCalcMLFFForceKernel::launchUpdateProduct(CUfunction kernel, void** args) {
    for (const UpdateProduct& product : updateProducts())
        if (product.kernel == kernel) {
            if (warpgroupUpdate)
                launchWarpgroupMatmul(kernel, args, numAtoms, product.inputs, product.outputs, WarpgroupUpdateColumns,
                                      false, product.what);
            else
                launchMatmul(kernel, args, numAtoms, product.outputs, 64, 64, product.what);
            return;
        }
    throw OpenMMException("MLFFForce (CUDA): internal error: no such update product");
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
    if (periodic) { // the core's rule, so that every platform rejects the same boxes
        const double rows[9] = {vectors[0][0], vectors[0][1], vectors[0][2], vectors[1][0], vectors[1][1],
                                vectors[1][2], vectors[2][0], vectors[2][1], vectors[2][2]};
        mlff_error error{};
        if (mlff_check_box(rows, cutoff, &error) != MLFF_OK)
            throw OpenMMException(string("MLFFForce: periodic box: ") + error.message);
    }
    for (int k = 0; k < 3; k++)
        boxDouble[k] = {vectors[k][0], vectors[k][1], vectors[k][2], 0.0};
    boxDouble[3] = {1 / vectors[0][0], 1 / vectors[1][1], 1 / vectors[2][2], 0.0};
    for (int k = 0; k < 4; k++)
        boxFloat[k] = {(float) boxDouble[k].x, (float) boxDouble[k].y, (float) boxDouble[k].z, 0.0f};
    if (useCellList && periodic) {
        // Cells at least a cutoff wide along each box height (a.x, b.y, c.z in the reduced form),
        // coarsened (still exact) until the replicas' grids fit the cells allocated.
        int cells[3];
        const double heights[3] = {vectors[0][0], vectors[1][1], vectors[2][2]};
        for (int k = 0; k < 3; k++)
            cells[k] = std::max(1, (int) std::floor(heights[k] / (cutoff * CellMargin)));
        while ((long long) numReplicas * cells[0] * cells[1] * cells[2] > numCells)
            (*std::max_element(cells, cells + 3))--;
        cellGrid = {cells[0], cells[1], cells[2], 0};
        cellsInUse = numReplicas * cells[0] * cells[1] * cells[2];
    }
}

void CudaCalcMLFFForceKernel::findNeighbors(void* box[4]) {
    if (clusterFindsNeighbors || useReplicaMessages)
        return; // the first forward launch does it (cluster.cu), or the messages need no list (replica_messages.cu)
    CUdeviceptr posq = cu.getPosq().getDevicePointer();
    const unsigned int atomWarpsGrid = warpPerAtomGrid(NeighborThreads);
    if (!useCellList) {
        void* args[] = {&posq, &sortedIndexOfParticle.getDevicePointer(), &mlParticle.getDevicePointer(),
                        &mlReplica.getDevicePointer(), &replicaStart.getDevicePointer(), box[0], box[1], box[2], box[3],
                        &mlPos.getDevicePointer(), &neighborCount.getDevicePointer(), &neighborList.getDevicePointer(),
                        &neighborCapacity};
        launch(neighborKernel, args, atomWarpsGrid, NeighborThreads, "finding neighbours");
        return;
    }
    check(cuMemsetD32Async(cellCount.getDevicePointer(), 0, numCells, cu.getCurrentStream()), "clearing the cells");
    const unsigned int atomsGrid = (unsigned int) ((numAtoms + 127) / 128);
    {
        void* args[] = {&posq, &sortedIndexOfParticle.getDevicePointer(), &mlParticle.getDevicePointer(),
                        &mlReplica.getDevicePointer(), box[0], box[1], box[2], box[3], &cellGrid,
                        &mlPos.getDevicePointer(), &cellOfAtom.getDevicePointer(), &cellCount.getDevicePointer()};
        launch(assignCellsKernel, args, atomsGrid, 128, "binning atoms into cells");
    }
    {
        void* args[] = {&cellCount.getDevicePointer(), &cellStart.getDevicePointer(), &cellsInUse};
        launch(scanCellsKernel, args, 1, ScanThreads, "counting the cells");
    }
    {
        void* args[] = {&cellOfAtom.getDevicePointer(), &cellStart.getDevicePointer(), &cellCount.getDevicePointer(),
                        &cellAtoms.getDevicePointer()};
        launch(fillCellsKernel, args, atomsGrid, 128, "filling the cells");
    }
    {
        void* args[] = {&mlPos.getDevicePointer(), &mlReplica.getDevicePointer(), &cellStart.getDevicePointer(),
                        &cellCount.getDevicePointer(), &cellAtoms.getDevicePointer(), box[0], box[1], box[2], box[3],
                        &cellGrid, &neighborCount.getDevicePointer(), &neighborScratch.getDevicePointer(),
                        &neighborList.getDevicePointer(), &neighborCapacity};
        launch(cellNeighborKernel, args, atomWarpsGrid, NeighborThreads, "finding neighbours in cells");
    }
}

void CudaCalcMLFFForceKernel::checkNeighborCapacity() {
    // The counts of earlier evaluations, written into host memory by their reductions. Without edge
    // filters the host reads each once it has arrived, never waiting. With edge filters an
    // overflowed atom's filters come from its own kernel, not the products, which rounds
    // differently, so the evaluation at which the list grows must not depend on timing if
    // trajectories are to be reproducible bit for bit: the host always reads the count of the
    // evaluation before last, waiting for it if need be. That one has nearly always finished (the
    // GPU is running the last one), so the host never waits on the step it has just issued.
    const int slot = (int) (numEvaluations % CountSlots); // the evaluation before last's, and this one's
    maxCountTarget = mappedMaxNeighborCount + slot * sizeof(int);
    if (useEdgeFilters && !useReplicaMessages) { // (a block per replica has no list, so no count to read)
        if (maxCountPending[slot]) {
            check(cuEventSynchronize(maxCountEvent[slot]), "waiting for the neighbour count");
            readNeighborCount(slot);
        }
        return;
    }
    for (int age = CountSlots; age >= 1; age--) { // the older first
        const int earlier = (int) ((numEvaluations + CountSlots - age) % CountSlots);
        if (maxCountPending[earlier] && cuEventQuery(maxCountEvent[earlier]) == CUDA_SUCCESS)
            readNeighborCount(earlier);
    }
}

void CudaCalcMLFFForceKernel::readNeighborCount(int slot) {
    maxCountPending[slot] = false;
    const int needed = ((volatile int*) pinnedMaxNeighborCount)[slot];
    if (needed <= neighborCapacity)
        return;
    // That step was still exact (the kernels scanned the replica for the overflowing atoms); grow
    // so that later steps use the list again.
    neighborCapacity = std::min(std::max(needed + needed / 4 + 8, neighborCapacity), std::max(maxReplicaSize - 1, 1));
    neighborList.resize((size_t) numAtoms * neighborCapacity);
    if (useCellList)
        neighborScratch.resize((size_t) numAtoms * neighborCapacity);
    if (useEdgeFilters && !useReplicaMessages) { // (a block per replica has its rows for every pair already)
        try {
            allocateEdgeRows();
        }
        catch (const OpenMMException&) {
            stopUsingEdgeRows();
        }
    }
}

void CudaCalcMLFFForceKernel::stopUsingEdgeRows() {
    // The grown rows do not fit in the GPU's memory: from now on the tiled kernels compute every
    // atom's filters, as where the rows were never chosen. The rows' memory goes back, each array
    // left at one element (a CudaArray frees only in a resize or its destructor).
    useEdgeFilters = false;
    for (const RowArray& row : edgeRowArrays())
        if (row.array->isInitialized())
            row.array->resize(1);
    loadMessageKernels();
}

double CudaCalcMLFFForceKernel::execute(ContextImpl& context, bool includeForces, bool includeEnergy) {
    (void) includeEnergy; // the energy is always reduced: it is one small launch, and getReplicaEnergies needs it
    if (numAtoms == 0)
        return 0.0;
    ContextSelector selector(cu);
    timer->beginEvaluation();
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
    const int slot = (int) (numEvaluations++ % CountSlots);
    check(cuEventRecord(maxCountEvent[slot], cu.getCurrentStream()), "recording an event"); // the count is in host memory
    maxCountPending[slot] = true;
    return 0.0; // the energy went into OpenMM's energy buffer
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

void CudaCalcMLFFForceKernel::executeFused(void** box, bool includeForces, CUdeviceptr force) {
    CUdeviceptr table = filterTable.isInitialized() ? filterTable.getDevicePointer() : 0;
    CUdeviceptr kept = updateKept.isInitialized() ? updateKept.getDevicePointer() : 0; // clusters only: more arguments
    CUdeviceptr posq = cu.getPosq().getDevicePointer();
    for (int layer = 0; layer < numBlocks; layer++) {
        void* args[] = {&layer, &params.getDevicePointer(), &table, &mlPos.getDevicePointer(), &mlZ.getDevicePointer(),
                        &mlReplica.getDevicePointer(), &replicaStart.getDevicePointer(),
                        &neighborCount.getDevicePointer(), &neighborList.getDevicePointer(), &neighborCapacity,
                        box[0], box[1], box[2], box[3], &stateS.getDevicePointer(), &stateV.getDevicePointer(),
                        &midS.getDevicePointer(), &midV.getDevicePointer(), &atomEnergy.getDevicePointer(),
                        &gradS[0].getDevicePointer(), &gradV[0].getDevicePointer(), &kept, &posq,
                        &sortedIndexOfParticle.getDevicePointer(), &mlParticle.getDevicePointer(),
                        &mlPos.getDevicePointer(), &neighborCount.getDevicePointer(), &neighborList.getDevicePointer()};
        launchPerAtom(forwardKernel, args, "the forward pass");
    }
    if (includeForces) {
        double lambdaForceScale = lastLambda * MLFFUnits::ForceToOpenMM;
        EnergyTargets energy = energyTargets(); // for the reduction in the first launch's extra cluster
        int in = 0;
        for (int layer = numBlocks - 1; layer >= 0; layer--, in = 1 - in) {
            void* args[] = {&layer, &params.getDevicePointer(), &table, &mlPos.getDevicePointer(), &mlZ.getDevicePointer(),
                            &mlReplica.getDevicePointer(), &replicaStart.getDevicePointer(),
                            &neighborCount.getDevicePointer(), &neighborList.getDevicePointer(), &neighborCapacity,
                            box[0], box[1], box[2], box[3], &stateS.getDevicePointer(), &stateV.getDevicePointer(),
                            &midS.getDevicePointer(), &midV.getDevicePointer(), &gradS[in].getDevicePointer(),
                            &gradV[in].getDevicePointer(), &gradS[1 - in].getDevicePointer(),
                            &gradV[1 - in].getDevicePointer(), &replicaScale.getDevicePointer(), &lambdaForceScale,
                            &mlParticle.getDevicePointer(), &sortedIndexOfParticle.getDevicePointer(), &force, &kept,
                            &atomEnergy.getDevicePointer(), &lastLambda, &replicaEnergy.getDevicePointer(),
                            &energy.buffer, &energy.paramDerivs, &energy.paramDerivIndex, &maxCountTarget};
            const bool withReduction = reduceInBackward && layer == numBlocks - 1;
            launchPerAtom(backwardKernel, args, withReduction ? "the backward pass and the energy" : "the backward pass",
                          withReduction);
        }
    }
}

unsigned int CudaCalcMLFFForceKernel::tableRowsGrid() const {
    // As many warps as fill every SM (the rows' count is on the device), each block a run of the
    // sorted rows (table_rows.cu).
    return (unsigned int) (multiprocessors * 2048 / TableRowThreads);
}

unsigned int CudaCalcMLFFForceKernel::warpPerAtomGrid(int threads) const {
    return (unsigned int) (((size_t) numAtoms * 32 + threads - 1) / threads);
}

void CudaCalcMLFFForceKernel::prepareEdgeRows(void** box) {
    const unsigned int atomWarpsGrid = warpPerAtomGrid(EdgeThreads);
    {
        void* args[] = {&neighborCount.getDevicePointer(), &neighborCapacity, &edgeStart.getDevicePointer(),
                        &overflowedAtoms.getDevicePointer()};
        launch(scanEdgesKernel, args, 1, ScanThreads, "numbering the edges");
    }
    {
        void* args[] = {&mlPos.getDevicePointer(), &neighborCount.getDevicePointer(), &neighborList.getDevicePointer(),
                        &neighborCapacity, &edgeStart.getDevicePointer(), box[0], box[1], box[2], box[3],
                        &edgeAtoms.getDevicePointer(), &edgeDelta.getDevicePointer(), &edgeOwnedRank.getDevicePointer(),
                        &edgePartner.getDevicePointer(), &filterCount.getDevicePointer(),
                        &overflowedAtoms.getDevicePointer()};
        launch(gatherEdgesKernel, args, atomWarpsGrid, EdgeThreads, "the edges and their pairs");
    }
    {
        void* args[] = {&filterCount.getDevicePointer(), &filterStart.getDevicePointer()};
        launch(scanFilterRowsKernel, args, 1, ScanThreads, "numbering the pairs");
    }
    void* args[] = {&params.getDevicePointer(), &neighborCount.getDevicePointer(), &neighborCapacity,
                    &edgeStart.getDevicePointer(), &filterStart.getDevicePointer(), &edgeDelta.getDevicePointer(),
                    &edgeOwnedRank.getDevicePointer(), &edgePartner.getDevicePointer(),
                    &edgeFilterRow.getDevicePointer(), &filterEdges.getDevicePointer(), &edgeBasis.getDevicePointer()};
    launch(linkFilterRowsKernel, args, atomWarpsGrid, EdgeThreads,
           tabulatedFilters ? "the pairs' rows" : "the pairs' basis");
    if (tabulatedFilters)
        sortTableRows();
}

void CudaCalcMLFFForceKernel::sortTableRows() {
    CUdeviceptr rowCount = filterRowCount();
    const unsigned int rowsGrid = (unsigned int) ((edgeRowsBound() + EdgeThreads - 1) / EdgeThreads);
    {
        void* args[] = {&rowCount, &filterEdges.getDevicePointer(), &edgeDelta.getDevicePointer(),
                        &tableIntervalCount.getDevicePointer(), &tableRowInterval.getDevicePointer()};
        launch(countTableIntervalsKernel, args, rowsGrid, EdgeThreads, "the pairs' table intervals");
    }
    {
        void* args[] = {&tableIntervalCount.getDevicePointer(), &tableIntervalStart.getDevicePointer()};
        launch(scanTableIntervalsKernel, args, 1, ScanThreads, "numbering the table intervals");
    }
    void* args[] = {&rowCount, &tableRowInterval.getDevicePointer(), &tableIntervalStart.getDevicePointer(),
                    &sortedTableRows.getDevicePointer()};
    launch(sortTableRowsKernel, args, rowsGrid, EdgeThreads, "the pairs by table interval");
}

void CudaCalcMLFFForceKernel::prepareReplicaPairs(void** box) {
    CUdeviceptr posq = cu.getPosq().getDevicePointer();
    {
        void* args[] = {&posq, &sortedIndexOfParticle.getDevicePointer(), &mlParticle.getDevicePointer(),
                        &replicaStart.getDevicePointer(), box[0], box[1], box[2], box[3],
                        &replicaPairCount.getDevicePointer(), &replicaPairAtoms.getDevicePointer(),
                        &replicaPairGeometry.getDevicePointer()};
        const unsigned int grid = (unsigned int) ((numReplicas + PairFinderReplicas - 1) / PairFinderReplicas);
        launch(findReplicaPairsKernel, args, grid, 32 * PairFinderReplicas, "the replicas' pairs");
    }
    if (!useEdgeFilters)
        return;
    {
        void* args[] = {&replicaPairCount.getDevicePointer(), &pairRowStart.getDevicePointer()};
        launch(scanReplicaPairsKernel, args, 1, ScanThreads, "numbering the pairs");
    }
    void* args[] = {&params.getDevicePointer(), &replicaStart.getDevicePointer(), &pairRowStart.getDevicePointer(),
                    &replicaPairCount.getDevicePointer(), &replicaPairAtoms.getDevicePointer(),
                    &replicaPairGeometry.getDevicePointer(), &edgeAtoms.getDevicePointer(),
                    &edgeDelta.getDevicePointer(), &filterEdges.getDevicePointer(), &edgeBasis.getDevicePointer()};
    const size_t slots = (size_t) numReplicas * pairsPerReplica;
    launch(linkReplicaPairRowsKernel, args, (unsigned int) ((slots + EdgeThreads - 1) / EdgeThreads), EdgeThreads,
           "the pairs' basis");
}

CUdeviceptr CudaCalcMLFFForceKernel::edgeFiltersOfBlock(int layer) {
    return edgeFilter.getDevicePointer() + layer * edgeRowsBound() * 3 * hidden * realSize();
}

void CudaCalcMLFFForceKernel::edgeFiltersForward(int layer) {
    CUdeviceptr rowCount = filterRowCount();
    if (tabulatedFilters) {
        CUdeviceptr table = filterTable.getDevicePointer(), filters = edgeFiltersOfBlock(layer);
        void* args[] = {&layer, &table, &rowCount, &sortedTableRows.getDevicePointer(), &filterEdges.getDevicePointer(),
                        &edgeDelta.getDevicePointer(), &filters};
        launch(edgeFilterKernel, args, tableRowsGrid(), TableRowThreads, "the filters from the table");
        return;
    }
    const size_t rows = edgeRowsBound();
    {
        CUdeviceptr images = warpgroupImagesOf(edgeHiddenKernel);
        void* args[] = {&layer, &params.getDevicePointer(), &rowCount, &edgeBasis.getDevicePointer(),
                        &edgeHidden.getDevicePointer(), &images};
        if (warpgroupFilterForward)
            launchWarpgroupMatmul(edgeHiddenKernel, args, rows, basisInputs(), hidden, warpgroupForwardColumns, false,
                                  "the filters' hidden layer");
        else
            launchMatmul(edgeHiddenKernel, args, rows, hidden, 64, 128, "the filters' hidden layer");
    }
    CUdeviceptr filters = edgeFiltersOfBlock(layer), images = warpgroupImagesOf(edgeFilterKernel);
    void* args[] = {&layer, &params.getDevicePointer(), &rowCount, &edgeHidden.getDevicePointer(), &filters, &images};
    if (warpgroupFilterForward)
        launchWarpgroupMatmul(edgeFilterKernel, args, rows, hidden, 3 * hidden, warpgroupForwardColumns, false,
                              "the filters' output");
    else
        launchMatmul(edgeFilterKernel, args, rows, 3 * hidden, 96, 128, "the filters' output");
}

void CudaCalcMLFFForceKernel::edgeFiltersBackward(int layer, double lambdaForceScale, CUdeviceptr force) {
    CUdeviceptr rowCount = filterRowCount();
    if (tabulatedFilters) {
        CUdeviceptr table = filterTable.getDevicePointer();
        void* args[] = {&layer, &table, &rowCount, &sortedTableRows.getDevicePointer(),
                        &edgeGradFilter.getDevicePointer(), &filterEdges.getDevicePointer(),
                        &edgeAtoms.getDevicePointer(), &edgeDelta.getDevicePointer(), &edgeGradN.getDevicePointer(),
                        &mlReplica.getDevicePointer(), &replicaScale.getDevicePointer(), &lambdaForceScale,
                        &mlParticle.getDevicePointer(), &sortedIndexOfParticle.getDevicePointer(), &force};
        launch(pairGradientKernel, args, tableRowsGrid(), TableRowThreads, "dE/dd from the table, and the forces");
        return;
    }
    const size_t rows = edgeRowsBound();
    if (warpgroupFilterBackward) { // dE/dhidden never stored: each pair's dE/dd in parts, summed after block 0
        CUdeviceptr images = warpgroupImagesOf(filterBackwardKernel);
        void* args[] = {&layer, &params.getDevicePointer(), &rowCount, &edgeGradFilter.getDevicePointer(),
                        &edgeBasis.getDevicePointer(), &filterEdges.getDevicePointer(), &edgeDelta.getDevicePointer(),
                        &pairGradDistance.getDevicePointer(), &images};
        launchWarpgroupMatmul(filterBackwardKernel, args, rows, warpgroupBackwardInputs(), hidden,
                              WarpgroupBackwardColumns, true, "the filters' backward to the pairs' distances");
    } else {
        void* args[] = {&layer, &params.getDevicePointer(), &rowCount, &edgeGradFilter.getDevicePointer(),
                        &edgeBasis.getDevicePointer(), &edgeHidden.getDevicePointer()};
        launchMatmul(filterBackwardKernel, args, rows, hidden, 64, 128, "the filters' backward");
    }
    CUdeviceptr gradient = warpgroupFilterBackward ? pairGradDistance.getDevicePointer() : edgeHidden.getDevicePointer();
    void* args[] = {&layer, &params.getDevicePointer(), &rowCount, &gradient, &filterEdges.getDevicePointer(),
                    &edgeAtoms.getDevicePointer(), &edgeDelta.getDevicePointer(), &edgeGradN.getDevicePointer(),
                    &mlReplica.getDevicePointer(), &replicaScale.getDevicePointer(), &lambdaForceScale,
                    &mlParticle.getDevicePointer(), &sortedIndexOfParticle.getDevicePointer(), &force};
    if (!warpgroupFilterBackward) // one column tile (16 TN = K padded, up to 96): a pair's dE/de in a half-warp
        launchMatmul(pairGradientKernel, args, rows, kPadded, kPadded, 128, "the basis' backward and the pairs' forces");
    else if (layer == 0) // every block's parts at once
        launch(pairGradientKernel, args, (unsigned int) ((rows + EdgeThreads - 1) / EdgeThreads), EdgeThreads,
               "the pairs' forces");
}

void CudaCalcMLFFForceKernel::executeTiled(void** box, bool includeForces, CUdeviceptr force) {
    CUdeviceptr table = filterTable.isInitialized() ? filterTable.getDevicePointer() : 0;
    const int h = hidden;
    // The tiled message kernels' atoms: with edge rows only those without, listed on the device
    // (most steps none), over a grid of OpenMM's size for loops; else a block per atom (tiled.cu).
    CUdeviceptr overflowed = useEdgeFilters ? overflowedAtoms.getDevicePointer() : 0;
    const unsigned int messagesGrid =
            useEdgeFilters ? (unsigned int) std::min(numAtoms, cu.getNumThreadBlocks()) : (unsigned int) numAtoms;
    const size_t n = numAtoms;
    for (int layer = 0; layer < numBlocks; layer++) {
        if (useEdgeFilters)
            edgeFiltersForward(layer);
        if (useReplicaMessages)
            replicaMessagesForward(layer);
        else {
            void* args[] = {&layer, &overflowed, &params.getDevicePointer(), &table, &mlPos.getDevicePointer(),
                            &mlZ.getDevicePointer(), &mlReplica.getDevicePointer(), &replicaStart.getDevicePointer(),
                            &neighborCount.getDevicePointer(), &neighborList.getDevicePointer(), &neighborCapacity,
                            box[0], box[1], box[2], box[3], &stateS.getDevicePointer(), &stateV.getDevicePointer(),
                            &midS.getDevicePointer(), &midV.getDevicePointer(), &updateInput.getDevicePointer()};
            launch(messagesForwardKernel, args, messagesGrid, threadsPerAtom, "the messages");
        }
        if (useEdgeFilters && !useReplicaMessages) {
            CUdeviceptr filters = edgeFiltersOfBlock(layer);
            void* args[] = {&layer, &params.getDevicePointer(), &mlZ.getDevicePointer(),
                            &neighborCount.getDevicePointer(), &neighborList.getDevicePointer(), &neighborCapacity,
                            &edgeStart.getDevicePointer(), &edgeDelta.getDevicePointer(),
                            &edgeFilterRow.getDevicePointer(), &filters, &stateS.getDevicePointer(),
                            &stateV.getDevicePointer(), &midS.getDevicePointer(),
                            &midV.getDevicePointer(), &updateInput.getDevicePointer()};
            launch(messagesForwardRowsKernel, args, numAtoms, threadsPerAtom, "the messages from rows");
        }
        {
            CUdeviceptr images = warpgroupImagesOf(hiddenForwardKernel);
            void* args[] = {&layer, &params.getDevicePointer(), &updateInput.getDevicePointer(),
                            &updateHidden.getDevicePointer(), &updateActivation.getDevicePointer(), &images};
            launchUpdateProduct(hiddenForwardKernel, args);
        }
        if (layer == numBlocks - 1) { // its vector output is dead: a alone
            CUdeviceptr images = warpgroupImagesOf(lastOutputForwardKernel);
            void* args[] = {&params.getDevicePointer(), &updateActivation.getDevicePointer(), &midS.getDevicePointer(),
                            &stateS.getDevicePointer(), &images};
            launchUpdateProduct(lastOutputForwardKernel, args);
        }
        else {
            void* args[] = {&layer, &params.getDevicePointer(), &updateActivation.getDevicePointer(),
                            &midS.getDevicePointer(), &midV.getDevicePointer(), &updateOutput.getDevicePointer(),
                            &stateS.getDevicePointer(), &stateV.getDevicePointer()};
            launchMatmul(outputForwardKernel, args, n, 3 * h, 96, 128, "the update's output");
        }
    }
    {
        void* args[] = {&params.getDevicePointer(), &stateS.getDevicePointer(), &atomEnergy.getDevicePointer(),
                        &gradS[0].getDevicePointer()};
        launch(readoutKernel, args, (numAtoms + readoutAtomsPerBlock - 1) / readoutAtomsPerBlock, hidden, "the readout");
    }
    if (!includeForces)
        return;
    double lambdaForceScale = lastLambda * MLFFUnits::ForceToOpenMM;
    int in = 0;
    for (int layer = numBlocks - 1; layer >= 0; layer--, in = 1 - in) {
        if (layer == numBlocks - 1) { // dE/da alone, from the readout
            CUdeviceptr images = warpgroupImagesOf(lastHiddenBackwardKernel);
            void* args[] = {&params.getDevicePointer(), &gradS[in].getDevicePointer(), &updateHidden.getDevicePointer(),
                            &updateActivation.getDevicePointer(), &images};
            launchUpdateProduct(lastHiddenBackwardKernel, args);
        }
        else {
            CUdeviceptr images = warpgroupImagesOf(hiddenBackwardKernel);
            void* args[] = {&layer, &params.getDevicePointer(), &updateGradOutput.getDevicePointer(),
                            &updateHidden.getDevicePointer(), &updateActivation.getDevicePointer(), &images};
            launchUpdateProduct(hiddenBackwardKernel, args);
        }
        {
            void* args[] = {&layer, &params.getDevicePointer(), &updateActivation.getDevicePointer(),
                            &midV.getDevicePointer(), &gradS[in].getDevicePointer(), &gradV[in].getDevicePointer()};
            launchMatmul(inputBackwardKernel, args, n, 2 * h, 64, 64, "the update's backward to its input");
        }
        if (useReplicaMessages)
            replicaMessagesBackward(layer, in, lambdaForceScale, force);
        else {
            void* args[] = {&layer, &overflowed, &params.getDevicePointer(), &table, &mlPos.getDevicePointer(),
                            &mlZ.getDevicePointer(), &mlReplica.getDevicePointer(), &replicaStart.getDevicePointer(),
                            &neighborCount.getDevicePointer(), &neighborList.getDevicePointer(), &neighborCapacity,
                            box[0], box[1], box[2], box[3], &stateS.getDevicePointer(), &stateV.getDevicePointer(),
                            &midV.getDevicePointer(), &updateOutput.getDevicePointer(), &gradS[in].getDevicePointer(),
                            &gradV[in].getDevicePointer(), &updateGradOutput.getDevicePointer(),
                            &gradS[1 - in].getDevicePointer(), &gradV[1 - in].getDevicePointer(),
                            &replicaScale.getDevicePointer(), &lambdaForceScale, &mlParticle.getDevicePointer(),
                            &sortedIndexOfParticle.getDevicePointer(), &force};
            launch(messagesBackwardKernel, args, messagesGrid, threadsPerAtom, "the messages' backward");
        }
        if (!useEdgeFilters)
            continue;
        if (!useReplicaMessages) {
            CUdeviceptr filters = edgeFiltersOfBlock(layer);
            void* args[] = {&layer, &params.getDevicePointer(), &mlZ.getDevicePointer(),
                            &neighborCount.getDevicePointer(), &neighborList.getDevicePointer(), &neighborCapacity,
                            &edgeStart.getDevicePointer(), &edgeDelta.getDevicePointer(),
                            &edgeFilterRow.getDevicePointer(), &edgeOwnedRank.getDevicePointer(),
                            &edgePartner.getDevicePointer(), &filters, &edgeGradFilter.getDevicePointer(),
                            &edgeGradN.getDevicePointer(),
                            &stateS.getDevicePointer(), &stateV.getDevicePointer(), &midV.getDevicePointer(),
                            &updateOutput.getDevicePointer(), &gradS[in].getDevicePointer(),
                            &gradV[in].getDevicePointer(), &updateGradOutput.getDevicePointer(),
                            &gradS[1 - in].getDevicePointer(), &gradV[1 - in].getDevicePointer()};
            launchWith(messagesBackwardRowsKernel, args, warpPerAtomGrid(EdgeThreads), EdgeThreads,
                       (unsigned int) rowStagesBytes(), 1, "the messages' backward from rows");
        }
        edgeFiltersBackward(layer, lambdaForceScale, force);
    }
}

void CudaCalcMLFFForceKernel::replicaMessagesForward(int layer) {
    // The filters: the table, or this block's filter rows.
    CUdeviceptr filters = useEdgeFilters ? edgeFiltersOfBlock(layer) : filterTable.getDevicePointer();
    CUdeviceptr rowStart = useEdgeFilters ? pairRowStart.getDevicePointer() : 0;
    void* args[] = {&layer, &params.getDevicePointer(), &filters, &rowStart, &replicaPairCount.getDevicePointer(),
                    &replicaPairAtoms.getDevicePointer(), &replicaPairGeometry.getDevicePointer(),
                    &mlZ.getDevicePointer(), &replicaStart.getDevicePointer(), &stateS.getDevicePointer(),
                    &stateV.getDevicePointer(), &midS.getDevicePointer(), &midV.getDevicePointer(),
                    &updateInput.getDevicePointer()};
    launchWith(messagesForwardKernel, args, numReplicas, threadsPerAtom, (unsigned int) (2 * replicaRowsBytes), 1,
               "the messages, a block per replica");
}

void CudaCalcMLFFForceKernel::replicaMessagesBackward(int layer, int in, double lambdaForceScale, CUdeviceptr force) {
    CUdeviceptr filters = useEdgeFilters ? edgeFiltersOfBlock(layer) : filterTable.getDevicePointer();
    CUdeviceptr rowStart = useEdgeFilters ? pairRowStart.getDevicePointer() : 0;
    CUdeviceptr gradFilter = useEdgeFilters ? edgeGradFilter.getDevicePointer() : 0;
    CUdeviceptr gradN = useEdgeFilters ? edgeGradN.getDevicePointer() : 0;
    void* args[] = {&layer, &params.getDevicePointer(), &filters, &rowStart, &replicaPairCount.getDevicePointer(),
                    &replicaPairAtoms.getDevicePointer(), &replicaPairGeometry.getDevicePointer(),
                    &mlZ.getDevicePointer(), &replicaStart.getDevicePointer(), &stateS.getDevicePointer(),
                    &stateV.getDevicePointer(), &midV.getDevicePointer(), &updateOutput.getDevicePointer(),
                    &gradS[in].getDevicePointer(), &gradV[in].getDevicePointer(), &updateGradOutput.getDevicePointer(),
                    &gradS[1 - in].getDevicePointer(), &gradV[1 - in].getDevicePointer(), &gradFilter, &gradN,
                    &mlParticle.getDevicePointer(), &sortedIndexOfParticle.getDevicePointer(),
                    &replicaScale.getDevicePointer(), &lambdaForceScale, &force};
    launchWith(messagesBackwardKernel, args, numReplicas, threadsPerAtom, (unsigned int) (3 * replicaRowsBytes), 1,
               "the messages' backward, a block per replica");
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
