#!/usr/bin/python3
"""Teacher data for distillation: conformations sampled by MD with an OpenMM force field,
with their energies (eV) and forces (eV/Å).

    generate_teacher_data.py alanine-dipeptide OUTPUT.npz [options]
    generate_teacher_data.py water OUTPUT.npz [options]

alanine-dipeptide: ACE-ALA-NME in vacuum with Amber14 (amber14-all.xml, no cutoff), built
    by alanine_dipeptide.py; Langevin MD at 300, 500 and 800 K so that every phi/psi basin
    is visited.
water: flexible TIP3P (amber14/tip3p.xml, rigidWater=False) in a periodic cubic box,
    PME; Langevin MD at 300, 350 and 400 K.

No constraints and a 0.5 fs step, so that bond stretches are sampled too. Frames are taken
every --interval steps after --equilibration steps at each temperature.

The .npz holds: z (atoms), positions (frames, atoms, 3) Å, forces (frames, atoms, 3) eV/Å,
energies (frames) eV, temperatures (frames) K, box (3, 3) Å rows in OpenMM's reduced form
(water only) and teacher (a description).
"""

import argparse
import sys
import time

import numpy as np

KJ_PER_MOL_PER_EV = 96.48533212
ANGSTROM_PER_NM = 10.0


def alanine_dipeptide_system():
    import openmm.app as app
    from alanine_dipeptide import build
    topology, positions = build()
    forcefield = app.ForceField("amber14-all.xml")
    system = forcefield.createSystem(topology, nonbondedMethod=app.NoCutoff, constraints=None)
    return topology, positions, system, "Amber14 (amber14-all.xml), vacuum, no cutoff, no constraints"


def water_system(box_nm):
    import openmm
    import openmm.app as app
    import openmm.unit as unit
    forcefield = app.ForceField("amber14/tip3p.xml")
    modeller = app.Modeller(app.Topology(), [])
    modeller.addSolvent(forcefield, model="tip3p", boxSize=openmm.Vec3(box_nm, box_nm, box_nm) * unit.nanometer)
    cutoff_nm = min(0.9, 0.5 * box_nm - 0.02)
    system = forcefield.createSystem(modeller.topology, nonbondedMethod=app.PME, nonbondedCutoff=cutoff_nm * unit.nanometer,
                                     constraints=None, rigidWater=False)
    description = (f"flexible TIP3P (amber14/tip3p.xml, rigidWater=False), {modeller.topology.getNumResidues()} waters, "
                   f"cubic box {box_nm} nm, PME with a {cutoff_nm:.2f} nm cutoff, no constraints")
    return modeller.topology, modeller.positions, system, description


def sample(topology, positions, system, temperatures, frames_per_temperature, interval, equilibration, seed, platform):
    import openmm
    import openmm.unit as unit
    frames = {"positions": [], "forces": [], "energies": [], "temperatures": []}
    for index, temperature in enumerate(temperatures):
        integrator = openmm.LangevinMiddleIntegrator(temperature * unit.kelvin, 5.0 / unit.picosecond,
                                                     0.5 * unit.femtosecond)
        integrator.setRandomNumberSeed(seed + index)
        context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName(platform))
        context.setPositions(positions)
        openmm.LocalEnergyMinimizer.minimize(context, 1.0)
        context.setVelocitiesToTemperature(temperature * unit.kelvin, seed + index)
        start = time.time()
        integrator.step(equilibration)
        for frame in range(frames_per_temperature):
            integrator.step(interval)
            state = context.getState(getPositions=True, getForces=True, getEnergy=True, enforcePeriodicBox=False)
            frames["positions"].append(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer) * ANGSTROM_PER_NM)
            frames["forces"].append(state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
                                    / (KJ_PER_MOL_PER_EV * ANGSTROM_PER_NM))
            frames["energies"].append(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) / KJ_PER_MOL_PER_EV)
            frames["temperatures"].append(temperature)
        steps = equilibration + frames_per_temperature * interval
        print(f"  {temperature:5.0f} K: {frames_per_temperature} frames, {steps} steps in {time.time() - start:.1f} s",
              flush=True)
    z = np.array([atom.element.atomic_number for atom in topology.atoms()], dtype=np.int32)
    return {"z": z, "positions": np.array(frames["positions"], dtype=np.float32),
            "forces": np.array(frames["forces"], dtype=np.float32), "energies": np.array(frames["energies"]),
            "temperatures": np.array(frames["temperatures"])}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("system", choices=["alanine-dipeptide", "water"])
    parser.add_argument("output", help="the .npz file to write")
    parser.add_argument("--temperatures", type=float, nargs="+", help="K (default 300 500 800 or 300 350 400)")
    parser.add_argument("--frames", type=int, default=2000, help="frames per temperature (default 2000)")
    parser.add_argument("--interval", type=int, default=100, help="steps of 0.5 fs between frames (default 100)")
    parser.add_argument("--equilibration", type=int, default=20000, help="steps before the first frame (default 20000)")
    parser.add_argument("--box", type=float, default=1.25, help="water: cubic box edge in nm (default 1.25)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument("--platform", default="CPU", help="OpenMM platform (default CPU)")
    args = parser.parse_args(argv)
    if args.frames < 1 or args.interval < 1 or args.equilibration < 0:
        parser.error("--frames and --interval must be >= 1 and --equilibration >= 0")

    if args.system == "alanine-dipeptide":
        topology, positions, system, teacher = alanine_dipeptide_system()
        temperatures = args.temperatures or [300.0, 500.0, 800.0]
    else:
        if args.box < 1.02:
            parser.error("--box must be at least 1.02 nm: the students' 5 Å cutoff must stay <= half the box")
        topology, positions, system, teacher = water_system(args.box)
        temperatures = args.temperatures or [300.0, 350.0, 400.0]
    print(f"{args.system}: {topology.getNumAtoms()} atoms, teacher: {teacher}", flush=True)
    data = sample(topology, positions, system, temperatures, args.frames, args.interval, args.equilibration,
                  args.seed, args.platform)
    data["teacher"] = np.array(teacher)
    if system.usesPeriodicBoundaryConditions():
        import openmm.unit as unit
        vectors = system.getDefaultPeriodicBoxVectors()
        data["box"] = np.array([v.value_in_unit(unit.nanometer) for v in vectors]) * ANGSTROM_PER_NM
    np.savez_compressed(args.output, **data)
    print(f"wrote {args.output}: {len(data['energies'])} frames")
    return 0


if __name__ == "__main__":
    sys.exit(main())
