/*
 * mlff-core-bench: the C core's energy + forces on the host (what the Reference and CPU platforms
 * run), timed with a monotonic clock: the median and the fastest of R evaluations after one
 * untimed evaluation that sizes the workspace.
 *
 *   mlff-core-bench MODEL STRUCTURE.txt [--table SPACING] [--threads N] [--repeats R]
 *
 * STRUCTURE.txt is mlff-bench's format (benchmarks/write_structures.py writes the bench's rows):
 * a line "N" or "N ax ay az bx by bz cx cy cz" (a periodic box's vectors, Å), then a line
 * "Z x y z replica" per atom (Å). --table SPACING takes the filters from a table of that spacing
 * (Å; 0 is the default spacing). Prints one JSON object on stdout:
 *   {"atoms": N, "pairs": P, "threads": T, "tabulated": bool, "repeats": R,
 *    "median_ms": ..., "min_ms": ..., "energy": E}
 * Errors name the file and line on stderr and exit non-zero.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mlff/mlff.h"

typedef struct {
    int num_atoms;
    int *atomic_numbers; /* (num_atoms) */
    double *positions;   /* (num_atoms, 3) Å */
    int *replicas;       /* (num_atoms) */
    int num_replicas;
    double box[9];       /* rows a, b, c, Å */
    int periodic;
} structure_file;

static void structure_file_free(structure_file *s) {
    free(s->atomic_numbers);
    free(s->positions);
    free(s->replicas);
}

static int read_structure(const char *path, structure_file *s) {
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        fprintf(stderr, "%s: cannot open\n", path);
        return 0;
    }
    char line[1024];
    int ok = 0;
    if (fgets(line, sizeof line, f) == NULL) {
        fprintf(stderr, "%s:1: expected the atom count\n", path);
        goto done;
    }
    double *b = s->box;
    int fields = sscanf(line, "%d %lf %lf %lf %lf %lf %lf %lf %lf %lf", &s->num_atoms, &b[0], &b[1], &b[2], &b[3],
                        &b[4], &b[5], &b[6], &b[7], &b[8]);
    if ((fields != 1 && fields != 10) || s->num_atoms < 1 || s->num_atoms > 10000000) {
        fprintf(stderr, "%s:1: expected \"N\" or \"N\" and 9 box components, N in [1, 1e7]\n", path);
        goto done;
    }
    s->periodic = fields == 10;
    s->atomic_numbers = malloc((size_t)s->num_atoms * sizeof(int));
    s->replicas = malloc((size_t)s->num_atoms * sizeof(int));
    s->positions = malloc((size_t)s->num_atoms * 3 * sizeof(double));
    if (s->atomic_numbers == NULL || s->replicas == NULL || s->positions == NULL) {
        fprintf(stderr, "%s: out of memory for %d atoms\n", path, s->num_atoms);
        goto done;
    }
    for (int i = 0; i < s->num_atoms; i++) {
        double *r = s->positions + (size_t)i * 3;
        if (fgets(line, sizeof line, f) == NULL ||
            sscanf(line, "%d %lf %lf %lf %d", &s->atomic_numbers[i], &r[0], &r[1], &r[2], &s->replicas[i]) != 5 ||
            s->replicas[i] < 0) {
            fprintf(stderr, "%s:%d: expected \"Z x y z replica\" for atom %d\n", path, i + 2, i);
            goto done;
        }
        if (s->replicas[i] + 1 > s->num_replicas) s->num_replicas = s->replicas[i] + 1;
    }
    ok = 1;
done:
    fclose(f);
    return ok;
}

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec * 1e-6;
}

