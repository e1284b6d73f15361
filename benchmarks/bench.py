#!/usr/bin/env python3
"""The plugin against the PyTorch implementation, side by side on one GPU.

    scripts/gpu-tests.sh bench [--rows benzene,droplet,box] [--quick] [--models DIR] [--out FILE.json]

(or directly: python3 benchmarks/bench.py --bench BUILD/benchmarks/mlff-bench ...). For each row it
writes the structure, runs mlff-bench (the MLFFForce on OpenMM's CUDA platform, CUDA events) and
times tools/torch_painn (float32, energy + autograd forces, neighbour search included, one batched
call over all replicas), then prints a table with the ratio in every row and writes it as JSON
(after every row, with "complete": false until the last, so that a run cut short keeps its rows).
Beside the plugin's step, each row has OpenMM's own step for the same particles with no force at
all (mlff-bench --without-force): what the force adds is the difference. Each row also says at what
SM clock the plugin's run went (the median of gpu_clocks.py's samples over its whole mlff-bench run)
and which reasons, if any, held the clock down (its power cap, heat): the JSON keeps the samples'
summary. PyTorch's cached memory is handed back before the plugin runs, and the JSON keeps the free
memory the plugin's run started with (free_gib_before): the plugin's choice of kernels for large
systems depends on it.

The model is drawn at random with the `original` seed's sizes (H=128, L=3, K=20, cutoff 5 Å):
cost does not depend on the weights' values. Trained defaults in models/ are timed too when present,
on three rows (one benzene, 1,024 benzenes, the 3,000-atom droplet); --without-random-model times
them alone.

FLOPs: the network's multiply-adds per edge and per atom (flops_per_evaluation below), forward plus
the backward to the inputs (about as many again), times 2. The ceiling is the measured rate of a
large float32 matrix product without TF32 (the GPU's float32 FMA pipes). The tiled path's products
run on tensor cores (3xTF32) and the edge filters compute each pair's filter once, so on those paths
the rate is an effective one (docs/performance.md).
"""

import argparse
import datetime
import json
import math
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))

from gpu_clocks import ClockLog, describe  # noqa: E402
from torch_painn.model_file import write_model_file  # noqa: E402

SEED_SIZES = {"hidden": 128, "blocks": 3, "rbf": 20, "max_z": 100, "cutoff": 5.0}
WATER_DENSITY = 0.0334  # molecules / Å^3 at 300 K


# ---- the model

