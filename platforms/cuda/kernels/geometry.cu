/*
 * geometry.cu: positions and pair displacements, shared by the neighbour search and the
 * network kernels. Every kernel finds a pair's displacement with the same arithmetic, so a
 * pair that the list holds is exactly a pair that the network kernels see within the cutoff
 * (and the brute-force fallback used after a list overflow sees the same pairs, in the same order).
 *
 * Lengths here are the model's (Å). OpenMM's positions (nm) are scaled once, when gathered.
 *
 * Compile-time constants (defined by the host): MLFF_CUTOFF_SQUARED (Å^2), MLFF_PERIODIC (if set).
 */

/** Position (Å) of the particle `particle` of the System, read through OpenMM's sorted order. */
DEVICE inline real4 mlffLoadPosition(const real4* RESTRICT posq, const int* RESTRICT sortedIndexOfParticle, int particle) {
    real4 p = posq[sortedIndexOfParticle[particle]];
    real4 r;
    r.x = (real) 10 * p.x;
    r.y = (real) 10 * p.y;
    r.z = (real) 10 * p.z;
    r.w = 0;
    return r;
}

/** ML atom j's position (Å) read from OpenMM's positions, as pos[j]: the same values mlPos holds. */
struct MlffSystemPositions {
    const real4* RESTRICT posq;
    const int* RESTRICT sortedIndexOfParticle;
    const int* RESTRICT mlParticle;
    DEVICE real4 operator[](int j) const {
        return mlffLoadPosition(posq, sortedIndexOfParticle, mlParticle[j]);
    }
};

/**
 * u = r_j - r_i (Å), by minimum image when periodic. The box is OpenMM's reduced form
 * (a along x, b in the xy plane), so reducing along c, then b, then a is exact for any
 * cutoff up to half the smallest box height (as OpenMM's own kernels do).
 */
DEVICE inline void mlffPairDelta(real4 ri, real4 rj, real4 boxA, real4 boxB, real4 boxC, real4 invBoxSize,
                                 real* ux, real* uy, real* uz) {
    real dx = rj.x - ri.x, dy = rj.y - ri.y, dz = rj.z - ri.z;
#ifdef MLFF_PERIODIC
    real sc = floor(dz * invBoxSize.z + (real) 0.5);
    dx -= sc * boxC.x;
    dy -= sc * boxC.y;
    dz -= sc * boxC.z;
    real sb = floor(dy * invBoxSize.y + (real) 0.5);
    dx -= sb * boxB.x;
    dy -= sb * boxB.y;
    real sa = floor(dx * invBoxSize.x + (real) 0.5);
    dx -= sa * boxA.x;
#endif
    *ux = dx;
    *uy = dy;
    *uz = dz;
}

/** Whether j is an edge of i given u = r_j - r_i: within the cutoff (inclusive, as the model defines). */
DEVICE inline bool mlffIsEdge(real ux, real uy, real uz) {
    return ux * ux + uy * uy + uz * uz <= (real) MLFF_CUTOFF_SQUARED;
}

/**
 * How many neighbour candidates ML atom i has, from its list's count: the count, or after an
 * overflow of the list (count > capacity) the size of its replica (mlffNeighborCandidate).
 */
DEVICE inline int mlffNumNeighborCandidates(int count, bool overflowed, int replica, const int* RESTRICT replicaStart) {
    return overflowed ? replicaStart[replica + 1] - replicaStart[replica] : count;
}

/**
 * The t-th neighbour candidate of ML atom i: its list entry, or after an overflow of the list
 * (count > capacity) the t-th atom of its replica, which the caller then tests with mlffIsEdge.
 * Both orders are ascending ML index, so the two paths sum in the same order.
 */
DEVICE inline int mlffNeighborCandidate(int i, int t, bool overflowed, int replicaStart,
                                        const int* RESTRICT neighborList, int neighborCapacity) {
    return overflowed ? replicaStart + t : neighborList[(size_t) i * neighborCapacity + t];
}
