/*
 * cell_list.cu: the neighbour search for large replicas (the host uses it when a replica has
 * MLFF_CELL_LIST_MIN_ATOMS atoms or more; smaller ones scan their replica, neighbors.cu), and the
 * ML atoms' numbering along space that comes with it.
 *
 * Atoms are binned into cells at least a cutoff wide, so that every edge joins an atom to one of
 * the 27 cells around its own. Each replica has cells of its own, after the replica before's:
 *   - periodic: the box's fractional coordinates cut into n_a x n_b x n_c parallelepipeds with
 *     n_k = floor(height_k / cutoff) (the host may use fewer, which stays exact), numbered with a
 *     fastest;
 *   - not periodic: cubes of side `cutoff` on an unbounded lattice, in MLFF_REPLICA_CELLS buckets a
 *     replica, a cell in the bucket of its Z-order code's low bits (mlffCellIndex): the lattice
 *     tiled by a block of buckets, so that the buckets' order is an order along space, and cells a
 *     block apart share a bucket (the distance test drops their atoms).
 * Two of the 27 neighbouring cells can be the same cell or bucket (n_k < 3, a small block): each is
 * scanned once.
 *
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
 * Compile-time constants: MLFF_NUM_CELLS (cells allocated), MLFF_CELL_SIZE (Å) and
 * MLFF_REPLICA_CELLS (a power of two, at least twice a replica's atoms) when not periodic, and
 * those of geometry.cu.
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

#ifndef MLFF_PERIODIC
/** Bits 0 to 9 of x spread to bits 0, 3, ..., 27: one coordinate's part of a Z-order code. */
DEVICE inline unsigned int mlffSpreadBits(unsigned int x) {
    x &= 0x3ffu;
    x = (x | (x << 16)) & 0x030000ffu;
    x = (x | (x << 8)) & 0x0300f00fu;
    x = (x | (x << 4)) & 0x030c30c3u;
    return (x | (x << 2)) & 0x09249249u;
}
#endif

/**
 * The index of the cell with coordinates c (taken modulo the grid when periodic) in replica
 * `replica`: periodic, its place in the replica's grid; not periodic, the bucket of the low bits
 * of its Z-order code (x, y, z interleaved from bit 0; two's complement keeps the low bits of a
 * negative coordinate its residue), so that a replica's MLFF_REPLICA_CELLS = 2^b buckets tile the
 * lattice with blocks of 2^ceil(b/3) or fewer cells along an axis.
 */
DEVICE inline int mlffCellIndex(int4 c, int replica, int4 grid) {
#ifdef MLFF_PERIODIC
    const int x = (c.x + grid.x) % grid.x, y = (c.y + grid.y) % grid.y, z = (c.z + grid.z) % grid.z;
    return ((replica * grid.z + z) * grid.y + y) * grid.x + x;
#else
    const unsigned int code = mlffSpreadBits((unsigned int) c.x) | (mlffSpreadBits((unsigned int) c.y) << 1) |
                              (mlffSpreadBits((unsigned int) c.z) << 2);
    return replica * MLFF_REPLICA_CELLS + (int) (code & (MLFF_REPLICA_CELLS - 1));
#endif
}

/**
 * Gathers each ML atom's position (Å) into binnedPos and counts the atoms of each cell (cellCount
 * zeroed before). Both in the numbering before this evaluation's.
 */
KERNEL void mlffAssignCells(const real4* RESTRICT posq, const int* RESTRICT sortedIndexOfParticle,
        const int* RESTRICT mlParticle, const int* RESTRICT mlReplica, real4 boxA, real4 boxB, real4 boxC,
        real4 invBoxSize, int4 grid, real4* RESTRICT binnedPos, int* RESTRICT cellOfAtom, int* RESTRICT cellCount) {
    mlffStartAfterPreviousLaunch();
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < MLFF_NUM_ATOMS; i += blockDim.x * gridDim.x) {
        const real4 r = mlffLoadPosition(posq, sortedIndexOfParticle, mlParticle[i]);
        binnedPos[i] = r;
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
 * One warp per ML atom i (in the cells' numbering): scans the atoms of the distinct cells among the
 * 27 around i's (each a range of ML indices, and all of i's replica), appends the edges to i's row
 * of neighborScratch, then writes them to neighborList in ascending order (each entry's rank among
 * the row). neighborCount gets the true count even beyond the capacity, as in
 * mlffFindNeighborsInReplica. Lane 0 also takes i's particle and Z in the new numbering into
 * mlParticle and mlZ, which no other launch reads meanwhile. Launch: MLFF_NUM_ATOMS warps.
 */
KERNEL void mlffFindNeighborsInCells(const real4* RESTRICT mlPos, const int* RESTRICT mlReplica,
        const int* RESTRICT cellStart, const int* RESTRICT cellCount, const int* RESTRICT cellOrderParticle,
        const int* RESTRICT cellOrderZ, int* RESTRICT mlParticle, int* RESTRICT mlZ, real4 boxA, real4 boxB,
        real4 boxC, real4 invBoxSize, int4 grid, int* RESTRICT neighborCount, int* RESTRICT neighborScratch,
        int* RESTRICT neighborList, int neighborCapacity) {
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
            const int j = base + lane;
            bool edge = false;
            if (j < end && j != i) {
                real ux, uy, uz;
                mlffPairDelta(ri, mlPos[j], boxA, boxB, boxC, invBoxSize, &ux, &uy, &uz);
                edge = mlffIsEdge(ux, uy, uz);
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
