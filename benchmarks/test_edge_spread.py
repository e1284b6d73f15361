"""edge_spread.py: the cell list's numbering keeps each replica's range and puts every edge's
atoms within the cells it reaches; the spread counted as said; a triclinic box refused by name."""

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import edge_spread  # noqa: E402

CUTOFF = 5.0


def lattice(sites, spacing=3.1, seed=1):
    """Atoms on a jittered cubic lattice, in lattice order (z fastest), as bench.py writes waters."""
    rng = np.random.default_rng(seed)
    grid = np.array(list(np.ndindex(sites, sites, sites)), dtype=float)
    return spacing * grid + rng.uniform(-0.5, 0.5, grid.shape)


def cell_coordinates(positions, box, slices):
    size = CUTOFF * edge_spread.CELL_MARGIN
    reach = np.array([1, 1, slices])
    if box is None:
        return np.floor(positions * reach / size).astype(int), None
    cells = np.floor(box * reach / size).astype(int)
    cells = np.where(cells >= 2 * reach + 1, cells, 1)
    fraction = positions / box
    return np.minimum(((fraction - np.floor(fraction)) * cells).astype(int), cells - 1), cells


@pytest.mark.parametrize("periodic", [False, True])
@pytest.mark.parametrize("slices", [1, 2])
def test_cell_numbering_keeps_replicas_and_reaches_every_edge(periodic, slices):
    positions = np.concatenate([lattice(6), lattice(5, seed=2) - 20.0])  # two replicas, apart
    replica = np.repeat([0, 1], [216, 125])
    box = np.array([18.6, 18.6, 18.6]) if periodic else None
    rank = edge_spread.cell_list_order(positions, replica, box, CUTOFF, slices)
    assert sorted(rank) == list(range(len(positions)))
    assert set(rank[replica == 0]) == set(range(216))  # each replica keeps its range
    # Along the numbering, each cell's atoms are one run (open: each bucket's, cells 4 apart along
    # x or y sharing one here), in index order; a fastest where periodic.
    coordinates, cells = cell_coordinates(positions, box, slices)
    order = np.argsort(rank)
    if cells is None:
        first = {r: coordinates[np.flatnonzero(replica == r)[0]] for r in (0, 1)}
        sides = {0: np.array([4, 4, 32]), 1: np.array([4, 4, 16])}  # 512 and 256 buckets
        keys = [(replica[i], *((coordinates[i] - first[replica[i]] + sides[replica[i]] // 2) % sides[replica[i]]))
                for i in order]
    else:
        keys = [(replica[i], *coordinates[i]) for i in order]
    runs = [k for n, k in enumerate(keys) if n == 0 or k != keys[n - 1]]
    assert len(runs) == len(set(runs))
    assert all(order[n] < order[n + 1] for n in range(len(order) - 1) if keys[n] == keys[n + 1])
    assert runs == sorted(runs, key=lambda k: (k[0], k[3], k[2], k[1]))
    edges = edge_spread.find_edges(positions, replica, box, CUTOFF)
    assert len(edges) > len(positions)
    apart = np.abs(coordinates[edges[:, 0]] - coordinates[edges[:, 1]])
    if cells is not None:
        apart = np.minimum(apart, cells - apart)
    reach = np.array([1, 1, slices]) if cells is None else np.where(cells > 1, [1, 1, slices], 0)
    assert np.all(apart <= reach)
    assert np.any(apart[:, 2] == reach[2])  # the lattice has edges as far as the search reaches


def test_spread_counts_edges_beyond_each_window():
    rank = np.arange(5000)
    edges = np.array([[0, 1], [0, 1500], [0, 3000], [0, 4999]])
    median, beyond = edge_spread.spread(rank, edges)
    assert median == 2250
    assert beyond == [0.75, 0.5, 0.25]


def test_shuffled_spreads_edges_farther_than_the_cell_list(tmp_path):
    positions = lattice(10)  # 1,000 atoms, 31 Å
    replica = np.zeros(len(positions), dtype=int)
    edges = edge_spread.find_edges(positions, replica, None, CUTOFF)
    named = dict(edge_spread.numberings(positions, replica, None, CUTOFF, [2]))
    shuffled, _ = edge_spread.spread(named["shuffled (seed 0)"], edges)
    cells, _ = edge_spread.spread(named["cell list, c cut in 2"], edges)
    assert cells < shuffled / 3


def test_a_triclinic_box_is_refused_by_file(tmp_path):
    path = os.path.join(tmp_path, "tilted.txt")
    with open(path, "w") as f:
        f.write("1 20 0 0 3 20 0 0 0 20\n8 0 0 0 0\n")
    with pytest.raises(ValueError, match="tilted.txt: edge_spread handles rectangular boxes only"):
        edge_spread.read_structure(path)
