#!/usr/bin/env python3
"""How often the messages from rows (platforms/cuda/kernels/student_painn/row_messages.cu) would
read a pair's filter row from DRAM rather than from the L2, for orders in which each atom could
walk its edges: a simulation, for choosing what to time on the GPU. Each pair's row (3H floats) is
read twice, once by each of its atoms' blocks (or warps); the second read finds it in the L2 only
if the rows read between the two have not pushed it out.

The model: atoms in the cell list's numbering (edge_spread.py's, cells half a cutoff thick along c),
their blocks started in that order as slots free up (SLOTS blocks at once: blocks an SM times the
SMs), each block taking one edge a unit of time in its walk's order; the L2 holding the ROWS rows
read last (least recently used first out). Nothing else competes for the L2, no block waits
longer on a miss than on a hit, and blocks start in strict order, so the figures compare orders
and do not predict bytes. Needs numpy alone.

On the H100 (the exact 12,000-atom droplet) it promised more than the GPU gave: walked by distance
(lower weight 0.5; 1.59 -> 1.21 reads a pair) the messages' backward gained 3.6 % and kept that walk
(edgeWalk, 574393c), the forward lost 0.4 %; half the blocks at once in list order (1.04) lost
2.8 % in the forward (docs/performance-log.md, "The messages' backward walks each atom's edges by
distance"). It leaves out the features' rows of j, which every neighbour of j reads too.

    python3 benchmarks/row_reuse.py STRUCTURE.txt [--slots 2112] [--rows 10000,20000,30000]
        [--lower-weights 0.5]

Prints, for each number of slots and of rows the L2 keeps, the rows read from DRAM a pair: 1 where
every second read hits, 2 where none does. The walks: list order (ascending neighbour index, the
kernels' since they were written), and for each lower weight w, by distance along the numbering
with a lower neighbour's distance counted w times (so that with w < 1 an atom reads its lower
neighbours' rows, which they read before it, sooner than its higher neighbours').
"""
import argparse
import heapq
import os
import sys
from collections import OrderedDict

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from edge_spread import cell_list_order, find_edges, read_structure  # noqa: E402


def neighbour_lists(count, pairs):
    """Each atom's neighbours in ascending order, from the pairs (i < j)."""
    lists = [[] for _ in range(count)]
    for i, j in pairs:
        lists[i].append(j)
        lists[j].append(i)
    return [sorted(neighbours) for neighbours in lists]


def walk(i, neighbours, lower_weight=None):
    """The order atom i walks its neighbours in: the list's (None), or by weighted distance, then index."""
    if lower_weight is None:
        return neighbours
    return sorted(neighbours, key=lambda j: ((i - j) * lower_weight if j < i else j - i, j))


def dram_reads_per_pair(lists, slots, rows, lower_weight=None):
    """Rows read from DRAM over the pairs, with the blocks, walks and L2 of the file's model."""
    free = [0] * slots  # when each slot is next free
    reads = []
    for i, neighbours in enumerate(lists):
        start = heapq.heappop(free)
        order = walk(i, neighbours, lower_weight)
        reads += [(start + k, i, j) for k, j in enumerate(order)]
        heapq.heappush(free, start + len(order))
    reads.sort()
    cached, misses = OrderedDict(), 0
    for _, i, j in reads:
        pair = (min(i, j), max(i, j))
        if pair in cached:
            cached.move_to_end(pair)
        else:
            misses += 1
            cached[pair] = True
            if len(cached) > rows:
                cached.popitem(last=False)
    return misses / (len(reads) / 2)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("structure")
    parser.add_argument("--cutoff", type=float, default=5.0, help="Å (default 5, the seed models')")
    parser.add_argument("--slots", default="2112", help="blocks at once (default 16 an SM of an H100's 132)")
    parser.add_argument("--rows", default="10000,20000,30000", help="rows the L2 keeps (a row: 1.5 KB at H = 128)")
    parser.add_argument("--lower-weights", default="0.5")
    args = parser.parse_args()
    _, positions, replica, box = read_structure(args.structure)
    rank = cell_list_order(positions, replica, box, args.cutoff, 2)
    pairs = rank[find_edges(positions, replica, box, args.cutoff)]
    lists = neighbour_lists(len(positions), pairs)
    print(f"{args.structure}: {len(positions)} atoms, {len(pairs)} pairs; rows read from DRAM a pair")
    walks = [("list order", None)] + [(f"lower weighted {w}", float(w)) for w in args.lower_weights.split(",")]
    for slots in (int(s) for s in args.slots.split(",")):
        for rows in (int(r) for r in args.rows.split(",")):
            cells = "  ".join(f"{name} {dram_reads_per_pair(lists, slots, rows, w):.2f}" for name, w in walks)
            print(f"  {slots:5d} slots, {rows:6d} rows: {cells}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
