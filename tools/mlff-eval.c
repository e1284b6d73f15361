/*
 * mlff-eval: energy and forces of one structure with a model file, through the C core.
 *
 *   mlff-eval MODEL GEOMETRY.xyz [--box LX LY LZ | --box AX AY AZ BX BY BZ CX CY CZ] [--json] [--threads N]
 *
 * GEOMETRY.xyz: a count line, a comment line, then one `Symbol x y z` line per atom (Å;
 * an element symbol H..Og or an atomic number; further columns are ignored). Only the first
 * frame is read. The box (Å) is three edge lengths of a rectangular box, or the three box
 * vectors as rows in OpenMM's reduced form; without it the structure is not periodic.
 *
 * --threads N computes on N threads (mlff_workspace_set_num_threads; the same numbers as on one).
 *
 * Prints the energy (eV) and forces (eV/Å); with --json one object
 * {"energy": E, "forces": [[fx, fy, fz], ...]} in full double precision. Errors name the file
 * and line on stderr and exit non-zero.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mlff/mlff.h"

#define MAX_ATOMS 100000000

static const char *const element_symbols[] = {
    "X",  "H",  "He", "Li", "Be", "B",  "C",  "N",  "O",  "F",  "Ne", "Na", "Mg", "Al", "Si", "P",  "S",
    "Cl", "Ar", "K",  "Ca", "Sc", "Ti", "V",  "Cr", "Mn", "Fe", "Co", "Ni", "Cu", "Zn", "Ga", "Ge", "As",
    "Se", "Br", "Kr", "Rb", "Sr", "Y",  "Zr", "Nb", "Mo", "Tc", "Ru", "Rh", "Pd", "Ag", "Cd", "In", "Sn",
    "Sb", "Te", "I",  "Xe", "Cs", "Ba", "La", "Ce", "Pr", "Nd", "Pm", "Sm", "Eu", "Gd", "Tb", "Dy", "Ho",
    "Er", "Tm", "Yb", "Lu", "Hf", "Ta", "W",  "Re", "Os", "Ir", "Pt", "Au", "Hg", "Tl", "Pb", "Bi", "Po",
    "At", "Rn", "Fr", "Ra", "Ac", "Th", "Pa", "U",  "Np", "Pu", "Am", "Cm", "Bk", "Cf", "Es", "Fm", "Md",
    "No", "Lr", "Rf", "Db", "Sg", "Bh", "Hs", "Mt", "Ds", "Rg", "Cn", "Nh", "Fl", "Mc", "Lv", "Ts", "Og"};
#define NUM_ELEMENTS 118

typedef struct {
    int num_atoms;
    int *atomic_numbers; /* (num_atoms) */
    double *positions;   /* (num_atoms, 3) Å */
} geometry;

static void geometry_free(geometry *g) {
    free(g->atomic_numbers);
    free(g->positions);
}

/* A whole token as a finite double. */
static int parse_double(const char *text, double *value) {
    char *end = NULL;
    errno = 0;
    *value = strtod(text, &end);
    return end != text && *end == '\0' && errno == 0 && isfinite(*value);
}

/* An element symbol (case as written in the periodic table) or an atomic number; 0 if neither. */
static int parse_element(const char *text) {
    for (int z = 1; z <= NUM_ELEMENTS; ++z)
        if (strcmp(text, element_symbols[z]) == 0) return z;
    char *end = NULL;
    errno = 0;
    const long z = strtol(text, &end, 10);
    if (end != text && *end == '\0' && errno == 0 && z >= 1 && z <= NUM_ELEMENTS) return (int)z;
    return 0;
}

static void strip_newline(char *line) {
    size_t n = strlen(line);
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = '\0';
}

