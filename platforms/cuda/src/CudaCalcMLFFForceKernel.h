#ifndef MLFF_CUDA_CALC_MLFF_FORCE_KERNEL_H_
#define MLFF_CUDA_CALC_MLFF_FORCE_KERNEL_H_

#include "MLFFKernels.h"
#include "openmm/cuda/CudaArray.h"
#include "openmm/cuda/CudaContext.h"

#include <cuda.h>

#include <string>
#include <vector>

namespace MLFFPlugin {

/**
 * MLFFForce on the CUDA platform (docs/cuda-design.md). Per step, on OpenMM's stream, with no
 * allocation and no host synchronisation: one neighbour-search launch, L forward launches, L
 * backward launches (when forces are wanted) and one energy reduction.
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

    void launch(CUfunction kernel, void** args, unsigned int gridSize, unsigned int blockSize, const char* what);
    void checkNeighborCapacity();
    void setBox(OpenMM::ContextImpl& context);

    OpenMM::CudaContext& cu;
    bool hasInitializedIndex = false;
    int numAtoms = 0;                     // ML atoms
    int numReplicas = 0;
    int hidden = 0, numBlocks = 0;        // H, L
    int threadsPerAtom = 0;               // threads of a network kernel's block
    int maxReplicaSize = 0;
    int neighborCapacity = 0;
    std::string energyScaleParameter;
    double lastLambda = 1.0;
    std::vector<double> replicaScales;

    OpenMM::CudaArray params;             // real: the model (StudentPainnParameters)
    OpenMM::CudaArray mlParticle, mlZ, mlReplica, replicaStart, sortedIndexOfParticle; // int
    OpenMM::CudaArray mlPos;              // real4, Å
    OpenMM::CudaArray neighborCount, neighborList, maxNeighborCount; // int
    OpenMM::CudaArray stateS, stateV, midS, midV, atomEnergy; // real
    OpenMM::CudaArray gradS[2], gradV[2]; // real, ping-pong between backward launches
    OpenMM::CudaArray replicaScale, replicaEnergy; // double

    int* pinnedMaxNeighborCount = nullptr;
    CUevent maxCountEvent = nullptr;
    bool maxCountPending = false;

    CUfunction invertKernel = nullptr, neighborKernel = nullptr, forwardKernel = nullptr, backwardKernel = nullptr,
               reduceKernel = nullptr;

    // The box (Å) as kernel arguments of type real4: vectors a, b, c, then 1/(a.x, b.y, c.z).
    struct Real4Float {
        float x, y, z, w;
    };
    struct Real4Double {
        double x, y, z, w;
    };
    Real4Float boxFloat[4] = {};
    Real4Double boxDouble[4] = {};
};

} // namespace MLFFPlugin

#endif // MLFF_CUDA_CALC_MLFF_FORCE_KERNEL_H_