static int compare_doubles(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The number of pairs within the cutoff, counted here (the core does not report it). */
static long count_pairs(const structure_file *s, double cutoff) {
    long count = 0;
    for (int i = 0; i < s->num_atoms; i++)
        for (int j = i + 1; j < s->num_atoms; j++) {
            if (s->replicas[i] != s->replicas[j]) continue;
            double d[3];
            for (int a = 0; a < 3; a++) d[a] = s->positions[(size_t)j * 3 + a] - s->positions[(size_t)i * 3 + a];
            if (s->periodic) /* minimum image in OpenMM's reduced form: c, then b, then a */
                for (int v = 2; v >= 0; v--) {
                    double shift = __builtin_round(d[v] / s->box[v * 4]);
                    for (int a = 0; a < 3; a++) d[a] -= shift * s->box[v * 3 + a];
                }
            if (d[0] * d[0] + d[1] * d[1] + d[2] * d[2] < cutoff * cutoff) count++;
        }
    return count;
}

static int usage(void) {
    fprintf(stderr, "usage: mlff-core-bench MODEL STRUCTURE.txt [--table SPACING] [--threads N] [--repeats R]\n");
    return 2;
}

int main(int argc, char **argv) {
    if (argc < 3) return usage();
    double spacing = -1.0; /* no table */
    int threads = 1, repeats = 5;
    for (int a = 3; a < argc; a++) {
        if (a + 1 >= argc) return usage();
        if (strcmp(argv[a], "--table") == 0) spacing = atof(argv[++a]);
        else if (strcmp(argv[a], "--threads") == 0) threads = atoi(argv[++a]);
        else if (strcmp(argv[a], "--repeats") == 0) repeats = atoi(argv[++a]);
        else return usage();
    }
    if (repeats < 1 || repeats > 100000) return usage();

    mlff_error error;
    mlff_model *model = NULL;
    mlff_filter_table *table = NULL;
    mlff_workspace *workspace = mlff_workspace_create();
    structure_file s = {0};
    int status = 1;
    if (!read_structure(argv[2], &s)) goto done;
    if (workspace == NULL || mlff_model_load_file(argv[1], &model, &error) != MLFF_OK ||
        (spacing >= 0.0 && mlff_filter_table_create(model, spacing, &table, &error) != MLFF_OK) ||
        mlff_workspace_set_num_threads(workspace, threads, &error) != MLFF_OK) {
        fprintf(stderr, "%s\n", workspace == NULL ? "out of memory" : error.message);
        goto done;
    }
    double *energies = calloc((size_t)s.num_replicas, sizeof(double));
    double *forces = malloc((size_t)s.num_atoms * 3 * sizeof(double));
    double *times = malloc((size_t)repeats * sizeof(double));
    if (energies == NULL || forces == NULL || times == NULL) {
        fprintf(stderr, "out of memory\n");
        free(energies), free(forces), free(times);
        goto done;
    }
    mlff_structure structure = {s.num_atoms, s.positions, s.atomic_numbers, s.replicas, s.num_replicas,
                                s.periodic ? s.box : NULL};
    mlff_result result = {energies, NULL, forces};
    for (int r = -1; r < repeats; r++) { /* r = -1: untimed */
        double start = now_ms();
        if (mlff_compute_tabulated(model, table, workspace, &structure, &result, &error) != MLFF_OK) {
            fprintf(stderr, "%s: %s\n", argv[2], error.message);
            free(energies), free(forces), free(times);
            goto done;
        }
        if (r >= 0) times[r] = now_ms() - start;
    }
    double total = 0.0;
    for (int r = 0; r < s.num_replicas; r++) total += energies[r];
    qsort(times, (size_t)repeats, sizeof(double), compare_doubles);
    printf("{\"atoms\": %d, \"pairs\": %ld, \"threads\": %d, \"tabulated\": %s, \"repeats\": %d, "
           "\"median_ms\": %.4f, \"min_ms\": %.4f, \"energy\": %.17g}\n",
           s.num_atoms, count_pairs(&s, mlff_model_cutoff(model)), threads, table != NULL ? "true" : "false",
           repeats, (times[(repeats - 1) / 2] + times[repeats / 2]) / 2, times[0], total);
    free(energies), free(forces), free(times);
    status = 0;
done:
    structure_file_free(&s);
    mlff_filter_table_free(table);
    mlff_model_free(model);
    mlff_workspace_free(workspace);
    return status;
}
