#ifndef MLFF_CUDA_CALC_MLFF_FORCE_KERNEL_H_
#define MLFF_CUDA_CALC_MLFF_FORCE_KERNEL_H_

#include "CudaCheck.h"
#include "CudaLaunchGraphs.h"
#include "CudaLaunchTimer.h"
#include "MLFFKernels.h"
#include "openmm/cuda/CudaArray.h"
#include "openmm/cuda/CudaContext.h"

#include <cuda.h>

#include <array>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

struct mlff_model; // core/include/mlff/mlff.h

namespace MLFFPlugin {

/**
 * MLFFForce on the CUDA platform (docs/cuda-design.md). Per step, on OpenMM's stream: the
 * neighbour search, the network's forward pass, its backward pass (when forces are wanted) and one
 * energy reduction, as one CUDA graph where the same launches repeat (CudaLaunchGraphs). No
 * allocation but when a neighbour list grows, and no wait for the GPU but, with edge rows, for the
 * evaluation before last (CudaNeighborLists.cpp). The network runs on one of two paths: fused (one
 * thread block per atom runs a whole block of the network: 2L launches; on sm_90 and later a
 * cluster of blocks per atom, cluster.cu) for small systems, or tiled (the update MLPs as matrix
 * products over atoms: 7L launches) for large, where the filters are kept in a row a pair (edge
 * rows: edge_filters.cu's products over pairs, or table_rows.cu's table) where the memory allows.
 *
 * Its definitions, by part: CudaCalcMLFFForceKernel.cpp (initialize, execute, the Context's
 * updates), CudaKernelChoices.cpp (the path, the blocks' shapes, the module), CudaNeighborLists.cpp,
 * CudaEdgeRows.cpp, CudaNetworkPasses.cpp (the fused and tiled paths' launches) and
 * CudaLaunches.cpp; its constants are CudaKernelConstants.h's. CudaLaunchGraphs issues an
 * evaluation's launches together.
 */
class CudaCalcMLFFForceKernel : public CalcMLFFForceKernel {
public:
    CudaCalcMLFFForceKernel(std::string name, const OpenMM::Platform& platform, OpenMM::CudaContext& cu);
    ~CudaCalcMLFFForceKernel();
    void initialize(const OpenMM::System& system, const MLFFForce& force) override;
    double execute(OpenMM::ContextImpl& context, bool includeForces, bool includeEnergy) override;
    std::vector<double> getReplicaEnergies(OpenMM::ContextImpl& context) override;
    void copyParametersToContext(OpenMM::ContextImpl& context, const MLFFForce& force) override;

    /** Inverts OpenMM's atom index into sortedIndexOfParticle (on the stream; also the reorder listener's job). */
    void updateSortedIndex();

private:
    class ReorderListener;
    class ForceInfo;

    /** A double as a define's value that parses back to the same double (17 significant digits). */
    static std::string exactDouble(double value);

