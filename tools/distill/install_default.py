#!/usr/bin/python3
"""Installs a trained candidate as a default model: copies its tensors unchanged (float32
bytes as exported) into models/NAME.mlff.safetensors with the metadata name set to NAME and
the candidate's name kept under 'candidate'.

    install_default.py CANDIDATE.mlff.safetensors NAME [--models-dir models]

Needs numpy only."""

import argparse
import importlib.util
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RESERVED = ("format", "format_version", "architecture", "cutoff", "length_unit", "energy_unit")


def model_file_module():
    # Loaded by path: the package torch_painn imports torch, this file format code does not.
    spec = importlib.util.spec_from_file_location("model_file", os.path.join(ROOT, "tools", "torch_painn", "model_file.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("candidate")
    parser.add_argument("name", help="the default's name, e.g. alanine-dipeptide or water")
    parser.add_argument("--models-dir", default=os.path.join(ROOT, "models"))
    args = parser.parse_args(argv)
    mf = model_file_module()
    tensors, metadata = mf.read_model_file(args.candidate)
    extra = {k: v for k, v in metadata.items() if k not in RESERVED}
    extra["candidate"] = metadata.get("candidate", metadata.get("name", os.path.basename(args.candidate)))
    extra["name"] = args.name
    dtypes = {a.dtype for a in tensors.values()}
    if len(dtypes) != 1:
        parser.error(f"{args.candidate} mixes tensor dtypes {sorted(map(str, dtypes))}")
    out = os.path.join(args.models_dir, f"{args.name}.mlff.safetensors")
    mf.write_model_file(out + ".tmp", {k: np.array(v) for k, v in tensors.items()}, float(metadata["cutoff"]),
                        dtypes.pop(), extra)
    written, _ = mf.read_model_file(out + ".tmp")
    assert all(np.array_equal(written[k], tensors[k]) for k in tensors), "tensors changed on the way"
    os.replace(out + ".tmp", out)
    print(f"wrote {out} (from {extra['candidate']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
