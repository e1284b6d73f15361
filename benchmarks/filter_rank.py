#!/usr/bin/env python3
"""How many shared functions of distance a block's radial filters would need: the question behind a
filter table of fewer bytes a pair. Today's table (docs/tabulated-filters.md) holds each of a
block's 3H filter outputs as its own cubic Hermite curve, so a pair reads 4 x 3H reals (6 KB in
float at H = 128), and the replica messages wait on those reads (docs/performance.md, "Many small
replicas"). If instead w(d) = mean + sum_m f_m(d) V_m for M shared curves f_m and fixed rows V_m,
a pair would read 4 M reals and make its 3H outputs with M x 3H multiply-adds.

The filters are sampled in float64 on [0, r_c] (the network of docs/student-painn.md, the cutoff
inside the basis: tools/torch_painn's RadialBasis and rbf_to_scalar, again in numpy so that this
runs without torch, with dw/dd by hand), and their best M-term fit in the least-squares sense
(the M leading right singular vectors of the centred samples) is measured in the worst case over
the samples, for w and for dw/dd, whose fit is the same projection of dw/dd. Needs numpy alone.

    python3 benchmarks/filter_rank.py MODEL.mlff.safetensors [--samples 20001] [--modes 16,32,48,64,80]

Prints, for each block, max |w| and max |dw/dd|, then each M's worst error in w and in dw/dd, to
set against the table's own (8.2e-9 in w and 5.0e-6 in dw/dd for the original model's block 1 at
the default spacing, tabulated-filters.md).
"""

import argparse
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tools", "torch_painn"))

from model_file import read_model_file  # noqa: E402


def silu(x):
    return x / (1.0 + np.exp(-x))


def silu_grad(x):
    sigma = 1.0 / (1.0 + np.exp(-x))
    return sigma * (1.0 + x * (1.0 - sigma))


def block_filters(tensors, block, distances, cutoff):
    """Block `block`'s filters w (n, 3H) and dw/dd (n, 3H) at the distances (n,), in float64."""
    prefix = f"interactions.{block}.message.rbf_to_scalar."
    centers, widths, w0, b0, w2, b2 = (np.asarray(tensors[name], dtype=np.float64) for name in (
        "rbf.centers", "rbf.widths", prefix + "0.weight", prefix + "0.bias", prefix + "2.weight", prefix + "2.bias"))
    d = distances[:, None]
    inside = d < cutoff
    cut = np.where(inside, 0.5 * (np.cos(np.pi * d / cutoff) + 1.0), 0.0)
    cut_grad = np.where(inside, -0.5 * np.pi / cutoff * np.sin(np.pi * d / cutoff), 0.0)
    gauss = np.exp(-((d - centers) ** 2) / widths ** 2)
    basis = gauss * cut
    basis_grad = gauss * (-2.0 * (d - centers) / widths ** 2) * cut + gauss * cut_grad
    hidden = basis @ w0.T + b0
    w = silu(hidden) @ w2.T + b2
    dw = (silu_grad(hidden) * (basis_grad @ w0.T)) @ w2.T
    return w, dw


def low_rank_errors(w, dw, modes):
    """For each M in modes, the worst |error| of w and of dw/dd fitted by M shared functions."""
    mean = w.mean(axis=0)
    _, _, vt = np.linalg.svd(w - mean, full_matrices=False)
    errors = []
    for m in modes:
        v = vt[:m]
        w_fit = mean + (w - mean) @ v.T @ v
        dw_fit = dw @ v.T @ v
        errors.append((m, float(np.abs(w - w_fit).max()), float(np.abs(dw - dw_fit).max())))
    return errors


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a .mlff.safetensors model file")
    parser.add_argument("--samples", type=int, default=20001, help="distances sampled on [0, r_c]")
    parser.add_argument("--modes", default="16,32,48,64,80", help="the numbers of shared functions M to fit")
    args = parser.parse_args(argv)
    tensors, metadata = read_model_file(args.model)
    cutoff = float(metadata["cutoff"])
    modes = [int(m) for m in args.modes.split(",")]
    blocks = sorted({int(name.split(".")[1]) for name in tensors if name.startswith("interactions.")})
    distances = np.linspace(0.0, cutoff, args.samples)
    for block in blocks:
        w, dw = block_filters(tensors, block, distances, cutoff)
        print(f"block {block}: max |w| {np.abs(w).max():.3g}, max |dw/dd| {np.abs(dw).max():.3g} (1/Å), "
              f"{w.shape[1]} outputs")
        for m, w_error, dw_error in low_rank_errors(w, dw, modes):
            print(f"    M = {m:3d}: worst error {w_error:.1e} in w, {dw_error:.1e} in dw/dd")


if __name__ == "__main__":
    main()
