/*
 * neighbors.c: pairs of atoms within the cutoff.
 *
 * Atoms are first grouped by replica (a stable counting sort into atom_order), so each
 * replica is searched on its own. A replica of at most BRUTE_FORCE_MAX_ATOMS atoms, or one
 * in a box too thin for 3 cells per axis, is searched pair by pair. Larger ones use cells
 * at least `cutoff` wide (in fractional coordinates when periodic): a pair within the
 * cutoff then lies in the same or adjacent cells. Occupied cells are hashed into a table of
 * about 2 buckets per atom, so time and memory stay linear in the atoms however far apart
 * they are (no grid over a bounding box that a stray atom could blow up).
 *
 * Pairs come out by replica, then sorted by (i, j): the network's sums are reproducible.
 *
 * Minimum image in OpenMM's reduced form: subtract c*round(uz/cz), then b*round(uy/by),
 * then a*round(ux/ax). The result lies in |ux| <= ax/2, |uy| <= by/2, |uz| <= cz/2, and any
 * image no longer than min(ax, by, cz)/2 lies in that same slab-bounded region, where
 * images are unique (two differ by a lattice vector n1 a + n2 b + n3 c whose z is n3 cz,
 * then whose y is n2 by, then whose x is n1 ax). So with cutoff <= min(ax, by, cz)/2 the
 * image within the cutoff, if any, is the one found, however skewed the box.
 */
#include "neighbors.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

/* Up to this many atoms a replica is searched pair by pair: cheaper than building cells. */
#define BRUTE_FORCE_MAX_ATOMS 64

/* Reduced-form inequalities (|bx| <= ax/2, ...) get this relative slack: a box converted
 * from nm to Å may round just past the limit. The minimum image does not rely on them. */
#define REDUCED_FORM_SLACK 1e-9

/* Cells are made a little wider than the cutoff so that rounding in a cell index can never
 * split a pair within the cutoff by two cells: the relative slack covers a few ulps of the
 * largest coordinate, measured in cells. */
#define CELL_SLACK 1e-9
#define ULPS_SLACK 0x1p-48

/* Caps keep cell indices far from int64 overflow; larger cells stay correct, just slower. */
#define MAX_CELLS_PER_AXIS 1048576.0     /* periodic: 2^20 */
#define MAX_CELL_COORDINATE 1.152921504606846976e18 /* non-periodic: 2^60 */

/* ---------------------------------------------------------------------------------- */
/* Memory                                                                              */

/* Grows *array (of `size`-byte elements) to hold at least `needed`; keeps the contents. */
static int grow(void **array, size_t *capacity, size_t needed, size_t size) {
    if (needed <= *capacity) return 1;
    size_t wanted = *capacity > SIZE_MAX / 2 ? needed : *capacity * 2;
    if (wanted < needed) wanted = needed;
    if (wanted > SIZE_MAX / size) return 0;
    void *grown = realloc(*array, wanted * size);
    if (grown == NULL) return 0;
    *array = grown;
    *capacity = wanted;
    return 1;
}

static mlff_status reserve_atoms(mlff_neighbor_list *list, size_t num_atoms, mlff_error *error) {
    if (num_atoms <= list->atom_capacity) return MLFF_OK;
    /* two arrays share atom_capacity: it only counts once both have grown */
    size_t cells_capacity = list->atom_capacity, order_capacity = list->atom_capacity;
    if (!grow((void **)&list->cell_atoms, &cells_capacity, num_atoms, sizeof(int)) ||
        !grow((void **)&list->atom_order, &order_capacity, num_atoms, sizeof(int)))
        return mlff_fail(error, MLFF_ERROR_OUT_OF_MEMORY, "neighbour search: out of memory for %zu atoms", num_atoms);
    list->atom_capacity = cells_capacity < order_capacity ? cells_capacity : order_capacity;
    return MLFF_OK;
}

static mlff_status reserve_cells(mlff_neighbor_list *list, size_t num_entries, mlff_error *error) {
    if (!grow((void **)&list->cell_start, &list->cell_capacity, num_entries, sizeof(int)))
        return mlff_fail(error, MLFF_ERROR_OUT_OF_MEMORY, "neighbour search: out of memory for %zu cells", num_entries);
    return MLFF_OK;
}

