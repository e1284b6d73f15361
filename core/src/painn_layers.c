/* painn_layers.c: forward and backward of each layer of the student PaiNN (see painn_layers.h). */
#include "painn_layers.h"

#include <math.h>
#include <string.h>

#include "silu.h"
#include "vector_clones.h"

static const double PI = 3.14159265358979323846;

enum { RT = MLFF_ROW_TILE };

/* t (n, RT) *= SiLU'(pre) for the tile's first `count` rows, pre (count, n) row-major (the rows past
 * count are 0 in t already). The derivatives are taken along pre's rows, where they are adjacent. */
static void times_silu_grad(double *t, const double *pre, int count, int n) {
    enum { CHANNELS = 64 };
    double grad[CHANNELS];
    for (int r = 0; r < count; r++)
        for (int c0 = 0; c0 < n; c0 += CHANNELS) {
            int width = n - c0 < CHANNELS ? n - c0 : CHANNELS;
            mlff_silu_grad_array(grad, pre + (size_t)r * n + c0, (size_t)width);
            for (int c = 0; c < width; c++) t[(size_t)(c0 + c) * RT + r] *= grad[c];
        }
}

static int tile_rows(size_t P, size_t p0) {
    return P - p0 < RT ? (int)(P - p0) : RT;
}

static void pair_normal(double n[3], const mlff_pair *pair) {
    double inv = 1.0 / (pair->d + MLFF_PAINN_NORMAL_EPSILON);
    for (int a = 0; a < 3; a++) n[a] = pair->u[a] * inv;
}

/* ---------------------------------------------------------------------------------- */

void mlff_embedding_forward(double *s, const int *z, int N, const mlff_student_painn *model) {
    int H = model->hidden_channels;
    for (int i = 0; i < N; i++) memcpy(s + (size_t)i * H, model->embedding + (size_t)z[i] * H, (size_t)H * sizeof(double));
}

static double cosine_cutoff(double d, double cutoff) {
    return d < cutoff ? 0.5 * (cos(PI * d / cutoff) + 1.0) : 0.0;
}

static double cosine_cutoff_grad(double d, double cutoff) {
    return d < cutoff ? -0.5 * PI / cutoff * sin(PI * d / cutoff) : 0.0;
}

void mlff_rbf_forward(double *e, const mlff_pair *pairs, size_t P, const mlff_student_painn *model) {
    int K = model->num_rbf;
    for (size_t p = 0; p < P; p++) {
        double d = pairs[p].d, fc = cosine_cutoff(d, model->cutoff);
        for (int k = 0; k < K; k++) {
            double x = (d - model->rbf_centers[k]) / model->rbf_widths[k];
            e[p * K + k] = exp(-x * x) * fc;
        }
    }
}

void mlff_rbf_backward(double *gd, const double *ge, const mlff_pair *pairs, size_t P, const mlff_student_painn *model) {
    int K = model->num_rbf;
    for (size_t p = 0; p < P; p++) {
        double d = pairs[p].d, fc = cosine_cutoff(d, model->cutoff), dfc = cosine_cutoff_grad(d, model->cutoff);
        double sum = 0.0;
        for (int k = 0; k < K; k++) {
            double width = model->rbf_widths[k], x = (d - model->rbf_centers[k]) / width;
            double gauss = exp(-x * x);
            sum += ge[p * K + k] * gauss * (dfc - 2.0 * x / width * fc);
        }
        gd[p] += sum;
    }
}

void mlff_filter_forward(double *w, double *hidden, double *scratch, const double *e, size_t P,
                         const mlff_student_painn_block *block, int H, int K, int with_v1) {
    double *et = scratch;                    /* (K, RT) */
    double *ht = et + (size_t)K * RT;        /* (H, RT) */
    double *wt = ht + (size_t)H * RT;        /* (3H, RT) */
    const size_t h = (size_t)H;
    for (size_t p0 = 0; p0 < P; p0 += RT) {
        int count = tile_rows(P, p0);
        mlff_tile_load(et, e + p0 * K, (size_t)K, count, K);
        mlff_tile_linear_forward(ht, block->filter_w0, block->filter_b0, et, H, K);
        mlff_tile_store(hidden + p0 * H, h, ht, count, H);
        mlff_silu_in_place(ht, h * RT);
        if (with_v1) {
            mlff_tile_linear_forward(wt, block->filter_w2, block->filter_b2, ht, 3 * H, H);
        } else { /* w_s and w_v2 alone, each output the same sum as in the whole product */
            mlff_tile_linear_forward(wt, block->filter_w2, block->filter_b2, ht, H, H);
            memset(wt + h * RT, 0, h * RT * sizeof(double));
            mlff_tile_linear_forward(wt + 2 * h * RT, block->filter_w2 + 2 * h * h, block->filter_b2 + 2 * h, ht, H, H);
        }
        mlff_tile_store(w + p0 * 3 * H, 3 * h, wt, count, 3 * H);
    }
}

