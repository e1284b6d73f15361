/*
 * cell_list.cu: the neighbour search for large replicas (the host uses it when a replica has
 * MLFF_CELL_LIST_MIN_ATOMS atoms or more; smaller ones scan their replica, neighbors.cu), and the
 * ML atoms' numbering along space that comes with it.
 *
 * Atoms are binned into cells at least a cutoff wide along a and b (x and y) and a cutoff over
 * MLFF_CELL_SLICES along c (z), so that every edge joins an atom to one of the 3 x 3 x
 * (2 MLFF_CELL_SLICES + 1) cells around its own (mlffCellReach). Cells thin along the slowest axis
 * keep an edge's two atoms near each other in the numbering below, at most about one and a half
 * cutoffs' slab of the replica apart (docs/performance.md, "Every row: the order of the atoms").
 * Each replica has cells of its own, after the replica before's:
 *   - periodic: the box's fractional coordinates cut into n_a x n_b x n_c parallelepipeds, numbered
 *     with a fastest; along each axis either n_k >= 2 reach_k + 1 (no cell is reached twice) or
 *     n_k = 1 (the whole axis one cell, reach 0), as the host chooses them (setBox);
 *   - not periodic: an unbounded lattice in MLFF_REPLICA_CELLS buckets a replica, numbered x fastest
 *     by the low bits of the cell's coordinates relative to the cell of the replica's origin
 *     particle (mlffCellIndex): a block of 2^MLFF_BUCKET_BITS_XY cells along x and y and
 *     2^MLFF_BUCKET_BITS_Z along z, centred on that particle, tiles the lattice, and cells a block
 *     apart share a bucket (the distance test drops their atoms). The blocks are at least 4 x 4 x 8
 *     cells, so that no bucket is reached twice.
 * Each evaluation numbers the ML atoms anew in the cells' order (mlffNumberAtomsByCell), so that
 * atoms near in space are near in every array the network kernels index by atom, whatever order
 * the System lists them in (docs/performance.md, "Every row: the order of the atoms"); a cell's
 * atoms are then a range of ML indices. The numbering depends on this evaluation's positions alone,
 * so that, but for the lists' capacity, an evaluation's result does not depend on the ones before.
 *
 * Per evaluation: mlffAssignCells, mlffScanCells, mlffFillCells, mlffNumberAtomsByCell,
 * mlffFindNeighborsInCells. Each list is sorted: lists come out in ascending ML index, as from the
 * replica scan.
 *
 * Compile-time constants: MLFF_NUM_CELLS (cells allocated), MLFF_CELL_SIZE (Å, a cell's width
 * along a and b), MLFF_CELL_SLICES; when not periodic MLFF_REPLICA_CELLS = 2^(2 MLFF_BUCKET_BITS_XY
 * + MLFF_BUCKET_BITS_Z), at least twice a replica's atoms; and those of geometry.cu.
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
                     (int) floor(r.z * (real) ((double) MLFF_CELL_SLICES / MLFF_CELL_SIZE)), 0);
#endif
}

/** How many cells an edge can reach along each axis (w unused); see the grid's rule above. */
DEVICE inline int4 mlffCellReach(int4 grid) {
#ifdef MLFF_PERIODIC
    return make_int4(grid.x > 1 ? 1 : 0, grid.y > 1 ? 1 : 0, grid.z > 1 ? MLFF_CELL_SLICES : 0, 0);
#else
    return make_int4(1, 1, MLFF_CELL_SLICES, 0);
#endif
}

/**
 * The cell whose bucket block a replica's cells are numbered around (not periodic): the cell of
 * the replica's origin particle, a particle fixed for the replica (replicaOriginParticle[replica]),
 * so that the numbering depends on this evaluation's positions alone. Periodic: unused, (0, 0, 0).
 */
DEVICE inline int4 mlffReplicaOriginCell(const real4* RESTRICT posq, const int* RESTRICT sortedIndexOfParticle,
        const int* RESTRICT replicaOriginParticle, int replica, real4 boxA, real4 boxB, real4 boxC,
        real4 invBoxSize, int4 grid) {
#ifdef MLFF_PERIODIC
    return make_int4(0, 0, 0, 0);
#else
    const real4 origin = mlffLoadPosition(posq, sortedIndexOfParticle, replicaOriginParticle[replica]);
    return mlffCellCoordinates(origin, boxA, boxB, boxC, invBoxSize, grid);
#endif
}

/**
 * The index of the cell with coordinates c in replica `replica`: periodic, its place in the
 * replica's grid (c taken modulo the grid); not periodic, its bucket, the low bits of c - origin
 * (origin: mlffReplicaOriginCell) offset by half a block, x fastest. Either way, cells next to each
 * other along a (x) have consecutive indices but where the grid or the block wraps.
 */