static mlff_status push_pair(mlff_neighbor_list *list, int i, int j, const double u[3], double d, mlff_error *error) {
    if (list->count == list->capacity &&
        !grow((void **)&list->pairs, &list->capacity, list->count + 1, sizeof(mlff_pair)))
        return mlff_fail(error, MLFF_ERROR_OUT_OF_MEMORY, "neighbour search: out of memory for %zu pairs",
                         list->count + 1);
    mlff_pair *pair = &list->pairs[list->count++];
    pair->i = i;
    pair->j = j;
    pair->u[0] = u[0];
    pair->u[1] = u[1];
    pair->u[2] = u[2];
    pair->d = d;
    return MLFF_OK;
}

void mlff_neighbor_list_clear(mlff_neighbor_list *list) {
    if (list == NULL) return;
    free(list->pairs);
    free(list->cell_start);
    free(list->cell_atoms);
    free(list->atom_order);
    memset(list, 0, sizeof *list);
}

/* ---------------------------------------------------------------------------------- */
/* Validation                                                                          */

static mlff_status check_box(const double *box, double cutoff, mlff_error *error) {
    static const char *const rows = "abc", *const axes = "xyz";
    for (int k = 0; k < 9; k++)
        if (!isfinite(box[k]))
            return mlff_fail(error, MLFF_ERROR_INVALID_ARGUMENT, "box vector %c has a non-finite %c component (%g)",
                             rows[k / 3], axes[k % 3], box[k]);
    double ax = box[0], bx = box[3], by = box[4], cx = box[6], cy = box[7], cz = box[8];
    if (box[1] != 0.0 || box[2] != 0.0)
        return mlff_fail(error, MLFF_ERROR_INVALID_ARGUMENT,
                         "box is not in OpenMM's reduced form: a = (%g, %g, %g) must lie along x", ax, box[1], box[2]);
    if (box[5] != 0.0)
        return mlff_fail(error, MLFF_ERROR_INVALID_ARGUMENT,
                         "box is not in OpenMM's reduced form: b = (%g, %g, %g) must lie in the xy-plane", bx, by,
                         box[5]);
    if (!(ax > 0.0) || !(by > 0.0) || !(cz > 0.0))
        return mlff_fail(error, MLFF_ERROR_INVALID_ARGUMENT,
                         "box is not in OpenMM's reduced form: ax, by and cz must be positive, but they are %g, %g, %g",
                         ax, by, cz);
    const double limit = 0.5 * (1.0 + REDUCED_FORM_SLACK);
    if (fabs(bx) > limit * ax)
        return mlff_fail(error, MLFF_ERROR_INVALID_ARGUMENT,
                         "box is not in OpenMM's reduced form: |bx| = %.10g exceeds ax/2 = %.10g", fabs(bx), 0.5 * ax);
    if (fabs(cx) > limit * ax)
        return mlff_fail(error, MLFF_ERROR_INVALID_ARGUMENT,
                         "box is not in OpenMM's reduced form: |cx| = %.10g exceeds ax/2 = %.10g", fabs(cx), 0.5 * ax);
    if (fabs(cy) > limit * by)
        return mlff_fail(error, MLFF_ERROR_INVALID_ARGUMENT,
                         "box is not in OpenMM's reduced form: |cy| = %.10g exceeds by/2 = %.10g", fabs(cy), 0.5 * by);
    double height = fmin(ax, fmin(by, cz));
    if (cutoff > 0.5 * height)
        return mlff_fail(error, MLFF_ERROR_INVALID_ARGUMENT,
                         "cutoff %.10g Å is larger than half the smallest box height (height %.10g Å, half %.10g Å): "
                         "the minimum image needs cutoff <= height/2",
                         cutoff, height, 0.5 * height);
    return MLFF_OK;
}

mlff_status mlff_check_box(const double *box, double cutoff, mlff_error *error) {
    if (box == NULL)
        return mlff_fail(error, MLFF_ERROR_INVALID_ARGUMENT, "box is NULL");
    return check_box(box, cutoff, error);
}

