/* linear_tiles.c: the linear layers over tiles of rows (see linear_tiles.h).
 *
 * The products keep a few outputs by MLFF_ROW_TILE rows of sums in registers while they run over
 * the inputs: each weight is loaded once for the tile's rows, each input value once for those
 * outputs. Their code is linear_tiles_kernels.h's, built for two vector widths: a tile's 8 rows as
 * two vectors of 4 doubles, 4 outputs at once (compiled for the baseline and for AVX2:
 * vector_clones.h), and as one vector of 8, 8 outputs at once (AVX-512, where the CPU has it and
 * MLFF_NO_AVX512 is not defined). On the build machine (Zen 5) the AVX-512 kernels took a 768-atom
 * water droplet's exact evaluation from 469 to 375 ms on one thread (docs/performance.md). */
#include "linear_tiles.h"

#include <string.h>

#include "vector_clones.h"

/* GCC 12 splits the four-double vectors into SSE2 pairs in the default clone and then warns, wrongly,
 * that the sums below "may be used uninitialized". */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

enum { RT = MLFF_ROW_TILE };

static int tile_is_zero(const double *t) {
    for (int r = 0; r < RT; r++)
        if (t[r] != 0.0) return 0;
    return 1;
}

#define TILE_LANES 4
#define TILE_OUTPUTS 4
#define TILE_NAME(name) lanes4_##name
#define TILE_TARGET MLFF_VECTOR_CLONES
#include "linear_tiles_kernels.h"
#undef TILE_LANES
#undef TILE_OUTPUTS
#undef TILE_NAME
#undef TILE_TARGET

#if defined(MLFF_AVX512_TARGET) && !defined(MLFF_NO_AVX512)
#define MLFF_TILES_AVX512 1
#define TILE_LANES 8
#define TILE_OUTPUTS 8
#define TILE_NAME(name) lanes8_##name
#define TILE_TARGET MLFF_AVX512_TARGET
#include "linear_tiles_kernels.h"
#undef TILE_LANES
#undef TILE_OUTPUTS
#undef TILE_NAME
#undef TILE_TARGET
#endif

int mlff_tile_lanes(void) {
#ifdef MLFF_TILES_AVX512
    if (__builtin_cpu_supports("avx512f")) return 8;
#endif
    return 4;
}

/* The products run at the width mlff_tile_lanes says, the one test_linear_tiles checks. */
void mlff_tile_linear_forward(double *yt, const double *W, const double *b, const double *xt, int out, int in) {
#ifdef MLFF_TILES_AVX512
    if (mlff_tile_lanes() == 8) {
        lanes8_forward(yt, W, b, xt, out, in);
        return;
    }
#endif
    lanes4_forward(yt, W, b, xt, out, in);
}

void mlff_tile_linear_backward(double *gxt, const double *W, const double *gyt, int out, int in) {
#ifdef MLFF_TILES_AVX512
    if (mlff_tile_lanes() == 8) {
        lanes8_backward(gxt, W, gyt, out, in);
        return;
    }
#endif
    lanes4_backward(gxt, W, gyt, out, in);
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
