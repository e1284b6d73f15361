#!/usr/bin/env python3
"""How far apart along the ML atoms' numbering the two atoms of each edge lie, for the numberings
the CUDA plugin could evaluate a structure in: the structure's order as written, that order
shuffled, and the cell list's numbering (platforms/cuda/kernels/cell_list.cu) with cells a cutoff
wide along a and b and a cutoff over S along c. The large rows' step follows the share of edges
whose atoms lie more than about 2,000 apart (docs/performance.md, "Every row: the order of the
atoms"). Reads write_structures.py's files; needs numpy alone.

    python3 benchmarks/edge_spread.py STRUCTURE.txt... [--cutoff 5] [--slices 1,2,3]

Prints, per structure and numbering, the median distance along the numbering and the share of
edges beyond 1,024, 2,048 and 4,096. Boxes must be rectangular. The cell numbering is the
plugin's before any coarsening (which only a system with more cells than atoms needs).
"""
import argparse
import sys

import numpy as np

CELL_MARGIN = 1.0001  # platforms/cuda/src/CudaKernelConstants.h's CellMargin
LEAST_REPLICA_CELLS = 128  # CudaCalcMLFFForceKernel::allocateAtomArrays: buckets a replica, at least
WINDOWS = (1024, 2048, 4096)


def read_structure(path):
    """(z, positions (N, 3) Å, replica, box edges (3,) Å or None) of bench.py's structure file."""
    with open(path) as f:
        header = f.readline().split()
        rows = np.loadtxt(f, ndmin=2)
    if len(rows) != int(header[0]):
        raise ValueError(f"{path}: the header says {header[0]} atoms, the file lists {len(rows)}")
    box = None
    if len(header) > 1:
        vectors = np.array(header[1:], dtype=float).reshape(3, 3)
        if np.any(vectors[~np.eye(3, dtype=bool)] != 0):
            raise ValueError(f"{path}: edge_spread handles rectangular boxes only")
        box = np.diag(vectors).copy()
    return rows[:, 0].astype(int), rows[:, 1:4], rows[:, 4].astype(int), box


def find_edges(positions, replica, box, cutoff, chunk=1000):
    """The pairs (i < j) of one replica within the cutoff (minimum image where periodic), (E, 2)."""
    found = []
    for start in range(0, len(positions), chunk):
        delta = positions[start:start + chunk, None, :] - positions[None, :, :]
        if box is not None:
            delta -= box * np.round(delta / box)
        i, j = np.nonzero((delta * delta).sum(-1) <= cutoff * cutoff)
        i += start
        keep = (i < j) & (replica[i] == replica[j])
        found.append(np.stack([i[keep], j[keep]], 1))
    return np.concatenate(found)


def cell_list_order(positions, replica, box, cutoff, slices):
    """Each atom's index in the cell list's numbering: by replica, cell (a fastest), then index."""
    size = cutoff * CELL_MARGIN
    reach = np.array([1, 1, slices])
    if box is not None:  # setBox's grid: floor(height * reach / size) cells, or one if fewer than 2 reach + 1
        cells = np.floor(box * reach / size).astype(int)
        cells = np.where(cells >= 2 * reach + 1, cells, 1)
        fraction = positions / box
        coordinates = np.minimum(((fraction - np.floor(fraction)) * cells).astype(int), cells - 1)
        cell = coordinates[:, 0] + cells[0] * (coordinates[:, 1] + cells[1] * coordinates[:, 2])
    else:  # buckets by the low bits of each cell's coordinates about the replica's first atom's cell
        coordinates = np.floor(positions * reach / size).astype(np.int64)
        cell = np.zeros(len(positions), dtype=np.int64)
        for r in np.unique(replica):
            members = np.flatnonzero(replica == r)
            buckets = LEAST_REPLICA_CELLS
            while buckets < 2 * len(members):
                buckets *= 2
            bits = buckets.bit_length() - 1
            xy = (bits - 1) // 3
            sides = np.array([1 << xy, 1 << xy, 1 << (bits - 2 * xy)])
            relative = (coordinates[members] - coordinates[members[0]] + sides // 2) % sides
            cell[members] = relative[:, 0] + sides[0] * (relative[:, 1] + sides[1] * relative[:, 2])
    order = np.lexsort((np.arange(len(positions)), cell, replica))
    rank = np.empty(len(positions), dtype=np.int64)
    rank[order] = np.arange(len(positions))
    return rank


def numberings(positions, replica, box, cutoff, slices):
    """(name, each atom's index) of the numberings compared."""
    count = len(positions)
    shuffled = np.empty(count, dtype=np.int64)  # each replica's atoms shuffled within its range
    for r in np.unique(replica):
        members = np.flatnonzero(replica == r)
        shuffled[members] = np.random.default_rng(0).permutation(members)
    yield "as written", np.arange(count)
    yield "shuffled (seed 0)", shuffled
    for s in slices:
        yield f"cell list, c cut in {s}", cell_list_order(positions, replica, box, cutoff, s)


def spread(rank, edges):
    """(median, share beyond each of WINDOWS) of |rank_i - rank_j| over the edges."""
    apart = np.abs(rank[edges[:, 0]] - rank[edges[:, 1]])
    return float(np.median(apart)), [float(np.mean(apart > w)) for w in WINDOWS]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("structures", nargs="+")
    parser.add_argument("--cutoff", type=float, default=5.0, help="Å (default 5, the seed models')")
    parser.add_argument("--slices", default="1,2,3", help="cells along c a cutoff over each of these thick")
    args = parser.parse_args()
    slices = [int(s) for s in args.slices.split(",")]
    for path in args.structures:
        _, positions, replica, box = read_structure(path)
        edges = find_edges(positions, replica, box, args.cutoff)
        print(f"{path}: {len(positions)} atoms, {len(edges)} edges (pairs)")
        print(f"  {'numbering':28s} {'median':>7s}" + "".join(f"  {'> ' + str(w):>7s}" for w in WINDOWS))
        for name, rank in numberings(positions, replica, box, args.cutoff, slices):
            median, beyond = spread(rank, edges)
            print(f"  {name:28s} {median:7.0f}" + "".join(f"  {100 * b:6.1f}%" for b in beyond))
    return 0


if __name__ == "__main__":
    sys.exit(main())
