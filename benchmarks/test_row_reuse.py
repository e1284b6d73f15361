"""Tests of row_reuse.py's walks and its model of the L2, on a chain of atoms whose reads can be
counted by hand."""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from row_reuse import dram_reads_per_pair, neighbour_lists, walk  # noqa: E402


def chain(count):
    """Atoms 0 .. count - 1, each the neighbour of the next."""
    return neighbour_lists(count, [(i, i + 1) for i in range(count - 1)])


def test_lists_are_ascending_and_hold_both_atoms_of_each_pair():
    assert neighbour_lists(4, [(2, 3), (0, 2), (1, 2)]) == [[2], [2], [0, 1, 3], [2]]


def test_weighted_walk_counts_a_lower_neighbour_s_distance_by_its_weight_then_goes_by_index():
    assert walk(10, [4, 8, 9, 11, 13, 20]) == [4, 8, 9, 11, 13, 20]
    assert walk(10, [4, 8, 9, 11, 13, 20], 0.5) == [9, 8, 11, 4, 13, 20]
    assert walk(10, [4, 8, 9, 11, 13, 20], 1.0) == [9, 11, 8, 13, 4, 20]


def test_a_row_read_again_at_once_comes_from_the_l2_and_one_pushed_out_between_from_dram():
    # One block at a time, an L2 of one row: in list order each atom reads its lower pair (the row
    # its lower neighbour read last) first, so every second read hits.
    assert dram_reads_per_pair(chain(6), slots=1, rows=1) == 1.0
    # Higher neighbours first: each atom's first read pushes out the row its second needs, and
    # the next atom's first read misses too. Every row is read from DRAM twice.
    assert dram_reads_per_pair(chain(6), slots=1, rows=1, lower_weight=10.0) == 2.0
    # An L2 as large as all the rows: each read once.
    assert dram_reads_per_pair(chain(6), slots=3, rows=5, lower_weight=10.0) == 1.0