static mlff_status check_structure(const mlff_structure *structure, double cutoff, mlff_error *error) {
    if (structure->num_atoms < 0)
        return mlff_fail(error, MLFF_ERROR_INVALID_ARGUMENT, "num_atoms is %d; it must be >= 0", structure->num_atoms);
    if (structure->num_replicas < 1)
        return mlff_fail(error, MLFF_ERROR_INVALID_ARGUMENT, "num_replicas is %d; it must be >= 1",
                         structure->num_replicas);
    if (!(cutoff > 0.0) || !isfinite(cutoff))
        return mlff_fail(error, MLFF_ERROR_INVALID_ARGUMENT, "cutoff is %g Å; it must be positive and finite", cutoff);
    if (structure->num_atoms > 0 && structure->positions == NULL)
        return mlff_fail(error, MLFF_ERROR_INVALID_ARGUMENT, "positions is NULL but num_atoms is %d",
                         structure->num_atoms);
    for (int i = 0; i < structure->num_atoms; i++) {
        const double *r = &structure->positions[(size_t)i * 3];
        if (!isfinite(r[0]) || !isfinite(r[1]) || !isfinite(r[2]))
            return mlff_fail(error, MLFF_ERROR_INVALID_ARGUMENT, "atom %d has a non-finite position (%g, %g, %g)", i,
                             r[0], r[1], r[2]);
    }
    if (structure->replicas != NULL)
        for (int i = 0; i < structure->num_atoms; i++) {
            int replica = structure->replicas[i];
            if (replica < 0 || replica >= structure->num_replicas)
                return mlff_fail(error, MLFF_ERROR_INVALID_ARGUMENT,
                                 "atom %d has replica %d, outside [0, %d) (num_replicas is %d)", i, replica,
                                 structure->num_replicas, structure->num_replicas);
        }
    if (structure->box != NULL) return check_box(structure->box, cutoff, error);
    return MLFF_OK;
}

/* ---------------------------------------------------------------------------------- */
/* Geometry                                                                            */

void mlff_fractional_coordinates(const double *box /* (9) */, const double r[3], double s[3]) {
    s[2] = r[2] / box[8];
    s[1] = (r[1] - s[2] * box[7]) / box[4];
    s[0] = (r[0] - s[1] * box[3] - s[2] * box[6]) / box[0];
}

/* Minimum image in reduced form (see the top of the file for why it is the image we want). */
static void minimum_image(const double *box /* (9) */, double u[3]) {
    double n = round(u[2] / box[8]);
    u[0] -= n * box[6];
    u[1] -= n * box[7];
    u[2] -= n * box[8];
    n = round(u[1] / box[4]);
    u[0] -= n * box[3];
    u[1] -= n * box[4];
    n = round(u[0] / box[0]);
    u[0] -= n * box[0];
}

/* Adds the pair (i, j), i < j, if it lies within the cutoff. */
static mlff_status consider_pair(mlff_neighbor_list *list, const mlff_structure *structure, int i, int j,
                                 double cutoff, mlff_error *error) {
    const double *ri = &structure->positions[(size_t)i * 3], *rj = &structure->positions[(size_t)j * 3];
    double u[3] = {rj[0] - ri[0], rj[1] - ri[1], rj[2] - ri[2]};
    if (structure->box != NULL) minimum_image(structure->box, u);
    double d = sqrt(u[0] * u[0] + u[1] * u[1] + u[2] * u[2]);
    if (d > cutoff) return MLFF_OK;
    if (!(d <= cutoff)) /* NaN: only from overflow with a box, positions ~1e308 */
        return mlff_fail(error, MLFF_ERROR_INVALID_ARGUMENT,
                         "atoms %d and %d are too far apart to find their minimum image in double precision", i, j);
    return push_pair(list, i, j, u, d, error);
}

/* ---------------------------------------------------------------------------------- */
/* Search                                                                              */

