/*
 * cell_list.cu: the neighbour search for large replicas (the host uses it when a replica has
 * MLFF_CELL_LIST_MIN_ATOMS atoms or more; smaller ones scan their replica, neighbors.cu).
 *
 * Atoms are binned into cells at least a cutoff wide, so that every edge joins an atom to one of
 * the 27 cells around its own:
 *   - periodic: the box's fractional coordinates cut into n_a x n_b x n_c parallelepipeds with
 *     n_k = floor(height_k / cutoff) (the host may use fewer, which stays exact), per replica;
 *   - not periodic: cubes of side `cutoff` on an unbounded lattice, hashed (with the replica)
 *     into MLFF_NUM_CELLS buckets; a bucket may hold far atoms too, which the distance test drops.
 * Two of the 27 neighbouring cells can be the same cell or bucket (n_k < 3, hash collisions):
 * each is scanned once.
 *
 * Per step: mlffAssignCells (also gathers mlPos), mlffScanCells, mlffFillCells,
 * mlffFindNeighborsInCells. The order of atoms within a cell depends on atomics, so each list is
 * sorted afterwards: lists come out in ascending ML index exactly as from the replica scan.
 *
 * Compile-time constants: MLFF_NUM_CELLS (cells allocated; a power of two when not periodic),
 * MLFF_CELL_SIZE (Å, not periodic), and those of geometry.cu.
 */

/** The cell's integer coordinates (periodic: fractional, in [0, n_k)) of position r. */
DEVICE inline int4 mlffCellCoordinates(real4 r, real4 boxA, real4 boxB, real4 boxC, real4 invBoxSize, int4 grid) {
#ifdef MLFF_PERIODIC
    // Fractional coordinates in the reduced-form box (a along x, b in the xy plane).
    real fc = r.z * invBoxSize.z;
    real fb = (r.y - fc * boxC.y) * invBoxSize.y;
    real fa = (r.x - fc * boxC.x - fb * boxB.x) * invBoxSize.x;
    fa -= floor(fa);
    fb -= floor(fb);
    fc -= floor(fc);
    return make_int4(min((int) (fa * grid.x), grid.x - 1), min((int) (fb * grid.y), grid.y - 1),
                     min((int) (fc * grid.z), grid.z - 1), 0);
#else
    return make_int4((int) floor(r.x * (real) (1.0 / MLFF_CELL_SIZE)), (int) floor(r.y * (real) (1.0 / MLFF_CELL_SIZE)),
                     (int) floor(r.z * (real) (1.0 / MLFF_CELL_SIZE)), 0);
#endif
}

/** The cell index of coordinates c (taken modulo the grid when periodic) in replica `replica`. */
DEVICE inline int mlffCellIndex(int4 c, int replica, int4 grid) {
#ifdef MLFF_PERIODIC
    const int x = (c.x + grid.x) % grid.x, y = (c.y + grid.y) % grid.y, z = (c.z + grid.z) % grid.z;
    return ((replica * grid.z + z) * grid.y + y) * grid.x + x;
#else
    const unsigned int hash = ((unsigned int) c.x * 73856093u) ^ ((unsigned int) c.y * 19349663u) ^
                              ((unsigned int) c.z * 83492791u) ^ ((unsigned int) replica * 2654435761u);
    return (int) (hash & (MLFF_NUM_CELLS - 1));
#endif
}

/** Gathers each ML atom's position (Å) into mlPos and counts the atoms of each cell (cellCount zeroed before). */
KERNEL void mlffAssignCells(const real4* RESTRICT posq, const int* RESTRICT sortedIndexOfParticle,
        const int* RESTRICT mlParticle, const int* RESTRICT mlReplica, real4 boxA, real4 boxB, real4 boxC,
        real4 invBoxSize, int4 grid, real4* RESTRICT mlPos, int* RESTRICT cellOfAtom, int* RESTRICT cellCount) {
    mlffStartAfterPreviousLaunch();
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < MLFF_NUM_ATOMS; i += blockDim.x * gridDim.x) {
        const real4 r = mlffLoadPosition(posq, sortedIndexOfParticle, mlParticle[i]);
        mlPos[i] = r;
        const int cell = mlffCellIndex(mlffCellCoordinates(r, boxA, boxB, boxC, invBoxSize, grid), mlReplica[i], grid);
        cellOfAtom[i] = cell;
        atomicAdd(&cellCount[cell], 1);
    }
}

