/*
 * neighbors.cu: the architecture-independent part of a step: OpenMM's atom order, the
 * neighbour lists, and the energy reduction.
 *
 * ML atoms are numbered 0..MLFF_NUM_ATOMS-1 by (replica, index in the force), so each replica is
 * a contiguous range [replicaStart[r], replicaStart[r+1]); with the cell list, each evaluation
 * numbers each replica's atoms anew in the cells' order (cell_list.cu). Neighbour lists hold ML indices in
 * ascending order (a fixed order is what makes the forces bitwise reproducible), up to
 * neighborCapacity per atom; neighborCount holds the true count even when it exceeds the capacity,
 * and the network kernels then fall back to scanning the replica (geometry.cu), so no step is ever
 * computed from a truncated list. The host grows the lists when it sees the overflow.
 */

/** sortedIndexOfParticle[atomIndex[s]] = s: where each System particle now sits in posq. Run after each reorder. */
KERNEL void mlffInvertAtomIndex(const int* RESTRICT atomIndex, int* RESTRICT sortedIndexOfParticle, int numAtoms) {
    mlffStartAfterPreviousLaunch();
    for (int s = blockIdx.x * blockDim.x + threadIdx.x; s < numAtoms; s += blockDim.x * gridDim.x)
        sortedIndexOfParticle[atomIndex[s]] = s;
}

/**
 * One warp per ML atom i scans the atoms of its replica in ascending order, 32 at a time, and
 * appends the edges in that order (ballot + prefix count). Also gathers i's position (Å) into
 * mlPos for the network kernels. Launch: MLFF_NUM_ATOMS warps, any block size that is a multiple of 32.
 */
KERNEL void mlffFindNeighborsInReplica(const real4* RESTRICT posq, const int* RESTRICT sortedIndexOfParticle,
        const int* RESTRICT mlParticle, const int* RESTRICT mlReplica, const int* RESTRICT replicaStart,
        real4 boxA, real4 boxB, real4 boxC, real4 invBoxSize, real4* RESTRICT mlPos,
        int* RESTRICT neighborCount, int* RESTRICT neighborList, int neighborCapacity) {
    mlffStartAfterPreviousLaunch();
    const int i = (blockIdx.x * blockDim.x + threadIdx.x) / 32;
    const int lane = threadIdx.x % 32;
    if (i >= MLFF_NUM_ATOMS)
        return; // the whole warp leaves together
    const real4 ri = mlffLoadPosition(posq, sortedIndexOfParticle, mlParticle[i]);
    if (lane == 0)
        mlPos[i] = ri;
    const int replica = mlReplica[i];
    const int start = replicaStart[replica], end = replicaStart[replica + 1];
    int count = 0;
    for (int base = start; base < end; base += 32) {
        const int j = base + lane;
        bool edge = false;
        if (j < end && j != i) {
            const real4 rj = mlffLoadPosition(posq, sortedIndexOfParticle, mlParticle[j]);
            real ux, uy, uz;
            mlffPairDelta(ri, rj, boxA, boxB, boxC, invBoxSize, &ux, &uy, &uz);
            edge = mlffIsEdge(ux, uy, uz);
        }
        const unsigned int mask = __ballot_sync(0xffffffffu, edge);
        if (edge) {
            const int slot = count + __popc(mask & ((1u << lane) - 1u));
            if (slot < neighborCapacity)
                neighborList[(size_t) i * neighborCapacity + slot] = j;
        }
        count += __popc(mask);
    }
    if (lane == 0)
        neighborCount[i] = count;
}

#ifdef MLFF_REDUCE_BY_WARP
/**
 * For many replicas (MLFF_REDUCE_BY_WARP), before mlffReduceEnergies: warp r of the grid sums
 * replica r's atom energies, E_r, in double and in a fixed order (its lanes by stride, then a
 * shuffle tree). A warp per replica across the GPU: one block looping over 1,024 replicas took
 * 28 us, a chain of dependent loads.
 */
KERNEL void mlffReplicaEnergies(const real* RESTRICT atomEnergy, const int* RESTRICT replicaStart,
        double* RESTRICT replicaEnergy) {
    mlffStartAfterPreviousLaunch();
    const int lane = threadIdx.x % 32, r = (int) ((blockIdx.x * (size_t) blockDim.x + threadIdx.x) / 32);
    if (r >= MLFF_NUM_REPLICAS)
        return; // the whole warp
    double sum = 0;
    for (int i = replicaStart[r] + lane; i < replicaStart[r + 1]; i += 32)
        sum += (double) atomEnergy[i];
    for (int offset = 16; offset > 0; offset /= 2)
        sum += __shfl_down_sync(0xffffffffu, sum, offset);
    if (lane == 0)
        replicaEnergy[r] = sum;
}
#endif

