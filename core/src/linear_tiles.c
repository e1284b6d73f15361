/* linear_tiles.c: the linear layers over tiles of rows (see linear_tiles.h).
 *
 * The products keep OUT_TILE outputs by MLFF_ROW_TILE rows of sums in registers while they run
 * over the inputs: each weight is loaded once for the tile's rows, each input value once for
 * OUT_TILE outputs. They are compiled for AVX2 too (vector_clones.h). */
#include "linear_tiles.h"

#include <string.h>

#include "vector_clones.h"

/* GCC 12 splits the four-double vectors into SSE2 pairs in the default clone and then warns, wrongly,
 * that the sums below "may be used uninitialized". */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

enum { RT = MLFF_ROW_TILE, OUT_TILE = 4, LANES = 4, VECTORS = RT / LANES };
_Static_assert(RT % LANES == 0, "a tile's rows fill whole vectors");

/* Four doubles at any 8-byte address (GNU C's vector extension): half a tile's values of one feature.
 * The default clone splits each operation on them into two SSE2 instructions. */
typedef double lanes __attribute__((vector_size(LANES * sizeof(double)), aligned(sizeof(double))));

/* OUT_TILE outputs from o of a tile: y[o + q][r] = b[o + q] + sum over k in order. */
MLFF_ALWAYS_INLINE void forward_outputs(double *yt, const double *W, const double *b, const double *xt, int o, int in) {
    lanes sum[OUT_TILE][VECTORS];
    for (int q = 0; q < OUT_TILE; q++) {
        double bias = b != NULL ? b[o + q] : 0.0;
        for (int v = 0; v < VECTORS; v++) sum[q][v] = (lanes){bias, bias, bias, bias};
    }
    const double *w = W + (size_t)o * in;
    for (int k = 0; k < in; k++) {
        const lanes *x = (const lanes *)(xt + (size_t)k * RT);
        for (int q = 0; q < OUT_TILE; q++) {
            double weight = w[(size_t)q * in + k];
            for (int v = 0; v < VECTORS; v++) sum[q][v] += weight * x[v];
        }
    }
    for (int q = 0; q < OUT_TILE; q++)
        for (int v = 0; v < VECTORS; v++) *(lanes *)(yt + (size_t)(o + q) * RT + v * LANES) = sum[q][v];
}

/* One output o: y[o][r] = b[o] + sum over k in order. */
MLFF_ALWAYS_INLINE void forward_output(double *yt, const double *W, const double *b, const double *xt, int o, int in) {
    double bias = b != NULL ? b[o] : 0.0;
    lanes sum[VECTORS];
    for (int v = 0; v < VECTORS; v++) sum[v] = (lanes){bias, bias, bias, bias};
    const double *w = W + (size_t)o * in;
    for (int k = 0; k < in; k++) {
        const lanes *x = (const lanes *)(xt + (size_t)k * RT);
        for (int v = 0; v < VECTORS; v++) sum[v] += w[k] * x[v];
    }
    for (int v = 0; v < VECTORS; v++) *(lanes *)(yt + (size_t)o * RT + v * LANES) = sum[v];
}

MLFF_VECTOR_CLONES
void mlff_tile_linear_forward(double *yt, const double *W, const double *b, const double *xt, int out, int in) {
    int o = 0;
    for (; o + OUT_TILE <= out; o += OUT_TILE) forward_outputs(yt, W, b, xt, o, in);
    for (; o < out; o++) forward_output(yt, W, b, xt, o, in);
}

static int tile_is_zero(const double *t) {
    for (int r = 0; r < RT; r++)
        if (t[r] != 0.0) return 0;
    return 1;
}

/* OUT_TILE inputs from k of a tile: gx[k + q][r] += W[o][k + q] gy[o][r] over o in order. */
MLFF_ALWAYS_INLINE void backward_inputs(double *gxt, const double *W, const double *gyt, int k, int out, int in) {
    lanes sum[OUT_TILE][VECTORS];
    for (int q = 0; q < OUT_TILE; q++)
        for (int v = 0; v < VECTORS; v++) sum[q][v] = *(const lanes *)(gxt + (size_t)(k + q) * RT + v * LANES);
    for (int o = 0; o < out; o++) {
        const double *gy_o = gyt + (size_t)o * RT;
        if (tile_is_zero(gy_o)) continue;
        const lanes *gy = (const lanes *)gy_o;
        const double *w = W + (size_t)o * in + k;
        for (int q = 0; q < OUT_TILE; q++)
            for (int v = 0; v < VECTORS; v++) sum[q][v] += w[q] * gy[v];
    }
    for (int q = 0; q < OUT_TILE; q++)
        for (int v = 0; v < VECTORS; v++) *(lanes *)(gxt + (size_t)(k + q) * RT + v * LANES) = sum[q][v];
}

/* One input k: gx[k][r] += W[o][k] gy[o][r] over o in order. */
MLFF_ALWAYS_INLINE void backward_input(double *gxt, const double *W, const double *gyt, int k, int out, int in) {
    lanes *gx = (lanes *)(gxt + (size_t)k * RT);
    for (int o = 0; o < out; o++) {
        const double *gy_o = gyt + (size_t)o * RT;
        if (tile_is_zero(gy_o)) continue;
        const lanes *gy = (const lanes *)gy_o;
        for (int v = 0; v < VECTORS; v++) gx[v] += W[(size_t)o * in + k] * gy[v];
    }
}

MLFF_VECTOR_CLONES
void mlff_tile_linear_backward(double *gxt, const double *W, const double *gyt, int out, int in) {
    int k = 0;
    for (; k + OUT_TILE <= in; k += OUT_TILE) backward_inputs(gxt, W, gyt, k, out, in);
    for (; k < in; k++) backward_input(gxt, W, gyt, k, out, in);
}

void mlff_tile_load(double *t, const double *X, size_t ld, int count, int cols) {
    for (int c = 0; c < cols; c++) {
        double *column = t + (size_t)c * RT;
        for (int r = 0; r < count; r++) column[r] = X[(size_t)r * ld + c];
        for (int r = count; r < RT; r++) column[r] = 0.0;
    }
}

void mlff_tile_store(double *X, size_t ld, const double *t, int count, int cols) {
    for (int c = 0; c < cols; c++)
        for (int r = 0; r < count; r++) X[(size_t)r * ld + c] = t[(size_t)c * RT + r];
}