def random_model(path, hidden, blocks, rbf, max_z, cutoff, seed=1):
    """A student-painn model file with weights of realistic scale (Xavier-like) drawn at random."""
    rng = np.random.default_rng(seed)

    def linear(out, inp):
        bound = 1.0 / math.sqrt(inp)
        return rng.uniform(-bound, bound, (out, inp)), rng.uniform(-bound, bound, out)

    tensors = {"embedding.weight": rng.normal(0.0, 1.0, (max_z + 1, hidden)),
               "rbf.centers": np.linspace(0.0, cutoff, rbf),
               "rbf.widths": np.full(rbf, cutoff / rbf)}
    for block in range(blocks):
        prefix = f"interactions.{block}."
        for name, (out, inp) in (("message.rbf_to_scalar.0", (hidden, rbf)), ("message.rbf_to_scalar.2", (3 * hidden, hidden)),
                                 ("update.update_mlp.0", (hidden, 2 * hidden)), ("update.update_mlp.2", (3 * hidden, hidden))):
            w, b = linear(out, inp)
            tensors[prefix + name + ".weight"], tensors[prefix + name + ".bias"] = w, b
        tensors[prefix + "update.mixing_matrix"] = np.eye(3) + 0.1 * rng.normal(size=(3, 3))
    for name, (out, inp) in (("energy_head.0", (hidden // 2, hidden)), ("energy_head.2", (hidden // 4, hidden // 2)),
                             ("energy_head.4", (1, hidden // 4))):
        w, b = linear(out, inp)
        tensors[name + ".weight"], tensors[name + ".bias"] = w, b
    write_model_file(path, tensors, cutoff)


def model_sizes(path):
    from torch_painn.model_file import read_model_file
    tensors, metadata = read_model_file(path)
    hidden = tensors["embedding.weight"].shape[1]
    blocks = sum(1 for name in tensors if name.endswith("message.rbf_to_scalar.0.weight"))
    return {"hidden": hidden, "blocks": blocks, "rbf": tensors["rbf.centers"].shape[0], "cutoff": float(metadata["cutoff"])}


# ---- structures: (z, positions Å, replica of each atom, box rows Å or None)

def benzene():
    z, pos = [], []
    for k in range(6):
        angle = math.pi / 3 * k
        direction = np.array([math.cos(angle), math.sin(angle), 0.0])
        z += [6, 1]
        pos += [1.39 * direction, 2.48 * direction]
    return np.array(z), np.array(pos)


def replicated(z, pos, replicas, spacing=12.0):
    """`replicas` copies on a grid (they never interact; the grid only keeps coordinates sane)."""
    side = math.ceil(replicas ** (1 / 3))
    zs, ps, rs = [], [], []
    for r in range(replicas):
        offset = spacing * np.array([r % side, (r // side) % side, r // (side * side)], dtype=float)
        zs.append(z)
        ps.append(pos + offset)
        rs.append(np.full(len(z), r))
    return np.concatenate(zs), np.concatenate(ps), np.concatenate(rs)


def water_molecule(rng):
    """O, H, H of a rigid water (0.9572 Å, 104.52°) in a random orientation, O at the origin."""
    half = math.radians(104.52) / 2
    local = np.array([[0, 0, 0], [0.9572 * math.sin(half), 0, 0.9572 * math.cos(half)],
                      [-0.9572 * math.sin(half), 0, 0.9572 * math.cos(half)]])
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    return local @ q.T


def water_lattice(cells, spacing, rng):
    """Molecules on a cubic lattice of cells^3 sites with random orientations (O at the sites)."""
    z, pos = [], []
    for i in range(cells):
        for j in range(cells):
            for k in range(cells):
                site = spacing * np.array([i, j, k], dtype=float)
                z += [8, 1, 1]
                pos += list(site + water_molecule(rng))
    return np.array(z), np.array(pos)


def water_droplet(atoms, seed=3):
    """A roughly spherical droplet of atoms/3 molecules at liquid density."""
    rng = np.random.default_rng(seed)
    molecules = atoms // 3
    spacing = WATER_DENSITY ** (-1 / 3)
    cells = math.ceil((molecules * 6 / math.pi) ** (1 / 3)) + 2
    z, pos = water_lattice(cells, spacing, rng)
    oxygens = pos[0::3]
    centre = oxygens.mean(axis=0)
    order = np.argsort(np.linalg.norm(oxygens - centre, axis=1), kind="stable")[:molecules]
    keep = np.sort(np.concatenate([3 * order, 3 * order + 1, 3 * order + 2]))
    return z[keep], pos[keep]


def water_box(atoms, seed=4):
    """A periodic cubic box of atoms/3 molecules at liquid density (atoms/3 must be a cube)."""
    rng = np.random.default_rng(seed)
    cells = round((atoms // 3) ** (1 / 3))
    if cells ** 3 * 3 != atoms:
        raise ValueError(f"a water box needs 3 n^3 atoms, got {atoms}")
    spacing = WATER_DENSITY ** (-1 / 3)
    z, pos = water_lattice(cells, spacing, rng)
    return z, pos, np.eye(3) * cells * spacing


def rows(selected):
    bz, bpos = benzene()
    out = []
    if "benzene" in selected:
        for replicas in (1, 16, 64, 256, 1024):
            z, pos, rep = replicated(bz, bpos, replicas)
            out.append((f"benzene x{replicas}", z, pos, rep, None))
    if "droplet" in selected:
        for atoms in (96, 768, 3000, 12000):
            z, pos = water_droplet(atoms)
            out.append((f"water droplet {len(z)}", z, pos, np.zeros(len(z), dtype=int), None))
    if "box" in selected:
        for atoms in (3000, 24000):
            z, pos, box = water_box(atoms)
            out.append((f"water box {atoms} (periodic)", z, pos, np.zeros(len(z), dtype=int), box))
    return out


def write_structure(path, z, pos, replica, box):
    with open(path, "w") as f:
        header = f"{len(z)}"
        if box is not None:
            header += " " + " ".join(repr(float(x)) for x in np.asarray(box).reshape(-1))
        f.write(header + "\n")
        for zi, (x, y, w), r in zip(z, pos, replica):
            f.write(f"{int(zi)} {x:.10f} {y:.10f} {w:.10f} {int(r)}\n")


# ---- FLOPs

def flops_per_evaluation(sizes, atoms, edges, tabulated=False):
    """Multiply-adds of one energy+forces evaluation, times 2 (FLOPs).

    Per edge and block: the filter K*H + H*3H (tabulated: 3H outputs of a 4-term Hermite sum, 12H),
    the message 7H (s: H, v: 6H).
    Per atom and block: the update MLP 2H*H + H*3H, the vector update 12H.
    Per atom once: the readout H*H/2 + H/2*H/4 + H/4.
    The backward to the inputs costs as many multiply-adds again, so the total is 2 x 2 x forward."""
    h, k, blocks = sizes["hidden"], sizes["rbf"], sizes["blocks"]
    per_edge = blocks * ((12 * h if tabulated else k * h + 3 * h * h) + 7 * h)
    per_atom = blocks * (5 * h * h + 12 * h) + h * h // 2 + h * h // 8 + h // 4
    return 2 * 2 * (per_edge * edges + per_atom * atoms)


# ---- PyTorch

def torch_timing(model_path, z, pos, replica, box, repeats):
    import torch
    from torch_painn import StudentPaiNN, find_edges
    device = torch.device("cuda")
    model = StudentPaiNN.load(model_path, dtype=torch.float32).to(device)
    zt = torch.as_tensor(z, dtype=torch.long, device=device)
    pt = torch.as_tensor(pos, dtype=torch.float32, device=device)
    rt = torch.as_tensor(replica, dtype=torch.long, device=device)
    num = int(replica.max()) + 1
    boxes = None if box is None else torch.as_tensor(np.asarray(box), dtype=torch.float32, device=device)
    if boxes is not None:
        boxes = boxes.expand(num, 3, 3)
    edges = int(find_edges(pt, rt, num, model.cutoff, boxes)[0].shape[0])

    def call():
        energies, forces = model.energy_and_forces(zt, pt, rt, num, boxes)
        return energies, forces

    for _ in range(3):
        call()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        torch.cuda.synchronize()
        times.append(1e6 * (time.perf_counter() - start))
    energy = float(call()[0].detach().sum()) * 96.48533212331
    return float(np.median(times)), edges, energy


def float32_ceiling():
    """Measured float32 FMA rate (FLOP/s) of the GPU: a large matmul with TF32 off."""
    import torch
    torch.backends.cuda.matmul.allow_tf32 = False
    a = torch.randn(8192, 8192, device="cuda")
    b = torch.randn(8192, 8192, device="cuda")
    for _ in range(2):
        a @ b
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(5):
        a @ b
    torch.cuda.synchronize()
    return 5 * 2 * 8192 ** 3 / (time.perf_counter() - start)


# ---- the table

def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", required=True, help="the mlff-bench executable")
    parser.add_argument("--rows", default="benzene,droplet,box", help="row groups: benzene, droplet, box")
    parser.add_argument("--models", default=os.path.join(ROOT, "models"),
                        help="folder of trained defaults to time too (a folder that does not exist: none)")
    parser.add_argument("--without-random-model", action="store_true",
                        help="time the trained defaults alone, not the model drawn with the seed's sizes")
    parser.add_argument("--variants", default="exact,tabulated", help="plugin variants: exact, tabulated")
    parser.add_argument("--kernels", default="auto",
                        help="the CUDA network kernels: auto (the plugin's choice by size), fused, cluster, tiled, edges "
                             "(MLFF_CUDA_KERNELS); several, comma-separated, are timed side by side")
    parser.add_argument("--md-steps", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="fewer steps and repeats (a smoke test)")
    parser.add_argument("--out", help="write the table as JSON here")
    args = parser.parse_args()
    if args.quick:
        args.md_steps, args.repeats = 200, 5
    import torch
    work = tempfile.mkdtemp(prefix="mlff-bench-")
    models = []
    seed_model = os.path.join(work, "random_h128_l3_k20.mlff.safetensors")
    random_model(seed_model, **SEED_SIZES)
    if not args.without_random_model:
        models.append(("random H=128 L=3 K=20", seed_model))
    if os.path.isdir(args.models):
        for name in sorted(os.listdir(args.models)):
            if name.endswith(".mlff.safetensors"):
                models.append((name.replace(".mlff.safetensors", ""), os.path.join(args.models, name)))
    ceiling = float32_ceiling()
    device = torch.cuda.get_device_name()
    print(f"device {device}; measured float32 ceiling {ceiling / 1e12:.1f} TFLOP/s; "
          f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC", flush=True)
    header = (f"{'model':24s} {'row':28s} {'variant':16s} {'atoms':>6s} {'edges':>8s} {'force us':>10s} "
              f"{'step us':>10s} {'OpenMM us':>10s} {'torch us':>10s} {'torch/force':>11s} {'torch/step':>10s} {'TFLOP/s':>8s} {'% ceil':>6s} SM MHz")
    print(header, flush=True)
    results = []

    def write_results(complete):
        """The table so far as JSON (args.out), rewritten after each row: a run cut short keeps its rows."""
        if not args.out:
            return
        with open(args.out + ".partial", "w") as f:
            json.dump({"device": device, "float32_ceiling_flops": ceiling, "torch": torch.__version__,
                       "date": f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d}", "md_steps": args.md_steps,
                       "repeats": args.repeats, "complete": complete, "rows": results}, f, indent=1)
        os.replace(args.out + ".partial", args.out)

    for model_name, model_path in models:
        sizes = model_sizes(model_path)
        selected = args.rows.split(",") if model_path == seed_model else ["benzene", "droplet"]
        for row_name, z, pos, replica, box in rows(selected):
            if model_path != seed_model and row_name not in ("benzene x1", "benzene x1024", "water droplet 3000"):
                continue
            structure = os.path.join(work, "structure.txt")
            write_structure(structure, z, pos, replica, box)
            torch_us, edges, torch_energy = torch_timing(model_path, z, pos, replica, box, max(5, args.repeats // 2))
            # PyTorch's allocator keeps what it freed; handed back, so that the plugin sees the GPU's
            # memory as it would alone. (The plugin takes its edge rows, the fast path for large
            # systems, only where they fit in half the free memory: with the 24,000-atom box's autograd
            # cache held, the exact row ran the tiled path, 5 times slower.)
            torch.cuda.empty_cache()
            free_gib = torch.cuda.mem_get_info()[0] / 2**30
            # OpenMM's own step for the same particles, with no force: the floor under the plugin's step.
            bare = subprocess.run([args.bench, model_path, structure, "--md-steps", str(args.md_steps), "--repeats",
                                   str(args.repeats), "--without-force"], capture_output=True, text=True)
            openmm_step_us = json.loads(bare.stdout)["step_us"] if bare.returncode == 0 else float("nan")
            for variant, kernels in [(v, k) for v in args.variants.split(",") for k in args.kernels.split(",")]:
                label = variant if kernels == "auto" else f"{variant}/{kernels}"
                flops = flops_per_evaluation(sizes, len(z), edges, tabulated=variant == "tabulated")
                command = [args.bench, model_path, structure, "--md-steps", str(args.md_steps),
                           "--repeats", str(args.repeats)] + (["--tabulated"] if variant == "tabulated" else [])
                env = dict(os.environ)
                if kernels != "auto":
                    env["MLFF_CUDA_KERNELS"] = kernels
                with ClockLog() as clocks:
                    run = subprocess.run(command, capture_output=True, text=True, env=env)
                if run.returncode != 0:
                    print(f"{model_name:24s} {row_name:28s} {label:16s} FAILED: {run.stderr.strip()}", flush=True)
                    results.append({"model": model_name, "row": row_name, "variant": variant, "kernels": kernels,
                                    "error": run.stderr.strip()})
                    write_results(complete=False)
                    continue
                plugin = json.loads(run.stdout)
                rate = flops / (plugin["force_us"] * 1e-6)
                row = {"model": model_name, "row": row_name, "variant": variant, "kernels": kernels, "atoms": len(z),
                       "edges": edges, "force_us": plugin["force_us"], "step_us": plugin["step_us"],
                       "issue_us": plugin["issue_us"], "openmm_step_us": openmm_step_us,
                       "torch_us": torch_us, "torch_over_force": torch_us / plugin["force_us"],
                       "torch_over_step": torch_us / plugin["step_us"],
                       "flops_per_evaluation": flops, "tflops": rate / 1e12, "percent_of_ceiling": 100 * rate / ceiling,
                       "energy_kj_mol": plugin["energy_kj_mol"], "torch_energy_kj_mol": torch_energy,
                       # where the run ended, 10 steps from the structure as written (mlff_bench.cpp
                       # resets it before each run of steps): close to energy_kj_mol
                       "energy_after_md_kj_mol": plugin["energy_after_md_kj_mol"],
                       "md_steps": plugin["md_steps"], "sizes": sizes, "clocks": clocks.summary(),
                       "free_gib_before": free_gib}
                results.append(row)
                write_results(complete=False)
                print(f"{model_name:24s} {row_name:28s} {label:16s} {len(z):6d} {edges:8d} {row['force_us']:10.1f} "
                      f"{row['step_us']:10.1f} {openmm_step_us:10.1f} {torch_us:10.1f} {row['torch_over_force']:11.1f} "
                      f"{row['torch_over_step']:10.1f} {row['tflops']:8.2f} {row['percent_of_ceiling']:6.1f} "
                      f"{describe(row['clocks'])}", flush=True)
    write_results(complete=True)
    if args.out:
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