void mlff_filter_backward(double *ge, double *scratch, const double *gw, const double *hidden, size_t P,
                          const mlff_student_painn_block *block, int H, int K) {
    double *gwt = scratch;                   /* (3H, RT) */
    double *ght = gwt + (size_t)3 * H * RT;  /* (H, RT) */
    double *get = ght + (size_t)H * RT;      /* (K, RT) */
    for (size_t p0 = 0; p0 < P; p0 += RT) {
        int count = tile_rows(P, p0);
        mlff_tile_load(gwt, gw + p0 * 3 * H, (size_t)3 * H, count, 3 * H);
        memset(ght, 0, (size_t)H * RT * sizeof(double));
        mlff_tile_linear_backward(ght, block->filter_w2, gwt, 3 * H, H);
        times_silu_grad(ght, hidden + p0 * H, count, H);
        mlff_tile_load(get, ge + p0 * K, (size_t)K, count, K);
        mlff_tile_linear_backward(get, block->filter_w0, ght, H, K);
        mlff_tile_store(ge + p0 * K, (size_t)K, get, count, K);
    }
}

void mlff_rbf_tangent_forward(double *de, const mlff_pair *pairs, size_t P, const mlff_student_painn *model) {
    int K = model->num_rbf;
    for (size_t p = 0; p < P; p++) {
        double d = pairs[p].d, fc = cosine_cutoff(d, model->cutoff), dfc = cosine_cutoff_grad(d, model->cutoff);
        for (int k = 0; k < K; k++) {
            double width = model->rbf_widths[k], x = (d - model->rbf_centers[k]) / width;
            de[p * K + k] = exp(-x * x) * (dfc - 2.0 * x / width * fc);
        }
    }
}

void mlff_filter_tangent_forward(double *dw, double *scratch, const double *de, const double *hidden, size_t P,
                                 const mlff_student_painn_block *block, int H, int K) {
    double *det = scratch;                   /* (K, RT) */
    double *dht = det + (size_t)K * RT;      /* (H, RT) */
    double *dwt = dht + (size_t)H * RT;      /* (3H, RT) */
    for (size_t p0 = 0; p0 < P; p0 += RT) {
        int count = tile_rows(P, p0);
        mlff_tile_load(det, de + p0 * K, (size_t)K, count, K);
        mlff_tile_linear_forward(dht, block->filter_w0, NULL, det, H, K);
        times_silu_grad(dht, hidden + p0 * H, count, H);
        mlff_tile_linear_forward(dwt, block->filter_w2, NULL, dht, 3 * H, H);
        mlff_tile_store(dw + p0 * 3 * H, (size_t)3 * H, dwt, count, 3 * H);
    }
}

