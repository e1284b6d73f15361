#!/usr/bin/env python3
"""Many replicas of ethanol in one Context, with their per-replica energies.

    replica_energies.py MODEL [--replicas N] [--steps N] [--platform NAME]

Each replica is a copy of ethanol with its own small random distortion; replicas never interact,
so one Context evaluates them all at once. Replica r's energy is scaled by a factor, as in
Hamiltonian replica exchange (a ladder from 1 down to 0.5). The script prints each replica's
energy before and after some Langevin steps, checks that they sum to the potential energy, and
checks one replica against the same molecule alone in its own Context.
"""

import argparse
import math
import sys

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit
import openmmmlff

from molecules import ETHANOL, add_molecule, positions_in_nm


def build(model, replicas, rng):
    """A System with `replicas` distorted ethanols, one per replica; its force, topology, positions."""
    topology = app.Topology()
    system = openmm.System()
    force = openmmmlff.MLFFForce(model)
    positions = []
    for replica in range(replicas):
        distorted = [(symbol, tuple(np.asarray(xyz) + rng.normal(scale=0.05, size=3))) for symbol, xyz in ETHANOL]
        positions += add_molecule(topology, system, force, distorted, replica, name="ETH")
        force.setReplicaScale(replica, 1.0 - 0.5 * replica / max(1, replicas - 1))
    system.addForce(force)
    return system, force, topology, positions


def potential_energy(context):
    return context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)


def report(force, context, label):
    # getReplicaEnergies reads the last evaluation: evaluate the current state first.
    total = potential_energy(context)
    energies = force.getReplicaEnergies(context)
    print(f"{label}:")
    print(f"{'replica':>8} {'scale':>8} {'energy (kJ/mol)':>18}")
    for replica, energy in enumerate(energies):
        print(f"{replica:>8} {force.getReplicaScale(replica):>8.4f} {energy:>18.6f}")
    print(f"{'sum':>8} {'':>8} {energies.sum():>18.6f}   (potential energy {total:.6f})")
    if not np.all(np.isfinite(energies)) or not math.isclose(energies.sum(), total, rel_tol=1e-9, abs_tol=1e-9):
        raise SystemExit("replica_energies: the replica energies do not sum to the potential energy")
    return energies


def alone(model, positions, platform):
    """The energy of the molecule at `positions` (one replica's) alone in its own Context."""
    system = openmm.System()
    force = openmmmlff.MLFFForce(model)
    add_molecule(app.Topology(), system, force, ETHANOL)
    system.addForce(force)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), platform)
    context.setPositions(positions)
    return potential_energy(context)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="model file (*.mlff.safetensors)")
    parser.add_argument("--replicas", type=int, default=16)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--platform", default="Reference", help="OpenMM platform (Reference or CPU)")
    args = parser.parse_args()

    rng = np.random.default_rng(7)
    system, force, topology, positions = build(args.model, args.replicas, rng)
    platform = openmm.Platform.getPlatformByName(args.platform)
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 0.5 * unit.femtosecond)
    integrator.setRandomNumberSeed(2024)
    context = openmm.Context(system, integrator, platform)
    context.setPositions(positions_in_nm(positions))
    context.setVelocitiesToTemperature(300 * unit.kelvin, 2024)
    print(f"{force.getNumParticles()} atoms in {force.getNumReplicas()} replicas")
    energies = report(force, context, "initial structures")

    # The last replica against the same molecule alone: equal up to its scale.
    last = args.replicas - 1
    atoms = len(ETHANOL)
    reference = alone(args.model, positions_in_nm(positions[last * atoms:(last + 1) * atoms]), platform)
    scaled = force.getReplicaScale(last) * reference
    print(f"replica {last} alone: {reference:.6f} kJ/mol, scaled {scaled:.6f} kJ/mol")
    if not math.isclose(energies[last], scaled, rel_tol=1e-9, abs_tol=1e-9):
        raise SystemExit("replica_energies: a replica's energy differs from the molecule's alone")

    integrator.step(args.steps)
    report(force, context, f"after {args.steps} steps")

    # Swap the scales of the first and last replicas, as an exchange would.
    first_scale, last_scale = force.getReplicaScale(0), force.getReplicaScale(last)
    force.setReplicaScale(0, last_scale)
    force.setReplicaScale(last, first_scale)
    force.updateParametersInContext(context)
    report(force, context, "after swapping the scales of the first and last replicas")
    return 0


if __name__ == "__main__":
    sys.exit(main())
