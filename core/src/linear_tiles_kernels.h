/* linear_tiles_kernels.h: linear_tiles.c's kernels for one vector width. linear_tiles.c includes it
 * once a width, with
 *   TILE_LANES       doubles a vector: 4 (AVX2, or pairs of SSE2 instructions) or 8 (AVX-512)
 *   TILE_OUTPUTS     outputs (the forward) or inputs (the backward) whose sums a kernel keeps at once
 *   TILE_NAME(name)  the width's name for a function
 *   TILE_TARGET      the attributes of the width's entry points (the clones, or the AVX-512 target)
 * A width's code is its own, not a clone's: GCC splits 8-double vectors in an AVX2 clone through
 * memory (7 times slower), and 4-double ones leave half of each AVX-512 register empty. Every width
 * adds the same terms of a row's sums in the same order, so their numbers are the same.
 * It uses linear_tiles.c's RT and tile_is_zero, and vector_clones.h's MLFF_ALWAYS_INLINE.
 * No include guard: it is meant to be included more than once. */

enum { TILE_NAME(VECTORS) = RT / TILE_LANES };
_Static_assert(RT % TILE_LANES == 0, "a tile's rows fill whole vectors");

/* TILE_LANES doubles at any 8-byte address (GNU C's vector extension): a tile's values of one
 * feature in RT / TILE_LANES of them. */
typedef double TILE_NAME(lanes) __attribute__((vector_size(TILE_LANES * sizeof(double)), aligned(sizeof(double))));
#define lanes TILE_NAME(lanes)
#define VECTORS TILE_NAME(VECTORS)

/* Every lane of *v = value (through a pointer: a vector returned by value would change the ABI). */
MLFF_ALWAYS_INLINE void TILE_NAME(fill)(lanes *v, double value) {
    for (int l = 0; l < TILE_LANES; l++) (*v)[l] = value;
}

/* TILE_OUTPUTS outputs from o of a tile: y[o + q][r] = b[o + q] + sum over k in order. */
MLFF_ALWAYS_INLINE void TILE_NAME(forward_outputs)(double *yt, const double *W, const double *b, const double *xt,
                                                   int o, int in) {
    lanes sum[TILE_OUTPUTS][VECTORS];
    for (int q = 0; q < TILE_OUTPUTS; q++)
        for (int v = 0; v < VECTORS; v++) TILE_NAME(fill)(&sum[q][v], b != NULL ? b[o + q] : 0.0);
    const double *w = W + (size_t)o * in;
    for (int k = 0; k < in; k++) {
        const lanes *x = (const lanes *)(xt + (size_t)k * RT);
        for (int q = 0; q < TILE_OUTPUTS; q++) {
            double weight = w[(size_t)q * in + k];
            for (int v = 0; v < VECTORS; v++) sum[q][v] += weight * x[v];
        }
    }
    for (int q = 0; q < TILE_OUTPUTS; q++)
        for (int v = 0; v < VECTORS; v++) *(lanes *)(yt + (size_t)(o + q) * RT + v * TILE_LANES) = sum[q][v];
}

/* One output o: y[o][r] = b[o] + sum over k in order. */
MLFF_ALWAYS_INLINE void TILE_NAME(forward_output)(double *yt, const double *W, const double *b, const double *xt,
                                                  int o, int in) {
    lanes sum[VECTORS];
    for (int v = 0; v < VECTORS; v++) TILE_NAME(fill)(&sum[v], b != NULL ? b[o] : 0.0);
    const double *w = W + (size_t)o * in;
    for (int k = 0; k < in; k++) {
        const lanes *x = (const lanes *)(xt + (size_t)k * RT);
        for (int v = 0; v < VECTORS; v++) sum[v] += w[k] * x[v];
    }
    for (int v = 0; v < VECTORS; v++) *(lanes *)(yt + (size_t)o * RT + v * TILE_LANES) = sum[v];
}

TILE_TARGET
static void TILE_NAME(forward)(double *yt, const double *W, const double *b, const double *xt, int out, int in) {
    int o = 0;
    for (; o + TILE_OUTPUTS <= out; o += TILE_OUTPUTS) TILE_NAME(forward_outputs)(yt, W, b, xt, o, in);
    for (; o < out; o++) TILE_NAME(forward_output)(yt, W, b, xt, o, in);
}

/* TILE_OUTPUTS inputs from k of a tile: gx[k + q][r] += W[o][k + q] gy[o][r] over o in order. */
MLFF_ALWAYS_INLINE void TILE_NAME(backward_inputs)(double *gxt, const double *W, const double *gyt, int k, int out,
                                                   int in) {
    lanes sum[TILE_OUTPUTS][VECTORS];
    for (int q = 0; q < TILE_OUTPUTS; q++)
        for (int v = 0; v < VECTORS; v++) sum[q][v] = *(const lanes *)(gxt + (size_t)(k + q) * RT + v * TILE_LANES);
    for (int o = 0; o < out; o++) {
        const double *gy_o = gyt + (size_t)o * RT;
        if (tile_is_zero(gy_o)) continue;
        const lanes *gy = (const lanes *)gy_o;
        const double *w = W + (size_t)o * in + k;
        for (int q = 0; q < TILE_OUTPUTS; q++)
            for (int v = 0; v < VECTORS; v++) sum[q][v] += w[q] * gy[v];
    }
    for (int q = 0; q < TILE_OUTPUTS; q++)
        for (int v = 0; v < VECTORS; v++) *(lanes *)(gxt + (size_t)(k + q) * RT + v * TILE_LANES) = sum[q][v];
}

/* One input k: gx[k][r] += W[o][k] gy[o][r] over o in order. */
MLFF_ALWAYS_INLINE void TILE_NAME(backward_input)(double *gxt, const double *W, const double *gyt, int k, int out,
                                                  int in) {
    lanes *gx = (lanes *)(gxt + (size_t)k * RT);
    for (int o = 0; o < out; o++) {
        const double *gy_o = gyt + (size_t)o * RT;
        if (tile_is_zero(gy_o)) continue;
        const lanes *gy = (const lanes *)gy_o;
        for (int v = 0; v < VECTORS; v++) gx[v] += W[(size_t)o * in + k] * gy[v];
    }
}

TILE_TARGET
static void TILE_NAME(backward)(double *gxt, const double *W, const double *gyt, int out, int in) {
    int k = 0;
    for (; k + TILE_OUTPUTS <= in; k += TILE_OUTPUTS) TILE_NAME(backward_inputs)(gxt, W, gyt, k, out, in);
    for (; k < in; k++) TILE_NAME(backward_input)(gxt, W, gyt, k, out, in);
}

#undef lanes
#undef VECTORS
