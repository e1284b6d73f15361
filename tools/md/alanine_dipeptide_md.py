#!/usr/bin/python3
"""Molecular dynamics of alanine dipeptide (ACE-ALA-NME, vacuum) with a student model through
the openmm-mlff plugin, and the same run with its teacher (Amber14) for comparison.

    alanine_dipeptide_md.py [--model models/alanine-dipeptide.mlff.safetensors] [--steps 30000]
                            [--platform auto|CUDA|CPU|Reference] [--no-teacher] [--json OUT.json]

Both runs start from the same Amber14-minimized structure (tools/distill/alanine_dipeptide.py),
with the same integrator (Langevin middle, 300 K, 1/ps, 2 fs, bonds to hydrogen constrained at
Amber14's lengths) and the same seed. The student system has the masses and constraints of the
Amber14 system and no force but an MLFFForce on all 22 atoms. Progress (step, simulated time,
potential energy, temperature, ns/day) is printed while the student runs; at the end, the
populations of the phi/psi basins are printed for the student and the teacher.

The platform 'auto' takes the first of CUDA, CPU and Reference on which a Context with the
MLFFForce can be created. The Python module openmmmlff is found on the path, else in the build
folder ($MLFF_BUILD_DIR/python, default build-run/ of the repository, with the kernels of
$MLFF_BUILD_DIR/plugins)."""

import argparse
import json
import math
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools", "distill"))

DEFAULT_MODEL = os.path.join(ROOT, "models", "alanine-dipeptide.mlff.safetensors")

# Basins of the Ramachandran plane (degrees), a partition of the whole plane:
#   phi < 0:  C5 (extended: psi >= 120 or psi < -150), C7eq (0 <= psi < 120), alpha_R (-150 <= psi < 0)
#   phi >= 0: alpha_L (psi >= 0), C7ax (psi < 0)
BASINS = ["C7eq", "C5", "alpha_R", "alpha_L", "C7ax"]


def basin_of(phi, psi):
    """Basin index (into BASINS) of each (phi, psi) pair in degrees."""
    phi, psi = np.asarray(phi), np.asarray(psi)
    left = phi < 0
    index = np.where(left, np.where((psi >= 120) | (psi < -150), 1, np.where(psi >= 0, 0, 2)),
                     np.where(psi >= 0, 3, 4))
    return index


def dihedral(p0, p1, p2, p3):
    """Dihedral angle in degrees (IUPAC sign) of four positions (..., 3)."""
    b0, b1, b2 = p0 - p1, p2 - p1, p3 - p2
    b1n = b1 / np.linalg.norm(b1, axis=-1, keepdims=True)
    v = b0 - np.sum(b0 * b1n, axis=-1, keepdims=True) * b1n
    w = b2 - np.sum(b2 * b1n, axis=-1, keepdims=True) * b1n
    x = np.sum(v * w, axis=-1)
    y = np.sum(np.cross(b1n, v) * w, axis=-1)
    return np.degrees(np.arctan2(y, x))


def backbone_indices(topology):
    """Atom indices of phi (C-N-CA-C) and psi (N-CA-C-N)."""
    atoms = {(a.residue.name, a.name): a.index for a in topology.atoms()}
    phi = [atoms["ACE", "C"], atoms["ALA", "N"], atoms["ALA", "CA"], atoms["ALA", "C"]]
    psi = [atoms["ALA", "N"], atoms["ALA", "CA"], atoms["ALA", "C"], atoms["NME", "N"]]
    return phi, psi


def import_openmmmlff():
    """The openmmmlff module: from the path, else from the build folder ($MLFF_BUILD_DIR,
    default build-run/), whose plugins/ folder then provides the platforms' kernels (unless
    $OPENMM_MLFF_PLUGIN_DIR names another)."""
    try:
        import openmmmlff
        return openmmmlff
    except ImportError:
        pass
    build = os.environ.get("MLFF_BUILD_DIR") or os.path.join(ROOT, "build-run")
    module_dir = os.path.join(build, "python")
    if not os.path.isfile(os.path.join(module_dir, "openmmmlff.py")):
        raise ImportError(f"the Python module openmmmlff is neither importable nor built in {module_dir} "
                          "(wrappers/python; set MLFF_BUILD_DIR to the build folder)")
    os.environ.setdefault("OPENMM_MLFF_PLUGIN_DIR", os.path.join(build, "plugins"))
    sys.path.insert(0, module_dir)
    import openmmmlff
    return openmmmlff