/* Reads the first frame of an XYZ file; on error prints "path:line: what" and returns 0. */
static int read_xyz(const char *path, geometry *g) {
    FILE *file = fopen(path, "r");
    if (file == NULL) {
        fprintf(stderr, "mlff-eval: cannot open geometry file '%s': %s\n", path, strerror(errno));
        return 0;
    }
    char *line = NULL;
    size_t capacity = 0;
    int ok = 0;
    long line_number = 1;
    if (getline(&line, &capacity, file) < 0) {
        fprintf(stderr, "mlff-eval: %s:1: empty file, expected the number of atoms\n", path);
        goto done;
    }
    strip_newline(line);
    {
        char *end = NULL;
        errno = 0;
        const long count = strtol(line, &end, 10);
        while (end != NULL && (*end == ' ' || *end == '\t')) ++end;
        if (end == line || *end != '\0' || errno != 0 || count < 1 || count > MAX_ATOMS) {
            fprintf(stderr, "mlff-eval: %s:1: the atom count is \"%.40s\", expected an integer in [1, %d]\n", path, line,
                    MAX_ATOMS);
            goto done;
        }
        g->num_atoms = (int)count;
    }
    g->atomic_numbers = malloc((size_t)g->num_atoms * sizeof *g->atomic_numbers);
    g->positions = malloc((size_t)g->num_atoms * 3 * sizeof *g->positions);
    if (g->atomic_numbers == NULL || g->positions == NULL) {
        fprintf(stderr, "mlff-eval: %s: out of memory for %d atoms\n", path, g->num_atoms);
        goto done;
    }
    line_number = 2;
    if (getline(&line, &capacity, file) < 0) {
        fprintf(stderr, "mlff-eval: %s:2: file ends before the comment line\n", path);
        goto done;
    }
    for (int i = 0; i < g->num_atoms; ++i) {
        ++line_number;
        if (getline(&line, &capacity, file) < 0) {
            fprintf(stderr, "mlff-eval: %s:%ld: file ends after %d of %d atoms\n", path, line_number, i, g->num_atoms);
            goto done;
        }
        strip_newline(line);
        char *tokens[4];
        char *save = NULL;
        int n = 0;
        for (char *t = strtok_r(line, " \t", &save); t != NULL && n < 4; t = strtok_r(NULL, " \t", &save)) tokens[n++] = t;
        if (n < 4) {
            fprintf(stderr, "mlff-eval: %s:%ld: expected `Symbol x y z`, found %d column%s\n", path, line_number, n,
                    n == 1 ? "" : "s");
            goto done;
        }
        const int z = parse_element(tokens[0]);
        if (z == 0) {
            fprintf(stderr, "mlff-eval: %s:%ld: unknown element \"%.20s\", expected a symbol H..Og or an atomic number "
                    "1..118\n", path, line_number, tokens[0]);
            goto done;
        }
        g->atomic_numbers[i] = z;
        for (int a = 0; a < 3; ++a)
            if (!parse_double(tokens[1 + a], &g->positions[3 * i + a])) {
                fprintf(stderr, "mlff-eval: %s:%ld: coordinate %c is \"%.40s\", expected a finite number (Å)\n", path,
                        line_number, "xyz"[a], tokens[1 + a]);
                goto done;
            }
    }
    ok = 1;
done:
    free(line);
    fclose(file);
    return ok;
}

static void usage(FILE *out) {
    fprintf(out, "usage: mlff-eval MODEL GEOMETRY.xyz [--box LX LY LZ | --box AX AY AZ BX BY BZ CX CY CZ] [--json] "
                 "[--threads N]\n"
                 "Prints the energy (eV) and forces (eV/Å) of the first frame of GEOMETRY.xyz.\n");
}