    /**
     * Every launch: on OpenMM's stream, in clusters if blocksPerCluster > 1, dependent where the GPU
     * allows; a grid of gridSize x gridRows blocks.
     */
    void launchWith(CUfunction kernel, void** args, unsigned int gridSize, unsigned int blockSize,
                    unsigned int sharedBytes, int blocksPerCluster, const char* what, unsigned int gridRows = 1);
    void launch(CUfunction kernel, void** args, unsigned int gridSize, unsigned int blockSize, const char* what);
    /**
     * A kernel built on matmul.cu's mlffMatmul<I, O, TN, TensorCoreRows>, over `rows` rows and
     * `outputs` = O columns: columnsPerTile = 16 TN and tensorCoreRowsPerTile = TensorCoreRows, as
     * the kernel instantiates it.
     */
    void launchMatmul(CUfunction kernel, void** args, size_t rows, int outputs, int columnsPerTile,
                      int tensorCoreRowsPerTile, const char* what);
    /**
     * A kernel built on warpgroup_matmul.cu's mlffWarpgroupMatmul<I, O = outputs, Columns>, or on its
     * parts with a side product of J inputs (mlffWarpgroupLoadTiles<I, O, Columns, J>),
     * over at most `rows` rows: inputs = I, and J rounded up to 16 where it has a side product. A
     * block an SM (B's column tile fills its shared memory), the grid a multiple of the tiles; gridRows
     * such grids (as many products, told apart by blockIdx.y).
     */
    void launchWarpgroupMatmul(CUfunction kernel, void** args, size_t rows, int inputs, int outputs, int columns,
                               bool sideProduct, const char* what, unsigned int gridRows = 1);
    /** The tiled path's update products that may run as warp-group products (tiled.cu's MLFF_UPDATE_PRODUCT). */
    struct UpdateProduct {
        CUfunction kernel;
        int inputs, outputs;
        const char* weights; // B's offset in a block of params, as a define (MLFF_B_*)
        const char* what;
    };
    std::array<UpdateProduct, 4> updateProducts() const; // an array: nothing allocated at each launch
    /** One of updateProducts(), over the ML atoms, as a warp-group product or by mlffMatmul's 64-row tiles. */
    void launchUpdateProduct(CUfunction kernel, void** args);
    /** A fused kernel: one block per atom, or a cluster of clusterSize blocks per atom (and one more cluster). */
    void launchPerAtom(CUfunction kernel, void** args, const char* what, bool extraCluster = false);
    /** Where the energy reduction adds: OpenMM's energy buffer, and its derivative by the energy-scale parameter (or null). */
    struct EnergyTargets {
        CUdeviceptr buffer = 0, paramDerivs = 0;
        int paramDerivIndex = 0;
    };
    EnergyTargets energyTargets();
    // initialize's steps, in order.
    /**
     * The force's ML atoms by (replica, index in the force): each replica a contiguous range. With
     * the cell list, each evaluation numbers each replica's atoms anew in the cells' order (cell_list.cu).
     */
    struct AtomOrder {
        std::vector<int> particles, z, replicas; // (N), in that order
        std::vector<int> replicaStart;           // (R + 1)
    };
    AtomOrder orderAtoms(const MLFFForce& force);
    /** The arrays every path uses, allocated once here (the neighbour list again only when it must grow). */
    void allocateAtomArrays(const AtomOrder& order);
    /**
     * The kernel path: tiled or fused, edge filters, replica messages (MLFF_CUDA_KERNELS overrides
     * the choice by size).
     */
    void chooseKernelPath(bool tabulated);
    /** The fused kernels' block and edge batch, clusters, the readout's and reduction's blocks. */
    void chooseBlockShapes(bool tabulated);
    /** Which of the tiled path's products run on warp-group products (MLFF_CUDA_PRODUCTS overrides). */
    void chooseWarpgroupProducts();
    /** Whether any product is a warp-group product (the module is then built for sm_90a). */
    bool warpgroupProducts() const {
        return warpgroupFilterForward || warpgroupFilterBackward || warpgroupUpdate || warpgroupReadout;
    }
    /** The filters' basis inputs as a warp-group product's: K rounded up to 16. */
    int basisInputs() const;
    /** The filters' backward product's inputs as a warp-group product: 3H, and its side product's K rounded up to 16. */
    int warpgroupBackwardInputs() const;
    /** The filters' product from the basis likewise (MLFF_CUDA_FILTER_HIDDEN=registers): H, and K rounded up to 16. */
    int filterFromBasisInputs() const;
    void allocatePathArrays(); // the chosen path's own
    /** Tabulates the model's filters (the core's table) into filterTable; returns the kernels' defines. */
    std::map<std::string, std::string> uploadFilterTable(const mlff_model& model);
    /** The system's sizes and the choices above, as the kernels' compile-time constants. */
    void addKernelDefines(std::map<std::string, std::string>& defines) const;
    std::string kernelSource() const; // the chosen path's .cu sources, in order
    void loadKernels(); // from `module`
    /** The tiled path's message kernels: a block per replica, per atom, or per atom without edge rows. */
    void loadMessageKernels();
    void allowSharedMemory(); // the kernels' dynamic shared memory above the default 48 KB
    /**
     * The warp-group products' weights as their blocks hold them in shared memory, made from params
     * once (warpgroup_matmul.cu's mlffPrepareWarpgroupTiles): each product kernel's images, every
     * block's side by side, in warpgroupImages. layoutDefines: the MLFF_P_* and MLFF_B_* offsets.
     */
    void prepareWarpgroupImages(const std::map<std::string, std::string>& layoutDefines);
    /** A product kernel's images (prepareWarpgroupImages), or 0 where it takes mma.sync's products. */
    CUdeviceptr warpgroupImagesOf(CUfunction kernel);
    /** One of the warp-group readout's four matrices, each an image of one column tile (mlffPrepareWarpgroupTiles). */
    struct ReadoutMatrix {
        const char* weights; // its offset in params, as a define (MLFF_P_HEAD_*)
        int inputs, outputs, accumulatorOrder;
    };
    std::array<ReadoutMatrix, 4> readoutMatrices() const; // in the order of their images in readoutImages
    /** The warp-group readout's images in readoutImages (prepareWarpgroupImages calls it; offsetOf: params' layout). */
    void prepareReadoutImages(const std::function<size_t(const char*)>& offsetOf);
    size_t readoutImageBytes() const; // the warp-group readout's images, which its blocks hold in shared memory
    int realSize() const;     // bytes of `real`: 4 or 8
    size_t rowStagesBytes() const; // the messages' backward from rows: its block's staged rows (row_messages.cu)
    size_t replicaBackwardSharedBytes() const; // the replicas' messages' backward: input, gradIn, a gradOut a part
    /** Blocks per atom on the fused path with clusters (cluster.cu), or 1 where the GPU or H rules them out. */
    int clusterSizeFor(int threads) const;
    static std::string requestedKernelPath(); // MLFF_CUDA_KERNELS, or "" (the plugin chooses)
    static bool clusterPathRequested();       // MLFF_CUDA_KERNELS=cluster
    static std::string requestedProducts(); // MLFF_CUDA_PRODUCTS: "mma", "warpgroup", or "" (the plugin chooses)
    static std::string requestedFilterHidden(); // MLFF_CUDA_FILTER_HIDDEN: "registers", "stored", or "" (registers)
    // MLFF_CUDA_TF32_SUMS: "tensor-cores", "outside" or "outside-overlapped" (probes), or ""
    static std::string requestedTf32Sums();
    static std::string requestedReadout(); // MLFF_CUDA_READOUT: "warpgroup", "fma", or "" (warpgroup where it can)
    static std::string requestedFilterStores(); // MLFF_CUDA_FILTER_STORES: "staged", "direct", or "" (staged with one)
    static size_t requestedEdgeRowsMaxBytes(); // MLFF_CUDA_EDGE_ROWS_MAX_BYTES, or no limit
    static std::string requestedGraphs(); // MLFF_CUDA_GRAPHS: "on", "off", "report", or "" (on)
    int numMultiprocessors() const;
    /** An array of edge or pair rows (edge_filters.cu): perRow elements of elementSize bytes a row. */
    struct RowArray {
        OpenMM::CudaArray* array;
        size_t perRow;
        int elementSize;
        const char* name;
    };
    std::vector<RowArray> edgeRowArrays();
    size_t edgeRowBytes(size_t rows);
    /** The edge and filter rows' bound: N x capacity, or with messages a block per replica R x its pairs. */
    size_t edgeRowsBound() const;
    void allocateEdgeRows(); // for edgeRowsBound() rows; throws if the memory is not there
    /** The list's grown rows did not fit: the tiled kernels compute every atom's filters from now on. */
    void stopUsingEdgeRows();
    void prepareEdgeRows(void** box);
    unsigned int warpPerAtomGrid(int threads) const; // blocks of `threads` for a warp per ML atom
    unsigned int tableRowsGrid() const;               // table_rows.cu's blocks
    void numberTableRows();                           // the filter rows numbered by table interval (table_rows.cu)
    /** Each replica's pairs (replica_messages.cu), and with edge filters their rows. */
    void prepareReplicaPairs(void** box);
    /** The filter rows' count on the device (filterStart[N], or pairRowStart[R]), for the products. */
    CUdeviceptr filterRowCount();
    /** An evaluation's launches, from the neighbour search to the energy's reduction. */
    void enqueueEvaluation(void** box, bool includeForces);
    void executeFused(void** box, bool includeForces, CUdeviceptr force);
    void executeTiled(void** box, bool includeForces, CUdeviceptr force);
    /** The tiled path's messages and their backward, a block per replica (replica_messages.cu). */
    void replicaMessagesForward(int layer);
    void replicaMessagesBackward(int layer, int in, double lambdaForceScale, CUdeviceptr force);
    /**
     * Block `layer`'s filters over pairs (edge_filters.cu, table_rows.cu): hidden layer, then output;
     * where one kernel makes them (from the table, or from the basis in one product), every block's
     * at block 0 in one launch.
     */
    void edgeFiltersForward(int layer);
    /** Block `layer`'s filters' backward products over pairs, and the pairs' forces. */
    void edgeFiltersBackward(int layer, double lambdaForceScale, CUdeviceptr force);
    /** Block `layer`'s part of edgeFilter (edge_filters.cu). */
    CUdeviceptr edgeFiltersOfBlock(int layer);
    /** Reads earlier evaluations' largest neighbour counts (as they arrive) and grows the lists. */
    void checkNeighborCapacity();
    /** Grows the list (and the edge rows, or stops using them) if slot's count passed its capacity. */
    void readNeighborCount(int slot);
    void setBox(OpenMM::ContextImpl& context);
    void findNeighbors(void* box[4]);