/**
 * combine() of the x of the block's first MLFF_REDUCE_THREADS threads (a multiple of 32) in a fixed
 * order: each warp's by a shuffle tree, then the warps' in turn. Every thread gets the result;
 * all threads of the block call (those past MLFF_REDUCE_THREADS only join the barriers).
 */
template <class T, class Combine>
DEVICE inline T mlffReduceInBlock(T x, Combine combine) {
    __shared__ T warpResults[MLFF_REDUCE_THREADS / 32];
    for (int offset = 16; offset > 0; offset /= 2)
        x = combine(x, __shfl_down_sync(0xffffffffu, x, offset));
    if (threadIdx.x % 32 == 0 && threadIdx.x < MLFF_REDUCE_THREADS)
        warpResults[threadIdx.x / 32] = x;
    __syncthreads();
    T result = warpResults[0];
    for (int w = 1; w < MLFF_REDUCE_THREADS / 32; w++)
        result = combine(result, warpResults[w]);
    __syncthreads(); // warpResults is rewritten by the next call
    return result;
}

struct MlffSum {
    DEVICE double operator()(double a, double b) const {
        return a + b;
    }
};

struct MlffMax {
    DEVICE int operator()(int a, int b) const {
        return max(a, b);
    }
};

/**
 * One block of MLFF_REDUCE_THREADS (set by the host: 1024, or with clusters the largest power of
 * two in MLFF_BLOCK): E_r = sum of the atom energies of replica r, in double and in a fixed order
 * (the whole block sums each replica in turn; with MLFF_REDUCE_BY_WARP mlffReplicaEnergies did
 * this), then OpenMM's energy lambda * sum_r scale_r E_r and its derivative by lambda, both
 * converted to kJ/mol, and the largest neighbour count of this step (for the host's overflow
 * check). energyParamDerivs is null when the force names no energy-scale parameter. The body may
 * also run in a larger block (mlffStudentBackwardCluster's extra cluster): its first
 * MLFF_REDUCE_THREADS threads then do the same sums in the same order, and the rest only join the
 * barriers.
 */
DEVICE inline void mlffReduceEnergiesInBlock(const real* RESTRICT atomEnergy, const int* RESTRICT replicaStart,
        const double* RESTRICT replicaScale, double lambda, double* RESTRICT replicaEnergy,
        mixed* RESTRICT energyBuffer, mixed* RESTRICT energyParamDerivs, int energyParamDerivIndex,
        const int* RESTRICT neighborCount, int* RESTRICT maxNeighborCount) {
    const int t = threadIdx.x;
    const bool summing = t < MLFF_REDUCE_THREADS;
#ifndef MLFF_REDUCE_BY_WARP
    for (int r = 0; r < MLFF_NUM_REPLICAS; r++) {
        double sum = 0;
        for (int i = replicaStart[r] + t; summing && i < replicaStart[r + 1]; i += MLFF_REDUCE_THREADS)
            sum += (double) atomEnergy[i];
        sum = mlffReduceInBlock(sum, MlffSum());
        if (t == 0)
            replicaEnergy[r] = sum;
    }
#endif
    __syncthreads(); // every replica's energy written (by this block, or by the launch before)
    double scaled = 0;
    for (int r = t; summing && r < MLFF_NUM_REPLICAS; r += MLFF_REDUCE_THREADS)
        scaled += replicaScale[r] * replicaEnergy[r];
    const double scaledSum = mlffReduceInBlock(scaled, MlffSum()); // sum_r scale_r E_r
    int maxCount = 0;
    for (int i = t; summing && i < MLFF_NUM_ATOMS; i += MLFF_REDUCE_THREADS)
        maxCount = max(maxCount, neighborCount[i]);
    maxCount = mlffReduceInBlock(maxCount, MlffMax());
    if (t == 0) {
        *maxNeighborCount = maxCount;
        energyBuffer[0] += (mixed) (lambda * scaledSum * MLFF_KJ_PER_MOL_PER_EV);
        if (energyParamDerivs != 0)
            energyParamDerivs[energyParamDerivIndex] += (mixed) (scaledSum * MLFF_KJ_PER_MOL_PER_EV);
    }
}

KERNEL void mlffReduceEnergies(const real* RESTRICT atomEnergy, const int* RESTRICT replicaStart,
        const double* RESTRICT replicaScale, double lambda, double* RESTRICT replicaEnergy,
        mixed* RESTRICT energyBuffer, mixed* RESTRICT energyParamDerivs, int energyParamDerivIndex,
        const int* RESTRICT neighborCount, int* RESTRICT maxNeighborCount) {
    mlffStartAfterPreviousLaunch();
    mlffReduceEnergiesInBlock(atomEnergy, replicaStart, replicaScale, lambda, replicaEnergy, energyBuffer,
                              energyParamDerivs, energyParamDerivIndex, neighborCount, maxNeighborCount);
}
