#!/usr/bin/python3
"""A stability check of the water default: NVT MD of the 60-molecule periodic box of the
teacher data with the student through the plugin, then the same with the teacher (flexible
TIP3P, PME), comparing mean temperature, potential energy fluctuations and the O-O radial
distribution function's first peak.

    water_md.py [--model models/water.mlff.safetensors] [--steps 4000] [--platform auto]

Langevin middle, 300 K, 1/ps, 0.5 fs (the water is flexible), from the teacher-minimized box;
samples every 20 steps after the first quarter of the run. Finds openmmmlff as
alanine_dipeptide_md.py does."""

import argparse
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "tools", "distill"))

from alanine_dipeptide_md import import_openmmmlff, make_context  # noqa: E402


def rdf_oo(positions, box_edge, r_max=6.0, bins=120):
    """g_OO(r) of (samples, waters, 3) oxygen positions in a cubic box (Å)."""
    edges = np.linspace(0.0, r_max, bins + 1)
    counts = np.zeros(bins)
    n = positions.shape[1]
    for pos in positions:
        u = pos[None, :, :] - pos[:, None, :]
        u -= box_edge * np.round(u / box_edge)
        d = np.linalg.norm(u, axis=-1)[np.triu_indices(n, 1)]
        counts += np.histogram(d, edges)[0]
    shell = 4.0 / 3.0 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
    density = n / box_edge ** 3
    g = 2.0 * counts / (len(positions) * n * density * shell)
    return 0.5 * (edges[1:] + edges[:-1]), g


def run(label, system, positions, args, platforms, oxygens, box_edge):
    import openmm.unit as unit
    context, integrator, platform, skipped = make_context(system, args.temperature, 0.5, args.seed, platforms)
    for name, message in skipped:
        print(f"{label}: not on the {name} platform ({message})")
    context.setPositions(positions)
    context.setVelocitiesToTemperature(args.temperature * unit.kelvin, args.seed)
    dof = 3 * system.getNumParticles() - system.getNumConstraints() - 3
    kb = unit.MOLAR_GAS_CONSTANT_R.value_in_unit(unit.kilojoule_per_mole / unit.kelvin)
    start, samples, temperatures, energies = time.perf_counter(), [], [], []
    for step in range(20, args.steps + 1, 20):
        integrator.step(20)
        if step <= args.steps // 4:
            continue
        state = context.getState(getPositions=True, getEnergy=True)
        samples.append(state.getPositions(asNumpy=True).value_in_unit(unit.angstrom)[oxygens])
        temperatures.append(2 * state.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole) / (dof * kb))
        energies.append(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
        if not np.isfinite(energies[-1]):
            raise RuntimeError(f"{label}: the energy is {energies[-1]} at step {step}")
    seconds = time.perf_counter() - start
    r, g = rdf_oo(np.array(samples), box_edge)
    peak = int(np.argmax(g))
    print(f"{label} on {platform}: {args.steps * 0.5 / 1000:g} ps in {seconds:.1f} s "
          f"({args.steps * 0.5e-6 / seconds * 86400:.2f} ns/day); mean T {np.mean(temperatures):.1f} K, "
          f"potential energy std {np.std(energies):.1f} kJ/mol, g_OO first peak {g[peak]:.2f} at {r[peak]:.2f} Å",
          flush=True)
    return r, g


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=os.path.join(ROOT, "models", "water.mlff.safetensors"))
    parser.add_argument("--steps", type=int, default=4000, help="steps of 0.5 fs (default 4000)")
    parser.add_argument("--temperature", type=float, default=300.0)
    parser.add_argument("--platform", default="auto")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    import openmm
    import openmm.unit as unit
    from generate_teacher_data import water_system
    topology, positions, teacher, description = water_system(1.25)
    oxygens = [a.index for a in topology.atoms() if a.element.atomic_number == 8]
    box_edge = teacher.getDefaultPeriodicBoxVectors()[0][0].value_in_unit(unit.angstrom)
    # Both from the teacher's minimum.
    context = openmm.Context(teacher, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions)
    openmm.LocalEnergyMinimizer.minimize(context, 1.0)
    positions = context.getState(getPositions=True).getPositions()
    del context
    openmmmlff = import_openmmmlff()
    student = openmm.System()
    for atom in topology.atoms():
        student.addParticle(teacher.getParticleMass(atom.index))
    student.setDefaultPeriodicBoxVectors(*teacher.getDefaultPeriodicBoxVectors())
    force = openmmmlff.MLFFForce(args.model)
    force.setUsesPeriodicBoundaryConditions(True)
    force.setUseTabulatedFilters(True)
    for atom in topology.atoms():
        force.addParticle(atom.index, atom.element.atomic_number, 0)
    student.addForce(force)
    student.addForce(openmm.CMMotionRemover())
    platforms = ["CUDA", "CPU", "Reference"] if args.platform == "auto" else [args.platform]
    print(f"water: {len(oxygens)} molecules, box {box_edge:.2f} Å, {args.steps} steps of 0.5 fs at {args.temperature:g} K")
    run("student", student, positions, args, platforms, oxygens, box_edge)
    run("teacher (flexible TIP3P, PME)", teacher, positions, args, platforms, oxygens, box_edge)
    return 0


if __name__ == "__main__":
    sys.exit(main())
