// CudaCalcMLFFForceKernel, its choices at initialize: the kernel path by the system's size and
// the GPU (and the developers' overrides), the blocks' shapes, which products run as warp-group
// products, the kernels' compile-time constants and sources, and the module's kernels.

#include "CudaCalcMLFFForceKernel.h"

#include "CudaKernelConstants.h"
#include "CudaMLFFKernelSources.h"
#include "ProductShapes.h"
#include "internal/MLFFUnits.h"
#include "openmm/OpenMMException.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <initializer_list>
#include <limits>
#include <map>

using namespace MLFFPlugin;
using namespace MLFFPlugin::KernelConstants;
using namespace MLFFPlugin::ProductShapes;
using namespace OpenMM;
using std::string;
using std::vector;

namespace {

/**
 * A developer's override from the environment variable `name`: "" where it is unset, else one of
 * `choices`, or an error that names them.
 */
string requestedChoice(const char* name, std::initializer_list<const char*> choices) {
    const char* value = std::getenv(name);
    if (value == nullptr)
        return "";
    string expected;
    size_t n = 0;
    for (const char* choice : choices) {
        if (string(value) == choice)
            return value;
        expected += string(n == 0 ? "" : n + 1 == choices.size() ? " or " : ", ") + "'" + choice + "'";
        n++;
    }
    throw OpenMMException(string("MLFFForce (CUDA): ") + name + " is '" + value + "'; expected " + expected);
}

} // namespace

void CudaCalcMLFFForceKernel::chooseKernelPath(bool tabulated) {
    const bool tilesFit = hidden % 64 == 0; // matmul.cu's tiles: 64 columns (H outputs) or 96 (3H)
    // A developer's override, for benchmarks and tests: "fused" (a block per atom); "cluster" (a
    // cluster of blocks per atom); "tiled" (filters per atom); or "edges" (tiled, with edge rows:
    // exact filters as products over pairs, tabulated ones read into the rows once a pair). The
    // last two apply wherever the tiles fit.
    const string path = requestedKernelPath();
    if (path.empty())
        useTiled = tilesFit && numAtoms >= (tabulated ? TiledMinAtoms : EdgeFiltersMinAtoms);
    else
        useTiled = tilesFit && (path == "tiled" || path == "edges");
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
        // The rows keep every block's filters (L x 3H reals a pair): taken where the rows as first
        // allocated fit in half the free memory. Should the rows of a grown list not fit later,
        // the tiled kernels take over then (stopUsingEdgeRows), as they would have from the start.
        size_t freeBytes = 0, totalBytes = 0;
        check(cuMemGetInfo(&freeBytes, &totalBytes), "querying the free memory");
        const size_t rowsBytes = edgeRowBytes((size_t) numAtoms * neighborCapacity);
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
    return requestedChoice("MLFF_CUDA_KERNELS", {"fused", "cluster", "tiled", "edges"});
}

string CudaCalcMLFFForceKernel::requestedProducts() {
    return requestedChoice("MLFF_CUDA_PRODUCTS", {"mma", "warpgroup"});
}

string CudaCalcMLFFForceKernel::requestedFilterHidden() {
    return requestedChoice("MLFF_CUDA_FILTER_HIDDEN", {"registers", "stored"});
}

string CudaCalcMLFFForceKernel::requestedReadout() {
    return requestedChoice("MLFF_CUDA_READOUT", {"warpgroup", "fma"});
}

string CudaCalcMLFFForceKernel::requestedTf32Sums() {
    return requestedChoice("MLFF_CUDA_TF32_SUMS", {"tensor-cores", "outside", "outside-overlapped"});
}

string CudaCalcMLFFForceKernel::requestedFilterStores() {
    return requestedChoice("MLFF_CUDA_FILTER_STORES", {"staged", "direct"});
}