    OpenMM::CudaContext& cu;
    CUmodule module = nullptr;            // the kernels (OpenMM's context owns it)
    bool hasInitializedIndex = false;
    int numAtoms = 0;                     // ML atoms
    int numReplicas = 0;
    int hidden = 0, numBlocks = 0, numRbf = 0; // H, L, K
    int kPadded = 0;                      // K rounded up to 32 (MLFF_K_PADDED)
    int readoutAtomsPerBlock = 0;         // the tiled readout's atoms a block (MLFF_READOUT_ATOMS)
    int threadsPerAtom = 0;               // threads of a network kernel's block (one atom's)
    int edgeBatch = 0;                    // the fused kernels' edges a batch (MLFF_EDGE_BATCH)
    int reduceThreads = 0;                // the energy reduction's block
    bool reduceInBackward = false;        // done by an extra cluster of the first backward launch (clusters only)
    bool useTiled = false;                // the tiled path (kernels/student_painn/tiled.cu)
    bool useClusters = false;             // else the fused path with a cluster of blocks per atom (cluster.cu)
    int clusterSize = 1;                  // its blocks per atom (MLFF_CLUSTER)
    bool clusterFindsNeighbors = false;   // its first forward launch, not a launch of its own, finds the neighbours
    unsigned int clusterSharedBytes = 0;  // its kernels' dynamic shared memory
    bool useEdgeFilters = false;          // edge rows, a filter row a pair (edge_filters.cu, table_rows.cu)
    size_t edgeRowsMaxBytes = 0;          // a test hook's limit on them (MLFF_CUDA_EDGE_ROWS_MAX_BYTES)
    bool tabulatedFilters = false;        // the force's tabulated filters (a table, uploadFilterTable)
    bool useReplicaMessages = false;      // with it, its messages a block per replica (replica_messages.cu),
                                          // with exact filters from edge filters' rows, a row a pair
    int pairsPerReplica = 0;              // their pair slots a replica (MLFF_REPLICA_PAIRS)
    size_t replicaRowsBytes = 0;          // their (A, 4, H) arrays of shared memory, each
    int replicaSplit = 1;                 // the parts of their backward's block (MLFF_REPLICA_SPLIT)
    bool matmulTensorCores = false;       // matmul.cu sums on tensor cores (float, sm_80 and later)
    bool warpgroupFilterForward = false;  // the filters' hidden and output products by warpgroup_matmul.cu (sm_90a)
    int warpgroupForwardColumns = 0;      // their columns a block (MLFF_WARPGROUP_FORWARD_COLUMNS)
    bool filterHiddenInRegisters = false; // both as one launch, the hidden layer in registers (MLFF_CUDA_FILTER_HIDDEN)
    bool stagedFilterStores = false;      // their output's rows stored through shared memory (MLFF_CUDA_FILTER_STORES)
    bool warpgroupFilterBackward = false; // and their backward product, with W0^T's as its side product
    bool warpgroupUpdate = false;         // the update's products (updateProducts) likewise
    bool warpgroupReadout = false;        // the tiled readout's four products likewise (H = 64 or 128)
    int multiprocessors = 0;              // the GPU's SMs (queried once): a warp-group product's block each
    bool dependentLaunches = false;       // programmatic dependent launch (sm_90 and later; dependent_launch.cu)
    int maxReplicaSize = 0;
    int neighborCapacity = 0;
    bool useCellList = false;             // replicas large enough for the cell list (cell_list.cu)
    int numCells = 0;                     // cells allocated (MLFF_NUM_CELLS)
    int replicaCells = 0;                 // not periodic: a replica's cells (MLFF_REPLICA_CELLS), a power of two
    std::string energyScaleParameter;
    double cutoff = 0;                    // Å
    bool periodic = false;
    double lastLambda = 1.0;
    std::vector<double> replicaScales;
    struct ParticleParameters {
        int particle, atomicNumber, replica;
    };
    std::vector<ParticleParameters> initialParticles; // as the force had them at initialize, by force index

