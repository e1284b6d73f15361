/* atom_order.c: the atoms along a Z-order curve, and the pairs relabelled (see atom_order.h). */
#include "atom_order.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "grow.h"

enum { MORTON_BITS = 21 }; /* a coordinate's bits: 3 x 21 fill 63 of a key's 64 */

struct mlff_atom_key {
    int replica, index;
    uint64_t morton;
};

void mlff_atom_order_clear(mlff_atom_order *order) {
    free(order->atom_at);
    free(order->place_of);
    free(order->atomic_numbers);
    free(order->pairs);
    free(order->atom_energies);
    free(order->forces);
    free(order->keys);
    free(order->first_pair);
    memset(order, 0, sizeof *order);
}

static mlff_status reserve(mlff_atom_order *order, size_t N, size_t P, mlff_error *error) {
    if (N > order->atom_capacity) {
        if (!mlff_grow((void **)&order->atom_at, N, sizeof(int)) ||
            !mlff_grow((void **)&order->place_of, N, sizeof(int)) ||
            !mlff_grow((void **)&order->atomic_numbers, N, sizeof(int)) ||
            !mlff_grow((void **)&order->atom_energies, N, sizeof(double)) ||
            !mlff_grow((void **)&order->forces, 3 * N, sizeof(double)) ||
            !mlff_grow((void **)&order->keys, N, sizeof(struct mlff_atom_key)) ||
            !mlff_grow((void **)&order->first_pair, N + 1, sizeof(size_t)))
            return mlff_fail(error, MLFF_ERROR_OUT_OF_MEMORY, "out of memory to order %zu atoms", N);
        order->atom_capacity = N;
    }
    if (P > order->pair_capacity) {
        if (!mlff_grow((void **)&order->pairs, P, sizeof(mlff_pair)))
            return mlff_fail(error, MLFF_ERROR_OUT_OF_MEMORY, "out of memory to order %zu pairs", P);
        order->pair_capacity = P;
    }
    return MLFF_OK;
}

/* The coordinate q's MORTON_BITS bits spread to every third bit. */
static uint64_t spread_bits(uint64_t q) {
    uint64_t spread = 0;
    for (int b = 0; b < MORTON_BITS; b++) spread |= ((q >> b) & 1u) << (3 * b);
    return spread;
}

/* x in [0, 1] (or past it by rounding) as an integer of MORTON_BITS bits. */
static uint64_t quantize(double x) {
    const double top = (double)((1u << MORTON_BITS) - 1);
    double q = floor(x * top);
    if (!(q >= 0.0)) q = 0.0;
    if (q > top) q = top;
    return (uint64_t)q;
}

static int compare_keys(const void *x, const void *y) {
    const struct mlff_atom_key *a = x, *b = y;
    if (a->replica != b->replica) return a->replica < b->replica ? -1 : 1;
    if (a->morton != b->morton) return a->morton < b->morton ? -1 : 1;
    return (a->index > b->index) - (a->index < b->index);
}

/* 1 if some replica has more than MLFF_ATOM_ORDER_MIN_ATOMS atoms, 0 if none has, -1 if the runs of
 * consecutive atoms of a replica cannot tell (a replica's atoms in more than one run). */
static int has_large_replica(const mlff_structure *structure) {
    int N = structure->num_atoms;
    if (N <= MLFF_ATOM_ORDER_MIN_ATOMS) return 0;
    if (structure->replicas == NULL) return 1;
    int run = 1, ascending = 1; /* replicas in ascending runs: each run is a whole replica */
    for (int i = 1; i < N; i++) {
        int previous = structure->replicas[i - 1], replica = structure->replicas[i];
        run = replica == previous ? run + 1 : 1;
        ascending = ascending && replica >= previous;
        if (run > MLFF_ATOM_ORDER_MIN_ATOMS) return 1;
    }
    return ascending ? 0 : -1;
}

