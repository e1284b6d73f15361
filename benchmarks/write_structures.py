#!/usr/bin/env python3
"""Writes bench.py's random seed-size model and the structures of its rows into a folder, for
running mlff-bench or mlff-core-bench by hand (under a profiler, say): FOLDER/model.mlff.safetensors
and one FOLDER/<row>.txt per row, the row's name with spaces as underscores. Needs numpy, not torch.

    python3 benchmarks/write_structures.py FOLDER [--rows benzene,droplet,box] [--shuffled] [--jittered]

--shuffled writes each structure a second time, FOLDER/<row>_shuffled.txt, its atoms in a random
order (seed 0): the same structure as a box filled at random lists it, for timing how the order of
the atoms matters (docs/performance.md, "The atoms in an order along space").

--jittered writes each structure of several replicas once more, FOLDER/<row>_jittered.txt, every
atom moved by a normal displacement of JITTER_ANGSTROM per axis (seed 0): the bench's replicas are
exact copies, whose pairs read the same table entries in every replica, as an ensemble's do not.
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402

JITTER_ANGSTROM = 0.05  # Å per axis: pair distances spread over some 0.07 Å, tens of the table's intervals


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder")
    parser.add_argument("--rows", default="benzene,droplet,box")
    parser.add_argument("--shuffled", action="store_true", help="also write each structure with its atoms shuffled")
    parser.add_argument("--jittered", action="store_true",
                        help="also write each structure of several replicas with its atoms moved at random")
    args = parser.parse_args()
    os.makedirs(args.folder, exist_ok=True)
    bench.random_model(os.path.join(args.folder, "model.mlff.safetensors"), **bench.SEED_SIZES)
    for name, z, pos, replica, box in bench.rows(args.rows.split(",")):
        path = os.path.join(args.folder, name.replace(" ", "_").replace("(", "").replace(")", "") + ".txt")
        bench.write_structure(path, z, pos, replica, box)
        print(path)
        if args.shuffled:
            order = np.random.default_rng(0).permutation(len(z))
            shuffled = path[: -len(".txt")] + "_shuffled.txt"
            bench.write_structure(shuffled, z[order], pos[order], replica[order], box)
            print(shuffled)
        if args.jittered and replica.max() > 0:
            moved = pos + np.random.default_rng(0).normal(scale=JITTER_ANGSTROM, size=pos.shape)
            jittered = path[: -len(".txt")] + "_jittered.txt"
            bench.write_structure(jittered, z, moved, replica, box)
            print(jittered)
    return 0


if __name__ == "__main__":
    sys.exit(main())