    OpenMM::CudaArray params;             // real: the model (StudentPainnParameters)
    OpenMM::CudaArray warpgroupImages;    // uint: the warp-group products' weights, split (prepareWarpgroupImages)
    std::map<CUfunction, size_t> warpgroupImageOffset; // a product kernel's images in warpgroupImages, bytes
    OpenMM::CudaArray readoutImages;      // uint: the warp-group readout's four matrices, split (tiled.cu)
    OpenMM::CudaArray filterTable;        // real: the tabulated filters (L, nodes, 3H, 2), if used
    OpenMM::CudaArray mlParticle, mlZ, mlReplica, replicaStart, sortedIndexOfParticle; // int
    OpenMM::CudaArray mlPos;              // real4, Å
    OpenMM::CudaArray neighborCount, neighborList; // int
    OpenMM::CudaArray cellCount, cellStart, cellAtoms, cellOfAtom, neighborScratch; // int, cell list only
    OpenMM::CudaArray binnedPos, cellOrderParticle, cellOrderZ; // real4, int, int: the atoms numbered by cell
    OpenMM::CudaArray replicaOriginParticle; // int (R), cell list: each replica's first particle
    OpenMM::CudaArray stateS, stateV, midS, midV, atomEnergy; // real; midS the fused path's only
    OpenMM::CudaArray gradS[2], gradV[2]; // real, ping-pong between backward launches
    OpenMM::CudaArray updateInput, updateHidden, updateActivation, updateOutput, updateGradOutput; // real, tiled path
    OpenMM::CudaArray updateKept;         // real (L, N, 3, H), the fused path with clusters
    OpenMM::CudaArray edgeStart, filterStart, filterCount; // edge_filters.cu: the rows' numbering
    OpenMM::CudaArray overflowedAtoms;    // int (N + 1), edge_filters.cu: the atoms without rows
    OpenMM::CudaArray edgeAtoms, edgeDelta, edgeOwnedRank, edgePartner, edgeWalk, edgeFilterRow, edgeGradFilter,
        edgeGradN, filterEdges, edgeBasis, edgeHidden, edgeFilter,
        pairGradDistance; // edge_filters.cu: the rows (edgeRowArrays)
    OpenMM::CudaArray tableRowInterval, linkedFilterEdges; // table_rows.cu: the rows before their numbering by table
                                                           // interval (edgeRowArrays)
    OpenMM::CudaArray tableIntervalCount, tableIntervalStart; // int (nodes - 1), table_rows.cu
    OpenMM::CudaArray replicaPairCount, replicaPairAtoms, replicaPairGeometry; // replica_messages.cu: the pairs
    OpenMM::CudaArray pairRowStart;       // int (R + 1): with edge filters, each replica's first filter row
    OpenMM::CudaArray replicaScale, replicaEnergy; // double