DEVICE inline int mlffCellIndex(int4 c, int replica, int4 grid, int4 origin) {
#ifdef MLFF_PERIODIC
    const int x = (c.x + grid.x) % grid.x, y = (c.y + grid.y) % grid.y, z = (c.z + grid.z) % grid.z;
    return ((replica * grid.z + z) * grid.y + y) * grid.x + x;
#else
    const unsigned int side = 1u << MLFF_BUCKET_BITS_XY, height = 1u << MLFF_BUCKET_BITS_Z;
    const unsigned int x = (unsigned int) (c.x - origin.x + (int) (side / 2)) & (side - 1);
    const unsigned int y = (unsigned int) (c.y - origin.y + (int) (side / 2)) & (side - 1);
    const unsigned int z = (unsigned int) (c.z - origin.z + (int) (height / 2)) & (height - 1);
    return replica * MLFF_REPLICA_CELLS + (int) ((z * side + y) * side + x);
#endif
}

/**
 * Gathers each ML atom's position (Å) into binnedPos and counts the atoms of each cell (cellCount
 * zeroed before). Both in the numbering before this evaluation's.
 */
KERNEL void mlffAssignCells(const real4* RESTRICT posq, const int* RESTRICT sortedIndexOfParticle,
        const int* RESTRICT mlParticle, const int* RESTRICT mlReplica, const int* RESTRICT replicaOriginParticle,
        real4 boxA, real4 boxB, real4 boxC, real4 invBoxSize, int4 grid, real4* RESTRICT binnedPos,
        int* RESTRICT cellOfAtom, int* RESTRICT cellCount) {
    mlffStartAfterPreviousLaunch();
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < MLFF_NUM_ATOMS; i += blockDim.x * gridDim.x) {
        const real4 r = mlffLoadPosition(posq, sortedIndexOfParticle, mlParticle[i]);
        binnedPos[i] = r;
        const int replica = mlReplica[i];
        const int4 origin = mlffReplicaOriginCell(posq, sortedIndexOfParticle, replicaOriginParticle, replica, boxA,
                                                  boxB, boxC, invBoxSize, grid);
        const int cell = mlffCellIndex(mlffCellCoordinates(r, boxA, boxB, boxC, invBoxSize, grid), replica, grid, origin);
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

/** cellAtoms[cellStart[c] ...] = the atoms of cell c (in an order that atomics decide; the numbering before). */
KERNEL void mlffFillCells(const int* RESTRICT cellOfAtom, const int* RESTRICT cellStart, int* RESTRICT cellCount,
                          int* RESTRICT cellAtoms) {
    mlffStartAfterPreviousLaunch();
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < MLFF_NUM_ATOMS; i += blockDim.x * gridDim.x) {
        const int cell = cellOfAtom[i];
        cellAtoms[cellStart[cell] + atomicAdd(&cellCount[cell], 1)] = i;
    }
}

/**
 * The ML atoms numbered in the cells' order: cell c's atoms become ML atoms cellStart[c] ...
 * cellStart[c] + cellCount[c] - 1, in the order of their System particle indices (unique, so that
 * the order in which atomics filled the cell does not show). Each replica's cells come after the replica before's,
 * so each replica keeps its range of ML indices and mlReplica stays as it was. A thread an atom i
 * of the numbering before, which it reads mlParticle, mlZ, binnedPos (N) and cellAtoms in; it
 * writes atom i's particle and Z at its new index into cellOrderParticle and cellOrderZ (N; the
 * next launch takes them into mlParticle and mlZ, which this one still reads) and its position
 * into mlPos (N, Å).
 */
KERNEL void mlffNumberAtomsByCell(const int* RESTRICT cellOfAtom, const int* RESTRICT cellStart,
        const int* RESTRICT cellCount, const int* RESTRICT cellAtoms, const int* RESTRICT mlParticle,
        const int* RESTRICT mlZ, const real4* RESTRICT binnedPos, int* RESTRICT cellOrderParticle,
        int* RESTRICT cellOrderZ, real4* RESTRICT mlPos) {
    mlffStartAfterPreviousLaunch();
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < MLFF_NUM_ATOMS; i += blockDim.x * gridDim.x) {
        const int cell = cellOfAtom[i], begin = cellStart[cell], end = begin + cellCount[cell];
        const int particle = mlParticle[i];
        int numbered = begin; // i's new index: the cell's start, then its atoms of lower particle index
        for (int k = begin; k < end; k++)
            numbered += mlParticle[cellAtoms[k]] < particle;
        cellOrderParticle[numbered] = particle;
        cellOrderZ[numbered] = mlZ[i];
        mlPos[numbered] = binnedPos[i];
    }
}

