/*
 * neighbors.h: pairs of atoms within the cutoff.
 *
 * Each unordered pair {i, j} of atoms of the same replica with |r_j - r_i| <= cutoff is
 * listed once, with i < j. With a box the displacement is the minimum image. Brute force
 * for small replicas, a cell list for large ones: the cost grows linearly with atoms.
 */
#ifndef MLFF_NEIGHBORS_H
#define MLFF_NEIGHBORS_H

#include <stddef.h>

#include "mlff/mlff.h"

typedef struct {
    int i, j;        /* atom indices, i < j, same replica */
    double u[3];     /* r_j - r_i (minimum image when periodic), Å */
    double d;        /* |u|, Å, <= cutoff */
} mlff_pair;

typedef struct {
    mlff_pair *pairs; /* (count) */
    size_t count, capacity;
    /* scratch of the search (cell list), reused across builds */
    int *cell_start;  /* (num_cells + 1) */
    int *cell_atoms;  /* (num_atoms) */
    int *atom_order;  /* (num_atoms) */
    size_t cell_capacity, atom_capacity;
} mlff_neighbor_list;

/* Replaces the list's pairs by those of `structure`. Checks atoms' replicas and the box:
 * a cutoff larger than half the smallest box height is MLFF_ERROR_INVALID_ARGUMENT. */
mlff_status mlff_neighbor_list_build(mlff_neighbor_list *list, const mlff_structure *structure, double cutoff,
                                     mlff_error *error);

/* Fractional coordinates s of r (r = s0 a + s1 b + s2 c) in a box (3, 3) in OpenMM's reduced form. */
void mlff_fractional_coordinates(const double *box, const double r[3], double s[3]);

/* Frees what the list holds (not the struct itself); leaves it empty and reusable. */
void mlff_neighbor_list_clear(mlff_neighbor_list *list);

#endif /* MLFF_NEIGHBORS_H */
