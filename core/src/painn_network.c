/* painn_network.c: the layers of painn_layers.c chained into the network's forward and backward.
 *
 * Per-atom activations of every block are kept for the backward; per-pair filters are not
 * (3H values per pair and block would dominate memory for large systems): pairs are processed
 * in chunks, and the backward recomputes each chunk's filter before using it.
 *
 * With a filter table the basis and the filter network are replaced by the table's
 * interpolation (mlff_filter_table_forward/_backward): e and ge are not used, and dE/dd comes
 * from the interpolant's derivative. */
#include "painn_network.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "painn_layers.h"

enum { PAIR_CHUNK = 256 };

void mlff_painn_buffers_clear(mlff_painn_buffers *buffers) {
    free(buffers->values);
    buffers->values = NULL;
    buffers->capacity = 0;
}

/* Hands out consecutive slices of one allocation. */
typedef struct {
    double *next;
} carver;

static double *carve(carver *c, size_t count) {
    double *slice = c->next;
    c->next += count;
    return slice;
}

/* The number of doubles of every buffer carved below, or SIZE_MAX on overflow. */
static size_t buffer_size(size_t N, size_t P, size_t H, size_t K, size_t L) {
    if (N > SIZE_MAX / 64 || P > SIZE_MAX / 64 || H > 1u << 20 || K > 1u << 20 || L > 1u << 10) return SIZE_MAX;
    size_t per_atom = L * 12 * H + 4 * H + 8 * H + 2; /* block activations, final features, gradients, eps, ones */
    size_t per_pair = 2 * K + 7;                      /* e, ge, gd, gn, gu */
    size_t chunk = (size_t)PAIR_CHUNK * 10 * H;       /* w, filter hidden, gw, dw */
    if (N != 0 && per_atom > SIZE_MAX / 2 / N) return SIZE_MAX;
    if (P != 0 && per_pair > SIZE_MAX / 4 / P) return SIZE_MAX;
    return N * per_atom + P * per_pair + chunk + 6 * H;
}

/* Block l's saved activations inside one region of (L * 12 + 4) * N * H doubles; block L holds
 * only the final features s (N, H) and v (N, 3, H). */
typedef struct {
    double *s_in;   /* (N, H) the block's input */
    double *v_in;   /* (N, 3, H) */
    double *s_mid;  /* (N, H) after the messages */
    double *v_mid;  /* (N, 3, H) */
    double *hidden; /* (N, H) the update MLP's pre-activation */
    double *gates;  /* (N, 3H) the update MLP's output (a, g1, g2) */
} block_activations;

static block_activations block_at(double *region, int l, size_t nH) {
    double *base = region + (size_t)l * 12 * nH;
    block_activations b = {base, base + nH, base + 4 * nH, base + 5 * nH, base + 8 * nH, base + 9 * nH};
    return b;
}