/**
 * One block of MLFF_SCAN_THREADS (scan.cu): cellStart = exclusive prefix sum of cellCount over
 * numCells cells, and cellCount set back to 0 for mlffFillCells to count again.
 */
struct MlffCellStarts {
    int* count;
    int* start;
    DEVICE void operator()(int c, int before, int) const {
        start[c] = before;
        count[c] = 0;
    }
};

KERNEL void mlffScanCells(int* RESTRICT cellCount, int* RESTRICT cellStart, int numCells) {
    mlffStartAfterPreviousLaunch();
    mlffExclusiveScan(numCells, MlffCounts{cellCount}, MlffCellStarts{cellCount, cellStart});
}

/** cellAtoms[cellStart[c] ...] = the atoms of cell c (in an order that atomics decide). */
KERNEL void mlffFillCells(const int* RESTRICT cellOfAtom, const int* RESTRICT cellStart, int* RESTRICT cellCount,
                          int* RESTRICT cellAtoms) {
    mlffStartAfterPreviousLaunch();
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < MLFF_NUM_ATOMS; i += blockDim.x * gridDim.x) {
        const int cell = cellOfAtom[i];
        cellAtoms[cellStart[cell] + atomicAdd(&cellCount[cell], 1)] = i;
    }
}

/**
 * One warp per ML atom i: scans the atoms of the distinct cells among the 27 around i's, appends
 * the edges to i's row of neighborScratch, then writes them to neighborList in ascending order
 * (each entry's rank among the row). neighborCount gets the true count even beyond the capacity,
 * as in mlffFindNeighborsInReplica. Launch: MLFF_NUM_ATOMS warps.
 */
KERNEL void mlffFindNeighborsInCells(const real4* RESTRICT mlPos, const int* RESTRICT mlReplica,
        const int* RESTRICT cellStart, const int* RESTRICT cellCount, const int* RESTRICT cellAtoms,
        real4 boxA, real4 boxB, real4 boxC, real4 invBoxSize, int4 grid, int* RESTRICT neighborCount,
        int* RESTRICT neighborScratch, int* RESTRICT neighborList, int neighborCapacity) {
    mlffStartAfterPreviousLaunch();
    const int i = (blockIdx.x * blockDim.x + threadIdx.x) / 32;
    const int lane = threadIdx.x % 32;
    if (i >= MLFF_NUM_ATOMS)
        return; // the whole warp leaves together
    const real4 ri = mlPos[i];
    const int replica = mlReplica[i];
    const int4 home = mlffCellCoordinates(ri, boxA, boxB, boxC, invBoxSize, grid);
    // Lane k < 27 holds neighbouring cell k, or -1 if a lower lane holds the same one.
    int cell = -1;
    if (lane < 27)
        cell = mlffCellIndex(make_int4(home.x + lane % 3 - 1, home.y + (lane / 3) % 3 - 1, home.z + lane / 9 - 1, 0),
                             replica, grid);
    const unsigned int same = __match_any_sync(0xffffffffu, cell);
    if (lane >= 27 || (same & ((1u << lane) - 1u)) != 0)
        cell = -1;
    int* row = neighborScratch + (size_t) i * neighborCapacity;
    int count = 0;
    for (int k = 0; k < 27; k++) {
        const int c = __shfl_sync(0xffffffffu, cell, k);
        if (c < 0)
            continue;
        const int begin = cellStart[c], end = begin + cellCount[c];
        for (int base = begin; base < end; base += 32) {
            bool edge = false;
            int j = -1;
            if (base + lane < end) {
                j = cellAtoms[base + lane];
                if (j != i && mlReplica[j] == replica) {
                    real ux, uy, uz;
                    mlffPairDelta(ri, mlPos[j], boxA, boxB, boxC, invBoxSize, &ux, &uy, &uz);
                    edge = mlffIsEdge(ux, uy, uz);
                }
            }
            const unsigned int mask = __ballot_sync(0xffffffffu, edge);
            if (edge) {
                const int slot = count + __popc(mask & ((1u << lane) - 1u));
                if (slot < neighborCapacity)
                    row[slot] = j;
            }
            count += __popc(mask);
        }
    }
    __syncwarp();
    const int stored = min(count, neighborCapacity);
    for (int t = lane; t < stored; t += 32) {
        const int j = row[t];
        int rank = 0;
        for (int u = 0; u < stored; u++)
            rank += row[u] < j;
        neighborList[(size_t) i * neighborCapacity + rank] = j;
    }
    if (lane == 0)
        neighborCount[i] = count;
}
