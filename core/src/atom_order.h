/*
 * atom_order.h: the atoms in an order of the core's own, for the network: near in memory where they
 * are near in space. The messages read both atoms' features for every pair (8H doubles an atom with
 * their gradients), so where a structure lists its atoms in no spatial order (a box filled at
 * random, or a liquid some nanoseconds on) its atoms' features come from far-off memory: in the
 * structure's order a shuffled 3,000-atom water droplet took 1.6 times as long as the same droplet
 * in the order it was built, a molecule after the next along a grid (docs/performance.md).
 *
 * The order: atoms by replica (ascending), within a replica along a Z-order (Morton) curve through
 * the box (periodic: the fractional coordinates, wrapped) or through the bounding box of all atoms,
 * ties by index. Only structures with a replica of more than MLFF_ATOM_ORDER_MIN_ATOMS atoms are
 * reordered; smaller replicas' features stay in a core's caches, and their atoms keep the
 * structure's order (and their numbers, to the bit).
 *
 * In the new order an atom's place is what the network calls its index. The pairs are relabelled
 * (i < j, u = r_j - r_i, sorted by (i, j)), so that each atom's sums are taken in an order that
 * depends on the positions alone, not on the threads.
 */
#ifndef MLFF_ATOM_ORDER_H
#define MLFF_ATOM_ORDER_H

#include <stddef.h>
#include <stdint.h>

#include "mlff/mlff.h"
#include "neighbors.h"

#define MLFF_ATOM_ORDER_MIN_ATOMS 256

typedef struct {
    int reordered;    /* 0: the structure's own order, and none of the arrays below is filled */
    int *atom_at;     /* (N) the structure's atom at each place */
    int *place_of;    /* (N) each atom's place */
    int *atomic_numbers; /* (N) by place */
    mlff_pair *pairs; /* (P) by place: i < j, sorted by (i, j) */
    double *atom_energies; /* (N) by place, for the network to fill */
    double *forces;   /* (N, 3) by place, for the network to fill */
    /* scratch */
    struct mlff_atom_key *keys; /* (N) */
    size_t *first_pair; /* (N + 1) */
    size_t atom_capacity, pair_capacity;
} mlff_atom_order;

/* Orders the atoms of `structure` (already checked: finite positions, replicas in range) and
 * relabels its pairs (P, from the neighbour search), or leaves order->reordered 0 where the
 * structure is small enough. MLFF_ERROR_OUT_OF_MEMORY if it can't. Memory is reused across calls. */
mlff_status mlff_atom_order_build(mlff_atom_order *order, const mlff_structure *structure, const mlff_pair *pairs,
                                  size_t P, mlff_error *error);

/* Frees what it holds (not the struct); leaves it empty and reusable. */
void mlff_atom_order_clear(mlff_atom_order *order);

#endif /* MLFF_ATOM_ORDER_H */
