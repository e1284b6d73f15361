#!/usr/bin/python3
"""Builds alanine dipeptide (ACE-ALA-NME) from ideal internal coordinates and minimizes it
with Amber14 in vacuum.

    alanine_dipeptide.py OUTPUT.pdb [--phi DEG] [--psi DEG]

The heavy atoms are placed from bond lengths, angles and torsions (the backbone torsions
phi and psi are arguments); OpenMM's Modeller adds the hydrogens with the names that
amber14-all.xml expects, then the energy is minimized. Used by the distillation
pipeline (the teacher's starting structure) and by the MD example.
"""

import argparse
import io
import math
import sys

import numpy as np

KJ_PER_MOL_PER_EV = 96.48533212


def place_atom(a, b, c, bond, angle_deg, torsion_deg):
    """The position d with |cd| = bond, angle(b, c, d) = angle and torsion(a, b, c, d) = torsion."""
    angle, torsion = math.radians(angle_deg), math.radians(torsion_deg)
    bc = (c - b) / np.linalg.norm(c - b)
    normal = np.cross(b - a, bc)
    normal /= np.linalg.norm(normal)
    in_plane = np.cross(normal, bc)
    local = np.array([-bond * math.cos(angle), bond * math.sin(angle) * math.cos(torsion),
                      bond * math.sin(angle) * math.sin(torsion)])
    return c + local[0] * bc + local[1] * in_plane + local[2] * normal


def heavy_atoms(phi, psi):
    """(residue, atom name, position in Å) of the heavy atoms, from ideal internal coordinates."""
    ace_ch3 = np.array([0.0, 0.0, 0.0])
    ace_c = np.array([1.52, 0.0, 0.0])
    n = ace_c + 1.33 * np.array([-math.cos(math.radians(116.0)), math.sin(math.radians(116.0)), 0.0])
    ca = place_atom(ace_ch3, ace_c, n, 1.46, 122.0, 180.0)        # omega = 180 (trans peptide)
    c = place_atom(ace_c, n, ca, 1.52, 111.0, phi)
    nme_n = place_atom(n, ca, c, 1.33, 116.0, psi)
    nme_c = place_atom(ca, c, nme_n, 1.46, 122.0, 180.0)
    ace_o = place_atom(ca, n, ace_c, 1.23, 123.0, 0.0)             # carbonyl O cis to the next CA
    o = place_atom(n, ca, c, 1.23, 121.0, psi + 180.0)
    cb = place_atom(n, c, ca, 1.53, 110.0, 122.6)                  # the L configuration (checked below)
    return [("ACE", "CH3", ace_ch3), ("ACE", "C", ace_c), ("ACE", "O", ace_o),
            ("ALA", "N", n), ("ALA", "CA", ca), ("ALA", "CB", cb), ("ALA", "C", c), ("ALA", "O", o),
            ("NME", "N", nme_n), ("NME", "C", nme_c)]


def is_l_alanine(n, ca, c, cb):
    """True for the S (= L) configuration at CA: seen from the side away from HA, the
    priorities N > C > CB run anticlockwise."""
    away_from_ha = sum((x - ca) / np.linalg.norm(x - ca) for x in (n, c, cb))
    return float(np.dot(np.cross(c - n, cb - c), away_from_ha)) > 0.0


def heavy_atom_pdb(atoms):
    lines, serial, residue_numbers = [], 1, {"ACE": 1, "ALA": 2, "NME": 3}
    for residue, name, (x, y, z) in atoms:
        lines.append(f"ATOM  {serial:5d} {name:<4s} {residue} A{residue_numbers[residue]:4d}    "
                     f"{x:8.3f}{y:8.3f}{z:8.3f}  1.00  0.00           {name[0]}")
        serial += 1
    return "\n".join(lines + ["END"]) + "\n"


def build(phi=-150.0, psi=150.0, minimize=True):
    """Topology and positions (nm, openmm Quantity) of minimized alanine dipeptide."""
    import openmm
    import openmm.app as app

    atoms = heavy_atoms(phi, psi)
    by_name = {(r, a): p for r, a, p in atoms}
    if not is_l_alanine(by_name["ALA", "N"], by_name["ALA", "CA"], by_name["ALA", "C"], by_name["ALA", "CB"]):
        raise RuntimeError("internal error: the built alanine is not the L enantiomer")
    pdb = app.PDBFile(io.StringIO(heavy_atom_pdb(atoms)))
    forcefield = app.ForceField("amber14-all.xml")
    modeller = app.Modeller(pdb.topology, pdb.positions)
    modeller.addHydrogens(forcefield)
    if not minimize:
        return modeller.topology, modeller.positions
    system = forcefield.createSystem(modeller.topology, nonbondedMethod=app.NoCutoff, constraints=None)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(modeller.positions)
    openmm.LocalEnergyMinimizer.minimize(context, 1e-3)
    return modeller.topology, context.getState(getPositions=True).getPositions()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", help="the PDB file to write")
    parser.add_argument("--phi", type=float, default=-150.0, help="initial phi in degrees (default -150)")
    parser.add_argument("--psi", type=float, default=150.0, help="initial psi in degrees (default 150)")
    args = parser.parse_args(argv)
    import openmm.app as app
    topology, positions = build(args.phi, args.psi)
    with open(args.output, "w") as f:
        app.PDBFile.writeFile(topology, positions, f)
    print(f"wrote {args.output}: {topology.getNumAtoms()} atoms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