/* Every pair of the replica's atoms (ascending indices): pairs come out sorted by (i, j). */
static mlff_status search_brute_force(mlff_neighbor_list *list, const mlff_structure *structure,
                                      const int *atoms /* (n) */, int n, double cutoff, mlff_error *error) {
    for (int a = 0; a < n; a++)
        for (int b = a + 1; b < n; b++) {
            mlff_status status = consider_pair(list, structure, atoms[a], atoms[b], cutoff, error);
            if (status != MLFF_OK) return status;
        }
    return MLFF_OK;
}

typedef struct {
    const double *box;     /* (9) or NULL */
    double edge;           /* non-periodic: cell edge, Å */
    double cells[3];       /* periodic: cells per axis, >= 3 */
    size_t bucket_mask;    /* buckets - 1, buckets a power of two */
} cell_grid;

/* The cell holding position r: integer coordinates, in [0, cells) per axis when periodic. */
static void cell_of(const cell_grid *grid, const double r[3], int64_t cell[3]) {
    if (grid->box != NULL) {
        double s[3];
        mlff_fractional_coordinates(grid->box, r, s);
        for (int k = 0; k < 3; k++) {
            double wrapped = s[k] - floor(s[k]); /* [0, 1]: 1 only when s is just below an integer */
            double index = floor(wrapped * grid->cells[k]);
            if (!(index <= grid->cells[k] - 1.0)) index = grid->cells[k] - 1.0;
            if (!(index >= 0.0)) index = 0.0; /* never NaN here; the test keeps the cast defined */
            cell[k] = (int64_t)index;
        }
    } else {
        for (int k = 0; k < 3; k++) {
            double index = floor(r[k] / grid->edge);
            /* clamping is monotone, so atoms in adjacent cells stay adjacent or merge */
            if (!(index <= MAX_CELL_COORDINATE)) index = MAX_CELL_COORDINATE;
            if (!(index >= -MAX_CELL_COORDINATE)) index = -MAX_CELL_COORDINATE;
            cell[k] = (int64_t)index;
        }
    }
}

static size_t bucket_of(const cell_grid *grid, const int64_t cell[3]) {
    uint64_t h = (uint64_t)cell[0] * 0x9E3779B97F4A7C15u ^ (uint64_t)cell[1] * 0xC2B2AE3D27D4EB4Fu ^
                 (uint64_t)cell[2] * 0x165667B19E3779F9u;
    h ^= h >> 31;
    h *= 0xBF58476D1CE4E5B9u;
    h ^= h >> 29;
    return (size_t)h & grid->bucket_mask;
}

static int compare_pairs_by_j(const void *x, const void *y) {
    int a = ((const mlff_pair *)x)->j, b = ((const mlff_pair *)y)->j;
    return (a > b) - (a < b);
}

/* Sorts pairs (n), all of one atom i, by j: the 27 cells give ascending runs. */
static void sort_by_j(mlff_pair *pairs, size_t n) {
    if (n > 32) {
        qsort(pairs, n, sizeof *pairs, compare_pairs_by_j);
        return;
    }
    for (size_t a = 1; a < n; a++) {
        mlff_pair moving = pairs[a];
        size_t b = a;
        for (; b > 0 && pairs[b - 1].j > moving.j; b--) pairs[b] = pairs[b - 1];
        pairs[b] = moving;
    }
}