string CudaCalcMLFFForceKernel::requestedGraphs() {
    return requestedChoice("MLFF_CUDA_GRAPHS", {"on", "off", "report"});
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

void CudaCalcMLFFForceKernel::chooseBlockShapes(bool tabulated) {
    const bool useDouble = cu.getUseDoublePrecision();
    edgeBatch = useDouble ? EdgeBatchDouble : EdgeBatchSingle;
    if (!useDouble && tabulated)
        edgeBatch = numAtoms >= TabulatedLargeAtoms ? EdgeBatchTabulatedLarge : EdgeBatchTabulatedSmall;
    threadsPerAtom = std::max({hidden, numRbf, 4 * edgeBatch});
    threadsPerAtom = (threadsPerAtom + 31) / 32 * 32;
    // The replicas' backward in parts where their gathered gradients fit and the block keeps to 256
    // threads, whose registers an SM holds whatever the kernel takes (at most 255 a thread).
    const bool splitFits = (2 + ReplicaBackwardSplit) * replicaRowsBytes <= ReplicaMessagesMaxSharedBytes &&
                           ReplicaBackwardSplit * threadsPerAtom <= 256;
    replicaSplit = useReplicaMessages && splitFits ? ReplicaBackwardSplit : 1;
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

int CudaCalcMLFFForceKernel::basisInputs() const {
    return (numRbf + 15) / 16 * 16;
}

int CudaCalcMLFFForceKernel::warpgroupBackwardInputs() const {
    return 3 * hidden + basisInputs(); // W2's, and W0^T's of the side product
}

int CudaCalcMLFFForceKernel::filterFromBasisInputs() const {
    return hidden + basisInputs(); // W2^T's, and W0^T's of the side product
}

void CudaCalcMLFFForceKernel::chooseWarpgroupProducts() {
    // The tiled path's products as warp-group products where the GPU has them (wgmma: sm_90
    // exactly, in a module built for sm_90a) and their column tiles fit a block's shared memory:
    // the filters' forward ones (the hidden layer and the output) and their backward, and the
    // update's, given enough atoms (or MLFF_CUDA_PRODUCTS=warpgroup).
    warpgroupForwardColumns = hidden % 128 == 0 ? 128 : 64;
    const string products = requestedProducts();
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
    // The filters' forward as one product, the hidden layer made beside each column tile of the
    // output and kept in registers (edge_filters.cu's mlffEdgeFilterFromBasis), where the whole
    // hidden layer is a tile's columns (H = 64 or 128); MLFF_CUDA_FILTER_HIDDEN=stored keeps the
    // two products. With it, the output's rows go through shared memory, a warp's 16 rows by 32
    // columns at a time (warpgroup_matmul.cu's MlffWarpgroupStagedRows; 36 KB of static shared
    // memory a block): 5,208 -> 5,146 µs a step of the exact droplet on an H100, where the two
    // products' output took 1,027 µs so against 983 directly (docs/performance-log.md).
    // MLFF_CUDA_FILTER_STORES (staged, direct) overrides that choice for either.
    filterHiddenInRegisters = requestedFilterHidden() != "stored" && warpgroupFilterForward &&
                              hidden == warpgroupForwardColumns &&
                              fits(warpgroupSharedBytes(filterFromBasisInputs(), warpgroupForwardColumns, true));
    const string stores = requestedFilterStores();
    stagedFilterStores = warpgroupFilterForward && (stores.empty() ? filterHiddenInRegisters : stores == "staged");
    int widestUpdate = 0; // the update product with the most inputs (its kernels are not loaded yet: unused here)
    for (const UpdateProduct& product : updateProducts())
        widestUpdate = std::max(widestUpdate, product.inputs);
    const bool manyAtoms = products == "warpgroup" || numAtoms >= WarpgroupUpdateMinAtoms;
    warpgroupUpdate = warpgroups && manyAtoms && fits(warpgroupSharedBytes(widestUpdate, WarpgroupUpdateColumns));
    // The readout's products (tiled.cu's mlffReadoutWarpgroup) at the H whose four products take
    // wgmma's shapes (H/2, H/4, H/2 and H columns, each 16 to 128), where their images fit a block.
    // MLFF_CUDA_READOUT=fma keeps the readout on the FMA pipes (mlffReadoutTiled), to time one against the other.
    const string readout = requestedReadout();
    warpgroupReadout = readout != "fma" && warpgroups && (hidden == 64 || hidden == 128) &&
                       fits((unsigned int) readoutImageBytes());
    if (readout == "warpgroup" && useTiled && !warpgroupReadout)
        throw OpenMMException("MLFFForce (CUDA): MLFF_CUDA_READOUT is 'warpgroup', but the readout's warp-group "
                              "products need compute capability 9.0 exactly, float, and H = 64 or 128 (this GPU: " +
                              std::to_string(cu.getComputeCapability()) + ", H = " + std::to_string(hidden) + ")");
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
    defines["MLFF_REPLICA_CELLS"] = std::to_string(std::max(replicaCells, 1));
    defines["MLFF_CELL_SLICES"] = std::to_string(CellSlices);
    // The buckets' block (cell_list.cu's mlffCellIndex): 2^xy cells along x and y, the rest of a
    // replica's bits along z, where the cells are thinner and the atoms' order runs slowest.
    int bits = 0;
    while ((1 << bits) < replicaCells)
        bits++;
    const int xy = std::max(bits - 1, 0) / 3;
    defines["MLFF_BUCKET_BITS_XY"] = std::to_string(xy);
    defines["MLFF_BUCKET_BITS_Z"] = std::to_string(bits - 2 * xy);
    if (periodic)
        defines["MLFF_PERIODIC"] = "1";
    defines["MLFF_ROW_STAGES"] = std::to_string(RowStages);
    defines["MLFF_STAGE_ROWS"] = std::to_string(RowStageRows);
    if (useReplicaMessages) {
        defines["MLFF_REPLICA_ATOMS"] = std::to_string(maxReplicaSize);
        defines["MLFF_REPLICA_SPLIT"] = std::to_string(replicaSplit);
    }
    defines["MLFF_READOUT_ATOMS"] = std::to_string(readoutAtomsPerBlock);
    if (matmulTensorCores)
        defines["MLFF_MATMUL_TENSOR_CORES"] = "1";
    // A probe: the products' running sums outside the tensor cores, which round toward zero (the
    // performance log's section "The products at one TF32 product a term" says what that leaves).
    const string tf32Sums = requestedTf32Sums();
    if (tf32Sums == "outside" || tf32Sums == "outside-overlapped")
        defines["MLFF_TF32_SUMS_OUTSIDE"] = "1";
    if (tf32Sums == "outside-overlapped") // the next pair split while a pair's products run
        defines["MLFF_TF32_SUMS_OVERLAPPED"] = "1";
    if (warpgroupProducts())
        defines["MLFF_WARPGROUPS"] = std::to_string(Warpgroups);
    if (warpgroupFilterForward) {
        defines["MLFF_WARPGROUP_FILTER_FORWARD"] = "1";
        defines["MLFF_WARPGROUP_FORWARD_COLUMNS"] = std::to_string(warpgroupForwardColumns);
    }
    if (filterHiddenInRegisters)
        defines["MLFF_FILTER_HIDDEN_IN_REGISTERS"] = "1";
    if (stagedFilterStores)
        defines["MLFF_STAGED_FILTER_STORES"] = "1";
    if (warpgroupFilterBackward) {
        defines["MLFF_WARPGROUP_FILTER_BACKWARD"] = "1";
        defines["MLFF_WARPGROUP_BACKWARD_COLUMNS"] = std::to_string(WarpgroupBackwardColumns);
    }
    if (warpgroupReadout) {
        defines["MLFF_WARPGROUP_READOUT"] = "1";
        defines["MLFF_READOUT_WARPGROUPS"] = std::to_string(ReadoutWarpgroups);
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
    if (timer->enabled())
        timer->setStampKernel(cu.getKernel(module, "mlffStampTime"), dependentLaunches);
    if (numReplicas >= ReduceByWarpMinReplicas)
        replicaEnergiesKernel = cu.getKernel(module, "mlffReplicaEnergies");
    if (useTiled) {
        loadMessageKernels();
        hiddenForwardKernel = cu.getKernel(module, "mlffUpdateHiddenForward");
        outputForwardKernel = cu.getKernel(module, "mlffUpdateOutputForward");
        lastOutputForwardKernel = cu.getKernel(module, "mlffUpdateOutputForwardLast");
        readoutKernel = cu.getKernel(module, warpgroupReadout ? "mlffReadoutWarpgroup" : "mlffReadoutTiled");
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
        numberTableRowsKernel = cu.getKernel(module, "mlffNumberTableRows");
    }
    else if (useEdgeFilters) {
        if (filterHiddenInRegisters) { // one product, from the basis
            edgeFilterKernel = cu.getKernel(module, "mlffEdgeFilterFromBasis");
        } else {
            edgeHiddenKernel = cu.getKernel(module, "mlffEdgeFilterHidden");
            edgeFilterKernel = cu.getKernel(module, "mlffEdgeFilterOutput");
        }
        // On sm_90 the filters' backward goes on to each pair's dE/dd, in parts that the second sums.
        filterBackwardKernel = cu.getKernel(module, warpgroupFilterBackward ? "mlffEdgeFilterBackwardToDistance"
                                                                           : "mlffEdgeFilterHiddenBackward");
        if (warpgroupFilterBackward) // without the first block's dE/dw_v1, which is 0
            firstBlockFilterBackwardKernel = cu.getKernel(module, "mlffEdgeFilterBackwardToDistanceFirstBlock");
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
        numberAtomsKernel = cu.getKernel(module, "mlffNumberAtomsByCell");
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
    if (warpgroupFilterForward && filterHiddenInRegisters)
        check(cuFuncSetAttribute(edgeFilterKernel, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                 (int) warpgroupSharedBytes(filterFromBasisInputs(), warpgroupForwardColumns, true)),
              "allowing the filters' product from the basis its shared memory");
    else if (warpgroupFilterForward) {
        check(cuFuncSetAttribute(edgeHiddenKernel, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                 (int) warpgroupSharedBytes(basisInputs(), warpgroupForwardColumns)),
              "allowing the filters' hidden product its shared memory");
        check(cuFuncSetAttribute(edgeFilterKernel, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                 (int) warpgroupSharedBytes(hidden, warpgroupForwardColumns)),
              "allowing the filters' output product its shared memory");
    }
    if (warpgroupFilterBackward)
        for (CUfunction kernel : {filterBackwardKernel, firstBlockFilterBackwardKernel})
            check(cuFuncSetAttribute(
                          kernel, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                          (int) warpgroupSharedBytes(warpgroupBackwardInputs(), WarpgroupBackwardColumns, true)),
                  "allowing the filters' backward product its shared memory");
    if (warpgroupUpdate)
        for (const UpdateProduct& product : updateProducts())
            check(cuFuncSetAttribute(product.kernel, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                     (int) warpgroupSharedBytes(product.inputs, WarpgroupUpdateColumns)),
                  "allowing the update's products their shared memory");
    if (warpgroupReadout)
        check(cuFuncSetAttribute(readoutKernel, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                 (int) readoutImageBytes()),
              "allowing the readout's products their shared memory");
    if (messagesBackwardRowsKernel != nullptr)
        check(cuFuncSetAttribute(messagesBackwardRowsKernel, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                 (int) rowStagesBytes()),
              "allowing the messages' backward from rows its shared memory");
    if (useReplicaMessages) { // above the default 48 KB in float from 8 atoms of H = 128
        check(cuFuncSetAttribute(messagesForwardKernel, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                 (int) (2 * replicaRowsBytes)),
              "allowing the replicas' messages their shared memory");
        check(cuFuncSetAttribute(messagesBackwardKernel, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                 (int) replicaBackwardSharedBytes()),
              "allowing the replicas' messages' backward its shared memory");
    }
}

void CudaCalcMLFFForceKernel::prepareWarpgroupImages(const std::map<string, string>& layoutDefines) {
    if (!warpgroupProducts())
        return;
    // Each product's B (its k-steps' inputs in the order of A's loads, or of the accumulators that
    // are its A), and where it has one its side product's F (sideInputs, sideOutputs) and c
    // (offsets in a block of params).
    struct Product {
        CUfunction kernel;
        const char* b;
        int inputs, outputs, columns;
        int accumulatorOrder;
        const char *f, *c;
        int sideInputs, sideOutputs;
    };
    vector<Product> products;
    const int h = hidden, forwardColumns = warpgroupForwardColumns;
    if (filterHiddenInRegisters) // the whole of W0^T and b0 beside each tile of W2^T
        products.push_back({edgeFilterKernel, "MLFF_B_FILTER_W2T", h, 3 * h, forwardColumns, 1, "MLFF_B_FILTER_W0T",
                            "MLFF_B_FILTER_B0", numRbf, h});
    else if (warpgroupFilterForward) {
        products.push_back({edgeHiddenKernel, "MLFF_B_FILTER_W0T", numRbf, h, forwardColumns, 0, nullptr, nullptr, 0,
                            0});
        products.push_back({edgeFilterKernel, "MLFF_B_FILTER_W2T", h, 3 * h, forwardColumns, 0, nullptr, nullptr, 0,
                            0});
    }
    if (warpgroupFilterBackward)
        products.push_back({filterBackwardKernel, "MLFF_B_FILTER_W2", 3 * h, h, WarpgroupBackwardColumns, 0,
                            "MLFF_B_FILTER_W0T", "MLFF_B_FILTER_B0", numRbf, h});
    if (warpgroupUpdate)
        for (const UpdateProduct& product : updateProducts())
            products.push_back({product.kernel, product.weights, product.inputs, product.outputs,
                                WarpgroupUpdateColumns, 0, nullptr, nullptr, 0, 0});
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
    if (bytes > 0) // none where the readout's are the only ones
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
            void* args[] = {&b, &product.inputs, &product.outputs, &product.columns, &product.accumulatorOrder, &f,
                            &product.sideInputs, &product.sideOutputs, &c, &image};
            launch(prepareWarpgroupTilesKernel, args, (unsigned int) (product.outputs / product.columns), 256,
                   "splitting the warp-group products' weights (once)");
        }
    if (warpgroupReadout)
        prepareReadoutImages(offsetOf);
}

std::array<CudaCalcMLFFForceKernel::ReadoutMatrix, 4> CudaCalcMLFFForceKernel::readoutMatrices() const {
    // tiled.cu's MlffReadoutImage order: head0's W0T (its A from memory), then head2's W2T, head2's
    // backward's W2 and head0's backward's W0, each A the accumulators of the product before.
    const int h = hidden;
    return {{{"MLFF_P_HEAD_W0T", h, h / 2, 0},
             {"MLFF_P_HEAD_W2T", h / 2, h / 4, 1},
             {"MLFF_P_HEAD_W2", h / 4, h / 2, 1},
             {"MLFF_P_HEAD_W0", h / 2, h, 1}}};
}

void CudaCalcMLFFForceKernel::prepareReadoutImages(const std::function<size_t(const char*)>& offsetOf) {
    readoutImages.initialize(cu, readoutImageBytes() / sizeof(unsigned int), sizeof(unsigned int), "mlffReadoutImages");
    size_t offset = 0;
    for (ReadoutMatrix matrix : readoutMatrices()) {
        CUdeviceptr b = params.getDevicePointer() + offsetOf(matrix.weights) * realSize(), none = 0;
        CUdeviceptr image = readoutImages.getDevicePointer() + offset;
        int noSide = 0;
        void* args[] = {&b, &matrix.inputs, &matrix.outputs, &matrix.outputs, &matrix.accumulatorOrder, &none,
                        &noSide, &noSide, &none, &image};
        launch(prepareWarpgroupTilesKernel, args, 1, 256, "splitting the readout's weights (once)");
        offset += warpgroupSharedBytes(matrix.inputs, matrix.outputs); // one column tile; inputs: multiples of 16
    }
}

size_t CudaCalcMLFFForceKernel::readoutImageBytes() const {
    size_t bytes = 0;
    for (const ReadoutMatrix& matrix : readoutMatrices())
        bytes += warpgroupSharedBytes(matrix.inputs, matrix.outputs);
    return bytes;
}

CUdeviceptr CudaCalcMLFFForceKernel::warpgroupImagesOf(CUfunction kernel) {
    const auto found = warpgroupImageOffset.find(kernel);
    return found == warpgroupImageOffset.end() ? 0 : warpgroupImages.getDevicePointer() + found->second;
}
