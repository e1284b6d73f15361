/* painn_network.c: the layers of painn_layers.c chained into the network's forward and backward.
 *
 * Per-atom activations of every block are kept for the backward. Pairs are processed in chunks.
 * The filters of every block and pair (w, and the filter network's hidden layer or, with a table,
 * dw/dd) are kept for the backward too where they take at most KEPT_FILTERS_MAX_BYTES (with a
 * table KEPT_TABULATED_FILTERS_MAX_BYTES) and that memory can be had; else the backward recomputes
 * each chunk's filters before using them. Either way each filter is the same computation, so the
 * results are the same.
 *
 * With a filter table the basis and the filter network are replaced by the table's
 * interpolation (mlff_filter_table_forward/_backward): e and ge are not used, and dE/dd comes
 * from the interpolant's derivative.
 *
 * Threads (a workspace's pool) share each layer's rows, each thread with its own scratch: the
 * filters of a chunk's pairs and their backward, the messages each atom receives from a chunk's
 * pairs (painn_messages.h: the chunk's edges grouped by receiver, each atom's sum in the pairs'
 * order) and each pair's own part of their backward, the updates and the readout of the atoms.
 * Each row is computed as one thread would compute it, so the results do not depend on the
 * threads. */
#include "painn_network.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "painn_layers.h"

enum { PAIR_CHUNK = 256 }; /* pairs a chunk, a thread */

/* A share of a layer's rows for a thread is at least this much work, in multiply-adds: some 20 µs
 * of the tiled products, 60 to 90 µs of the layers that wait on memory (a 2-core VM), against a
 * loop's 1 µs while the pool's threads spin and 27 µs when they must be woken (thread_pool.c).
 * 2^20 left the messages of a chunk of 512 pairs on one thread, and made a 3,000-atom droplet's
 * tabulated evaluation on two threads take 1.5 times as long. */
#define MIN_MULTIPLY_ADDS_A_SHARE ((size_t)1 << 18)

/* The most memory the exact filters of every block and pair may take to be kept from the forward
 * for the backward (P L 4H doubles): 21,800 pairs of the seed-size model (H = 128, L = 3; a
 * 768-atom water droplet has 15,700, 256 benzenes 16,900), twice as many at H = 64. Keeping them
 * spares the backward the filter network's forward, a third of its products and SiLUs: 15 to 20 %
 * of an evaluation with forces (docs/performance.md). */
#define KEPT_FILTERS_MAX_BYTES ((size_t)256 << 20)

/* The same for tabulated filters (P L 6H doubles: w and dw/dd, which the forward then computes
 * with w, so that the backward does not read the table). Writing them and reading them again
 * costs more than the table's interpolation unless they stay in a core's caches: alanine
 * dipeptide's 1.1 MB (178 pairs, H = 64, L = 2) took 2 to 10 % off its evaluation, 64 benzenes'
 * 78 MB added 6 to 8 % (docs/performance.md). */
#define KEPT_TABULATED_FILTERS_MAX_BYTES ((size_t)2 << 20)

