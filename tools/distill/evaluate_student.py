#!/usr/bin/python3
"""Held-out accuracy of a student model file against its teacher data.

    evaluate_student.py MODEL.mlff.safetensors TEACHER.npz [--json OUT.json] [--frames test|validation|train|all]

Computes energies and forces of the chosen frames (default: the held-out test frames of
teacher_data.py's split) with the PyTorch implementation in float64 and prints the energy
and force RMSE against the teacher, overall and per sampling temperature. Needs torch."""

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from teacher_data import TeacherData, errors  # noqa: E402


def predict(model, data, frames, device, batch_size=64):
    import torch
    energies, forces = [], []
    for first in range(0, len(frames), batch_size):
        chunk = frames[first:first + batch_size]
        z, pos, structure_of_atom, boxes, _, _ = data.batch(chunk, device, torch.float64)
        e, f = model.energy_and_forces(z, pos, structure_of_atom, len(chunk), boxes)
        energies.append(e.detach().cpu().numpy())
        forces.append(f.detach().cpu().numpy())
    return np.concatenate(energies), np.concatenate(forces)


def accuracy(model, data, frames, device):
    """Errors over the frames, overall and per temperature."""
    energies, forces = predict(model, data, frames, device)
    report = errors(energies, forces, data, frames)
    report["by_temperature"] = {}
    for temperature in np.unique(data.temperatures[frames]):
        mask = data.temperatures[frames] == temperature
        report["by_temperature"][f"{temperature:g} K"] = errors(energies[mask], forces.reshape(len(frames), -1, 3)[mask],
                                                                 data, frames[mask])
    return report


def describe(report):
    lines = [f"{report['frames']} frames: energy RMSE {report['energy_rmse_eV']:.4f} eV "
             f"({report['energy_rmse_meV_per_atom']:.2f} meV/atom; teacher std {report['teacher_energy_std_eV']:.3f} eV), "
             f"force RMSE {report['force_rmse_eV_per_A']:.4f} eV/Å (teacher force RMS "
             f"{report['teacher_force_rms_eV_per_A']:.3f} eV/Å)"]
    for temperature, r in report.get("by_temperature", {}).items():
        lines.append(f"  {temperature:>7s}: energy RMSE {r['energy_rmse_eV']:.4f} eV, force RMSE {r['force_rmse_eV_per_A']:.4f} eV/Å")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("data")
    parser.add_argument("--frames", choices=["test", "validation", "train", "all"], default="test")
    parser.add_argument("--json", help="also write the numbers to this file")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    import torch
    from torch_painn import StudentPaiNN
    model = StudentPaiNN.load(args.model, dtype=torch.float64).to(args.device)
    data = TeacherData(args.data)
    frames = {"test": data.test, "validation": data.validation, "train": data.train,
              "all": np.arange(len(data.energies))}[args.frames]
    report = accuracy(model, data, frames, args.device)
    print(f"{os.path.basename(args.model)} on the {args.frames} frames of {os.path.basename(args.data)}:")
    print(describe(report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
