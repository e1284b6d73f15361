/*
 * painn_layers.h: the layers of the student PaiNN (docs/student-painn.md), each a plain
 * `_forward` and a hand-written `_backward`, in double precision.
 *
 * Conventions, as in llm.c:
 *   - shapes are noted beside every pointer: N atoms, P pairs, H channels, K basis functions;
 *     a vector feature v is (N, 3, H): component a of channel c of atom i is v[(i*3 + a)*H + c];
 *   - a pair p = {i, j} (i < j) carries both directed edges, i <- j along n and j <- i along -n,
 *     where n = u / (d + 1e-8) and u = r_j - r_i;
 *   - forward outputs are overwritten unless said otherwise;
 *   - `scratch` is caller memory of MLFF_PAINN_SCRATCH(H, K) doubles, for a layer's per-row temporaries;
 *   - backward functions ACCUMULATE into their gradient outputs (+=), so that gradients from
 *     several uses (pairs, blocks) add up; the caller zeroes them once.
 *
 * The energy does not depend on the embedding's input (atomic numbers), so the embedding has
 * no backward here.
 */
#ifndef MLFF_PAINN_LAYERS_H
#define MLFF_PAINN_LAYERS_H

#include <stddef.h>

#include "filter_table.h"
#include "linear_tiles.h"
#include "mlff/student_painn.h"
#include "neighbors.h"

/* Displacements closer than this are "coincident atoms": n = u / (d + 1e-8) has no gradient there. */
#define MLFF_PAINN_NORMAL_EPSILON 1e-8

/* Doubles of scratch any layer needs: tiles of MLFF_ROW_TILE rows (linear_tiles.h) of its inputs,
 * hidden values and outputs (the update's take the most, the filters' the basis too). */
#define MLFF_PAINN_SCRATCH(H, K) ((size_t)MLFF_ROW_TILE * ((size_t)6 * (size_t)(H) + (size_t)(K)))

/* s (N, H) = embedding[z] ; z (N) in [0, Z_max]. */
void mlff_embedding_forward(double *s, const int *z, int N, const mlff_student_painn *model);

/* e (P, K) = exp(-(d - centers)^2 / widths^2) * f_c(d) ; f_c(d) = (cos(pi d / r_c) + 1) / 2 for d < r_c, else 0. */
void mlff_rbf_forward(double *e, const mlff_pair *pairs, size_t P, const mlff_student_painn *model);
/* gd (P) += de/dd . ge ; ge (P, K). */
void mlff_rbf_backward(double *gd, const double *ge, const mlff_pair *pairs, size_t P, const mlff_student_painn *model);

/* w (P, 3H) = W2 SiLU(W0 e + b0) + b2 ; hidden (P, H) keeps W0 e + b0 for the backward. Without
 * with_v1, w_v1 (outputs H .. 2H - 1) is set to 0 rather than computed: the first block's, which
 * multiplies v = 0 (w_s and w_v2 are the same to the bit either way). */
void mlff_filter_forward(double *w, double *hidden, double *scratch, const double *e, size_t P,
                         const mlff_student_painn_block *block, int H, int K, int with_v1);
/* ge (P, K) += de ; from gw (P, 3H) and the forward's hidden (P, H). */
void mlff_filter_backward(double *ge, double *scratch, const double *gw, const double *hidden, size_t P,
                          const mlff_student_painn_block *block, int H, int K);

/* Forward-mode derivatives in d, for tabulating the filter (filter_table.c):
 * de (P, K) = de/dd, overwritten. */
void mlff_rbf_tangent_forward(double *de, const mlff_pair *pairs, size_t P, const mlff_student_painn *model);
/* dw (P, 3H) = dw/dd = W2 (SiLU'(hidden) * (W0 de)), overwritten ; from de (P, K) = de/dd and the
 * forward's hidden (P, H). */
void mlff_filter_tangent_forward(double *dw, double *scratch, const double *de, const double *hidden, size_t P,
                                 const mlff_student_painn_block *block, int H, int K);

