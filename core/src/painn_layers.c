/* painn_layers.c: forward and backward of each layer of the student PaiNN (see painn_layers.h). */
#include "painn_layers.h"

#include <math.h>
#include <string.h>

static const double PI = 3.14159265358979323846;

double mlff_silu(double x) {
    return x / (1.0 + exp(-x));
}

double mlff_silu_grad(double x) {
    double sigmoid = 1.0 / (1.0 + exp(-x));
    return sigmoid * (1.0 + x * (1.0 - sigmoid));
}

/* y (out) = W (out, in) x (in) + b (out) */
static void linear_forward(double *y, const double *W, const double *b, const double *x, int out, int in) {
    for (int o = 0; o < out; o++) {
        const double *row = W + (size_t)o * in;
        double sum = b[o];
        for (int k = 0; k < in; k++) sum += row[k] * x[k];
        y[o] = sum;
    }
}

/* gx (in) += W (out, in)^T gy (out) */
static void linear_backward(double *gx, const double *W, const double *gy, int out, int in) {
    for (int o = 0; o < out; o++) {
        const double *row = W + (size_t)o * in;
        double g = gy[o];
        if (g == 0.0) continue;
        for (int k = 0; k < in; k++) gx[k] += row[k] * g;
    }
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
                         const mlff_student_painn_block *block, int H, int K) {
    double *activation = scratch; /* (H) */
    for (size_t p = 0; p < P; p++) {
        double *h = hidden + p * H;
        linear_forward(h, block->filter_w0, block->filter_b0, e + p * K, H, K);
        for (int c = 0; c < H; c++) activation[c] = mlff_silu(h[c]);
        linear_forward(w + p * 3 * H, block->filter_w2, block->filter_b2, activation, 3 * H, H);
    }
}

