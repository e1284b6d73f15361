#!/usr/bin/python3
"""Trains a student PaiNN on teacher energies and forces and exports the model file.

    train_student.py TEACHER.npz OUTPUT.mlff.safetensors [--hidden 64 --blocks 2 --rbf 16 | --init MODEL]
                     [--time-limit SECONDS | --max-steps N] [--device cuda] [--report REPORT.json]

Loss (per batch): energy_weight * mean((dE / N)^2) + mean(dF^2), in units of sigma (below),
E and F from the network, F by autograd (so training differentiates twice).

Energies: the teacher's absolute energy is arbitrary, so the network learns
    E_net = (E_teacher - N * mu) / sigma,   F_net = F_teacher / sigma,
with mu the per-atom energy shift fitted on the training frames (least squares, one shift
for all elements: each data set has a single composition, so per-element shifts would not
be identifiable) and sigma the RMS of the training forces. At export the last layer is
rescaled exactly: energy_head.4.weight *= sigma, energy_head.4.bias = sigma * bias + mu, so
the file gives teacher energies (eV) and forces (eV/Å) directly. Before export mu is refitted
so that the mean energy error over the training frames is zero (the loss is dominated by the
forces, which leave this constant free).

The mixing matrices are kept at the identity (not trained): the student is then rotation
invariant, which the architecture allows but does not enforce. The radial basis
(centers, widths) is kept fixed as well. Adam with a cosine learning-rate decay over the
run, an exponential moving average (EMA) of the weights for evaluation, the EMA weights
with the best validation loss exported. The held-out test accuracy of the exported file
(read back, float64) goes to the report.

--init continues from an exported model file (a second round with a fresh learning-rate
schedule): its last layer is unfolded with this data set's mu and sigma."""

import argparse
import copy
import json
import math
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from evaluate_student import accuracy, describe  # noqa: E402
from teacher_data import TeacherData  # noqa: E402


def energy_scaling(data):
    n = data.num_atoms
    mu = float(np.mean(data.energies[data.train]) / n)
    sigma = float(np.sqrt(np.mean(data.forces[data.train] ** 2)))
    return mu, sigma


def batch_loss(model, batch, mu, sigma, energy_weight, create_graph):
    z, pos, structure_of_atom, boxes, energies, forces = batch
    count = energies.shape[0]
    n = z.shape[0] // count
    e, f = model.energy_and_forces(z, pos, structure_of_atom, count, boxes, create_graph=create_graph)
    de = (e - (energies - n * mu) / sigma) / n
    df = f - forces / sigma
    return energy_weight * (de ** 2).mean() + (df ** 2).mean(), (de ** 2).mean(), (df ** 2).mean()


def energy_offset(model, data, mu, sigma, device, max_frames=2000):
    """The per-atom shift that zeroes the mean energy error on (up to max_frames) training
    frames, computed in float64."""
    import torch
    net = copy.deepcopy(model).double()
    frames = data.train[np.linspace(0, len(data.train) - 1, min(max_frames, len(data.train))).astype(int)]
    residuals = []
    with torch.no_grad():
        for first in range(0, len(frames), 64):
            z, pos, structure_of_atom, boxes, energies, _ = data.batch(frames[first:first + 64], device, torch.float64)
            count = energies.shape[0]
            e = net(z, pos, structure_of_atom, count, boxes)
            residuals.append((energies - (sigma * e + data.num_atoms * mu)).cpu().numpy())
    return float(np.mean(np.concatenate(residuals)) / data.num_atoms)


def unfold(model, mu, sigma):
    """The inverse of export's rescaling: a model file in eV back to the training units."""
    import torch
    head = model.energy_head[4]
    with torch.no_grad():
        head.bias.sub_(mu).div_(sigma)
        head.weight.div_(sigma)
    return model