/* The tabulated filter of block l, in place of mlff_filter_forward (and of the basis): the cubic
 * Hermite interpolant of `table` (mlff.h gives the formula) at each pair's d.
 * w (P, 3H) overwritten ; dw (P, 3H) = dw/dd (the polynomial's derivative) overwritten, or dw NULL.
 * Without with_v1, w_v1 and its dw/dd (outputs H .. 2H - 1) are set to 0 rather than interpolated,
 * as in mlff_filter_forward. */
void mlff_filter_table_forward(double *w, double *dw, const mlff_pair *pairs, size_t P,
                               const struct mlff_filter_table *table, int l, int with_v1);
/* gd (P) += sum_o gw[p][o] * dw[p][o] ; gw (P, 3H), dw (P, 3H) = dw/dd from the forward. Without
 * with_v1 the sum leaves out w_v1's outputs H .. 2H - 1 (the first block's dE/dw_v1, which is 0). */
void mlff_filter_table_backward(double *gd, const double *gw, const double *dw, size_t P, int H, int with_v1);

/* Messages of P pairs, ADDED to s_out (N, H) and v_out (N, 3, H), from the block's input features
 * s_in (N, H), v_in (N, 3, H) and the filters w (P, 3H) = (w_s, w_v1, w_v2). The residual
 * (s_out = s_in + ...) is the caller's. These two, pair by pair, are the reference: the network
 * runs painn_messages.h's, which take the same sums atom by atom so that threads can share them. */
void mlff_message_forward(double *s_out, double *v_out, const double *s_in, const double *v_in, const double *w,
                          const mlff_pair *pairs, size_t P, int H);
/* Backward of the messages (not of the residual): from gs_out (N, H), gv_out (N, 3, H),
 * gs_in (N, H) += ; gv_in (N, 3, H) += ; gw (P, 3H) overwritten ; gn (P, 3) += (gradient of n). */
void mlff_message_backward(double *gs_in, double *gv_in, double *gw, double *gn, const double *gs_out,
                           const double *gv_out, const double *s_in, const double *v_in, const double *w,
                           const mlff_pair *pairs, size_t P, int H);

/* Update of N atoms: from s_mid (N, H), v_mid (N, 3, H), s_out (N, H) = s_mid + a and
 * v_out (N, 3, H) = v_mid * g1 + (M v_mid) * g2, where (a, g1, g2) = U2 SiLU(U0 [s_mid, |v_mid|] + c0) + c2.
 * hidden (N, H) and gates (N, 3H) keep the MLP's pre-activation and output for the backward. */
void mlff_update_forward(double *s_out, double *v_out, double *hidden, double *gates, double *scratch,
                         const double *s_mid, const double *v_mid, int N, const mlff_student_painn_block *block,
                         int H);
/* gs_mid (N, H) += ; gv_mid (N, 3, H) += ; from gs_out (N, H), gv_out (N, 3, H) (residual included). */
void mlff_update_backward(double *gs_mid, double *gv_mid, double *scratch, const double *gs_out, const double *gv_out,
                          const double *v_mid, const double *hidden, const double *gates, int N,
                          const mlff_student_painn_block *block, int H);

/* eps (N) = head4(SiLU(head2(SiLU(head0(s))))) ; s (N, H). */
void mlff_readout_forward(double *eps, double *scratch, const double *s, int N, const mlff_student_painn *model);
/* gs (N, H) += d eps_i / d s_i * geps_i ; geps (N). */
void mlff_readout_backward(double *gs, double *scratch, const double *geps, const double *s, int N,
                           const mlff_student_painn *model);

/* From the gradients of each pair's d (P) and n (P, 3), the gradient of its displacement:
 * gu (P, 3) += gd * u/d + (dn/du)^T gn. Needs d > 0. */
void mlff_geometry_backward(double *gu, const double *gd, const double *gn, const mlff_pair *pairs, size_t P);

#endif /* MLFF_PAINN_LAYERS_H */
