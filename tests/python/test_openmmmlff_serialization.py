"""XmlSerializer round trips of Systems holding an MLFFForce (the proxy is registered by
libOpenMMMLFF): every getter equal, the model bytes identical, the same energy in a Context."""

import copy

import numpy as np
import openmm
import openmm.unit as unit
import pytest

from openmmmlff_testing import ETHANOL_POS, ETHANOL_Z, WATER_POS, WATER_Z, import_openmmmlff, random_model_path

openmmmlff = import_openmmmlff()
MLFFForce = openmmmlff.MLFFForce


def build_system():
    system = openmm.System()
    force = MLFFForce(random_model_path())
    for replica, (z, _) in enumerate([(ETHANOL_Z, ETHANOL_POS), (WATER_Z, WATER_POS)]):
        for atomic_number in z:
            force.addParticle(system.addParticle(1.0), int(atomic_number), replica)
    system.addParticle(5.0)  # an MM particle the force leaves alone
    force.setReplicaScale(1, 0.375)
    force.setEnergyScaleParameter("lambda_ml")
    force.setUseTabulatedFilters(False)
    force.setForceGroup(3)
    force.setName("machine learning")
    system.addForce(openmm.HarmonicBondForce())
    system.addForce(force)
    positions = np.concatenate([ETHANOL_POS, WATER_POS + 10.0, [[30.0, 0.0, 0.0]]]) * 0.1
    return system, force, positions


def the_mlff_force(system):
    found = [MLFFForce.cast(f) for f in system.getForces() if MLFFForce.isinstance(f)]
    assert len(found) == 1
    return found[0]


def assert_same_force(a, b):
    assert b.getModelBytes() == a.getModelBytes()
    assert b.getModelPath() == a.getModelPath()
    assert b.getCutoff() == a.getCutoff()
    assert b.getMaxAtomicNumber() == a.getMaxAtomicNumber()
    assert b.getNumParticles() == a.getNumParticles()
    for i in range(a.getNumParticles()):
        assert list(b.getParticleParameters(i)) == list(a.getParticleParameters(i))
    assert b.getNumReplicas() == a.getNumReplicas()
    for replica in range(a.getNumReplicas() + 1):
        assert b.getReplicaScale(replica) == a.getReplicaScale(replica)
    assert b.getEnergyScaleParameter() == a.getEnergyScaleParameter()
    assert b.usesPeriodicBoundaryConditions() == a.usesPeriodicBoundaryConditions()
    assert b.getUseTabulatedFilters() == a.getUseTabulatedFilters()
    assert b.getForceGroup() == a.getForceGroup()
    assert b.getName() == a.getName()


def energy(system, positions):
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions)
    return context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)


def test_system_round_trip():
    system, force, positions = build_system()
    xml = openmm.XmlSerializer.serialize(system)
    assert "MLFFForce" in xml
    restored = openmm.XmlSerializer.deserialize(xml)
    assert_same_force(force, the_mlff_force(restored))
    assert energy(restored, positions) == energy(system, positions)
    # And once more: the XML of the copy is the XML of the original.
    assert openmm.XmlSerializer.serialize(restored) == xml


def test_force_round_trip():
    system, force, _ = build_system()  # the System owns the force: keep it alive
    restored = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(force))
    assert_same_force(force, MLFFForce.cast(restored))


def test_deepcopy_of_a_system():
    system, force, positions = build_system()
    copied = copy.deepcopy(system)
    assert_same_force(force, the_mlff_force(copied))
    assert energy(copied, positions) == energy(system, positions)


def test_force_from_bytes_round_trip():
    system, force, positions = build_system()
    from_bytes = MLFFForce(force.getModelBytes(), MLFFForce.ModelBytes)
    for i in range(force.getNumParticles()):
        from_bytes.addParticle(*force.getParticleParameters(i))
    restored = MLFFForce.cast(openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(from_bytes)))
    assert restored.getModelPath() == ""
    assert restored.getModelBytes() == force.getModelBytes()


def test_unknown_version_is_rejected():
    system, force, _ = build_system()
    xml = openmm.XmlSerializer.serialize(force)
    assert 'version="1"' in xml
    with pytest.raises(openmm.OpenMMException, match="MLFFForce XML: unsupported version 99"):
        openmm.XmlSerializer.deserialize(xml.replace('version="1"', 'version="99"', 1))