mlff_status mlff_painn_evaluate(const mlff_student_painn *model, const mlff_filter_table *table, const int *z, int N,
                                const mlff_pair *pairs, size_t P, double *atom_energies, double *forces,
                                mlff_painn_buffers *buffers, mlff_error *error) {
    const int H = model->hidden_channels, K = model->num_rbf, L = model->num_blocks;
    const size_t nH = (size_t)N * H, nV = (size_t)N * 3 * H;

    size_t needed = buffer_size((size_t)N, P, (size_t)H, (size_t)K, (size_t)L);
    if (needed == SIZE_MAX || needed > SIZE_MAX / sizeof(double))
        return mlff_fail(error, MLFF_ERROR_OUT_OF_MEMORY, "%d atoms with %zu pairs need more memory than can be addressed",
                         N, P);
    if (needed > buffers->capacity) {
        double *grown = realloc(buffers->values, needed * sizeof(double));
        if (grown == NULL)
            return mlff_fail(error, MLFF_ERROR_OUT_OF_MEMORY, "out of memory: %zu bytes for %d atoms and %zu pairs",
                             needed * sizeof(double), N, P);
        buffers->values = grown;
        buffers->capacity = needed;
    }

    carver c = {buffers->values};
    double *activations = carve(&c, (size_t)L * 12 * nH + 4 * nH); /* every block's, then the final features */
    double *gs = carve(&c, nH), *gv = carve(&c, nV);         /* dE/d(block output) (N, H), (N, 3, H) */
    double *gs_mid = carve(&c, nH), *gv_mid = carve(&c, nV); /* dE/d(s_mid), dE/d(v_mid) */
    double *eps = carve(&c, (size_t)N);                      /* (N) */
    double *ones = carve(&c, (size_t)N);                     /* (N) dE/d eps_i */
    double *e = carve(&c, P * K), *ge = carve(&c, P * K);    /* (P, K) basis and its gradient */
    double *gd = carve(&c, P), *gn = carve(&c, P * 3), *gu = carve(&c, P * 3); /* (P), (P, 3), (P, 3) */
    double *w = carve(&c, (size_t)PAIR_CHUNK * 3 * H);       /* (chunk, 3H) filters */
    double *filter_hidden = carve(&c, (size_t)PAIR_CHUNK * H); /* (chunk, H) */
    double *gw = carve(&c, (size_t)PAIR_CHUNK * 3 * H);      /* (chunk, 3H) */
    double *dw = carve(&c, (size_t)PAIR_CHUNK * 3 * H);      /* (chunk, 3H) dw/dd of a tabulated filter */
    double *scratch = carve(&c, MLFF_PAINN_SCRATCH(H));

    /* ---- forward ---- */
    block_activations first = block_at(activations, 0, nH), last = block_at(activations, L, nH);
    mlff_embedding_forward(first.s_in, z, N, model);
    memset(first.v_in, 0, nV * sizeof(double));
    if (table == NULL) mlff_rbf_forward(e, pairs, P, model);
    for (int l = 0; l < L; l++) {
        const mlff_student_painn_block *block = &model->blocks[l];
        block_activations a = block_at(activations, l, nH), next = block_at(activations, l + 1, nH);
        memcpy(a.s_mid, a.s_in, nH * sizeof(double)); /* residual */
        memcpy(a.v_mid, a.v_in, nV * sizeof(double));
        for (size_t p0 = 0; p0 < P; p0 += PAIR_CHUNK) {
            size_t count = P - p0 < PAIR_CHUNK ? P - p0 : PAIR_CHUNK;
            if (table == NULL)
                mlff_filter_forward(w, filter_hidden, scratch, e + p0 * K, count, block, H, K);
            else
                mlff_filter_table_forward(w, NULL, pairs + p0, count, table, l);
            mlff_message_forward(a.s_mid, a.v_mid, a.s_in, a.v_in, w, pairs + p0, count, H);
        }
        mlff_update_forward(next.s_in, next.v_in, a.hidden, a.gates, scratch, a.s_mid, a.v_mid, N, block, H);
    }
    mlff_readout_forward(eps, scratch, last.s_in, N, model);
    if (atom_energies != NULL) memcpy(atom_energies, eps, (size_t)N * sizeof(double));
    if (forces == NULL) return MLFF_OK;

    /* ---- backward: gradients are zeroed once, then accumulated (+=) ---- */
    for (int i = 0; i < N; i++) ones[i] = 1.0;
    memset(gs, 0, nH * sizeof(double));
    memset(gv, 0, nV * sizeof(double)); /* the energy doesn't depend on the last vectors */
    memset(ge, 0, P * K * sizeof(double));
    memset(gn, 0, P * 3 * sizeof(double));
    memset(gd, 0, P * sizeof(double));
    mlff_readout_backward(gs, scratch, ones, last.s_in, N, model);
    for (int l = L - 1; l >= 0; l--) {
        const mlff_student_painn_block *block = &model->blocks[l];
        block_activations a = block_at(activations, l, nH);
        memset(gs_mid, 0, nH * sizeof(double));
        memset(gv_mid, 0, nV * sizeof(double));
        mlff_update_backward(gs_mid, gv_mid, scratch, gs, gv, a.v_mid, a.hidden, a.gates, N, block, H);
        memcpy(gs, gs_mid, nH * sizeof(double)); /* residual: s_mid = s_in + messages */
        memcpy(gv, gv_mid, nV * sizeof(double));
        for (size_t p0 = 0; p0 < P; p0 += PAIR_CHUNK) {
            size_t count = P - p0 < PAIR_CHUNK ? P - p0 : PAIR_CHUNK;
            if (table == NULL) {
                mlff_filter_forward(w, filter_hidden, scratch, e + p0 * K, count, block, H, K); /* recomputed */
                mlff_message_backward(gs, gv, gw, gn + p0 * 3, gs_mid, gv_mid, a.s_in, a.v_in, w, pairs + p0, count, H);
                mlff_filter_backward(ge + p0 * K, scratch, gw, filter_hidden, count, block, H, K);
            } else {
                mlff_filter_table_forward(w, dw, pairs + p0, count, table, l); /* recomputed, with dw/dd */
                mlff_message_backward(gs, gv, gw, gn + p0 * 3, gs_mid, gv_mid, a.s_in, a.v_in, w, pairs + p0, count, H);
                mlff_filter_table_backward(gd + p0, gw, dw, count, H);
            }
        }
    }
    if (table == NULL) mlff_rbf_backward(gd, ge, pairs, P, model);
    memset(gu, 0, P * 3 * sizeof(double));
    mlff_geometry_backward(gu, gd, gn, pairs, P);

    /* u = r_j - r_i, so dE/dr_j = gu and dE/dr_i = -gu; forces are -dE/dr. */
    memset(forces, 0, (size_t)N * 3 * sizeof(double));
    for (size_t p = 0; p < P; p++)
        for (int a = 0; a < 3; a++) {
            forces[(size_t)pairs[p].i * 3 + a] += gu[p * 3 + a];
            forces[(size_t)pairs[p].j * 3 + a] -= gu[p * 3 + a];
        }
    return MLFF_OK;
}