MLFF_VECTOR_CLONES
void mlff_filter_table_forward(double *w, double *dw, const mlff_pair *pairs, size_t P,
                               const struct mlff_filter_table *table, int l, int with_v1) {
    const int O = table->num_outputs, H = O / 3, last = table->num_nodes - 1;
    /* the outputs computed: [0, O), or without w_v1 [0, H) and [2H, O), w_v1 set to 0 */
    const int gap_begin = with_v1 ? O : H, gap_end = with_v1 ? O : 2 * H;
    const double *values = mlff_filter_table_block_values(table, l);
    const double *derivatives = mlff_filter_table_block_derivatives(table, l);
    const double h = table->spacing, inv_h = table->inv_spacing;
    for (size_t p = 0; p < P; p++) {
        double *wp = w + p * O, *dwp = dw != NULL ? dw + p * O : NULL;
        double d = pairs[p].d;
        if (d >= table->cutoff) { /* the last node, exactly (an edge at d == cutoff has e = 0) */
            memcpy(wp, values + (size_t)last * O, (size_t)O * sizeof(double));
            if (dwp != NULL) memcpy(dwp, derivatives + (size_t)last * O, (size_t)O * sizeof(double));
        } else {
            double t = d * inv_h;
            int n = (int)t;
            if (n > last - 1) n = last - 1;
            if (n < 0) n = 0;
            double x = t - n, xm = 1.0 - x;
            /* cubic Hermite basis on [0, 1] and its derivative in x; slopes are scaled by h */
            double h00 = (1.0 + 2.0 * x) * xm * xm, h10 = x * xm * xm * h;
            double h01 = x * x * (3.0 - 2.0 * x), h11 = x * x * (x - 1.0) * h;
            const double *y0 = values + (size_t)n * O, *y1 = y0 + O;
            const double *m0 = derivatives + (size_t)n * O, *m1 = m0 + O;
            for (int o = 0; o < gap_begin; o++) wp[o] = h00 * y0[o] + h10 * m0[o] + h01 * y1[o] + h11 * m1[o];
            for (int o = gap_end; o < O; o++) wp[o] = h00 * y0[o] + h10 * m0[o] + h01 * y1[o] + h11 * m1[o];
            if (dwp != NULL) {
                double g00 = 6.0 * x * (x - 1.0) * inv_h; /* d h00/dd = -d h01/dd */
                double g10 = xm * (1.0 - 3.0 * x), g11 = x * (3.0 * x - 2.0); /* d(h10 m)/dd = g10 m */
                for (int o = 0; o < gap_begin; o++) dwp[o] = g00 * (y0[o] - y1[o]) + g10 * m0[o] + g11 * m1[o];
                for (int o = gap_end; o < O; o++) dwp[o] = g00 * (y0[o] - y1[o]) + g10 * m0[o] + g11 * m1[o];
            }
        }
        if (gap_begin < gap_end) {
            memset(wp + gap_begin, 0, (size_t)(gap_end - gap_begin) * sizeof(double));
            if (dwp != NULL) memset(dwp + gap_begin, 0, (size_t)(gap_end - gap_begin) * sizeof(double));
        }
    }
}

/* sum[q] += gw[q O + o] dw[q O + o] for o in [begin, end), in that order, for four pairs q at once:
 * four chains of dependent adds that overlap, where one pair's would wait on each add. */
static inline void add_four_dot_products(double sum[4], const double *gw, const double *dw, size_t O, size_t begin,
                                         size_t end) {
    double s0 = sum[0], s1 = sum[1], s2 = sum[2], s3 = sum[3];
    for (size_t o = begin; o < end; o++) {
        s0 += gw[o] * dw[o];
        s1 += gw[O + o] * dw[O + o];
        s2 += gw[2 * O + o] * dw[2 * O + o];
        s3 += gw[3 * O + o] * dw[3 * O + o];
    }
    sum[0] = s0, sum[1] = s1, sum[2] = s2, sum[3] = s3;
}

MLFF_VECTOR_CLONES
void mlff_filter_table_backward(double *gd, const double *gw, const double *dw, size_t P, int H, int with_v1) {
    const size_t O = (size_t)3 * H, gap_begin = with_v1 ? O : (size_t)H, gap_end = with_v1 ? O : (size_t)2 * H;
    size_t p = 0;
    for (; p + 4 <= P; p += 4) {
        double sum[4] = {0.0, 0.0, 0.0, 0.0};
        add_four_dot_products(sum, gw + p * O, dw + p * O, O, 0, gap_begin);
        add_four_dot_products(sum, gw + p * O, dw + p * O, O, gap_end, O);
        for (int q = 0; q < 4; q++) gd[p + q] += sum[q];
    }
    for (; p < P; p++) {
        double sum = 0.0;
        for (size_t o = 0; o < gap_begin; o++) sum += gw[p * O + o] * dw[p * O + o];
        for (size_t o = gap_end; o < O; o++) sum += gw[p * O + o] * dw[p * O + o];
        gd[p] += sum;
    }
}

/* ---------------------------------------------------------------------------------- */

void mlff_message_forward(double *s_out, double *v_out, const double *s_in, const double *v_in, const double *w,
                          const mlff_pair *pairs, size_t P, int H) {
    for (size_t p = 0; p < P; p++) {
        int i = pairs[p].i, j = pairs[p].j;
        const double *ws = w + p * 3 * H, *wv1 = ws + H, *wv2 = ws + 2 * H;
        double n[3];
        pair_normal(n, &pairs[p]);
        for (int c = 0; c < H; c++) {
            s_out[(size_t)i * H + c] += s_in[(size_t)j * H + c] * ws[c];
            s_out[(size_t)j * H + c] += s_in[(size_t)i * H + c] * ws[c];
        }
        for (int a = 0; a < 3; a++) {
            double *vo_i = v_out + ((size_t)i * 3 + a) * H, *vo_j = v_out + ((size_t)j * 3 + a) * H;
            const double *vi_i = v_in + ((size_t)i * 3 + a) * H, *vi_j = v_in + ((size_t)j * 3 + a) * H;
            for (int c = 0; c < H; c++) {
                vo_i[c] += vi_j[c] * wv1[c] + n[a] * wv2[c];
                vo_j[c] += vi_i[c] * wv1[c] - n[a] * wv2[c];
            }
        }
    }
}