/**
 * Appends to row (i's scratch row, `count` entries so far, of which at most `capacity` stored) the
 * atoms j of ML indices [begin, end), j != i, within the cutoff of ri: a warp's lanes test 32 at a
 * time, and the edges keep their order.
 */
DEVICE inline void mlffAppendEdgesInRange(int begin, int end, int i, real4 ri, const real4* RESTRICT mlPos,
        real4 boxA, real4 boxB, real4 boxC, real4 invBoxSize, int lane, int* RESTRICT row, int capacity, int* count) {
    for (int base = begin; base < end; base += 32) {
        const int j = base + lane;
        bool edge = false;
        if (j < end && j != i) {
            real ux, uy, uz;
            mlffPairDelta(ri, mlPos[j], boxA, boxB, boxC, invBoxSize, &ux, &uy, &uz);
            edge = mlffIsEdge(ux, uy, uz);
        }
        const unsigned int mask = __ballot_sync(0xffffffffu, edge);
        if (edge) {
            const int slot = *count + __popc(mask & ((1u << lane) - 1u));
            if (slot < capacity)
                row[slot] = j;
        }
        *count += __popc(mask);
    }
}

/**
 * One warp per ML atom i (in the cells' numbering): scans the atoms of the cells that i's cell
 * reaches (each a range of ML indices, and all of i's replica; a row of cells along a whose
 * indices are consecutive as one range), appends the edges to i's row of neighborScratch, then
 * writes them to neighborList in ascending order (each entry's rank among the row). neighborCount
 * gets the true count even beyond the capacity, as in mlffFindNeighborsInReplica. Lane 0 also
 * takes i's particle and Z in the new numbering into mlParticle and mlZ, which no other launch
 * reads meanwhile. Launch: MLFF_NUM_ATOMS warps.
 */
KERNEL void mlffFindNeighborsInCells(const real4* RESTRICT mlPos, const int* RESTRICT mlReplica,
        const int* RESTRICT cellStart, const int* RESTRICT cellCount, const int* RESTRICT cellOrderParticle,
        const int* RESTRICT cellOrderZ, const real4* RESTRICT posq, const int* RESTRICT sortedIndexOfParticle,
        const int* RESTRICT replicaOriginParticle, int* RESTRICT mlParticle, int* RESTRICT mlZ, real4 boxA,
        real4 boxB, real4 boxC, real4 invBoxSize, int4 grid, int* RESTRICT neighborCount,
        int* RESTRICT neighborScratch, int* RESTRICT neighborList, int neighborCapacity) {
    mlffStartAfterPreviousLaunch();
    const int i = (blockIdx.x * blockDim.x + threadIdx.x) / 32;
    const int lane = threadIdx.x % 32;
    if (i >= MLFF_NUM_ATOMS)
        return; // the whole warp leaves together
    if (lane == 0) {
        mlParticle[i] = cellOrderParticle[i];
        mlZ[i] = cellOrderZ[i];
    }
    const real4 ri = mlPos[i];
    const int replica = mlReplica[i];
    const int4 home = mlffCellCoordinates(ri, boxA, boxB, boxC, invBoxSize, grid);
    const int4 origin = mlffReplicaOriginCell(posq, sortedIndexOfParticle, replicaOriginParticle, replica, boxA, boxB,
                                              boxC, invBoxSize, grid);
    const int4 reach = mlffCellReach(grid);
    int* row = neighborScratch + (size_t) i * neighborCapacity;
    int count = 0;
    for (int dz = -reach.z; dz <= reach.z; dz++)
        for (int dy = -reach.y; dy <= reach.y; dy++) {
            const int first = mlffCellIndex(make_int4(home.x - reach.x, home.y + dy, home.z + dz, 0), replica, grid, origin);
            const int last = mlffCellIndex(make_int4(home.x + reach.x, home.y + dy, home.z + dz, 0), replica, grid, origin);
            if (last - first == 2 * reach.x) { // the row's cells consecutive: their atoms are one range
                mlffAppendEdgesInRange(cellStart[first], cellStart[last] + cellCount[last], i, ri, mlPos, boxA, boxB,
                                       boxC, invBoxSize, lane, row, neighborCapacity, &count);
                continue;
            }
            for (int dx = -reach.x; dx <= reach.x; dx++) {
                const int c = mlffCellIndex(make_int4(home.x + dx, home.y + dy, home.z + dz, 0), replica, grid, origin);
                mlffAppendEdgesInRange(cellStart[c], cellStart[c] + cellCount[c], i, ri, mlPos, boxA, boxB, boxC,
                                       invBoxSize, lane, row, neighborCapacity, &count);
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
