"""openmmmlff.MLFFForce from Python: construction, every getter and setter, and the errors, each
with the message the C++ layer gives."""

import pathlib

import numpy as np
import openmm
import openmm.unit
import pytest

from openmmmlff_testing import ETHANOL_POS, ETHANOL_Z, import_openmmmlff, random_model_path

openmmmlff = import_openmmmlff()
MLFFForce = openmmmlff.MLFFForce


@pytest.fixture(scope="module")
def model_path():
    return random_model_path()


@pytest.fixture
def force(model_path):
    return MLFFForce(model_path)


def context_for(force, num_particles, platform="Reference"):
    system = openmm.System()
    for _ in range(num_particles):
        system.addParticle(12.0)
    system.addForce(force)
    return openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName(platform))


def test_is_an_openmm_force(force):
    assert isinstance(force, openmm.Force)
    assert MLFFForce.isinstance(force)
    assert not MLFFForce.isinstance(openmm.HarmonicBondForce())


def test_model_properties(force, model_path):
    # The random test model: cutoff 5 Å, atomic numbers up to 10 (tests/openmm/write_random_model.cpp).
    assert force.getCutoff() == pytest.approx(0.5, rel=1e-15)
    assert isinstance(force.getCutoff(), float)
    assert force.getMaxAtomicNumber() == 10
    assert force.getModelPath() == model_path
    with open(model_path, "rb") as f:
        assert force.getModelBytes() == f.read()


def test_construct_from_pathlike_and_from_bytes(model_path):
    from_path = MLFFForce(pathlib.Path(model_path))
    assert from_path.getModelPath() == model_path
    with open(model_path, "rb") as f:
        data = f.read()
    from_bytes = MLFFForce(data, MLFFForce.ModelBytes)
    assert from_bytes.getModelPath() == ""
    assert isinstance(from_bytes.getModelBytes(), bytes)
    assert from_bytes.getModelBytes() == data
    assert from_bytes.getCutoff() == from_path.getCutoff()


def test_construct_rejects_other_types():
    with pytest.raises(TypeError):
        MLFFForce(42)


def test_particles(force):
    assert force.getNumParticles() == 0
    assert force.getNumReplicas() == 0
    assert force.addParticle(3, 8) == 0
    assert force.addParticle(5, 1, 2) == 1
    assert force.getNumParticles() == 2
    assert force.getNumReplicas() == 3
    assert list(force.getParticleParameters(0)) == [3, 8, 0]
    assert list(force.getParticleParameters(1)) == [5, 1, 2]
    force.setParticleParameters(1, 7, 6, 1)
    assert list(force.getParticleParameters(1)) == [7, 6, 1]
    assert force.getNumReplicas() == 2


def test_replica_scales(force):
    assert force.getReplicaScale(0) == 1.0
    assert force.getReplicaScale(12) == 1.0
    force.setReplicaScale(3, 0.25)
    assert force.getReplicaScale(3) == 0.25
    assert force.getReplicaScale(2) == 1.0


def test_flags_and_energy_scale_parameter(force):
    assert force.getEnergyScaleParameter() == ""
    force.setEnergyScaleParameter("lambda_ml")
    assert force.getEnergyScaleParameter() == "lambda_ml"
    assert not force.usesPeriodicBoundaryConditions()
    force.setUsesPeriodicBoundaryConditions(True)
    assert force.usesPeriodicBoundaryConditions()
    assert not force.getUseTabulatedFilters()
    force.setUseTabulatedFilters(True)
    assert force.getUseTabulatedFilters()
    force.setForceGroup(5)
    assert force.getForceGroup() == 5


def test_replica_energies_are_a_numpy_array(force):
    for i, z in enumerate(ETHANOL_Z):
        force.addParticle(i, int(z), 1)
    context = context_for(force, len(ETHANOL_Z))
    context.setPositions(ETHANOL_POS * 0.1)
    energies = force.getReplicaEnergies(context)
    assert isinstance(energies, np.ndarray)
    assert energies.dtype == np.float64
    assert energies.shape == (2,)
    assert energies[0] == 0.0  # replica 0 has no particles
    assert np.isfinite(energies[1]) and energies[1] != 0.0


