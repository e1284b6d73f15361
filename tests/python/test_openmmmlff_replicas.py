"""Replicas from Python: per-replica energies sum to the force's energy, replica scales and the
global energy scale parameter act as documented, in a Context and through updateParametersInContext."""

import numpy as np
import openmm
import openmm.unit as unit
import pytest

from openmmmlff_testing import ETHANOL_POS, ETHANOL_Z, distorted, import_openmmmlff, random_model_path

openmmmlff = import_openmmmlff()
NUM_REPLICAS = 6


def replicated_system(scales=None, parameter=""):
    system = openmm.System()
    force = openmmmlff.MLFFForce(random_model_path())
    positions = []
    for replica in range(NUM_REPLICAS):
        for atomic_number in ETHANOL_Z:
            force.addParticle(system.addParticle(12.0), int(atomic_number), replica)
        positions += list(distorted(ETHANOL_POS, seed=100 + replica))
        if scales is not None:
            force.setReplicaScale(replica, scales[replica])
    force.setEnergyScaleParameter(parameter)
    system.addForce(force)
    context = openmm.Context(system, openmm.VerletIntegrator(0.0005), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(np.array(positions) * 0.1)
    return force, context


def potential(context, **kwargs):
    return context.getState(getEnergy=True, **kwargs).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)


def test_replica_energies_sum_to_the_total():
    force, context = replicated_system()
    total = potential(context)
    energies = force.getReplicaEnergies(context)
    assert energies.shape == (NUM_REPLICAS,)
    assert len(set(energies.tolist())) == NUM_REPLICAS, "distinct structures should have distinct energies"
    assert energies.sum() == pytest.approx(total, rel=1e-12)


def test_replica_energies_follow_the_dynamics():
    force, context = replicated_system()
    before = force.getReplicaEnergies(context)
    context.setVelocitiesToTemperature(300, 1)
    context.getIntegrator().step(20)
    total = potential(context)
    after = force.getReplicaEnergies(context)
    assert not np.array_equal(before, after)
    assert after.sum() == pytest.approx(total, rel=1e-12)


def test_replica_scales():
    scales = [1.0, 0.5, 0.0, 2.0, -1.0, 0.125]
    plain, plain_context = replicated_system()
    scaled, scaled_context = replicated_system(scales)
    potential(plain_context)
    total = potential(scaled_context)
    unscaled = plain.getReplicaEnergies(plain_context)
    energies = scaled.getReplicaEnergies(scaled_context)
    np.testing.assert_allclose(energies, np.array(scales) * unscaled, rtol=1e-12, atol=1e-12)
    assert total == pytest.approx(energies.sum(), rel=1e-12)


def test_update_parameters_in_context():
    force, context = replicated_system()
    potential(context)
    unscaled = force.getReplicaEnergies(context)
    force.setReplicaScale(2, 0.25)
    force.setReplicaScale(4, 3.0)
    force.updateParametersInContext(context)
    total = potential(context)  # replica energies belong to an evaluation: evaluate again
    energies = force.getReplicaEnergies(context)
    expected = unscaled.copy()
    expected[2] *= 0.25
    expected[4] *= 3.0
    np.testing.assert_allclose(energies, expected, rtol=1e-12, atol=1e-12)
    assert total == pytest.approx(expected.sum(), rel=1e-12)


def test_energy_scale_parameter_and_its_derivative():
    force, context = replicated_system(parameter="lambda_ml")
    full = potential(context)
    assert context.getParameter("lambda_ml") == 1.0
    context.setParameter("lambda_ml", 0.3)
    state = context.getState(getEnergy=True, getParameterDerivatives=True)
    assert state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) == pytest.approx(0.3 * full, rel=1e-12)
    assert state.getEnergyParameterDerivatives()["lambda_ml"] == pytest.approx(full, rel=1e-12)
    np.testing.assert_allclose(force.getReplicaEnergies(context).sum(), 0.3 * full, rtol=1e-12)
    # The derivative against a central finite difference of the energy.
    h = 1e-4
    context.setParameter("lambda_ml", 0.3 + h)
    up = potential(context)
    context.setParameter("lambda_ml", 0.3 - h)
    down = potential(context)
    assert (up - down) / (2 * h) == pytest.approx(full, rel=1e-8)