/* The keys of every atom: its replica, its place on the Z-order curve, its index. */
static void fill_keys(struct mlff_atom_key *keys, const mlff_structure *structure) {
    int N = structure->num_atoms;
    const double *r = structure->positions, *box = structure->box;
    double lo[3] = {r[0], r[1], r[2]}, extent = 0.0;
    if (box == NULL) {
        double hi[3] = {r[0], r[1], r[2]};
        for (int i = 1; i < N; i++)
            for (int k = 0; k < 3; k++) {
                lo[k] = fmin(lo[k], r[(size_t)i * 3 + k]);
                hi[k] = fmax(hi[k], r[(size_t)i * 3 + k]);
            }
        for (int k = 0; k < 3; k++) extent = fmax(extent, hi[k] - lo[k]); /* a cube: the same scale on every axis */
    }
    for (int i = 0; i < N; i++) {
        double s[3];
        if (box != NULL) {
            mlff_fractional_coordinates(box, &r[(size_t)i * 3], s);
            for (int k = 0; k < 3; k++) s[k] -= floor(s[k]);
        } else {
            for (int k = 0; k < 3; k++) s[k] = extent > 0.0 ? (r[(size_t)i * 3 + k] - lo[k]) / extent : 0.0;
        }
        keys[i].replica = structure->replicas != NULL ? structure->replicas[i] : 0;
        keys[i].index = i;
        keys[i].morton = spread_bits(quantize(s[0])) | spread_bits(quantize(s[1])) << 1 |
                         spread_bits(quantize(s[2])) << 2;
    }
}

/* Whether, with keys sorted, some replica has more than MLFF_ATOM_ORDER_MIN_ATOMS atoms. */
static int sorted_keys_have_large_replica(const struct mlff_atom_key *keys, int N) {
    int run = 1;
    for (int k = 1; k < N; k++) {
        run = keys[k].replica == keys[k - 1].replica ? run + 1 : 1;
        if (run > MLFF_ATOM_ORDER_MIN_ATOMS) return 1;
    }
    return 0;
}

/* order->pairs (P): pairs relabelled to places, i < j, sorted by i (a stable counting sort), then
 * each atom's by j (insertion: an atom has some tens of pairs as i). */
static void relabel_pairs(mlff_atom_order *order, const mlff_pair *pairs, size_t P, int N) {
    size_t *first = order->first_pair;
    memset(first, 0, ((size_t)N + 1) * sizeof *first);
    for (size_t p = 0; p < P; p++) {
        int a = order->place_of[pairs[p].i], b = order->place_of[pairs[p].j];
        first[(a < b ? a : b) + 1]++;
    }
    for (int i = 0; i < N; i++) first[i + 1] += first[i];
    for (size_t p = 0; p < P; p++) {
        int a = order->place_of[pairs[p].i], b = order->place_of[pairs[p].j];
        mlff_pair *out = &order->pairs[first[a < b ? a : b]++];
        *out = pairs[p];
        if (a < b) {
            out->i = a;
            out->j = b;
        } else { /* the pair seen from its other atom: u = r_j - r_i turns round */
            out->i = b;
            out->j = a;
            for (int k = 0; k < 3; k++) out->u[k] = -pairs[p].u[k];
        }
    }
    /* the cursors now stand at each atom's end: sort each atom's pairs by j */
    for (size_t i = 0, begin = 0; i < (size_t)N; begin = first[i], i++)
        for (size_t m = begin + 1; m < first[i]; m++) {
            mlff_pair moving = order->pairs[m];
            size_t n = m;
            for (; n > begin && order->pairs[n - 1].j > moving.j; n--) order->pairs[n] = order->pairs[n - 1];
            order->pairs[n] = moving;
        }
}

mlff_status mlff_atom_order_build(mlff_atom_order *order, const mlff_structure *structure, const mlff_pair *pairs,
                                  size_t P, mlff_error *error) {
    order->reordered = 0;
    int N = structure->num_atoms, large = has_large_replica(structure);
    if (large == 0) return MLFF_OK;
    mlff_status status = reserve(order, (size_t)N, P, error);
    if (status != MLFF_OK) return status;
    fill_keys(order->keys, structure);
    qsort(order->keys, (size_t)N, sizeof *order->keys, compare_keys);
    if (large < 0 && !sorted_keys_have_large_replica(order->keys, N)) return MLFF_OK;

    order->reordered = 1;
    for (int place = 0; place < N; place++) {
        int atom = order->keys[place].index;
        order->atom_at[place] = atom;
        order->place_of[atom] = place;
        order->atomic_numbers[place] = structure->atomic_numbers[atom];
    }
    relabel_pairs(order, pairs, P, N);
    return MLFF_OK;
}