def amber_system(topology):
    import openmm.app as app
    forcefield = app.ForceField("amber14-all.xml")
    return forcefield.createSystem(topology, nonbondedMethod=app.NoCutoff, constraints=app.HBonds)


def student_system(topology, model, tabulated=True):
    """The Amber14 system's particles and constraints, with an MLFFForce as the only force
    (with tabulated filters unless tabulated is False)."""
    openmmmlff = import_openmmmlff()
    system = amber_system(topology)
    while system.getNumForces():
        system.removeForce(0)
    force = openmmmlff.MLFFForce(model)
    force.setUseTabulatedFilters(tabulated)
    for atom in topology.atoms():
        force.addParticle(atom.index, atom.element.atomic_number, 0)
    system.addForce(force)
    return system


def make_context(system, temperature, time_step_fs, seed, platform_names):
    """(context, integrator, platform name) on the first platform that accepts the system."""
    import openmm
    import openmm.unit as unit
    errors = []
    for name in platform_names:
        integrator = openmm.LangevinMiddleIntegrator(temperature * unit.kelvin, 1.0 / unit.picosecond,
                                                     time_step_fs * unit.femtosecond)
        integrator.setRandomNumberSeed(seed)
        try:
            platform = openmm.Platform.getPlatformByName(name)
            context = openmm.Context(system, integrator, platform)
        except Exception as e:  # no such platform, or no MLFF kernel / no GPU for it
            errors.append((name, str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__))
            continue
        return context, integrator, name, errors
    raise RuntimeError("no platform could run the system: " + "; ".join(f"{n}: {m}" for n, m in errors))


def simulate(label, system, positions, phi_atoms, psi_atoms, args, platform_names, verbose):
    """Runs args.steps steps; returns dict with phi, psi (degrees, one per sample) and timing."""
    import openmm.unit as unit
    context, integrator, platform, skipped = make_context(system, args.temperature, args.time_step, args.seed,
                                                          platform_names)
    for name, message in skipped:
        print(f"{label}: not on the {name} platform ({message})")
    context.setPositions(positions)
    context.applyConstraints(1e-6)
    context.setVelocitiesToTemperature(args.temperature * unit.kelvin, args.seed)
    import openmm
    dof = 3 * system.getNumParticles() - system.getNumConstraints()
    if any(isinstance(f, openmm.CMMotionRemover) for f in system.getForces()):
        dof -= 3
    kb = unit.MOLAR_GAS_CONSTANT_R.value_in_unit(unit.kilojoule_per_mole / unit.kelvin)
    chunk = args.sample_interval
    phi, psi, energies, temperatures = [], [], [], []
    print(f"{label}: {args.steps} steps of {args.time_step} fs at {args.temperature:g} K on the {platform} platform",
          flush=True)
    if verbose:
        print(f"  {'step':>8s} {'time (ps)':>10s} {'E_pot (kJ/mol)':>15s} {'T (K)':>7s} {'ns/day':>8s}", flush=True)
    start = last_time = time.perf_counter()
    last_step = step = 0
    while step < args.steps:
        n = min(chunk, args.steps - step)
        integrator.step(n)
        step += n
        state = context.getState(getPositions=True, getEnergy=True)
        pos = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        phi.append(float(dihedral(*(pos[i] for i in phi_atoms))))
        psi.append(float(dihedral(*(pos[i] for i in psi_atoms))))
        energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        energies.append(energy)
        kinetic = state.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole)
        temperatures.append(2 * kinetic / (dof * kb))
        if not math.isfinite(energy):
            raise RuntimeError(f"{label}: the energy is {energy} at step {step}: the simulation blew up")
        if verbose and (step % args.report_interval == 0 or step == args.steps):
            now = time.perf_counter()
            ns_per_day = (step - last_step) * args.time_step * 1e-6 / max(now - last_time, 1e-9) * 86400
            print(f"  {step:8d} {step * args.time_step / 1000:10.2f} {energy:15.3f} {temperatures[-1]:7.1f} "
                  f"{ns_per_day:8.2f}", flush=True)
            last_time, last_step = now, step
    seconds = time.perf_counter() - start
    ns_per_day = args.steps * args.time_step * 1e-6 / seconds * 86400
    print(f"{label}: {args.steps * args.time_step / 1000:g} ps in {seconds:.1f} s ({ns_per_day:.1f} ns/day), "
          f"mean temperature {np.mean(temperatures):.1f} K", flush=True)
    return {"platform": platform, "seconds": seconds, "ns_per_day": ns_per_day, "phi": np.array(phi),
            "psi": np.array(psi), "energies": np.array(energies), "mean_temperature": float(np.mean(temperatures))}


