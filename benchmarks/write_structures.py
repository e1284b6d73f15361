#!/usr/bin/env python3
"""Writes bench.py's random seed-size model and the structures of its rows into a folder, for
running mlff-bench or mlff-core-bench by hand (under a profiler, say): FOLDER/model.mlff.safetensors
and one FOLDER/<row>.txt per row, the row's name with spaces as underscores. Needs numpy, not torch.

    python3 benchmarks/write_structures.py FOLDER [--rows benzene,droplet,box]
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder")
    parser.add_argument("--rows", default="benzene,droplet,box")
    args = parser.parse_args()
    os.makedirs(args.folder, exist_ok=True)
    bench.random_model(os.path.join(args.folder, "model.mlff.safetensors"), **bench.SEED_SIZES)
    for name, z, pos, replica, box in bench.rows(args.rows.split(",")):
        path = os.path.join(args.folder, name.replace(" ", "_").replace("(", "").replace(")", "") + ".txt")
        bench.write_structure(path, z, pos, replica, box)
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