/* Cells for one replica of n atoms (ascending indices); `sorted` (n) receives them by bucket. */
static mlff_status search_cells(mlff_neighbor_list *list, const mlff_structure *structure, const cell_grid *grid,
                                const int *atoms /* (n) */, int *sorted /* (n) */, int n, double cutoff,
                                mlff_error *error) {
    size_t num_buckets = grid->bucket_mask + 1;
    mlff_status status = reserve_cells(list, num_buckets + 1, error);
    if (status != MLFF_OK) return status;
    int *bucket_start = list->cell_start; /* (num_buckets + 1) */
    memset(bucket_start, 0, (num_buckets + 1) * sizeof *bucket_start);

    /* stable counting sort by bucket: each bucket's atoms stay ascending */
    int64_t cell[3];
    for (int a = 0; a < n; a++) {
        cell_of(grid, &structure->positions[(size_t)atoms[a] * 3], cell);
        bucket_start[bucket_of(grid, cell) + 1]++;
    }
    for (size_t b = 0; b < num_buckets; b++) bucket_start[b + 1] += bucket_start[b];
    for (int a = 0; a < n; a++) {
        cell_of(grid, &structure->positions[(size_t)atoms[a] * 3], cell);
        sorted[bucket_start[bucket_of(grid, cell)]++] = atoms[a];
    }
    for (size_t b = num_buckets; b > 0; b--) bucket_start[b] = bucket_start[b - 1]; /* undo the cursor advance */
    bucket_start[0] = 0;

    for (int a = 0; a < n; a++) {
        int i = atoms[a];
        size_t first = list->count;
        size_t visited[27];
        int num_visited = 0;
        cell_of(grid, &structure->positions[(size_t)i * 3], cell);
        for (int dz = -1; dz <= 1; dz++)
            for (int dy = -1; dy <= 1; dy++)
                for (int dx = -1; dx <= 1; dx++) {
                    int64_t neighbor[3] = {cell[0] + dx, cell[1] + dy, cell[2] + dz};
                    if (grid->box != NULL)
                        for (int k = 0; k < 3; k++) {
                            int64_t cells = (int64_t)grid->cells[k];
                            neighbor[k] = (neighbor[k] + cells) % cells;
                        }
                    size_t bucket = bucket_of(grid, neighbor);
                    /* distinct cells may share a bucket: visit each bucket once */
                    int seen = 0;
                    for (int v = 0; v < num_visited && !seen; v++) seen = visited[v] == bucket;
                    if (seen) continue;
                    visited[num_visited++] = bucket;
                    for (int m = bucket_start[bucket]; m < bucket_start[bucket + 1]; m++) {
                        int j = sorted[m];
                        if (j <= i) continue;
                        status = consider_pair(list, structure, i, j, cutoff, error);
                        if (status != MLFF_OK) return status;
                    }
                }
        sort_by_j(list->pairs + first, list->count - first);
    }
    return MLFF_OK;
}

/* Chooses brute force or cells for one replica and searches it. */
static mlff_status search_replica(mlff_neighbor_list *list, const mlff_structure *structure, const int *atoms /* (n) */,
                                  int *sorted /* (n) */, int n, double cutoff, mlff_error *error) {
    if (n < 2) return MLFF_OK;
    if (n <= BRUTE_FORCE_MAX_ATOMS) return search_brute_force(list, structure, atoms, n, cutoff, error);

    cell_grid grid = {0};
    grid.box = structure->box;
    size_t num_buckets = 1;
    while (num_buckets < 2 * (size_t)n) num_buckets *= 2;
    grid.bucket_mask = num_buckets - 1;

    if (grid.box != NULL) {
        const double *box = grid.box;
        /* heights: distances between opposite faces, volume / face area */
        double volume = box[0] * box[4] * box[8];
        double bc[3] = {box[4] * box[8], -box[3] * box[8], box[3] * box[7] - box[4] * box[6]}; /* b x c */
        double ca[3] = {0.0, box[8] * box[0], -box[7] * box[0]};                                /* c x a */
        double heights[3] = {volume / sqrt(bc[0] * bc[0] + bc[1] * bc[1] + bc[2] * bc[2]),
                             volume / sqrt(ca[1] * ca[1] + ca[2] * ca[2]), box[8]};
        double largest_s = 0.0, s[3];
        for (int a = 0; a < n; a++) {
            mlff_fractional_coordinates(box, &structure->positions[(size_t)atoms[a] * 3], s);
            for (int k = 0; k < 3; k++) largest_s = fmax(largest_s, fabs(s[k]));
        }
        double largest_height = fmax(heights[0], fmax(heights[1], heights[2]));
        double slack = CELL_SLACK + ULPS_SLACK * (1.0 + largest_s) * (largest_height / cutoff);
        for (int k = 0; k < 3; k++) {
            grid.cells[k] = floor(heights[k] / (cutoff * (1.0 + slack)));
            /* fewer than 3 cells: neighbouring cells would repeat */
            if (!(grid.cells[k] >= 3.0)) return search_brute_force(list, structure, atoms, n, cutoff, error);
            if (grid.cells[k] > MAX_CELLS_PER_AXIS) grid.cells[k] = MAX_CELLS_PER_AXIS;
        }
    } else {
        double largest = 0.0;
        for (int a = 0; a < n; a++)
            for (int k = 0; k < 3; k++) largest = fmax(largest, fabs(structure->positions[(size_t)atoms[a] * 3 + k]));
        double slack = CELL_SLACK + ULPS_SLACK * (largest / cutoff);
        grid.edge = cutoff * (1.0 + slack);
    }
    return search_cells(list, structure, &grid, atoms, sorted, n, cutoff, error);
}