def export(model, mu, sigma, path, metadata):
    exported = copy.deepcopy(model).double()
    head = exported.energy_head[4]
    with __import__("torch").no_grad():
        head.weight.mul_(sigma)
        head.bias.mul_(sigma).add_(mu)
    exported.save(path, np.float32, metadata)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("output")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--blocks", type=int, default=2)
    parser.add_argument("--rbf", type=int, default=16)
    parser.add_argument("--cutoff", type=float, default=5.0)
    parser.add_argument("--batch-size", type=int, default=32, help="frames per step (default 32)")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--energy-weight", type=float, default=1.0)
    parser.add_argument("--time-limit", type=float, default=60.0, help="seconds of training (default 60)")
    parser.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (0: time only)")
    parser.add_argument("--eval-every", type=int, default=500, help="steps between validations (default 500)")
    parser.add_argument("--device", default="cuda" if __import__("torch").cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default="", help="a name stored in the model file's metadata")
    parser.add_argument("--report", help="write the test accuracy and training facts here (JSON)")
    parser.add_argument("--init", help="start from this model file (its H, L and K) instead of random weights")
    args = parser.parse_args(argv)

    import torch
    from torch_painn import StudentPaiNN
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    data = TeacherData(args.data)
    if data.box is not None:
        heights = np.diag(data.box)
        if args.cutoff > 0.5 * heights.min():
            parser.error(f"--cutoff {args.cutoff} exceeds half the box height {0.5 * heights.min():.3f} Å")
    mu, sigma = energy_scaling(data)
    device, dtype = torch.device(args.device), torch.float32
    if args.init:
        model = unfold(StudentPaiNN.load(args.init, dtype=torch.float64), mu, sigma).to(device, dtype)
        args.hidden, args.blocks, args.rbf = (model.hyperparameters[k] for k in ("hidden_channels", "num_blocks", "num_rbf"))
        if model.cutoff != args.cutoff:
            parser.error(f"--init {args.init} has the cutoff {model.cutoff} Å, not {args.cutoff} Å")
        print(f"starting from {args.init}", flush=True)
    else:
        model = StudentPaiNN(args.hidden, args.blocks, args.rbf, args.cutoff).to(device, dtype)
    frozen = {"rbf.centers", "rbf.widths"} | {n for n, _ in model.named_parameters() if n.endswith("mixing_matrix")}
    trained = [p for n, p in model.named_parameters() if n not in frozen]
    for n, p in model.named_parameters():
        p.requires_grad_(n not in frozen)
    optimizer = torch.optim.Adam(trained, lr=args.lr)
    ema = copy.deepcopy(model)
    ema_decay = 0.999
    print(f"{os.path.basename(args.data)}: {data.num_atoms} atoms, {len(data.train)} train / {len(data.validation)} "
          f"validation / {len(data.test)} test frames; mu = {mu:.6f} eV/atom, sigma = {sigma:.4f} eV/Å; "
          f"H={args.hidden} L={args.blocks} K={args.rbf} cutoff {args.cutoff} Å on {device}", flush=True)
    validation = [data.batch(data.validation[i:i + 64], device, dtype) for i in range(0, len(data.validation), 64)]

    def validation_loss(net):
        total_e = total_f = 0.0
        for batch in validation:
            _, le, lf = batch_loss(net, batch, mu, sigma, args.energy_weight, create_graph=False)
            total_e += float(le) * batch[4].shape[0]
            total_f += float(lf) * batch[4].shape[0]
        count = len(data.validation)
        return (args.energy_weight * total_e + total_f) / count, math.sqrt(total_e / count) * sigma, math.sqrt(total_f / count) * sigma

    start, step, best, best_state, log = time.time(), 0, float("inf"), None, []
    order, cursor = rng.permutation(data.train), 0
    while True:
        elapsed = time.time() - start
        progress = elapsed / args.time_limit if args.time_limit > 0 else 0.0
        if args.max_steps:
            progress = max(progress, step / args.max_steps)
        if progress >= 1.0:
            break
        warmup = min(1.0, (step + 1) / 200)
        lr = args.lr * warmup * (0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * progress)))
        for group in optimizer.param_groups:
            group["lr"] = lr
        if cursor + args.batch_size > len(order):
            order, cursor = rng.permutation(data.train), 0
        batch = data.batch(order[cursor:cursor + args.batch_size], device, dtype)
        cursor += args.batch_size
        loss, _, _ = batch_loss(model, batch, mu, sigma, args.energy_weight, create_graph=True)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, 10.0)
        optimizer.step()
        with torch.no_grad():
            decay = min(ema_decay, (step + 1) / (step + 10))
            for p_ema, p in zip(ema.parameters(), model.parameters()):
                p_ema.mul_(decay).add_(p.detach(), alpha=1.0 - decay)
        step += 1
        if step % args.eval_every == 0:
            value, e_rmse, f_rmse = validation_loss(ema)
            log.append({"step": step, "seconds": round(time.time() - start, 1), "lr": lr, "train_loss": float(loss),
                        "validation_energy_rmse_meV_per_atom": 1000 * e_rmse, "validation_force_rmse_eV_per_A": f_rmse})
            marker = ""
            if value < best:
                best, best_state, marker = value, copy.deepcopy(ema.state_dict()), " *"
            print(f"step {step:6d} {time.time() - start:6.0f} s lr {lr:.2e} loss {float(loss):.4f} validation: "
                  f"energy {1000 * e_rmse:.2f} meV/atom, force {f_rmse:.4f} eV/Å{marker}", flush=True)
    value, _, _ = validation_loss(ema)
    if value < best or best_state is None:
        best_state = copy.deepcopy(ema.state_dict())
    ema.load_state_dict(best_state)
    # The constant energy offset, refitted exactly: with force-dominated training it converges
    # last, and a shift of mu changes no force.
    offset = energy_offset(ema, data, mu, sigma, device)
    mu += offset
    print(f"energy offset refitted on the training frames: mu += {offset:.3e} eV/atom", flush=True)
    metadata = {"name": args.name or os.path.basename(args.output),
                "teacher": data.teacher, "training": f"{step} steps of {args.batch_size} frames"
                + (f" from {os.path.basename(args.init)}" if args.init else "") + ", see docs/distillation.md",
                "energy_shift_eV_per_atom": repr(mu), "force_scale_eV_per_A": repr(sigma)}
    export(ema, mu, sigma, args.output, metadata)
    exported = StudentPaiNN.load(args.output, dtype=torch.float64).to(device)
    report = {"model": os.path.basename(args.output), "data": os.path.basename(args.data), "teacher": data.teacher,
              "hyperparameters": exported.hyperparameters, "steps": step, "batch_size": args.batch_size, "lr": args.lr, "init": args.init,
              "seconds": round(time.time() - start, 1), "mu_eV_per_atom": mu, "mu_refit_eV_per_atom": offset, "sigma_eV_per_A": sigma,
              "device": str(device), "torch": torch.__version__, "test": accuracy(exported, data, data.test, device),
              "log": log}
    print(f"exported {args.output} ({os.path.getsize(args.output)} bytes); held-out test frames, read back from the file:")
    print(describe(report["test"]))
    if args.report:
        with open(args.report, "w") as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
