/* painn_messages.c: the messages atom by atom (see painn_messages.h).
 *
 * Each sum below is mlff_message_forward's or mlff_message_backward's (painn_layers.c), term for
 * term: x - y*z there is x + (-y)*z here where the receiving atom is a pair's j, which rounds the
 * same. The loops over channels carry no sum from one channel to the next, except gn's, which is
 * taken in a loop of its own, so that the compiler can put channels in vector lanes. */
#include "painn_messages.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "grow.h"
#include "painn_layers.h"
#include "vector_clones.h"

void mlff_receivers_clear(mlff_receivers *receivers) {
    free(receivers->edge_pair);
    free(receivers->group_start);
    free(receivers->group_atom);
    free(receivers->chunk_group);
    free(receivers->work);
    memset(receivers, 0, sizeof *receivers);
}

mlff_status mlff_receivers_build(mlff_receivers *r, const mlff_pair *pairs, size_t P, size_t chunk_pairs, int N,
                                 mlff_error *error) {
    size_t chunks = P == 0 ? 0 : (P - 1) / chunk_pairs + 1, edges = 2 * P;
    if (P > (size_t)INT32_MAX / 2)
        return mlff_fail(error, MLFF_ERROR_OUT_OF_MEMORY, "%zu pairs are more than the messages can number", P);
    if (edges + 1 > r->pair_capacity) { /* + 1: group_start's end, even with no pairs */
        if (!mlff_grow((void **)&r->edge_pair, edges + 1, sizeof(int)) ||
            !mlff_grow((void **)&r->group_start, edges + 1, sizeof(int)) ||
            !mlff_grow((void **)&r->group_atom, edges + 1, sizeof(int)))
            return mlff_fail(error, MLFF_ERROR_OUT_OF_MEMORY, "out of memory for the messages of %zu pairs", P);
        r->pair_capacity = edges + 1;
    }
    if (chunks + 1 > r->chunk_capacity) {
        if (!mlff_grow((void **)&r->chunk_group, chunks + 1, sizeof(size_t)))
            return mlff_fail(error, MLFF_ERROR_OUT_OF_MEMORY, "out of memory for the messages of %zu pairs", P);
        r->chunk_capacity = chunks + 1;
    }
    if ((size_t)N * 2 + 1 > r->atom_capacity) {
        if (!mlff_grow((void **)&r->work, (size_t)N * 2 + 1, sizeof(int)))
            return mlff_fail(error, MLFF_ERROR_OUT_OF_MEMORY, "out of memory for the messages of %d atoms", N);
        r->atom_capacity = (size_t)N * 2 + 1;
    }
    int *last_chunk = r->work, *group_of = r->work + N; /* (N), (N) */
    for (int x = 0; x < N; x++) last_chunk[x] = -1;

    size_t groups = 0;
    for (size_t c = 0; c < chunks; c++) {
        size_t p0 = c * chunk_pairs, p1 = p0 + chunk_pairs < P ? p0 + chunk_pairs : P;
        size_t first = groups;
        r->chunk_group[c] = first;
        /* the chunk's receivers in the order they first appear, and how many edges each receives,
         * kept in group_start[g + 1] for now */
        for (size_t p = p0; p < p1; p++) {
            int atoms[2] = {pairs[p].i, pairs[p].j};
            for (int side = 0; side < 2; side++) {
                int x = atoms[side];
                if (last_chunk[x] != (int)c) {
                    last_chunk[x] = (int)c;
                    group_of[x] = (int)(groups - first);
                    r->group_atom[groups] = x;
                    r->group_start[groups + 1] = 0;
                    groups++;
                }
                r->group_start[first + (size_t)group_of[x] + 1]++;
            }
        }
        /* counts to starts, then each edge at its group's next place: in pair order within a group */
        r->group_start[first] = (int)(2 * p0);
        for (size_t g = first; g < groups; g++) r->group_start[g + 1] += r->group_start[g];
        for (size_t p = p0; p < p1; p++) {
            int atoms[2] = {pairs[p].i, pairs[p].j};
            for (int side = 0; side < 2; side++) {
                size_t g = first + (size_t)group_of[atoms[side]];
                r->edge_pair[r->group_start[g]++] = (int)(p - p0);
            }
        }
        /* the places now stand at each group's end: back to starts */
        for (size_t g = groups; g > first; g--) r->group_start[g] = r->group_start[g - 1];
        r->group_start[first] = (int)(2 * p0);
    }
    r->chunk_group[chunks] = groups;
    r->group_start[groups] = (int)edges;
    r->groups = groups;
    r->chunks = chunks;
    return MLFF_OK;
}