void mlff_message_backward(double *gs_in, double *gv_in, double *gw, double *gn, const double *gs_out,
                           const double *gv_out, const double *s_in, const double *v_in, const double *w,
                           const mlff_pair *pairs, size_t P, int H) {
    for (size_t p = 0; p < P; p++) {
        int i = pairs[p].i, j = pairs[p].j;
        const double *ws = w + p * 3 * H, *wv1 = ws + H, *wv2 = ws + 2 * H;
        double *gws = gw + p * 3 * H, *gwv1 = gws + H, *gwv2 = gws + 2 * H;
        double n[3];
        pair_normal(n, &pairs[p]);
        const double *gso_i = gs_out + (size_t)i * H, *gso_j = gs_out + (size_t)j * H;
        const double *si_i = s_in + (size_t)i * H, *si_j = s_in + (size_t)j * H;
        for (int c = 0; c < H; c++) {
            gws[c] = gso_i[c] * si_j[c] + gso_j[c] * si_i[c];
            gs_in[(size_t)j * H + c] += gso_i[c] * ws[c];
            gs_in[(size_t)i * H + c] += gso_j[c] * ws[c];
            gwv1[c] = 0.0;
            gwv2[c] = 0.0;
        }
        for (int a = 0; a < 3; a++) {
            const double *gvo_i = gv_out + ((size_t)i * 3 + a) * H, *gvo_j = gv_out + ((size_t)j * 3 + a) * H;
            const double *vi_i = v_in + ((size_t)i * 3 + a) * H, *vi_j = v_in + ((size_t)j * 3 + a) * H;
            double *gvi_i = gv_in + ((size_t)i * 3 + a) * H, *gvi_j = gv_in + ((size_t)j * 3 + a) * H;
            double gn_a = 0.0;
            for (int c = 0; c < H; c++) {
                gwv1[c] += gvo_i[c] * vi_j[c] + gvo_j[c] * vi_i[c];
                gvi_j[c] += gvo_i[c] * wv1[c];
                gvi_i[c] += gvo_j[c] * wv1[c];
                double difference = gvo_i[c] - gvo_j[c]; /* i receives +n, j receives -n */
                gwv2[c] += difference * n[a];
                gn_a += difference * wv2[c];
            }
            gn[p * 3 + a] += gn_a;
        }
    }
}

/* ---------------------------------------------------------------------------------- */

/* (M v)[a][c] for one atom's v (3, H) */
static double mix(const double *M, const double *v, int a, int c, int H) {
    return M[a * 3 + 0] * v[c] + M[a * 3 + 1] * v[H + c] + M[a * 3 + 2] * v[2 * H + c];
}

void mlff_update_forward(double *s_out, double *v_out, double *hidden, double *gates, double *scratch,
                         const double *s_mid, const double *v_mid, int N, const mlff_student_painn_block *block,
                         int H) {
    double *input = scratch;                 /* (2H, RT) = [s_mid, |v_mid|] */
    double *ht = input + (size_t)2 * H * RT; /* (H, RT) */
    double *gt = ht + (size_t)H * RT;        /* (3H, RT) */
    for (int i0 = 0; i0 < N; i0 += RT) {
        int count = tile_rows((size_t)N, (size_t)i0);
        mlff_tile_load(input, s_mid + (size_t)i0 * H, (size_t)H, count, H);
        double *norms = input + (size_t)H * RT; /* (H, RT), the tile's rows from count on 0 */
        memset(norms, 0, (size_t)H * RT * sizeof(double));
        for (int r = 0; r < count; r++) {
            const double *v = v_mid + (size_t)(i0 + r) * 3 * H;
            for (int c = 0; c < H; c++)
                norms[(size_t)c * RT + r] = sqrt(v[c] * v[c] + v[H + c] * v[H + c] + v[2 * H + c] * v[2 * H + c]);
        }
        mlff_tile_linear_forward(ht, block->update_w0, block->update_b0, input, H, 2 * H);
        mlff_tile_store(hidden + (size_t)i0 * H, (size_t)H, ht, count, H);
        mlff_silu_in_place(ht, (size_t)H * RT);
        mlff_tile_linear_forward(gt, block->update_w2, block->update_b2, ht, 3 * H, H);
        mlff_tile_store(gates + (size_t)i0 * 3 * H, (size_t)3 * H, gt, count, 3 * H);
        for (int i = i0; i < i0 + count; i++) {
            const double *s = s_mid + (size_t)i * H, *v = v_mid + (size_t)i * 3 * H, *g = gates + (size_t)i * 3 * H;
            const double *a_gate = g, *g1 = g + H, *g2 = g + 2 * H;
            for (int c = 0; c < H; c++) s_out[(size_t)i * H + c] = s[c] + a_gate[c];
            for (int a = 0; a < 3; a++)
                for (int c = 0; c < H; c++)
                    v_out[((size_t)i * 3 + a) * H + c] = v[a * H + c] * g1[c] + mix(block->mixing, v, a, c, H) * g2[c];
        }
    }
}