int main(int argc, char **argv) {
    const char *model_path = NULL, *xyz_path = NULL;
    int json = 0, has_box = 0, threads = 1;
    double box[9] = {0}; /* (3, 3) rows a, b, c */
    for (int i = 1; i < argc; ++i) {
        if (strcmp(argv[i], "--json") == 0) {
            json = 1;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(argv[i], "--threads") == 0) {
            char *end = NULL;
            long n = i + 1 < argc ? strtol(argv[i + 1], &end, 10) : 0;
            if (i + 1 >= argc || *end != '\0' || n < 1 || n > 4096) {
                fprintf(stderr, "mlff-eval: --threads takes a number of threads from 1 to 4096, found %s\n",
                        i + 1 < argc ? argv[i + 1] : "nothing");
                return 2;
            }
            threads = (int)n;
            ++i;
        } else if (strcmp(argv[i], "--box") == 0) {
            int n = 0;
            double values[9];
            while (i + 1 < argc && n < 9 && parse_double(argv[i + 1], &values[n])) ++n, ++i;
            if (n != 3 && n != 9) {
                fprintf(stderr, "mlff-eval: --box takes 3 lengths or 9 box vector components (Å), found %d number%s%s%s\n",
                        n, n == 1 ? "" : "s", i + 1 < argc ? " before " : "", i + 1 < argc ? argv[i + 1] : "");
                return 2;
            }
            if (n == 3) {
                box[0] = values[0];
                box[4] = values[1];
                box[8] = values[2];
            } else {
                memcpy(box, values, sizeof box);
            }
            has_box = 1;
        } else if (argv[i][0] == '-' && argv[i][1] != '\0') {
            fprintf(stderr, "mlff-eval: unknown option %s\n", argv[i]);
            usage(stderr);
            return 2;
        } else if (model_path == NULL) {
            model_path = argv[i];
        } else if (xyz_path == NULL) {
            xyz_path = argv[i];
        } else {
            fprintf(stderr, "mlff-eval: unexpected argument %s\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (model_path == NULL || xyz_path == NULL) {
        usage(stderr);
        return 2;
    }

    mlff_error error = {0};
    mlff_model *model = NULL;
    if (mlff_model_load_file(model_path, &model, &error) != MLFF_OK) {
        fprintf(stderr, "mlff-eval: %s\n", error.message);
        return 1;
    }
    geometry g = {0};
    int status = 1;
    mlff_workspace *workspace = NULL;
    double *forces = NULL; /* (num_atoms, 3) eV/Å */
    if (!read_xyz(xyz_path, &g)) goto done;
    const int z_max = mlff_model_max_atomic_number(model);
    for (int i = 0; i < g.num_atoms; ++i)
        if (g.atomic_numbers[i] > z_max) {
            fprintf(stderr, "mlff-eval: %s:%d: atomic number %d (%s) is beyond the model's largest, %d\n", xyz_path, i + 3,
                    g.atomic_numbers[i], element_symbols[g.atomic_numbers[i]], z_max);
            goto done;
        }
    workspace = mlff_workspace_create();
    forces = malloc((size_t)g.num_atoms * 3 * sizeof *forces);
    if (workspace == NULL || forces == NULL) {
        fprintf(stderr, "mlff-eval: out of memory\n");
        goto done;
    }
    if (mlff_workspace_set_num_threads(workspace, threads, &error) != MLFF_OK) {
        fprintf(stderr, "mlff-eval: %s\n", error.message);
        goto done;
    }
    const mlff_structure structure = {g.num_atoms, g.positions, g.atomic_numbers, NULL, 1, has_box ? box : NULL};
    double energy = 0.0;
    mlff_result result = {&energy, NULL, forces};
    if (mlff_compute(model, workspace, &structure, &result, &error) != MLFF_OK) {
        fprintf(stderr, "mlff-eval: %s (model %s, geometry %s)\n", error.message, model_path, xyz_path);
        goto done;
    }
    if (json) {
        printf("{\"energy\": %.17g, \"forces\": [", energy);
        for (int i = 0; i < g.num_atoms; ++i)
            printf("%s[%.17g, %.17g, %.17g]", i ? ", " : "", forces[3 * i], forces[3 * i + 1], forces[3 * i + 2]);
        printf("]}\n");
    } else {
        printf("energy %.17g eV\nforces (eV/Å):\n", energy);
        for (int i = 0; i < g.num_atoms; ++i)
            printf("%6d %-2s %24.17g %24.17g %24.17g\n", i + 1, element_symbols[g.atomic_numbers[i]], forces[3 * i],
                   forces[3 * i + 1], forces[3 * i + 2]);
    }
    status = fflush(stdout) == 0 ? 0 : 1;
done:
    free(forces);
    mlff_workspace_free(workspace);
    geometry_free(&g);
    mlff_model_free(model);
    return status;
}
