/* painn_network.h: the student PaiNN over a pair list: per-atom energies and, by the
 * hand-written backward pass, forces. */
#ifndef MLFF_PAINN_NETWORK_H
#define MLFF_PAINN_NETWORK_H

#include <stddef.h>

#include "mlff/mlff.h"
#include "neighbors.h"
#include "painn_messages.h"
#include "thread_pool.h"

/* Activations and gradients, and the pairs' edges grouped by receiver, reused across calls; grow as
 * needed. recompute_filters: 0 (the default) keeps the exact filters from the forward for the
 * backward where they fit (painn_network.c), 1 always recomputes them (the tests compare the two). */
typedef struct {
    double *values;
    size_t capacity; /* doubles */
    mlff_receivers receivers;
    int recompute_filters;
} mlff_painn_buffers;

/* atom_energies (N) eV, overwritten; forces (N, 3) eV/Å, overwritten, or NULL to skip the backward.
 * z (N) must be in [0, Z_max] and every pair must have d > 0 (the caller checks both).
 * table: NULL for the exact filter network, or a filter table made from this model (the caller
 * checks that) whose interpolated filters replace it. threads: the pool that takes the layers
 * whose rows are independent, or NULL for the caller's thread alone; the results are the same. */
mlff_status mlff_painn_evaluate(const mlff_student_painn *model, const mlff_filter_table *table, const int *z, int N,
                                const mlff_pair *pairs, size_t P, double *atom_energies, double *forces,
                                mlff_painn_buffers *buffers, mlff_thread_pool *threads, mlff_error *error);

void mlff_painn_buffers_clear(mlff_painn_buffers *buffers);

/* The fewest rows of each kind of layer that a thread takes (of a chunk's pairs, 256 a thread, its
 * edges, or the atoms), for a model of H channels and K basis functions: a share is some 2.6 10^5
 * multiply-adds, so that cheap layers and small systems stay on fewer threads. */
typedef struct {
    size_t filter;  /* a pair's filter network, forward or backward: K H + 3 H^2 multiply-adds */
    size_t table;   /* a pair's table row, interpolated or its dE/dd: about 12 H */
    size_t update;  /* an atom's update, forward or backward: 5 H^2 */
    size_t readout; /* an atom's readout: 5 H^2 / 8 */
    size_t edges;   /* an edge's message received, forward or backward: 7 H */
    size_t message_pairs; /* a pair's own part of the messages' backward: 10 H */
} mlff_painn_share_rows;
mlff_painn_share_rows mlff_painn_min_rows_a_share(int H, int K);

#endif /* MLFF_PAINN_NETWORK_H */