void mlff_update_backward(double *gs_mid, double *gv_mid, double *scratch, const double *gs_out, const double *gv_out,
                          const double *v_mid, const double *hidden, const double *gates, int N,
                          const mlff_student_painn_block *block, int H) {
    double *g_gates = scratch;                        /* (3H, RT) */
    double *g_hidden = g_gates + (size_t)3 * H * RT;  /* (H, RT) */
    double *g_input = g_hidden + (size_t)H * RT;      /* (2H, RT) */
    const double *M = block->mixing;
    for (int i0 = 0; i0 < N; i0 += RT) {
        int count = tile_rows((size_t)N, (size_t)i0);
        memset(g_gates, 0, (size_t)3 * H * RT * sizeof(double));
        for (int r = 0; r < count; r++) {
            int i = i0 + r;
            const double *v = v_mid + (size_t)i * 3 * H, *gvo = gv_out + (size_t)i * 3 * H;
            const double *gso = gs_out + (size_t)i * H, *g1 = gates + (size_t)i * 3 * H + H, *g2 = g1 + H;
            double *gs = gs_mid + (size_t)i * H, *gv = gv_mid + (size_t)i * 3 * H;
            /* through s_out = s_mid + a and v_out = v_mid g1 + (M v_mid) g2 */
            for (int c = 0; c < H; c++) {
                gs[c] += gso[c];
                double gg1 = 0.0, gg2 = 0.0;
                for (int a = 0; a < 3; a++) {
                    gg1 += gvo[a * H + c] * v[a * H + c];
                    gg2 += gvo[a * H + c] * mix(M, v, a, c, H);
                    /* (M^T (gv_out g2))[a] */
                    double mixed_back = M[0 * 3 + a] * gvo[c] + M[1 * 3 + a] * gvo[H + c] + M[2 * 3 + a] * gvo[2 * H + c];
                    gv[a * H + c] += gvo[a * H + c] * g1[c] + mixed_back * g2[c];
                }
                g_gates[(size_t)c * RT + r] = gso[c];
                g_gates[(size_t)(H + c) * RT + r] = gg1;
                g_gates[(size_t)(2 * H + c) * RT + r] = gg2;
            }
        }
        /* through the MLP */
        memset(g_hidden, 0, (size_t)H * RT * sizeof(double));
        mlff_tile_linear_backward(g_hidden, block->update_w2, g_gates, 3 * H, H);
        times_silu_grad(g_hidden, hidden + (size_t)i0 * H, count, H);
        memset(g_input, 0, (size_t)2 * H * RT * sizeof(double));
        mlff_tile_linear_backward(g_input, block->update_w0, g_hidden, H, 2 * H);
        for (int r = 0; r < count; r++) {
            int i = i0 + r;
            const double *v = v_mid + (size_t)i * 3 * H;
            double *gs = gs_mid + (size_t)i * H, *gv = gv_mid + (size_t)i * 3 * H;
            for (int c = 0; c < H; c++) {
                double g_s = g_input[(size_t)c * RT + r], g_norm = g_input[(size_t)(H + c) * RT + r];
                gs[c] += g_s;
                double norm = sqrt(v[c] * v[c] + v[H + c] * v[H + c] + v[2 * H + c] * v[2 * H + c]);
                if (norm > 0.0) /* d|v|/dv = v/|v|; taken as 0 at v = 0, as PyTorch does */
                    for (int a = 0; a < 3; a++) gv[a * H + c] += g_norm * v[a * H + c] / norm;
            }
        }
    }
}

