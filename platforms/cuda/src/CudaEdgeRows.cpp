// CudaCalcMLFFForceKernel, its edge rows: their arrays, the numbering of each step's edges and
// pairs, and the filters over the pairs' rows, forward and backward (edge_filters.cu's products or
// table_rows.cu's table), or each replica's pairs for the messages a block per replica.

#include "CudaCalcMLFFForceKernel.h"

#include "CudaKernelConstants.h"
#include "openmm/OpenMMException.h"

#include <algorithm>

using namespace MLFFPlugin;
using namespace MLFFPlugin::KernelConstants;
using namespace OpenMM;

std::vector<CudaCalcMLFFForceKernel::RowArray> CudaCalcMLFFForceKernel::edgeRowArrays() {
    const int real = realSize(), intSize = sizeof(int);
    const size_t h = hidden, k = numRbf, layers = numBlocks;
    std::vector<RowArray> arrays = {{&edgeAtoms, 1, 2 * intSize, "mlffEdgeAtoms"},
                                    {&edgeDelta, 1, 4 * real, "mlffEdgeDelta"},
                                    {&edgeOwnedRank, 1, intSize, "mlffEdgeOwnedRank"},
                                    {&edgePartner, 1, intSize, "mlffEdgePartner"},
                                    {&edgeWalk, 1, intSize, "mlffEdgeWalk"},
                                    {&edgeFilterRow, 1, intSize, "mlffEdgeFilterRow"},
                                    {&edgeGradN, 1, 4 * real, "mlffEdgeGradN"},
                                    {&filterEdges, 1, 2 * intSize, "mlffFilterEdges"},
                                    {&edgeGradFilter, 3 * h, real, "mlffEdgeGradFilter"},
                                    {&edgeFilter, layers * 3 * h, real, "mlffEdgeFilter"}};
    if (tabulatedFilters) { // the rows numbered by table interval (table_rows.cu)
        arrays.push_back({&tableRowInterval, 1, 2 * intSize, "mlffTableRowInterval"});
        arrays.push_back({&linkedFilterEdges, 1, 2 * intSize, "mlffLinkedFilterEdges"});
        return arrays;
    }
    // The filter network's: the basis, the hidden layer, and dE/dd's parts of every block, a column
    // tile of the filters' warp-group backward each (H a multiple of 64 there).
    arrays.push_back({&edgeBasis, k, real, "mlffEdgeBasis"});
    if (!(filterHiddenInRegisters && warpgroupFilterBackward)) // else no product writes or reads it
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
                        &edgePartner.getDevicePointer(), &edgeWalk.getDevicePointer(),
                        &filterCount.getDevicePointer(), &overflowedAtoms.getDevicePointer()};
        launch(gatherEdgesKernel, args, atomWarpsGrid, EdgeThreads, "the edges and their pairs");
    }
    {
        void* args[] = {&filterCount.getDevicePointer(), &filterStart.getDevicePointer()};
        launch(scanFilterRowsKernel, args, 1, ScanThreads, "numbering the pairs");
    }
    // With a table, the rows as linked are numbered again, in the order of their table intervals.
    CudaArray& linkedRows = tabulatedFilters ? linkedFilterEdges : filterEdges;
    void* args[] = {&params.getDevicePointer(), &neighborCount.getDevicePointer(), &neighborCapacity,
                    &edgeStart.getDevicePointer(), &filterStart.getDevicePointer(), &edgeDelta.getDevicePointer(),
                    &edgeOwnedRank.getDevicePointer(), &edgePartner.getDevicePointer(),
                    &edgeFilterRow.getDevicePointer(), &linkedRows.getDevicePointer(), &edgeBasis.getDevicePointer()};
    launch(linkFilterRowsKernel, args, atomWarpsGrid, EdgeThreads,
           tabulatedFilters ? "the pairs' rows" : "the pairs' basis");
    if (tabulatedFilters)
        numberTableRows();
}