/* Stable merge sort of atoms (n) by replica, with scratch (n); atoms start ascending. */
static void sort_by_replica(int *atoms /* (n) */, int *scratch /* (n) */, size_t n, const int *replicas) {
    for (size_t width = 1; width < n; width *= 2) {
        for (size_t begin = 0; begin < n; begin += 2 * width) {
            size_t middle = n - begin > width ? begin + width : n;
            size_t end = n - middle > width ? middle + width : n;
            size_t a = begin, b = middle, out = begin;
            while (a < middle && b < end)
                scratch[out++] = replicas[atoms[b]] < replicas[atoms[a]] ? atoms[b++] : atoms[a++];
            while (a < middle) scratch[out++] = atoms[a++];
            while (b < end) scratch[out++] = atoms[b++];
        }
        memcpy(atoms, scratch, n * sizeof *atoms);
    }
}

mlff_status mlff_neighbor_list_build(mlff_neighbor_list *list, const mlff_structure *structure, double cutoff,
                                     mlff_error *error) {
    if (list == NULL) return mlff_fail(error, MLFF_ERROR_INVALID_ARGUMENT, "neighbour search: list is NULL");
    list->count = 0;
    if (structure == NULL) return mlff_fail(error, MLFF_ERROR_INVALID_ARGUMENT, "neighbour search: structure is NULL");
    mlff_status status = check_structure(structure, cutoff, error);
    if (status != MLFF_OK) return status;
    int N = structure->num_atoms;
    if (N == 0) return MLFF_OK;

    status = reserve_atoms(list, (size_t)N, error);
    if (status != MLFF_OK) return status;
    const int *replicas = structure->replicas; /* (N) or NULL */
    if (replicas == NULL) {
        for (int i = 0; i < N; i++) list->atom_order[i] = i;
    } else if ((size_t)structure->num_replicas > 2 * (size_t)N + 64) {
        /* far more replicas than atoms: a merge sort, not a counting array per replica */
        for (int i = 0; i < N; i++) list->atom_order[i] = i;
        sort_by_replica(list->atom_order, list->cell_atoms, (size_t)N, replicas);
    } else {
        /* stable counting sort by replica: atoms of a replica stay ascending */
        size_t R = (size_t)structure->num_replicas;
        status = reserve_cells(list, R + 1, error);
        if (status != MLFF_OK) return status;
        int *replica_start = list->cell_start; /* (R + 1) */
        memset(replica_start, 0, (R + 1) * sizeof *replica_start);
        for (int i = 0; i < N; i++) replica_start[replicas[i] + 1]++;
        for (size_t r = 0; r < R; r++) replica_start[r + 1] += replica_start[r];
        for (int i = 0; i < N; i++) list->atom_order[replica_start[replicas[i]]++] = i;
    }

    /* replicas are now runs of atom_order; cell_start is free again for the cells */
    for (int begin = 0; begin < N;) {
        int replica = replicas == NULL ? 0 : replicas[list->atom_order[begin]];
        int end = begin + 1;
        while (end < N && (replicas == NULL ? 0 : replicas[list->atom_order[end]]) == replica) end++;
        status = search_replica(list, structure, list->atom_order + begin, list->cell_atoms + begin, end - begin,
                                cutoff, error);
        if (status != MLFF_OK) {
            list->count = 0;
            return status;
        }
        begin = end;
    }
    return MLFF_OK;
}
