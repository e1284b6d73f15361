// CudaCalcMLFFForceKernel, its neighbour lists: the box, the search (a replica scanned whole, or
// the cell list), and the lists' growth from earlier evaluations' largest counts.

#include "CudaCalcMLFFForceKernel.h"

#include "CudaKernelConstants.h"
#include "internal/MLFFCoreModel.h"
#include "internal/MLFFUnits.h"
#include "openmm/OpenMMException.h"
#include "openmm/internal/ContextImpl.h"

#include <algorithm>
#include <cmath>

using namespace MLFFPlugin;
using namespace MLFFPlugin::KernelConstants;
using namespace OpenMM;
using std::string;

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
        // Cells at least a cutoff over their reach wide along each box height (a.x, b.y, c.z in the
        // reduced form; reach 1 along a and b, CellSlices along c), coarsened (still exact) until the
        // replicas' grids fit the cells allocated. An axis of fewer than 2 reach + 1 cells is one
        // cell, so that no cell is reached twice (cell_list.cu).
        int cells[3];
        const double heights[3] = {vectors[0][0], vectors[1][1], vectors[2][2]};
        const int reach[3] = {1, 1, CellSlices};
        const auto reachable = [&](int k, int count) { return count >= 2 * reach[k] + 1 ? count : 1; };
        for (int k = 0; k < 3; k++)
            cells[k] = reachable(k, (int) std::floor(heights[k] * reach[k] / (cutoff * CellMargin)));
        while ((long long) numReplicas * cells[0] * cells[1] * cells[2] > numCells) {
            const int k = (int) (std::max_element(cells, cells + 3) - cells);
            cells[k] = reachable(k, cells[k] - 1);
        }
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
    if (graphs != nullptr && graphs->recording())
        graphs->addMemset(cellCount.getDevicePointer(), 0, numCells, "clearing the cells");
    else
        check(cuMemsetD32Async(cellCount.getDevicePointer(), 0, numCells, cu.getCurrentStream()), "clearing the cells");
    const unsigned int atomsGrid = (unsigned int) ((numAtoms + 127) / 128);
    {
        void* args[] = {&posq, &sortedIndexOfParticle.getDevicePointer(), &mlParticle.getDevicePointer(),
                        &mlReplica.getDevicePointer(), &replicaOriginParticle.getDevicePointer(), box[0], box[1],
                        box[2], box[3], &cellGrid, &binnedPos.getDevicePointer(), &cellOfAtom.getDevicePointer(),
                        &cellCount.getDevicePointer()};
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
        void* args[] = {&cellOfAtom.getDevicePointer(), &cellStart.getDevicePointer(), &cellCount.getDevicePointer(),
                        &cellAtoms.getDevicePointer(), &mlParticle.getDevicePointer(), &mlZ.getDevicePointer(),
                        &binnedPos.getDevicePointer(), &cellOrderParticle.getDevicePointer(),
                        &cellOrderZ.getDevicePointer(), &mlPos.getDevicePointer()};
        launch(numberAtomsKernel, args, atomsGrid, 128, "numbering atoms by cell");
    }
    {
        void* args[] = {&mlPos.getDevicePointer(), &mlReplica.getDevicePointer(), &cellStart.getDevicePointer(),
                        &cellCount.getDevicePointer(), &cellOrderParticle.getDevicePointer(),
                        &cellOrderZ.getDevicePointer(), &posq, &sortedIndexOfParticle.getDevicePointer(),
                        &replicaOriginParticle.getDevicePointer(), &mlParticle.getDevicePointer(),
                        &mlZ.getDevicePointer(), box[0], box[1], box[2], box[3], &cellGrid,
                        &neighborCount.getDevicePointer(),
                        &neighborScratch.getDevicePointer(), &neighborList.getDevicePointer(), &neighborCapacity};
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
