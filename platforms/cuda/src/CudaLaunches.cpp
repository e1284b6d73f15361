// CudaCalcMLFFForceKernel, its launches: every kernel goes through launchWith, on OpenMM's stream
// (dependent where the GPU allows, timed under MLFF_CUDA_TIMING, an evaluation's launches recorded
// for a graph otherwise), with the grids and shared memory of each kind of kernel.

#include "CudaCalcMLFFForceKernel.h"

#include "CudaKernelConstants.h"
#include "ProductShapes.h"
#include "openmm/OpenMMException.h"

using namespace MLFFPlugin;
using namespace MLFFPlugin::KernelConstants;
using namespace MLFFPlugin::ProductShapes;
using namespace OpenMM;

void CudaCalcMLFFForceKernel::launchWith(CUfunction kernel, void** args, unsigned int gridSize, unsigned int blockSize,
                                         unsigned int sharedBytes, int blocksPerCluster, const char* what,
                                         unsigned int gridRows) {
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
    config.gridDimY = gridRows;
    config.gridDimZ = 1;
    config.blockDimX = blockSize;
    config.blockDimY = config.blockDimZ = 1;
    config.sharedMemBytes = sharedBytes;
    config.hStream = cu.getCurrentStream();
    config.attrs = attributes;
    config.numAttrs = numAttributes;
    if (graphs != nullptr && graphs->recording()) { // issued with the evaluation's others (CudaLaunchGraphs)
        graphs->addKernel(config, kernel, args, what);
        return;
    }
    timer->before(what, cu.getCurrentStream());
    check(cuLaunchKernelEx(&config, kernel, args, nullptr), what);
    timer->after(cu.getCurrentStream());
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
                                                    int outputs, int columns, bool sideProduct, const char* what,
                                                    unsigned int gridRows) {
    launchWith(kernel, args, warpgroupBlocks(rows, outputs, columns, multiprocessors), WarpgroupThreads * Warpgroups,
               warpgroupSharedBytes(inputs, columns, sideProduct), 1, what, gridRows);
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

unsigned int CudaCalcMLFFForceKernel::warpPerAtomGrid(int threads) const {
    return (unsigned int) (((size_t) numAtoms * 32 + threads - 1) / threads);
}

unsigned int CudaCalcMLFFForceKernel::tableRowsGrid() const {
    // As many warps as fill every SM (the rows' count is on the device), each block a run of the
    // sorted rows (table_rows.cu).
    return (unsigned int) (multiprocessors * 2048 / TableRowThreads);
}

size_t CudaCalcMLFFForceKernel::rowStagesBytes() const {
    return (size_t) (EdgeThreads / 32) * RowStages * RowStageRows * hidden * realSize();
}

size_t CudaCalcMLFFForceKernel::replicaBackwardSharedBytes() const {
    return (2 + replicaSplit) * replicaRowsBytes;
}