void mlff_filter_backward(double *ge, double *scratch, const double *gw, const double *hidden, size_t P,
                          const mlff_student_painn_block *block, int H, int K) {
    double *g_hidden = scratch; /* (H) */
    for (size_t p = 0; p < P; p++) {
        const double *h = hidden + p * H;
        memset(g_hidden, 0, (size_t)H * sizeof(double));
        linear_backward(g_hidden, block->filter_w2, gw + p * 3 * H, 3 * H, H);
        for (int c = 0; c < H; c++) g_hidden[c] *= mlff_silu_grad(h[c]);
        linear_backward(ge + p * K, block->filter_w0, g_hidden, H, K);
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
    double *d_hidden = scratch; /* (H) */
    for (size_t p = 0; p < P; p++) {
        const double *h = hidden + p * H, *dep = de + p * K;
        for (int c = 0; c < H; c++) {
            const double *row = block->filter_w0 + (size_t)c * K;
            double sum = 0.0;
            for (int k = 0; k < K; k++) sum += row[k] * dep[k];
            d_hidden[c] = mlff_silu_grad(h[c]) * sum;
        }
        for (int o = 0; o < 3 * H; o++) {
            const double *row = block->filter_w2 + (size_t)o * H;
            double sum = 0.0;
            for (int c = 0; c < H; c++) sum += row[c] * d_hidden[c];
            dw[p * 3 * H + o] = sum;
        }
    }
}

void mlff_filter_table_forward(double *w, double *dw, const mlff_pair *pairs, size_t P,
                               const struct mlff_filter_table *table, int l) {
    const int O = table->num_outputs, last = table->num_nodes - 1;
    const double *values = mlff_filter_table_block_values(table, l);
    const double *derivatives = mlff_filter_table_block_derivatives(table, l);
    const double h = table->spacing, inv_h = table->inv_spacing;
    for (size_t p = 0; p < P; p++) {
        double *wp = w + p * O, *dwp = dw != NULL ? dw + p * O : NULL;
        double d = pairs[p].d;
        if (d >= table->cutoff) { /* the last node, exactly (an edge at d == cutoff has e = 0) */
            memcpy(wp, values + (size_t)last * O, (size_t)O * sizeof(double));
            if (dwp != NULL) memcpy(dwp, derivatives + (size_t)last * O, (size_t)O * sizeof(double));
            continue;
        }
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
        for (int o = 0; o < O; o++) wp[o] = h00 * y0[o] + h10 * m0[o] + h01 * y1[o] + h11 * m1[o];
        if (dwp != NULL) {
            double g00 = 6.0 * x * (x - 1.0) * inv_h; /* d h00/dd = -d h01/dd */
            double g10 = xm * (1.0 - 3.0 * x), g11 = x * (3.0 * x - 2.0); /* d(h10 m)/dd = g10 m */
            for (int o = 0; o < O; o++) dwp[o] = g00 * (y0[o] - y1[o]) + g10 * m0[o] + g11 * m1[o];
        }
    }
}

void mlff_filter_table_backward(double *gd, const double *gw, const double *dw, size_t P, int H) {
    const size_t O = (size_t)3 * H;
    for (size_t p = 0; p < P; p++) {
        double sum = 0.0;
        for (size_t o = 0; o < O; o++) sum += gw[p * O + o] * dw[p * O + o];
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
    double *input = scratch;          /* (2H) = [s_mid, |v_mid|] */
    double *activation = scratch + 2 * H; /* (H) */
    for (int i = 0; i < N; i++) {
        const double *s = s_mid + (size_t)i * H, *v = v_mid + (size_t)i * 3 * H;
        double *h = hidden + (size_t)i * H, *g = gates + (size_t)i * 3 * H;
        memcpy(input, s, (size_t)H * sizeof(double));
        for (int c = 0; c < H; c++) input[H + c] = sqrt(v[c] * v[c] + v[H + c] * v[H + c] + v[2 * H + c] * v[2 * H + c]);
        linear_forward(h, block->update_w0, block->update_b0, input, H, 2 * H);
        for (int c = 0; c < H; c++) activation[c] = mlff_silu(h[c]);
        linear_forward(g, block->update_w2, block->update_b2, activation, 3 * H, H);
        const double *a_gate = g, *g1 = g + H, *g2 = g + 2 * H;
        for (int c = 0; c < H; c++) s_out[(size_t)i * H + c] = s[c] + a_gate[c];
        for (int a = 0; a < 3; a++)
            for (int c = 0; c < H; c++)
                v_out[((size_t)i * 3 + a) * H + c] = v[a * H + c] * g1[c] + mix(block->mixing, v, a, c, H) * g2[c];
    }
}

void mlff_update_backward(double *gs_mid, double *gv_mid, double *scratch, const double *gs_out, const double *gv_out,
                          const double *v_mid, const double *hidden, const double *gates, int N,
                          const mlff_student_painn_block *block, int H) {
    double *g_gates = scratch;          /* (3H) */
    double *g_hidden = scratch + 3 * H; /* (H) */
    double *g_input = scratch + 4 * H;  /* (2H) */
    const double *M = block->mixing;
    for (int i = 0; i < N; i++) {
        const double *v = v_mid + (size_t)i * 3 * H, *gvo = gv_out + (size_t)i * 3 * H, *gso = gs_out + (size_t)i * H;
        const double *h = hidden + (size_t)i * H, *g1 = gates + (size_t)i * 3 * H + H, *g2 = g1 + H;
        double *gs = gs_mid + (size_t)i * H, *gv = gv_mid + (size_t)i * 3 * H;
        /* through s_out = s_mid + a and v_out = v_mid g1 + (M v_mid) g2 */
        for (int c = 0; c < H; c++) {
            gs[c] += gso[c];
            g_gates[c] = gso[c];
            double gg1 = 0.0, gg2 = 0.0;
            for (int a = 0; a < 3; a++) {
                gg1 += gvo[a * H + c] * v[a * H + c];
                gg2 += gvo[a * H + c] * mix(M, v, a, c, H);
                /* (M^T (gv_out g2))[a] */
                double mixed_back = M[0 * 3 + a] * gvo[c] + M[1 * 3 + a] * gvo[H + c] + M[2 * 3 + a] * gvo[2 * H + c];
                gv[a * H + c] += gvo[a * H + c] * g1[c] + mixed_back * g2[c];
            }
            g_gates[H + c] = gg1;
            g_gates[2 * H + c] = gg2;
        }
        /* through the MLP */
        memset(g_hidden, 0, (size_t)H * sizeof(double));
        linear_backward(g_hidden, block->update_w2, g_gates, 3 * H, H);
        for (int c = 0; c < H; c++) g_hidden[c] *= mlff_silu_grad(h[c]);
        memset(g_input, 0, (size_t)2 * H * sizeof(double));
        linear_backward(g_input, block->update_w0, g_hidden, H, 2 * H);
        for (int c = 0; c < H; c++) {
            gs[c] += g_input[c];
            double norm = sqrt(v[c] * v[c] + v[H + c] * v[H + c] + v[2 * H + c] * v[2 * H + c]);
            if (norm > 0.0) /* d|v|/dv = v/|v|; taken as 0 at v = 0, as PyTorch does */
                for (int a = 0; a < 3; a++) gv[a * H + c] += g_input[H + c] * v[a * H + c] / norm;
        }
    }
}

/* ---------------------------------------------------------------------------------- */

void mlff_readout_forward(double *eps, double *scratch, const double *s, int N, const mlff_student_painn *model) {
    int H = model->hidden_channels, H2 = H / 2, H4 = H / 4;
    double *a0 = scratch, *a2 = scratch + H2; /* (H/2), (H/4) */
    for (int i = 0; i < N; i++) {
        linear_forward(a0, model->head_w0, model->head_b0, s + (size_t)i * H, H2, H);
        for (int k = 0; k < H2; k++) a0[k] = mlff_silu(a0[k]);
        linear_forward(a2, model->head_w2, model->head_b2, a0, H4, H2);
        for (int k = 0; k < H4; k++) a2[k] = mlff_silu(a2[k]);
        linear_forward(eps + i, model->head_w4, model->head_b4, a2, 1, H4);
    }
}

void mlff_readout_backward(double *gs, double *scratch, const double *geps, const double *s, int N,
                           const mlff_student_painn *model) {
    int H = model->hidden_channels, H2 = H / 2, H4 = H / 4;
    double *h0 = scratch, *h2 = scratch + H2, *a0 = h2 + H4;   /* recomputed forward: (H/2), (H/4), (H/2) */
    double *g0 = a0 + H2, *g2 = g0 + H2;                       /* gradients: (H/2), (H/4) */
    for (int i = 0; i < N; i++) {
        linear_forward(h0, model->head_w0, model->head_b0, s + (size_t)i * H, H2, H);
        for (int k = 0; k < H2; k++) a0[k] = mlff_silu(h0[k]);
        linear_forward(h2, model->head_w2, model->head_b2, a0, H4, H2);
        for (int k = 0; k < H4; k++) g2[k] = model->head_w4[k] * geps[i] * mlff_silu_grad(h2[k]);
        memset(g0, 0, (size_t)H2 * sizeof(double));
        linear_backward(g0, model->head_w2, g2, H4, H2);
        for (int k = 0; k < H2; k++) g0[k] *= mlff_silu_grad(h0[k]);
        linear_backward(gs + (size_t)i * H, model->head_w0, g0, H2, H);
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