/* Chunk c's first group whose first edge is at or after the chunk's edge `edge` (the chunk's end
 * group past its last). A share of edges [begin, end) takes the groups from first_group_from(begin)
 * up to first_group_from(end): each group goes to the share where it starts. */
static size_t first_group_from(const mlff_receivers *r, size_t c, size_t edge) {
    size_t lo = r->chunk_group[c], hi = r->chunk_group[c + 1];
    int target = r->group_start[lo] + (int)edge;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (r->group_start[mid] < target) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

/* The pair's normal n = u / (d + eps) as its atom x sees it: +n at i, -n at j. */
MLFF_ALWAYS_INLINE void normal_seen_by(const mlff_pair *pair, int x, double n[3]) {
    double inv = 1.0 / (pair->d + MLFF_PAINN_NORMAL_EPSILON);
    double sign = x == pair->i ? 1.0 : -1.0;
    for (int a = 0; a < 3; a++) n[a] = sign * (pair->u[a] * inv);
}

/* The pair's atom other than x. */
MLFF_ALWAYS_INLINE size_t sender_to(const mlff_pair *pair, int x) {
    return (size_t)(x == pair->i ? pair->j : pair->i);
}

MLFF_VECTOR_CLONES
void mlff_message_forward_received(double *s_out, double *v_out, const double *s_in, const double *v_in, const double *w,
                                   const mlff_pair *pairs, const mlff_receivers *r, size_t c, size_t edge_begin,
                                   size_t edge_end, int H) {
    const size_t h = (size_t)H, g_end = first_group_from(r, c, edge_end);
    for (size_t g = first_group_from(r, c, edge_begin); g < g_end; g++) {
        int x = r->group_atom[g];
        double *restrict so = s_out + (size_t)x * h, *restrict vo = v_out + (size_t)x * 3 * h;
        for (int e = r->group_start[g]; e < r->group_start[g + 1]; e++) {
            size_t p = (size_t)r->edge_pair[e];
            size_t y = sender_to(&pairs[p], x);
            double n[3];
            normal_seen_by(&pairs[p], x, n);
            const double *restrict ws = w + p * 3 * h, *restrict wv1 = ws + h, *restrict wv2 = ws + 2 * h;
            const double *restrict si = s_in + y * h;
            for (size_t k = 0; k < h; k++) so[k] += si[k] * ws[k];
            if (v_in != NULL) {
                const double *restrict vi = v_in + y * 3 * h;
                for (int a = 0; a < 3; a++)
                    for (size_t k = 0; k < h; k++) vo[a * h + k] += vi[a * h + k] * wv1[k] + n[a] * wv2[k];
            } else { /* v = 0: w_v1 multiplies nothing, and is not read */
                for (int a = 0; a < 3; a++)
                    for (size_t k = 0; k < h; k++) vo[a * h + k] += n[a] * wv2[k];
            }
        }
    }
}

MLFF_VECTOR_CLONES
void mlff_message_backward_pairs(double *gw, double *gn, const double *gs_out, const double *gv_out, const double *s_in,
                                 const double *v_in, const double *w, const mlff_pair *pairs, size_t P, int H) {
    const size_t h = (size_t)H;
    for (size_t p = 0; p < P; p++) {
        size_t i = (size_t)pairs[p].i, j = (size_t)pairs[p].j;
        double n[3];
        normal_seen_by(&pairs[p], pairs[p].i, n);
        const double *restrict wv2 = w + p * 3 * h + 2 * h;
        double *restrict gws = gw + p * 3 * h, *restrict gwv1 = gws + h, *restrict gwv2 = gws + 2 * h;
        const double *restrict gso_i = gs_out + i * h, *restrict gso_j = gs_out + j * h;
        const double *restrict si_i = s_in + i * h, *restrict si_j = s_in + j * h;
        for (size_t k = 0; k < h; k++) gws[k] = gso_i[k] * si_j[k] + gso_j[k] * si_i[k];
        memset(gwv1, 0, 2 * h * sizeof(double)); /* gwv1, gwv2; gwv1 stays so where v = 0 (v_in NULL) */
        for (int a = 0; a < 3; a++) {
            const double *restrict gvo_i = gv_out + (i * 3 + a) * h, *restrict gvo_j = gv_out + (j * 3 + a) * h;
            if (v_in != NULL) {
                const double *restrict vi_i = v_in + (i * 3 + a) * h, *restrict vi_j = v_in + (j * 3 + a) * h;
                for (size_t k = 0; k < h; k++) {
                    gwv1[k] += gvo_i[k] * vi_j[k] + gvo_j[k] * vi_i[k];
                    gwv2[k] += (gvo_i[k] - gvo_j[k]) * n[a]; /* i receives +n, j receives -n */
                }
            } else {
                for (size_t k = 0; k < h; k++) gwv2[k] += (gvo_i[k] - gvo_j[k]) * n[a];
            }
        }
        /* dE/dn: a sum in channel order for each axis, as the reference's. The three run in one
         * loop, so that their chains of dependent adds overlap rather than follow each other. */
        const double *restrict gvo_i = gv_out + i * 3 * h, *restrict gvo_j = gv_out + j * 3 * h;
        double gn_x = 0.0, gn_y = 0.0, gn_z = 0.0;
        for (size_t k = 0; k < h; k++) {
            gn_x += (gvo_i[k] - gvo_j[k]) * wv2[k];
            gn_y += (gvo_i[h + k] - gvo_j[h + k]) * wv2[k];
            gn_z += (gvo_i[2 * h + k] - gvo_j[2 * h + k]) * wv2[k];
        }
        gn[p * 3] += gn_x;
        gn[p * 3 + 1] += gn_y;
        gn[p * 3 + 2] += gn_z;
    }
}

MLFF_VECTOR_CLONES
void mlff_message_backward_received(double *gs_in, double *gv_in, const double *gs_out, const double *gv_out,
                                    const double *w, const mlff_pair *pairs, const mlff_receivers *r, size_t c,
                                    size_t edge_begin, size_t edge_end, int H) {
    const size_t h = (size_t)H, g_end = first_group_from(r, c, edge_end);
    for (size_t g = first_group_from(r, c, edge_begin); g < g_end; g++) {
        int x = r->group_atom[g];
        double *restrict gsi = gs_in + (size_t)x * h, *restrict gvi = gv_in + (size_t)x * 3 * h;
        for (int e = r->group_start[g]; e < r->group_start[g + 1]; e++) {
            size_t p = (size_t)r->edge_pair[e];
            size_t y = sender_to(&pairs[p], x);
            const double *restrict ws = w + p * 3 * h, *restrict wv1 = ws + h;
            const double *restrict gso = gs_out + y * h, *restrict gvo = gv_out + y * 3 * h;
            for (size_t k = 0; k < h; k++) gsi[k] += gso[k] * ws[k];
            for (int a = 0; a < 3; a++)
                for (size_t k = 0; k < h; k++) gvi[a * h + k] += gvo[a * h + k] * wv1[k];
        }
    }
}