void CudaCalcMLFFForceKernel::numberTableRows() {
    CUdeviceptr rowCount = filterRowCount();
    const unsigned int rowsGrid = (unsigned int) ((edgeRowsBound() + EdgeThreads - 1) / EdgeThreads);
    {
        void* args[] = {&rowCount, &linkedFilterEdges.getDevicePointer(), &edgeDelta.getDevicePointer(),
                        &tableIntervalCount.getDevicePointer(), &tableRowInterval.getDevicePointer()};
        launch(countTableIntervalsKernel, args, rowsGrid, EdgeThreads, "the pairs' table intervals");
    }
    {
        void* args[] = {&tableIntervalCount.getDevicePointer(), &tableIntervalStart.getDevicePointer()};
        launch(scanTableIntervalsKernel, args, 1, ScanThreads, "numbering the table intervals");
    }
    void* args[] = {&rowCount, &tableRowInterval.getDevicePointer(), &tableIntervalStart.getDevicePointer(),
                    &linkedFilterEdges.getDevicePointer(), &filterEdges.getDevicePointer(),
                    &edgeFilterRow.getDevicePointer()};
    launch(numberTableRowsKernel, args, rowsGrid, EdgeThreads, "the pairs numbered by table interval");
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
    const size_t rows = edgeRowsBound();
    // The filters depend on the distances alone: where one kernel makes them, every block's come from
    // one launch at block 0, a row of its grid a block (no launch's start and tail between blocks).
    if (tabulatedFilters || filterHiddenInRegisters) {
        if (layer > 0)
            return;
        const unsigned int blocks = (unsigned int) numBlocks;
        CUdeviceptr filters = edgeFiltersOfBlock(0);
        size_t blockStride = rows * 3 * hidden;
        if (tabulatedFilters) {
            CUdeviceptr table = filterTable.getDevicePointer();
            void* args[] = {&layer, &table, &rowCount, &filterEdges.getDevicePointer(), &edgeDelta.getDevicePointer(),
                            &filters, &blockStride};
            launchWith(edgeFilterKernel, args, tableRowsGrid(), TableRowThreads, 0, 1, "the filters from the table",
                       blocks);
        }
        else { // one product, the hidden layer in registers
            CUdeviceptr images = warpgroupImagesOf(edgeFilterKernel);
            void* args[] = {&layer, &params.getDevicePointer(), &rowCount, &edgeBasis.getDevicePointer(), &filters,
                            &blockStride, &images};
            launchWarpgroupMatmul(edgeFilterKernel, args, rows, filterFromBasisInputs(), 3 * hidden,
                                  warpgroupForwardColumns, true, "the filters from the basis", blocks);
        }
        return;
    }
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
        void* args[] = {&layer, &table, &rowCount, &edgeGradFilter.getDevicePointer(), &filterEdges.getDevicePointer(),
                        &edgeAtoms.getDevicePointer(), &edgeDelta.getDevicePointer(), &edgeGradN.getDevicePointer(),
                        &mlReplica.getDevicePointer(), &replicaScale.getDevicePointer(), &lambdaForceScale,
                        &mlParticle.getDevicePointer(), &sortedIndexOfParticle.getDevicePointer(), &force};
        launch(pairGradientKernel, args, tableRowsGrid(), TableRowThreads, "dE/dd from the table, and the forces");
        return;
    }
    const size_t rows = edgeRowsBound();
    if (warpgroupFilterBackward) { // dE/dhidden never stored: each pair's dE/dd in parts, summed after block 0
        CUdeviceptr images = warpgroupImagesOf(filterBackwardKernel); // the first block's kernel's too
        void* args[] = {&layer, &params.getDevicePointer(), &rowCount, &edgeGradFilter.getDevicePointer(),
                        &edgeBasis.getDevicePointer(), &filterEdges.getDevicePointer(), &edgeDelta.getDevicePointer(),
                        &pairGradDistance.getDevicePointer(), &images};
        launchWarpgroupMatmul(layer == 0 ? firstBlockFilterBackwardKernel : filterBackwardKernel, args, rows,
                              warpgroupBackwardInputs(), hidden, WarpgroupBackwardColumns, true,
                              "the filters' backward to the pairs' distances");
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