# Errors: openmm.OpenMMException carrying the C++ message.

def test_unknown_atomic_number(force):
    with pytest.raises(openmm.OpenMMException, match=r"atomic number 11 of particle 0 is not known to the model \(it knows 0 to 10\)"):
        force.addParticle(0, 11)
    with pytest.raises(openmm.OpenMMException, match="atomic number -1"):
        force.addParticle(0, -1)


def test_negative_particle_index(force):
    with pytest.raises(openmm.OpenMMException, match="particle index -2 is negative"):
        force.addParticle(-2, 6)


def test_bad_ml_particle_index(force):
    force.addParticle(0, 6)
    with pytest.raises(openmm.OpenMMException, match=r"ML particle index 1 is out of range \(the force has 1 particles\)"):
        force.getParticleParameters(1)
    with pytest.raises(openmm.OpenMMException, match="ML particle index -1 is out of range"):
        force.setParticleParameters(-1, 0, 6, 0)


def test_particle_out_of_range_of_the_system(force):
    force.addParticle(0, 6)
    force.addParticle(4, 6)
    with pytest.raises(openmm.OpenMMException, match=r"ML particle 1 refers to particle 4, which is out of range \(the System has 2 particles\)"):
        context_for(force, 2)


def test_duplicate_particle(force):
    force.addParticle(1, 6)
    force.addParticle(0, 1)
    force.addParticle(1, 8, 1)
    with pytest.raises(openmm.OpenMMException, match=r"particle 1 was added twice \(ML particles 0 and 2\)"):
        context_for(force, 2)


def test_negative_replica(force):
    with pytest.raises(openmm.OpenMMException, match="replica -1 of particle 0 is negative"):
        force.addParticle(0, 6, -1)
    with pytest.raises(openmm.OpenMMException, match="replica -3 is negative"):
        force.setReplicaScale(-3, 1.0)
    with pytest.raises(openmm.OpenMMException, match="replica -3 is negative"):
        force.getReplicaScale(-3)


def test_non_finite_replica_scale(force):
    with pytest.raises(openmm.OpenMMException, match="the scale of replica 0 is not finite"):
        force.setReplicaScale(0, float("nan"))


def test_missing_model_file(tmp_path):
    missing = str(tmp_path / "missing.mlff.safetensors")
    with pytest.raises(openmm.OpenMMException, match=f"cannot open model file '{missing}'"):
        MLFFForce(missing)


def test_bad_model_file(tmp_path):
    bad = tmp_path / "bad.mlff.safetensors"
    bad.write_bytes(b"not a model file at all")
    with pytest.raises(openmm.OpenMMException) as raised:
        MLFFForce(str(bad))
    assert str(bad) in str(raised.value)
    with pytest.raises(openmm.OpenMMException, match="<model bytes>"):
        MLFFForce(b"\x00\x01 not a model", MLFFForce.ModelBytes)


def test_truncated_model_file(model_path):
    with open(model_path, "rb") as f:
        data = f.read()
    with pytest.raises(openmm.OpenMMException, match="MLFFForce"):
        MLFFForce(data[: len(data) // 2], MLFFForce.ModelBytes)


def test_replica_energies_of_a_context_without_the_force(force):
    other = MLFFForce(force.getModelBytes(), MLFFForce.ModelBytes)
    other.addParticle(0, 6)
    context = context_for(other, 1)
    with pytest.raises(openmm.OpenMMException):
        force.getReplicaEnergies(context)


def test_cast_of_another_force():
    with pytest.raises(openmm.OpenMMException, match="not an MLFFForce"):
        MLFFForce.cast(openmm.HarmonicBondForce())


def test_cpu_platform(force):
    # `import openmm` loads OpenMM's CPU platform; the plugin's kernels are registered for it too.
    for i, z in enumerate(ETHANOL_Z):
        force.addParticle(i, int(z))
    context = context_for(force, len(ETHANOL_Z), "CPU")
    context.setPositions(ETHANOL_POS * 0.1)
    energy = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(openmm.unit.kilojoule_per_mole)
    assert np.isfinite(energy) and energy != 0.0