/* ---------------------------------------------------------------------------------- */

void mlff_readout_forward(double *eps, double *scratch, const double *s, int N, const mlff_student_painn *model) {
    int H = model->hidden_channels, H2 = H / 2, H4 = H / 4;
    double *st = scratch;                      /* (H, RT) */
    double *a0 = st + (size_t)H * RT;          /* (H/2, RT) */
    double *a2 = a0 + (size_t)H2 * RT;         /* (H/4, RT) */
    double *et = a2 + (size_t)H4 * RT;         /* (1, RT) */
    for (int i0 = 0; i0 < N; i0 += RT) {
        int count = tile_rows((size_t)N, (size_t)i0);
        mlff_tile_load(st, s + (size_t)i0 * H, (size_t)H, count, H);
        mlff_tile_linear_forward(a0, model->head_w0, model->head_b0, st, H2, H);
        mlff_silu_in_place(a0, (size_t)H2 * RT);
        mlff_tile_linear_forward(a2, model->head_w2, model->head_b2, a0, H4, H2);
        mlff_silu_in_place(a2, (size_t)H4 * RT);
        mlff_tile_linear_forward(et, model->head_w4, model->head_b4, a2, 1, H4);
        mlff_tile_store(eps + i0, 1, et, count, 1);
    }
}

void mlff_readout_backward(double *gs, double *scratch, const double *geps, const double *s, int N,
                           const mlff_student_painn *model) {
    int H = model->hidden_channels, H2 = H / 2, H4 = H / 4;
    double *st = scratch;                  /* (H, RT) the input, then its gradient */
    double *h0 = st + (size_t)H * RT;      /* (H/2, RT) recomputed forward */
    double *a0 = h0 + (size_t)H2 * RT;     /* (H/2, RT) */
    double *h2 = a0 + (size_t)H2 * RT;     /* (H/4, RT) */
    double *g0 = h2 + (size_t)H4 * RT;     /* (H/2, RT) gradients */
    double *g2 = g0 + (size_t)H2 * RT;     /* (H/4, RT) */
    for (int i0 = 0; i0 < N; i0 += RT) {
        int count = tile_rows((size_t)N, (size_t)i0);
        mlff_tile_load(st, s + (size_t)i0 * H, (size_t)H, count, H);
        mlff_tile_linear_forward(h0, model->head_w0, model->head_b0, st, H2, H);
        memcpy(a0, h0, (size_t)H2 * RT * sizeof(double));
        mlff_silu_in_place(a0, (size_t)H2 * RT);
        mlff_tile_linear_forward(h2, model->head_w2, model->head_b2, a0, H4, H2);
        memset(g2, 0, (size_t)H4 * RT * sizeof(double));
        for (int k = 0; k < H4; k++)
            for (int r = 0; r < count; r++) g2[(size_t)k * RT + r] = model->head_w4[k] * geps[i0 + r];
        mlff_times_silu_grad(g2, h2, (size_t)H4 * RT); /* the rows past count stay 0 (or -0, which adds as 0) */
        memset(g0, 0, (size_t)H2 * RT * sizeof(double));
        mlff_tile_linear_backward(g0, model->head_w2, g2, H4, H2);
        mlff_times_silu_grad(g0, h0, (size_t)H2 * RT);
        mlff_tile_load(st, gs + (size_t)i0 * H, (size_t)H, count, H);
        mlff_tile_linear_backward(st, model->head_w0, g0, H2, H);
        mlff_tile_store(gs + (size_t)i0 * H, (size_t)H, st, count, H);
    }
}

/* ---------------------------------------------------------------------------------- */

void mlff_geometry_backward(double *gu, const double *gd, const double *gn, const mlff_pair *pairs, size_t P) {
    for (size_t p = 0; p < P; p++) {
        const double *u = pairs[p].u;
        double d = pairs[p].d, shifted = d + MLFF_PAINN_NORMAL_EPSILON;
        const double *g = gn + p * 3;
        /* n = u / (d + eps): dn_a/du_b = delta_ab / (d + eps) - u_a u_b / (d (d + eps)^2) */
        double g_dot_u = g[0] * u[0] + g[1] * u[1] + g[2] * u[2];
        for (int b = 0; b < 3; b++)
            gu[p * 3 + b] += gd[p] * u[b] / d + g[b] / shifted - g_dot_u * u[b] / (d * shifted * shifted);
    }
}