    std::unique_ptr<CudaLaunchTimer> timer; // MLFF_CUDA_TIMING
    // An evaluation's launches as one graph where they repeat; null with MLFF_CUDA_GRAPHS=off or
    // under the timer, which times the launches one by one.
    std::unique_ptr<CudaLaunchGraphs> graphs;
    bool reportGraphs = false;            // MLFF_CUDA_GRAPHS=report: their use, printed at the end
    // The largest neighbour count of an evaluation, written by its energy reduction straight into
    // pinned host memory (mapped), in slot (evaluation % CountSlots): the host reads an earlier
    // evaluation's while the GPU runs later ones (checkNeighborCapacity).
    static constexpr int CountSlots = 2;
    int* pinnedMaxNeighborCount = nullptr;     // [CountSlots]
    CUdeviceptr mappedMaxNeighborCount = 0;    // its device address
    CUdeviceptr maxCountTarget = 0;            // the current evaluation's slot (the reduction's argument)
    CUevent maxCountEvent[CountSlots] = {};    // recorded after each slot's reduction
    bool maxCountPending[CountSlots] = {};     // recorded and not yet read
    long long numEvaluations = 0;

    CUfunction invertKernel = nullptr, neighborKernel = nullptr, forwardKernel = nullptr, backwardKernel = nullptr,
               reduceKernel = nullptr, replicaEnergiesKernel = nullptr;
    CUfunction messagesForwardKernel = nullptr, hiddenForwardKernel = nullptr, outputForwardKernel = nullptr,
               lastOutputForwardKernel = nullptr, readoutKernel = nullptr, hiddenBackwardKernel = nullptr,
               lastHiddenBackwardKernel = nullptr, inputBackwardKernel = nullptr,
               messagesBackwardKernel = nullptr; // tiled path
    CUfunction prepareWarpgroupTilesKernel = nullptr;
    CUfunction scanEdgesKernel = nullptr, gatherEdgesKernel = nullptr, edgeHiddenKernel = nullptr,
               edgeFilterKernel = nullptr, filterBackwardKernel = nullptr, pairGradientKernel = nullptr,
               firstBlockFilterBackwardKernel = nullptr, // sm_90: the filters' backward without dE/dw_v1
               messagesForwardRowsKernel = nullptr, messagesBackwardRowsKernel = nullptr, scanFilterRowsKernel = nullptr,
               linkFilterRowsKernel = nullptr;
    CUfunction findReplicaPairsKernel = nullptr, scanReplicaPairsKernel = nullptr,
               linkReplicaPairRowsKernel = nullptr; // replica_messages.cu
    CUfunction countTableIntervalsKernel = nullptr, scanTableIntervalsKernel = nullptr,
               numberTableRowsKernel = nullptr; // table_rows.cu
    CUfunction assignCellsKernel = nullptr, scanCellsKernel = nullptr, fillCellsKernel = nullptr,
               numberAtomsKernel = nullptr, cellNeighborKernel = nullptr;

    // The box (Å) as kernel arguments of type real4: vectors a, b, c, then 1/(a.x, b.y, c.z).
    struct Real4Float {
        float x, y, z, w;
    };
    struct Real4Double {
        double x, y, z, w;
    };
    Real4Float boxFloat[4] = {};
    Real4Double boxDouble[4] = {};
    struct Int4 {
        int x, y, z, w;
    };
    Int4 cellGrid = {1, 1, 1, 0};        // periodic cell list: cells along a, b, c
    int cellsInUse = 0;                   // periodic: numReplicas * cells of the grid; else numCells
};

} // namespace MLFFPlugin

#endif // MLFF_CUDA_CALC_MLFF_FORCE_KERNEL_H_
