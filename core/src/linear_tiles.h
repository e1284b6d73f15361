/*
 * linear_tiles.h: the network's linear layers over a tile of rows (pairs or atoms) at a time, so
 * that each weight loaded serves MLFF_ROW_TILE rows and the compiler can put the rows in vector
 * lanes. A tile holds a layer's values of MLFF_ROW_TILE rows transposed: value c of row r at
 * t[c * MLFF_ROW_TILE + r].
 *
 * Every output is the sum of the per-row code it replaces, term by term in the same order (no
 * reassociation, and no fused multiply-adds: the core builds with -ffp-contract=off), so a row's
 * numbers do not depend on its tile, its tile's other rows, the vector width the machine chose, or
 * how rows were shared among threads.
 */
#ifndef MLFF_LINEAR_TILES_H
#define MLFF_LINEAR_TILES_H

#include <stddef.h>

enum { MLFF_ROW_TILE = 8 };

/* yt (out, RT) = W (out, in) xt (in, RT) + b (out): y[o][r] = b[o] + W[o][0] x[0][r] + W[o][1] x[1][r] + ...,
 * added in that order. b may be NULL: the sum starts at 0. */
void mlff_tile_linear_forward(double *yt, const double *W, const double *b, const double *xt, int out, int in);

/* gxt (in, RT) += W (out, in)^T gyt (out, RT): gx[k][r] += W[0][k] gy[0][r], then W[1][k] gy[1][r], ...
 * ACCUMULATES. An output o whose gy is 0 in every row of the tile adds nothing and is skipped. */
void mlff_tile_linear_backward(double *gxt, const double *W, const double *gyt, int out, int in);

/* The doubles a vector that the two products above use on this CPU: 8 with AVX-512, else 4. */
int mlff_tile_lanes(void);

/* t (cols, RT) = rows [0, count) of X (count, ld), columns [0, cols); the tile's rows from count on are 0. */
void mlff_tile_load(double *t, const double *X, size_t ld, int count, int cols);

/* Rows [0, count) of X (count, ld), columns [0, cols) = t (cols, RT). */
void mlff_tile_store(double *X, size_t ld, const double *t, int count, int cols);

#endif /* MLFF_LINEAR_TILES_H */
