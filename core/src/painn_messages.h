/*
 * painn_messages.h: the messages of painn_layers.h taken atom by atom, so that threads can share
 * them: each atom's sums are taken by one thread, term by term in the order of the pairs, as
 * mlff_message_forward and mlff_message_backward take them (the same numbers, to the bit).
 *
 * A pair p = {i, j} carries two directed edges, i <- j and j <- i. mlff_receivers groups the edges
 * of each chunk of consecutive pairs by the atom that receives them.
 */
#ifndef MLFF_PAINN_MESSAGES_H
#define MLFF_PAINN_MESSAGES_H

#include <stddef.h>

#include "mlff/mlff.h"
#include "neighbors.h"

/* The edges of P pairs, chunk by chunk of chunk_pairs pairs, grouped by the atom that receives them.
 * Chunk c's edges are [2 c chunk_pairs, 2 min(P, (c + 1) chunk_pairs)); its groups are
 * [chunk_group[c], chunk_group[c + 1]). Group g's edges are [group_start[g], group_start[g + 1]),
 * received by atom group_atom[g], in the order of their pairs. Memory is reused across builds. */
typedef struct {
    int *edge_pair;      /* (2P) the edge's pair, counted from its chunk's first pair */
    int *group_start;    /* (groups + 1) an edge index; group_start[groups] = 2P */
    int *group_atom;     /* (groups) */
    size_t *chunk_group; /* (chunks + 1) */
    size_t groups, chunks;
    int *work;           /* (2N) per atom: the chunk that last saw it, and its group there */
    size_t pair_capacity, chunk_capacity, atom_capacity;
} mlff_receivers;

/* Groups the edges of pairs (P) of N atoms, chunk by chunk. MLFF_ERROR_OUT_OF_MEMORY if it can't. */
mlff_status mlff_receivers_build(mlff_receivers *receivers, const mlff_pair *pairs, size_t P, size_t chunk_pairs, int N,
                                 mlff_error *error);
/* Frees what it holds (not the struct); leaves it empty and reusable. */
void mlff_receivers_clear(mlff_receivers *receivers);

/* The messages that chunk c's groups whose first edge is in [edge_begin, edge_end) receive, ADDED to
 * s_out (N, H) and v_out (N, 3, H), as mlff_message_forward adds them; pairs and w (3H a pair) are
 * the chunk's, from its first pair. Edges are counted from the chunk's first: [0, 2 count).
 * v_in NULL stands for v = 0 (the first block's input): w_v1 is then not read, and the sums are
 * those with v_in all +0, to the bit. */
void mlff_message_forward_received(double *s_out, double *v_out, const double *s_in, const double *v_in, const double *w,
                                   const mlff_pair *pairs, const mlff_receivers *receivers, size_t c,
                                   size_t edge_begin, size_t edge_end, int H);

/* What mlff_message_backward computes for each pair alone, P pairs from pairs[0]:
 * gw (P, 3H) overwritten ; gn (P, 3) +=. v_in NULL stands for v = 0: dE/dw_v1 is then +0, not summed. */
void mlff_message_backward_pairs(double *gw, double *gn, const double *gs_out, const double *gv_out,
                                 const double *s_in, const double *v_in, const double *w, const mlff_pair *pairs,
                                 size_t P, int H);

/* What mlff_message_backward adds into each atom, for chunk c's groups whose first edge is in
 * [edge_begin, edge_end): gs_in (N, H) += ; gv_in (N, 3, H) +=. */
void mlff_message_backward_received(double *gs_in, double *gv_in, const double *gs_out, const double *gv_out,
                                    const double *w, const mlff_pair *pairs, const mlff_receivers *receivers,
                                    size_t c, size_t edge_begin, size_t edge_end, int H);

#endif /* MLFF_PAINN_MESSAGES_H */
