#!/usr/bin/env python3
"""Molecular dynamics of ethanol with MLFFForce through openmm.app.

    md_with_reporter.py MODEL [--steps N] [--platform NAME] [--report-interval N]

Langevin dynamics (LangevinMiddleIntegrator, 300 K, 1/ps, 0.5 fs) of one ethanol molecule in
vacuum whose only force is the model; a StateDataReporter prints the energies and temperature
to stdout. Exits non-zero when the energy stops being finite.
"""

import argparse
import math
import sys

import openmm
import openmm.app as app
import openmm.unit as unit
import openmmmlff

from molecules import ETHANOL, add_molecule, positions_in_nm


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="model file (*.mlff.safetensors)")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--report-interval", type=int, default=50)
    parser.add_argument("--platform", default="Reference", help="OpenMM platform (Reference or CPU)")
    args = parser.parse_args()

    topology = app.Topology()
    system = openmm.System()
    force = openmmmlff.MLFFForce(args.model)
    positions = add_molecule(topology, system, force, ETHANOL, name="ETH")
    system.addForce(force)

    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 0.5 * unit.femtosecond)
    integrator.setRandomNumberSeed(2024)
    platform = openmm.Platform.getPlatformByName(args.platform)
    simulation = app.Simulation(topology, system, integrator, platform)
    simulation.context.setPositions(positions_in_nm(positions))
    simulation.context.setVelocitiesToTemperature(300 * unit.kelvin, 2024)
    simulation.reporters.append(app.StateDataReporter(
        sys.stdout, args.report_interval, step=True, time=True, potentialEnergy=True, kineticEnergy=True,
        totalEnergy=True, temperature=True))
    simulation.step(args.steps)

    state = simulation.context.getState(getEnergy=True)
    energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    if not math.isfinite(energy):
        print(f"md_with_reporter: the potential energy is {energy} after {args.steps} steps", file=sys.stderr)
        return 1
    print(f"potential energy after {args.steps} steps: {energy:.6f} kJ/mol")
    return 0


if __name__ == "__main__":
    sys.exit(main())
