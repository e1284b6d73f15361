"""Energies and forces of MLFFForce through an OpenMM Context equal the C core's (mlff-eval) after
the unit conversion (eV -> kJ/mol, eV/Å -> kJ/mol/nm): one molecule, ML/MM (a subset of the
System's particles), replicas, periodic boxes, and a seed model."""

import numpy as np
import openmm
import openmm.unit as unit
import pytest

from openmmmlff_testing import (ANGSTROM_PER_NM, ETHANOL_POS, ETHANOL_Z, KJ_PER_MOL_PER_EV, WATER_POS, WATER_Z,
                                core_energy_forces, distorted, import_openmmmlff, random_model_path,
                                seed_model_path, water_box)

openmmmlff = import_openmmmlff()
PLATFORMS = ["Reference", "CPU"]
TOLERANCE = 1e-9  # relative; both sides run the same double-precision core


def evaluate(system, positions_nm, platform, box_nm=None, groups=-1):
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName(platform))
    if box_nm is not None:
        context.setPeriodicBoxVectors(*[openmm.Vec3(*row) for row in box_nm])
    context.setPositions(positions_nm)
    state = context.getState(getEnergy=True, getForces=True, groups=groups)
    energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    forces = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
    return energy, np.asarray(forces), context


def assert_matches_core(energy, forces, energy_ev, forces_ev_per_angstrom, what):
    expected_energy = energy_ev * KJ_PER_MOL_PER_EV
    expected_forces = forces_ev_per_angstrom * KJ_PER_MOL_PER_EV * ANGSTROM_PER_NM
    assert energy == pytest.approx(expected_energy, rel=TOLERANCE, abs=TOLERANCE), what
    scale = max(1.0, float(np.abs(expected_forces).max()))
    error = float(np.abs(forces - expected_forces).max())
    assert error <= TOLERANCE * scale, f"{what}: max |dF| {error:.3e} kJ/mol/nm"


def single_molecule_system(model_path, z):
    system = openmm.System()
    force = openmmmlff.MLFFForce(model_path)
    for atomic_number in z:
        force.addParticle(system.addParticle(1.0), int(atomic_number))
    system.addForce(force)
    return system, force


@pytest.mark.parametrize("platform", PLATFORMS)
def test_molecule(platform, tmp_path):
    model = random_model_path()
    pos = distorted(ETHANOL_POS, seed=1)
    system, _ = single_molecule_system(model, ETHANOL_Z)
    energy, forces, _ = evaluate(system, pos / ANGSTROM_PER_NM, platform)
    assert_matches_core(energy, forces, *core_energy_forces(model, ETHANOL_Z, pos, tmp_path), "ethanol")


@pytest.mark.parametrize("platform", PLATFORMS)
def test_ml_subset_of_the_system(platform, tmp_path):
    """ML particles at scattered System indices among MM particles with their own force."""
    model = random_model_path()
    pos = distorted(ETHANOL_POS, seed=2)
    ml_indices = [1, 2, 4, 6, 7, 9, 10, 12, 13]  # ethanol's atoms, in order, among 14 particles
    mm_indices = [0, 3, 5, 8, 11]
    mm_positions = np.random.default_rng(3).uniform(-3, 3, size=(len(mm_indices), 3)) + 20.0  # far away, Å
    system = openmm.System()
    force = openmmmlff.MLFFForce(model)
    positions = np.zeros((len(ml_indices) + len(mm_indices), 3))
    for _ in range(len(positions)):
        system.addParticle(1.0)
    for atom, particle in enumerate(ml_indices):
        force.addParticle(particle, int(ETHANOL_Z[atom]))
        positions[particle] = pos[atom]
    positions[mm_indices] = mm_positions
    bonds = openmm.HarmonicBondForce()
    bonds.addBond(mm_indices[0], mm_indices[1], 0.1, 1000.0)
    bonds.setForceGroup(1)
    system.addForce(bonds)
    system.addForce(force)
    positions = positions / ANGSTROM_PER_NM

    energy, forces, context = evaluate(system, positions, platform, groups={0})
    energy_ev, forces_ev = core_energy_forces(model, ETHANOL_Z, pos, tmp_path)
    assert_matches_core(energy, forces[ml_indices], energy_ev, forces_ev, "ML particles")
    assert np.all(forces[mm_indices] == 0.0), "the ML force moved MM particles"
    bond_energy = context.getState(getEnergy=True, groups={1}).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    total = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    assert total == pytest.approx(energy + bond_energy, rel=1e-12)


@pytest.mark.parametrize("platform", PLATFORMS)
def test_replicas_are_independent_structures(platform, tmp_path):
    """Three structures overlapping in space, as three replicas: each replica's energy and forces
    are those of its structure alone."""
    model = random_model_path()
    structures = [(ETHANOL_Z, distorted(ETHANOL_POS, seed=4)), (WATER_Z, distorted(WATER_POS, seed=5)),
                  (ETHANOL_Z, distorted(ETHANOL_POS, seed=6))]
    system = openmm.System()
    force = openmmmlff.MLFFForce(model)
    positions, slices = [], []
    for replica, (z, pos) in enumerate(structures):
        start = system.getNumParticles()
        for atomic_number in z:
            force.addParticle(system.addParticle(1.0), int(atomic_number), replica)
        positions += list(pos)
        slices.append(slice(start, system.getNumParticles()))
    system.addForce(force)
    energy, forces, context = evaluate(system, np.array(positions) / ANGSTROM_PER_NM, platform)
    replica_energies = force.getReplicaEnergies(context)
    assert len(replica_energies) == 3
    for replica, (z, pos) in enumerate(structures):
        energy_ev, forces_ev = core_energy_forces(model, z, pos, tmp_path)
        assert_matches_core(replica_energies[replica], forces[slices[replica]], energy_ev, forces_ev,
                            f"replica {replica}")
    assert energy == pytest.approx(replica_energies.sum(), rel=1e-12)


@pytest.mark.parametrize("skew", [False, True], ids=["rectangular", "triclinic"])
@pytest.mark.parametrize("platform", PLATFORMS)
def test_periodic_box(platform, skew, tmp_path):
    model = random_model_path()
    z, pos, box = water_box(3, 12.0, seed=8 if skew else 9, skew=skew)
    system, force = single_molecule_system(model, z)
    force.setUsesPeriodicBoundaryConditions(True)
    system.setDefaultPeriodicBoxVectors(*[openmm.Vec3(*row) for row in box / ANGSTROM_PER_NM])
    energy, forces, _ = evaluate(system, pos / ANGSTROM_PER_NM, platform, box_nm=box / ANGSTROM_PER_NM)
    assert_matches_core(energy, forces, *core_energy_forces(model, z, pos, tmp_path, box=box),
                        "triclinic water box" if skew else "rectangular water box")
    # Not the same without the images: the box matters.
    open_energy_ev, _ = core_energy_forces(model, z, pos, tmp_path)
    assert abs(open_energy_ev * KJ_PER_MOL_PER_EV - energy) > 1e-6


def test_seed_model(tmp_path, tmp_path_factory):
    model = seed_model_path("original", tmp_path_factory)
    pos = distorted(ETHANOL_POS, seed=10)
    system, _ = single_molecule_system(model, ETHANOL_Z)
    energy, forces, _ = evaluate(system, pos / ANGSTROM_PER_NM, "Reference")
    assert_matches_core(energy, forces, *core_energy_forces(model, ETHANOL_Z, pos, tmp_path), "seed model ethanol")