void mlff_painn_buffers_clear(mlff_painn_buffers *buffers) {
    free(buffers->values);
    buffers->values = NULL;
    buffers->capacity = 0;
    mlff_receivers_clear(&buffers->receivers);
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

/* The doubles of a pair's filters kept for the backward, a block's: w (3H) and the filter
 * network's hidden layer (H), or with a table dw/dd (3H). */
static size_t kept_a_pair_and_block(size_t H, int tabulated) {
    return tabulated ? 6 * H : 4 * H;
}

/* Whether the filters of every block and pair fit in KEPT_FILTERS_MAX_BYTES (with a table,
 * KEPT_TABULATED_FILTERS_MAX_BYTES). */
static int filters_fit(size_t P, size_t H, size_t L, int tabulated) {
    const size_t per_pair = L * kept_a_pair_and_block(H, tabulated) * sizeof(double);
    const size_t most = tabulated ? KEPT_TABULATED_FILTERS_MAX_BYTES : KEPT_FILTERS_MAX_BYTES;
    return per_pair != 0 && P <= most / per_pair;
}

/* The number of doubles of every buffer carved below, or SIZE_MAX on overflow; kept_values: those
 * of the filters kept for the backward (0 where they are not kept). */
static size_t buffer_size(size_t N, size_t P, size_t H, size_t K, size_t L, size_t threads, size_t chunk_pairs,
                          size_t kept_values) {
    if (N > SIZE_MAX / 64 || P > SIZE_MAX / 64 || H > 1u << 20 || K > 1u << 20 || L > 1u << 10 || threads > 1u << 12)
        return SIZE_MAX;
    size_t per_atom = L * 12 * H + 4 * H + 8 * H + 2;  /* block activations, final features, gradients, eps, ones */
    size_t per_pair = 2 * K + 7;                       /* e, ge, gd, gn, gu */
    size_t chunk = chunk_pairs * 10 * H;               /* w, filter hidden, gw, dw */
    if (N != 0 && per_atom > SIZE_MAX / 2 / N) return SIZE_MAX;
    if (P != 0 && per_pair > SIZE_MAX / 4 / P) return SIZE_MAX;
    return N * per_atom + P * per_pair + chunk + threads * MLFF_PAINN_SCRATCH(H, K) + kept_values;
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

/*
 * One layer's call over a share of its rows, for mlff_thread_pool_for: `rows` holds the layer's
 * arguments, each task offsets the row-indexed ones to its share and gives it its thread's scratch.
 */
typedef struct {
    const mlff_student_painn *model;
    const mlff_student_painn_block *block;
    const mlff_filter_table *table;
    int l, H, K;
    double *scratch; /* (threads, MLFF_PAINN_SCRATCH(H, K)) */
    /* a chunk of pairs, from its first pair; chunk `chunk` of `receivers` */
    const mlff_receivers *receivers;
    size_t chunk;
    const mlff_pair *pairs;
    double *w, *filter_hidden, *gw, *dw; /* (chunk, 3H), (chunk, H), (chunk, 3H), (chunk, 3H) or NULL */
    const double *e;                     /* (chunk, K) */
    double *ge, *gd, *gn;                /* (chunk, K), (chunk), (chunk, 3) */
    /* the block's messages */
    const double *s_in, *v_in;           /* (N, H), (N, 3, H): the block's input */
    double *s_messages, *v_messages;     /* (N, H), (N, 3, H): what they are added to (s_mid, v_mid) */
    double *gs_in, *gv_in;               /* (N, H), (N, 3, H): dE/d(the block's input), added to */
    /* atoms: the update of block l and its backward, the readout and its backward */
    const double *s_mid, *v_mid;         /* (N, H), (N, 3, H) */
    double *s_next, *v_next;             /* (N, H), (N, 3, H): the block's output */
    double *hidden, *gates;              /* (N, H), (N, 3H) */
    const double *gs_next, *gv_next;     /* (N, H), (N, 3, H): dE/d(the block's output) */
    double *gs_mid, *gv_mid;             /* (N, H), (N, 3, H) */
    const double *s_final, *geps;        /* (N, H), (N) */
    double *eps, *gs_final;              /* (N), (N, H) */
} network_rows;

static double *thread_scratch(const network_rows *a, int thread) {
    return a->scratch + (size_t)thread * MLFF_PAINN_SCRATCH(a->H, a->K);
}

/* In the first block w_v1 multiplies v = 0: 0, not computed. */
static void filter_forward_rows(void *context, size_t begin, size_t end, int thread) {
    network_rows *a = context;
    size_t H = (size_t)a->H, K = (size_t)a->K;
    mlff_filter_forward(a->w + begin * 3 * H, a->filter_hidden + begin * H, thread_scratch(a, thread),
                        a->e + begin * K, end - begin, a->block, a->H, a->K, a->l > 0);
}

static void filter_backward_rows(void *context, size_t begin, size_t end, int thread) {
    network_rows *a = context;
    size_t H = (size_t)a->H, K = (size_t)a->K;
    mlff_filter_backward(a->ge + begin * K, thread_scratch(a, thread), a->gw + begin * 3 * H,
                         a->filter_hidden + begin * H, end - begin, a->block, a->H, a->K);
}

/* The same with a table: w_v1 and its dw/dd 0 in the first block, and left out of dE/dd there. */
static void filter_table_forward_rows(void *context, size_t begin, size_t end, int thread) {
    network_rows *a = context;
    size_t O = (size_t)3 * a->H;
    (void)thread;
    mlff_filter_table_forward(a->w + begin * O, a->dw != NULL ? a->dw + begin * O : NULL, a->pairs + begin,
                              end - begin, a->table, a->l, a->l > 0);
}

static void filter_table_backward_rows(void *context, size_t begin, size_t end, int thread) {
    network_rows *a = context;
    size_t O = (size_t)3 * a->H;
    (void)thread;
    mlff_filter_table_backward(a->gd + begin, a->gw + begin * O, a->dw + begin * O, end - begin, a->H, a->l > 0);
}

/* The block's input vectors for the messages, or NULL for v = 0 in the first block (the embedding
 * has none), where the messages then neither read them nor w_v1. */
static const double *first_block_v_in(const network_rows *a) {
    return a->l > 0 ? a->v_in : NULL;
}

static void message_forward_edges(void *context, size_t begin, size_t end, int thread) {
    network_rows *a = context;
    (void)thread;
    mlff_message_forward_received(a->s_messages, a->v_messages, a->s_in, first_block_v_in(a), a->w, a->pairs,
                                  a->receivers, a->chunk, begin, end, a->H);
}

static void message_backward_pair_rows(void *context, size_t begin, size_t end, int thread) {
    network_rows *a = context;
    size_t H = (size_t)a->H;
    (void)thread;
    mlff_message_backward_pairs(a->gw + begin * 3 * H, a->gn + begin * 3, a->gs_mid, a->gv_mid, a->s_in,
                                first_block_v_in(a), a->w + begin * 3 * H, a->pairs + begin, end - begin, a->H);
}

static void message_backward_edges(void *context, size_t begin, size_t end, int thread) {
    network_rows *a = context;
    (void)thread;
    mlff_message_backward_received(a->gs_in, a->gv_in, a->gs_mid, a->gv_mid, a->w, a->pairs, a->receivers, a->chunk,
                                   begin, end, a->H);
}

static void update_forward_rows(void *context, size_t begin, size_t end, int thread) {
    network_rows *a = context;
    size_t H = (size_t)a->H;
    mlff_update_forward(a->s_next + begin * H, a->v_next + begin * 3 * H, a->hidden + begin * H,
                        a->gates + begin * 3 * H, thread_scratch(a, thread), a->s_mid + begin * H,
                        a->v_mid + begin * 3 * H, (int)(end - begin), a->block, a->H);
}

static void update_backward_rows(void *context, size_t begin, size_t end, int thread) {
    network_rows *a = context;
    size_t H = (size_t)a->H;
    mlff_update_backward(a->gs_mid + begin * H, a->gv_mid + begin * 3 * H, thread_scratch(a, thread),
                         a->gs_next + begin * H, a->gv_next + begin * 3 * H, a->v_mid + begin * 3 * H,
                         a->hidden + begin * H, a->gates + begin * 3 * H, (int)(end - begin), a->block, a->H);
}

static void readout_forward_rows(void *context, size_t begin, size_t end, int thread) {
    network_rows *a = context;
    mlff_readout_forward(a->eps + begin, thread_scratch(a, thread), a->s_final + begin * (size_t)a->H,
                         (int)(end - begin), a->model);
}

static void readout_backward_rows(void *context, size_t begin, size_t end, int thread) {
    network_rows *a = context;
    size_t H = (size_t)a->H;
    mlff_readout_backward(a->gs_final + begin * H, thread_scratch(a, thread), a->geps + begin,
                          a->s_final + begin * H, (int)(end - begin), a->model);
}

/* Grows the buffers to `needed` doubles if they hold fewer; 0 if that memory cannot be had (the
 * buffers are left as they were). */
static int grow_buffers(mlff_painn_buffers *buffers, size_t needed) {
    if (needed <= buffers->capacity) return 1;
    double *grown = realloc(buffers->values, needed * sizeof(double));
    if (grown == NULL) return 0;
    buffers->values = grown;
    buffers->capacity = needed;
    return 1;
}

/* Points the chunk from pair p0 of block l at its kept filters (kept_hidden or kept_dw NULL). */
static void point_at_kept_filters(network_rows *rows, double *kept_w, double *kept_hidden, double *kept_dw, int l,
                                  size_t P, size_t p0) {
    const size_t H = (size_t)rows->H, first = (size_t)l * P + p0;
    rows->w = kept_w + first * 3 * H;
    if (kept_hidden != NULL) rows->filter_hidden = kept_hidden + first * H;
    if (kept_dw != NULL) rows->dw = kept_dw + first * 3 * H;
}

mlff_painn_share_rows mlff_painn_min_rows_a_share(int H, int K) {
    const size_t h = (size_t)H, k = (size_t)K;
    mlff_painn_share_rows rows = {
        .filter = 1 + MIN_MULTIPLY_ADDS_A_SHARE / (k * h + 3 * h * h),
        .table = 1 + MIN_MULTIPLY_ADDS_A_SHARE / (12 * h),
        .update = 1 + MIN_MULTIPLY_ADDS_A_SHARE / (5 * h * h),
        .readout = 1 + MIN_MULTIPLY_ADDS_A_SHARE / (5 * h * h / 8 + 1),
        .edges = 1 + MIN_MULTIPLY_ADDS_A_SHARE / (7 * h),
        .message_pairs = 1 + MIN_MULTIPLY_ADDS_A_SHARE / (10 * h),
    };
    return rows;
}

mlff_status mlff_painn_evaluate(const mlff_student_painn *model, const mlff_filter_table *table, const int *z, int N,
                                const mlff_pair *pairs, size_t P, double *atom_energies, double *forces,
                                mlff_painn_buffers *buffers, mlff_thread_pool *threads, mlff_error *error) {
    const int H = model->hidden_channels, K = model->num_rbf, L = model->num_blocks;
    const size_t nH = (size_t)N * H, nV = (size_t)N * 3 * H;
    const size_t num_threads = (size_t)mlff_thread_pool_size(threads);
    const size_t chunk_pairs = P < num_threads * PAIR_CHUNK ? (P > 0 ? P : 1) : num_threads * PAIR_CHUNK;
    const mlff_painn_share_rows min_rows = mlff_painn_min_rows_a_share(H, K);

    /* the filters kept from the forward for the backward (filters_fit), where their memory can be had */
    const int tabulated = table != NULL;
    int kept = forces != NULL && !buffers->recompute_filters && filters_fit(P, H, L, tabulated);

    mlff_status status = mlff_receivers_build(&buffers->receivers, pairs, P, chunk_pairs, N, error);
    if (status != MLFF_OK) return status;
    const size_t kept_values = kept ? P * L * kept_a_pair_and_block(H, tabulated) : 0; /* bounded: filters_fit */
    size_t needed = buffer_size((size_t)N, P, (size_t)H, (size_t)K, (size_t)L, num_threads, chunk_pairs, kept_values);
    if (needed == SIZE_MAX || needed > SIZE_MAX / sizeof(double))
        return mlff_fail(error, MLFF_ERROR_OUT_OF_MEMORY, "%d atoms with %zu pairs need more memory than can be addressed",
                         N, P);
    if (kept && !grow_buffers(buffers, needed)) { /* no memory to keep the filters: recompute them */
        kept = 0;
        needed -= kept_values;
    }
    if (!grow_buffers(buffers, needed))
        return mlff_fail(error, MLFF_ERROR_OUT_OF_MEMORY, "out of memory: %zu bytes for %d atoms and %zu pairs",
                         needed * sizeof(double), N, P);

    carver c = {buffers->values};
    double *activations = carve(&c, (size_t)L * 12 * nH + 4 * nH); /* every block's, then the final features */
    double *gs = carve(&c, nH), *gv = carve(&c, nV);         /* dE/d(block output) (N, H), (N, 3, H) */
    double *gs_mid = carve(&c, nH), *gv_mid = carve(&c, nV); /* dE/d(s_mid), dE/d(v_mid) */
    double *eps = carve(&c, (size_t)N);                      /* (N) */
    double *ones = carve(&c, (size_t)N);                     /* (N) dE/d eps_i */
    double *e = carve(&c, P * K), *ge = carve(&c, P * K);    /* (P, K) basis and its gradient */
    double *gd = carve(&c, P), *gn = carve(&c, P * 3), *gu = carve(&c, P * 3); /* (P), (P, 3), (P, 3) */
    double *w = carve(&c, chunk_pairs * 3 * H);              /* (chunk, 3H) filters */
    double *filter_hidden = carve(&c, chunk_pairs * H);      /* (chunk, H) */
    double *gw = carve(&c, chunk_pairs * 3 * H);             /* (chunk, 3H) */
    double *dw = carve(&c, chunk_pairs * 3 * H);             /* (chunk, 3H) dw/dd of a tabulated filter */
    double *scratch = carve(&c, num_threads * MLFF_PAINN_SCRATCH(H, K)); /* a thread's each */
    double *kept_w = kept ? carve(&c, (size_t)L * P * 3 * H) : NULL;                  /* (L, P, 3H) */
    double *kept_hidden = kept && !tabulated ? carve(&c, (size_t)L * P * H) : NULL;   /* (L, P, H) */
    double *kept_dw = kept && tabulated ? carve(&c, (size_t)L * P * 3 * H) : NULL;    /* (L, P, 3H) */
    network_rows rows = {.model = model, .table = table, .H = H, .K = K, .scratch = scratch, .w = w,
                         .filter_hidden = filter_hidden, .gw = gw, .receivers = &buffers->receivers};

    /* ---- forward ---- */
    block_activations first = block_at(activations, 0, nH), last = block_at(activations, L, nH);
    mlff_embedding_forward(first.s_in, z, N, model);
    memset(first.v_in, 0, nV * sizeof(double));
    if (table == NULL) mlff_rbf_forward(e, pairs, P, model);
    for (int l = 0; l < L; l++) {
        const mlff_student_painn_block *block = &model->blocks[l];
        block_activations a = block_at(activations, l, nH), next = block_at(activations, l + 1, nH);
        rows.block = block;
        rows.l = l;
        memcpy(a.s_mid, a.s_in, nH * sizeof(double)); /* residual */
        memcpy(a.v_mid, a.v_in, nV * sizeof(double));
        rows.s_in = a.s_in; rows.v_in = a.v_in; rows.s_messages = a.s_mid; rows.v_messages = a.v_mid;
        for (size_t p0 = 0; p0 < P; p0 += chunk_pairs) {
            size_t count = P - p0 < chunk_pairs ? P - p0 : chunk_pairs;
            rows.chunk = p0 / chunk_pairs;
            rows.pairs = pairs + p0;
            rows.dw = NULL; /* the forward needs no dw/dd, but for the backward if kept */
            rows.e = e + p0 * K;
            if (kept) point_at_kept_filters(&rows, kept_w, kept_hidden, kept_dw, l, P, p0);
            if (table == NULL)
                mlff_thread_pool_for(threads, count, min_rows.filter, filter_forward_rows, &rows);
            else
                mlff_thread_pool_for(threads, count, min_rows.table, filter_table_forward_rows, &rows);
            mlff_thread_pool_for(threads, 2 * count, min_rows.edges, message_forward_edges, &rows);
        }
        rows.s_mid = a.s_mid; rows.v_mid = a.v_mid; rows.hidden = a.hidden; rows.gates = a.gates;
        rows.s_next = next.s_in; rows.v_next = next.v_in;
        mlff_thread_pool_for(threads, (size_t)N, min_rows.update, update_forward_rows, &rows);
    }
    rows.s_final = last.s_in;
    rows.eps = eps;
    mlff_thread_pool_for(threads, (size_t)N, min_rows.readout, readout_forward_rows, &rows);
    if (atom_energies != NULL) memcpy(atom_energies, eps, (size_t)N * sizeof(double));
    if (forces == NULL) return MLFF_OK;

    /* ---- backward: gradients are zeroed once, then accumulated (+=) ---- */
    for (int i = 0; i < N; i++) ones[i] = 1.0;
    memset(gs, 0, nH * sizeof(double));
    memset(gv, 0, nV * sizeof(double)); /* the energy doesn't depend on the last vectors */
    memset(ge, 0, P * K * sizeof(double));
    memset(gn, 0, P * 3 * sizeof(double));
    memset(gd, 0, P * sizeof(double));
    rows.geps = ones;
    rows.gs_final = gs;
    mlff_thread_pool_for(threads, (size_t)N, min_rows.readout, readout_backward_rows, &rows);
    for (int l = L - 1; l >= 0; l--) {
        const mlff_student_painn_block *block = &model->blocks[l];
        block_activations a = block_at(activations, l, nH);
        rows.block = block;
        rows.l = l;
        memset(gs_mid, 0, nH * sizeof(double));
        memset(gv_mid, 0, nV * sizeof(double));
        rows.gs_mid = gs_mid; rows.gv_mid = gv_mid; rows.gs_next = gs; rows.gv_next = gv;
        rows.v_mid = a.v_mid; rows.hidden = a.hidden; rows.gates = a.gates;
        mlff_thread_pool_for(threads, (size_t)N, min_rows.update, update_backward_rows, &rows);
        memcpy(gs, gs_mid, nH * sizeof(double)); /* residual: s_mid = s_in + messages */
        memcpy(gv, gv_mid, nV * sizeof(double));
        rows.s_in = a.s_in; rows.v_in = a.v_in; rows.gs_in = gs; rows.gv_in = gv;
        for (size_t p0 = 0; p0 < P; p0 += chunk_pairs) {
            size_t count = P - p0 < chunk_pairs ? P - p0 : chunk_pairs;
            rows.chunk = p0 / chunk_pairs;
            rows.pairs = pairs + p0;
            rows.e = e + p0 * K;
            rows.ge = ge + p0 * K;
            rows.gd = gd + p0;
            rows.gn = gn + p0 * 3;
            if (kept) {
                point_at_kept_filters(&rows, kept_w, kept_hidden, kept_dw, l, P, p0); /* as the forward left them */
            } else if (table == NULL) {
                mlff_thread_pool_for(threads, count, min_rows.filter, filter_forward_rows, &rows); /* recomputed */
            } else {
                rows.dw = dw;
                mlff_thread_pool_for(threads, count, min_rows.table, filter_table_forward_rows, &rows); /* with dw/dd */
            }
            /* the messages' backward: what each pair owns (dE/dw, dE/dn), then what each atom receives,
             * dE/d(the block's input): none in the first block, whose input (the embedding, v = 0)
             * takes no gradient */
            mlff_thread_pool_for(threads, count, min_rows.message_pairs, message_backward_pair_rows, &rows);
            if (l > 0) mlff_thread_pool_for(threads, 2 * count, min_rows.edges, message_backward_edges, &rows);
            if (table == NULL)
                mlff_thread_pool_for(threads, count, min_rows.filter, filter_backward_rows, &rows);
            else
                mlff_thread_pool_for(threads, count, min_rows.table, filter_table_backward_rows, &rows);
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
