"""Small molecules for the Python examples: element symbols and coordinates (Å), and a helper
that turns them into an OpenMM Topology, System particles and an MLFFForce's particles."""

import openmm
import openmm.app as app
import openmm.unit as unit

# Ethanol, staggered, from standard bond lengths and angles.
ETHANOL = [
    ("C", (1.1879, -0.3829, 0.0000)),
    ("C", (0.0000, 0.5526, 0.0000)),
    ("O", (-1.1867, -0.2472, 0.0000)),
    ("H", (-1.9237, 0.3850, 0.0000)),
    ("H", (2.1392, 0.1573, 0.0000)),
    ("H", (1.1523, -1.0239, 0.8804)),
    ("H", (1.1523, -1.0239, -0.8804)),
    ("H", (0.0370, 1.2014, 0.8797)),
    ("H", (0.0370, 1.2014, -0.8797)),
]


def add_molecule(topology, system, force, atoms, replica=0, name="MOL"):
    """Add `atoms` ([(symbol, (x, y, z) Å)]) as one residue of `topology`, particles of `system`
    and ML particles of `force` in `replica`; returns their positions (a list of Vec3, nm)."""
    chain = topology.addChain()
    residue = topology.addResidue(name, chain)
    positions = []
    for symbol, xyz in atoms:
        element = app.Element.getBySymbol(symbol)
        topology.addAtom(symbol, element, residue)
        particle = system.addParticle(element.mass)
        force.addParticle(particle, element.atomic_number, replica)
        positions.append(openmm.Vec3(*xyz) * 0.1)
    return positions


def positions_in_nm(positions):
    return unit.Quantity(positions, unit.nanometer)
