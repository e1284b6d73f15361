// CudaCalcMLFFForceKernel, the network's passes: the fused path's launches a block, and the
// tiled path's messages, update products and readout forward, then backward from the last block.

#include "CudaCalcMLFFForceKernel.h"

#include "CudaKernelConstants.h"
#include "ProductShapes.h"
#include "internal/MLFFUnits.h"

#include <algorithm>

using namespace MLFFPlugin;
using namespace MLFFPlugin::KernelConstants;
using namespace MLFFPlugin::ProductShapes;

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
                            &midV.getDevicePointer(), &updateInput.getDevicePointer()};
            launch(messagesForwardKernel, args, messagesGrid, threadsPerAtom, "the messages");
        }
        if (useEdgeFilters && !useReplicaMessages) {
            CUdeviceptr filters = edgeFiltersOfBlock(layer);
            void* args[] = {&layer, &params.getDevicePointer(), &mlZ.getDevicePointer(),
                            &neighborCount.getDevicePointer(), &neighborList.getDevicePointer(), &neighborCapacity,
                            &edgeStart.getDevicePointer(), &edgeDelta.getDevicePointer(),
                            &edgeFilterRow.getDevicePointer(), &filters, &stateS.getDevicePointer(),
                            &stateV.getDevicePointer(), &midV.getDevicePointer(), &updateInput.getDevicePointer()};
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
            void* args[] = {&params.getDevicePointer(), &updateActivation.getDevicePointer(),
                            &updateInput.getDevicePointer(), &stateS.getDevicePointer(), &images};
            launchUpdateProduct(lastOutputForwardKernel, args);
        }
        else {
            void* args[] = {&layer, &params.getDevicePointer(), &updateActivation.getDevicePointer(),
                            &updateInput.getDevicePointer(), &midV.getDevicePointer(), &updateOutput.getDevicePointer(),
                            &stateS.getDevicePointer(), &stateV.getDevicePointer()};
            launchMatmul(outputForwardKernel, args, n, 3 * h, 96, 128, "the update's output");
        }
    }
    if (warpgroupReadout) { // a block an SM at most, its warp groups taking the 64-atom tiles in turn
        void* args[] = {&params.getDevicePointer(), &stateS.getDevicePointer(), &atomEnergy.getDevicePointer(),
                        &gradS[0].getDevicePointer(), &readoutImages.getDevicePointer()};
        const int tiles = (numAtoms + WarpgroupRows - 1) / WarpgroupRows;
        const int blocks = std::min((tiles + ReadoutWarpgroups - 1) / ReadoutWarpgroups, multiprocessors);
        launchWith(readoutKernel, args, (unsigned int) blocks, WarpgroupThreads * ReadoutWarpgroups,
                   (unsigned int) readoutImageBytes(), 1, "the readout");
    }
    else {
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
                            &midV.getDevicePointer(), &updateGradOutput.getDevicePointer(),
                            &gradS[in].getDevicePointer(), &gradV[in].getDevicePointer()};
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
                            &gradV[1 - in].getDevicePointer(),
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
                            &edgePartner.getDevicePointer(), &edgeWalk.getDevicePointer(), &filters,
                            &edgeGradFilter.getDevicePointer(), &edgeGradN.getDevicePointer(),
                            &stateS.getDevicePointer(), &stateV.getDevicePointer(), &midV.getDevicePointer(),
                            &updateOutput.getDevicePointer(), &gradS[in].getDevicePointer(),
                            &gradV[in].getDevicePointer(), &updateGradOutput.getDevicePointer(),
                            &gradV[1 - in].getDevicePointer()};
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
                    &stateV.getDevicePointer(), &midV.getDevicePointer(), &updateInput.getDevicePointer()};
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
                    &gradV[1 - in].getDevicePointer(), &gradFilter, &gradN,
                    &mlParticle.getDevicePointer(), &sortedIndexOfParticle.getDevicePointer(),
                    &replicaScale.getDevicePointer(), &lambdaForceScale, &force};
    launchWith(messagesBackwardKernel, args, numReplicas, replicaSplit * threadsPerAtom,
               (unsigned int) replicaBackwardSharedBytes(), 1, "the messages' backward, a block per replica");
}
