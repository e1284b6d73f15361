"""Tests of the MD driver's analysis (dihedrals, basins, populations); numpy only."""

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from alanine_dipeptide_md import BASINS, basin_of, dihedral, populations  # noqa: E402


def test_dihedral_sign_and_value():
    p0, p1, p2 = np.array([1.0, 0, 0]), np.array([0.0, 0, 0]), np.array([0.0, 0, 1])
    for angle in (-170.0, -90.0, -30.0, 0.0, 45.0, 120.0, 180.0):
        a = np.radians(angle)
        p3 = np.array([np.cos(a), np.sin(a), 1.0])
        value = dihedral(p0, p1, p2, p3)
        assert abs((value - angle + 180) % 360 - 180) < 1e-9, (angle, value)


def test_basins_partition_the_plane():
    phi, psi = np.meshgrid(np.arange(-180, 180, 5.0), np.arange(-180, 180, 5.0))
    basins = basin_of(phi.ravel(), psi.ravel())
    assert set(basins.tolist()) == set(range(len(BASINS)))
    # The textbook minima of each basin (degrees).
    assert [BASINS[b] for b in basin_of([-83, -155, -70, 60, 75], [73, 160, -40, 40, -65])] == \
        ["C7eq", "C5", "alpha_R", "alpha_L", "C7ax"]


def test_populations_sum_to_one():
    rng = np.random.default_rng(0)
    run = {"phi": rng.uniform(-180, 180, 1000), "psi": rng.uniform(-180, 180, 1000)}
    fractions, errors, changes = populations(run)
    assert abs(fractions.sum() - 1.0) < 1e-12 and (errors >= 0).all() and changes > 100