def populations(run, blocks=5):
    """Basin populations, their block standard errors and the number of basin changes."""
    basins = basin_of(run["phi"], run["psi"])
    fractions = np.array([np.mean(basins == b) for b in range(len(BASINS))])
    parts = np.array_split(basins, blocks)
    per_block = np.array([[np.mean(p == b) for b in range(len(BASINS))] for p in parts])
    error = per_block.std(axis=0, ddof=1) / math.sqrt(blocks)
    changes = int(np.count_nonzero(basins[1:] != basins[:-1]))
    return fractions, error, changes


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL, help="student model file (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=30000, help="MD steps of each run (default 30000)")
    parser.add_argument("--time-step", type=float, default=2.0, help="fs (default 2)")
    parser.add_argument("--temperature", type=float, default=300.0, help="K (default 300)")
    parser.add_argument("--platform", default="auto", help="auto (CUDA, else CPU, else Reference) or a platform name")
    parser.add_argument("--report-interval", type=int, default=2000, help="steps between progress lines (default 2000)")
    parser.add_argument("--sample-interval", type=int, default=50, help="steps between phi/psi samples (default 50)")
    parser.add_argument("--seed", type=int, default=2024, help="random seed of both runs")
    parser.add_argument("--no-teacher", action="store_true", help="skip the Amber14 reference run")
    parser.add_argument("--exact-filters", action="store_true",
                        help="evaluate the filter networks exactly (default: tabulated filters, faster; see "
                             "MLFFForce.setUseTabulatedFilters)")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.sample_interval < 1 or args.report_interval < 1:
        parser.error("--steps, --sample-interval and --report-interval must be >= 1")
    if args.report_interval % args.sample_interval:
        parser.error("--report-interval must be a multiple of --sample-interval")
    if not os.path.isfile(args.model):
        parser.error(f"no model file {args.model}")

    from alanine_dipeptide import build
    topology, positions = build()
    phi_atoms, psi_atoms = backbone_indices(topology)
    platforms = ["CUDA", "CPU", "Reference"] if args.platform == "auto" else [args.platform]
    print(f"alanine dipeptide: {topology.getNumAtoms()} atoms, minimized with Amber14; student model "
          f"{os.path.relpath(args.model)}", flush=True)

    runs = {"student": simulate("student", student_system(topology, args.model, not args.exact_filters), positions, phi_atoms, psi_atoms, args,
                                platforms, verbose=True)}
    if not args.no_teacher:
        teacher_platforms = ["CUDA", "CPU", "Reference"] if args.platform == "auto" else [args.platform]
        runs["teacher"] = simulate("teacher (Amber14)", amber_system(topology), positions, phi_atoms, psi_atoms, args,
                                   teacher_platforms, verbose=False)

    length_ps = args.steps * args.time_step / 1000
    print(f"\nphi/psi basin populations over {length_ps:g} ps at {args.temperature:g} K "
          f"({len(runs['student']['phi'])} samples each; +- block standard error of 5 blocks):")
    header = f"  {'basin':8s}" + "".join(f"{name:>18s}" for name in runs)
    print(header)
    results = {name: populations(run) for name, run in runs.items()}
    for b, basin in enumerate(BASINS):
        print(f"  {basin:8s}" + "".join(f"{100 * results[n][0][b]:9.1f} +- {100 * results[n][1][b]:4.1f} %" for n in runs))
    print(f"  {'changes':8s}" + "".join(f"{results[n][2]:18d}" for n in runs) + "   (basin changes between samples)")
    if "teacher" in runs:
        diff = 0.5 * np.abs(results["student"][0] - results["teacher"][0]).sum()
        print(f"  student vs teacher: {100 * diff:.1f} % of the population is in a different basin "
              "(half the summed absolute differences)")
    if args.json:
        out = {"steps": args.steps, "time_step_fs": args.time_step, "temperature_K": args.temperature,
               "model": os.path.basename(args.model), "basins": BASINS}
        for name, run in runs.items():
            fractions, error, changes = results[name]
            out[name] = {"platform": run["platform"], "seconds": run["seconds"], "ns_per_day": run["ns_per_day"],
                         "mean_temperature_K": run["mean_temperature"],
                         "populations": dict(zip(BASINS, fractions.tolist())),
                         "standard_errors": dict(zip(BASINS, error.tolist())), "basin_changes": changes}
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
