#!/usr/bin/env python3
"""How many instructions each kernel's PTX holds, in two sets of modules side by side: what a change
or a probe does to the code of the kernels, counted without a GPU.

    MLFF_KEEP_MODULES=BEFORE bash tests/cuda/compile_kernels.sh platforms/cuda/kernels
    MLFF_KERNEL_DEFINES="PROBE=1" MLFF_KEEP_MODULES=AFTER bash tests/cuda/compile_kernels.sh ...
    python3 benchmarks/ptx_counts.py BEFORE AFTER [--kernels REGEX] [--modules REGEX]

(AFTER from a probe's define, as here, or from another commit's tree.)

The counts are static: every instruction of a kernel's body once (its lines that end in ';', the
directives that start with '.' left out), whatever its loops repeat at run time, and its
tensor-core products among them (mma.sync and wgmma.mma_async). A module is a file of the same
name in both folders (compile_kernels.sh's NVRTC output, *.nvrtc.ptx, by default).
"""
import argparse
import os
import re
import sys

ENTRY = re.compile(r"^\.(?:visible\s+)?\.entry\s+(\w+)")
PRODUCT = re.compile(r"\b(?:mma\.sync|wgmma\.mma_async)\b")


def kernel_counts(ptx):
    """{kernel: (instructions, tensor-core products)} of PTX text."""
    counts, name = {}, None
    for line in ptx.splitlines():
        entry = ENTRY.match(line)
        if entry:
            name = entry.group(1)
            counts[name] = (0, 0)
            continue
        text = line.split("//")[0].strip()
        if name is None or not text.endswith(";") or text.startswith("."):
            continue
        instructions, products = counts[name]
        counts[name] = (instructions + 1, products + (1 if PRODUCT.search(text) else 0))
    return counts


def rows(before, after, kernels):
    """(kernel, before, after) for the kernels of both that match the regular expression `kernels`."""
    pattern = re.compile(kernels)
    return [(k, before[k], after[k]) for k in sorted(before) if k in after and pattern.search(k)]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--kernels", default="", help="regular expression on the kernels' names")
    parser.add_argument("--modules", default=r"\.nvrtc\.ptx$",
                        help="regular expression on the modules' file names (among the *.ptx; default: NVRTC's)")
    args = parser.parse_args(argv)
    # PTX alone: compile_kernels.sh keeps cubins beside it.
    modules = sorted(f for f in os.listdir(args.before) if f.endswith(".ptx") and re.search(args.modules, f)
                     and os.path.exists(os.path.join(args.after, f)))
    if not modules:
        sys.exit(f"ptx_counts: no module matching {args.modules!r} in both {args.before} and {args.after}")
    for module in modules:
        with open(os.path.join(args.before, module)) as f:
            before = kernel_counts(f.read())
        with open(os.path.join(args.after, module)) as f:
            after = kernel_counts(f.read())
        print(f"{module}: instructions (tensor-core products)")
        for kernel, (b, bp), (a, ap) in rows(before, after, args.kernels):
            change = f"{100 * (a - b) / b:+.0f} %" if b else ""
            print(f"  {kernel:46s} {b:7,d} ({bp:4d}) -> {a:7,d} ({ap:4d})  {change}")


if __name__ == "__main__":
    main()
