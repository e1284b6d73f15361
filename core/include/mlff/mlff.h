/*
 * mlff.h: the openmm-mlff core, an OpenMM-independent C11 library in double precision.
 *
 * It loads a model file (safetensors, see docs/model-file.md), finds neighbours and
 * computes energies and forces of one or many independent structures (replicas). It is
 * the oracle that every other implementation (OpenMM's Reference, CPU and CUDA
 * platforms) is checked against.
 *
 * Units are the model's: positions and box in Å, energies in eV, forces in eV/Å.
 *
 * Ownership: every object made by a `*_create` or `*_load_*` call belongs to the caller,
 * who releases it with the matching `*_free`. Pointers returned by getters point into the
 * object they were read from and live as long as it does. The library keeps no pointer to
 * caller memory after a call returns.
 *
 * Errors: each fallible call returns an mlff_status and, when not MLFF_OK, writes a
 * sentence naming the file, tensor, atom or argument at fault into *error (when error is
 * not NULL). There is no global error state; calls never exit or abort.
 *
 * Threads: a model may be shared by threads computing at once; a workspace may not. A workspace
 * may compute on threads of its own (mlff_workspace_set_num_threads), with the same results.
 */
#ifndef MLFF_H
#define MLFF_H

#include <stddef.h>

#include "mlff/student_painn.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    MLFF_OK = 0,
    MLFF_ERROR_IO,               /* a file could not be opened or read */
    MLFF_ERROR_FORMAT,           /* a model file is malformed */
    MLFF_ERROR_INVALID_ARGUMENT, /* an argument is out of range (atom, replica, box, ...) */
    MLFF_ERROR_OUT_OF_MEMORY
} mlff_status;

#define MLFF_ERROR_MESSAGE_SIZE 512

typedef struct {
    mlff_status status;
    char message[MLFF_ERROR_MESSAGE_SIZE]; /* one sentence, NUL-terminated */
} mlff_error;

/* ---------------------------------------------------------------------------------- */
/* Model                                                                               */

typedef struct mlff_model mlff_model;

/* Reads the model file at `path`. */
mlff_status mlff_model_load_file(const char *path, mlff_model **model, mlff_error *error);

/* Reads a model file's bytes; `name` names it in error messages (e.g. "<serialized System>").
 * The bytes are copied: the caller may free them after the call. */
mlff_status mlff_model_load_memory(const void *bytes, size_t size, const char *name,
                                   mlff_model **model, mlff_error *error);

void mlff_model_free(mlff_model *model);

const char *mlff_model_architecture(const mlff_model *model); /* "student-painn" */
const char *mlff_model_length_unit(const mlff_model *model);  /* "angstrom" */
const char *mlff_model_energy_unit(const mlff_model *model);  /* "eV" */
double mlff_model_cutoff(const mlff_model *model);            /* Å */
int mlff_model_hidden_channels(const mlff_model *model);      /* H */
int mlff_model_num_blocks(const mlff_model *model);           /* L */
int mlff_model_num_rbf(const mlff_model *model);              /* K */
int mlff_model_max_atomic_number(const mlff_model *model);    /* Z_max */

/* The parameters, for implementations outside the core (CUDA, tabulation, export). */
const mlff_student_painn *mlff_model_student_painn(const mlff_model *model);

/* ---------------------------------------------------------------------------------- */
/* Compute                                                                             */

typedef struct mlff_workspace mlff_workspace;

/* Scratch memory reused across calls (neighbour lists, activations); grows as needed. */
mlff_workspace *mlff_workspace_create(void);
/* Frees the workspace and stops its threads. */
void mlff_workspace_free(mlff_workspace *workspace);

/* The threads mlff_compute runs on with this workspace, the caller's included (default 1: the
 * caller's alone). The workspace starts num_threads - 1 threads of its own, which spin a fraction
 * of a millisecond after each loop and then sleep until the next. They share each layer's rows
 * (each pair's filter, each atom's messages received, update and readout); every row is computed
 * as on one thread, each atom's messages summed in the pairs' order, so energies and forces do
 * not depend on the number of threads, to the bit. num_threads < 1 is MLFF_ERROR_INVALID_ARGUMENT; a thread that
 * cannot be started, MLFF_ERROR_OUT_OF_MEMORY (the workspace keeps its threads then). */
mlff_status mlff_workspace_set_num_threads(mlff_workspace *workspace, int num_threads, mlff_error *error);
int mlff_workspace_num_threads(const mlff_workspace *workspace); /* 1 for NULL */

typedef struct {
    int num_atoms;
    const double *positions;   /* (num_atoms, 3) Å */
    const int *atomic_numbers; /* (num_atoms) in [0, Z_max] */
    const int *replicas;       /* (num_atoms) replica of each atom in [0, num_replicas), or NULL: all in replica 0 */
    int num_replicas;          /* >= 1 */
    const double *box;         /* (3, 3) box vectors as rows in OpenMM's reduced form
                                  (a = (ax,0,0), b = (bx,by,0), c = (cx,cy,cz)), Å, or NULL: not periodic */
} mlff_structure;

typedef struct {
    double *replica_energies; /* (num_replicas) eV, overwritten; required */
    double *atom_energies;    /* (num_atoms) eV, overwritten; or NULL */
    double *forces;           /* (num_atoms, 3) eV/Å, overwritten; or NULL to skip the backward pass */
} mlff_result;

/* Energies of each replica and, if requested, per-atom energies and forces. Atoms of
 * different replicas never interact. With a box, pairs are found by minimum image and the
 * cutoff must not exceed half the smallest box height. */
mlff_status mlff_compute(const mlff_model *model, mlff_workspace *workspace, const mlff_structure *structure,
                         mlff_result *result, mlff_error *error);

/* Whether `box` (3, 3), rows a, b, c in Å, is a periodic box mlff_compute accepts with this
 * cutoff (Å): finite, in OpenMM's reduced form, and no thinner than twice the cutoff. For
 * implementations outside the core (the CUDA platform), so that they reject what it rejects. */
mlff_status mlff_check_box(const double *box, double cutoff, mlff_error *error);

/* ---------------------------------------------------------------------------------- */
/* Tabulated filters (docs/tabulated-filters.md)                                       */
/*
 * Each interaction block's radial filter w(d) = rbf_to_scalar.2(SiLU(rbf_to_scalar.0(e(d))))
 * (3H values) depends on the pair distance d alone. A filter table holds, for every block,
 * w and its exact derivative dw/dd at num_nodes equally spaced nodes d_n = n * spacing,
 * n = 0 .. num_nodes - 1, the last node exactly at the cutoff; between nodes w is the cubic
 * Hermite interpolant of those values and derivatives, and dw/dd is that polynomial's
 * derivative. Layout, per block l, output channel o in [0, 3H), node n:
 *     value      = mlff_filter_table_values(table, l)[n * 3H + o]
 *     derivative = mlff_filter_table_derivatives(table, l)[n * 3H + o]      (per Å)
 * Evaluation at d in [0, cutoff] (what mlff_filter_table_evaluate and the tabulated
 * mlff_compute do, and what other implementations should match), with h = spacing,
 * g = inv_spacing, y = value, D = derivative:
 *     if d >= cutoff: w = y[last node], dw/dd = D[last node]                (exactly)
 *     else: t = d * g, n = min((int)t, num_nodes - 2), x = t - n,
 *           w     = (1 + 2x)(1 - x)^2 y[n] + x (1 - x)^2 h D[n] + x^2 (3 - 2x) y[n+1] + x^2 (x - 1) h D[n+1]
 *           dw/dd = 6x (x - 1) g (y[n] - y[n+1]) + (1 - x)(1 - 3x) D[n] + x (3x - 2) D[n+1]
 * (the cubic Hermite interpolant of values and derivatives, and its exact derivative).
 * A table is read-only once made: threads may share it.
 */

typedef struct mlff_filter_table mlff_filter_table;

/* The spacing (Å) that mlff_filter_table_create uses for spacing == 0. It keeps the seed models'
 * energies within 1e-6 relative and forces within 1e-5 relative of the exact filters (measured
 * margins in docs/tabulated-filters.md). */
#define MLFF_FILTER_TABLE_DEFAULT_SPACING 0.005
/* At most this many intervals (num_nodes - 1). */
#define MLFF_FILTER_TABLE_MAX_INTERVALS 1000000

/* Tabulates the filters of every block of `model`. `spacing` (Å) is the largest node spacing
 * wanted: the table uses num_nodes - 1 = ceil(cutoff / spacing) equal intervals (so its spacing,
 * cutoff / (num_nodes - 1), may be slightly smaller); 0 means MLFF_FILTER_TABLE_DEFAULT_SPACING.
 * A spacing that is negative, not finite, larger than the cutoff, or so small that it needs more
 * than MLFF_FILTER_TABLE_MAX_INTERVALS intervals is MLFF_ERROR_INVALID_ARGUMENT. The table does
 * not refer to the model: it may outlive it. */
mlff_status mlff_filter_table_create(const mlff_model *model, double spacing, mlff_filter_table **table,
                                     mlff_error *error);
void mlff_filter_table_free(mlff_filter_table *table);

int mlff_filter_table_num_blocks(const mlff_filter_table *table);  /* L */
int mlff_filter_table_num_outputs(const mlff_filter_table *table); /* 3H: (w_s, w_v1, w_v2) */
int mlff_filter_table_num_nodes(const mlff_filter_table *table);   /* >= 2; node num_nodes - 1 is at the cutoff */
double mlff_filter_table_spacing(const mlff_filter_table *table);  /* Å: cutoff / (num_nodes - 1) */
double mlff_filter_table_inv_spacing(const mlff_filter_table *table); /* 1/Å: (num_nodes - 1) / cutoff */
double mlff_filter_table_cutoff(const mlff_filter_table *table);   /* Å, the model's */
/* Block l's (num_nodes, 3H) arrays, or NULL for l out of range. */
const double *mlff_filter_table_values(const mlff_filter_table *table, int block);
const double *mlff_filter_table_derivatives(const mlff_filter_table *table, int block); /* dw/dd, per Å */

/* The interpolated filter of `block` at distance d in [0, cutoff] (Å): w (3H) overwritten and,
 * if not NULL, dw_dd (3H) overwritten (per Å). For checking other implementations against. */
mlff_status mlff_filter_table_evaluate(const mlff_filter_table *table, int block, double d, double *w, double *dw_dd,
                                       mlff_error *error);

/* mlff_compute with every block's filter taken from `table` (forward, and dE/dd through the
 * Hermite polynomial's derivative in the backward) instead of the filter network; table NULL
 * is mlff_compute itself. The table must have been made from this model (checked:
 * MLFF_ERROR_INVALID_ARGUMENT otherwise). */
mlff_status mlff_compute_tabulated(const mlff_model *model, const mlff_filter_table *table,
                                   mlff_workspace *workspace, const mlff_structure *structure, mlff_result *result,
                                   mlff_error *error);

#ifdef __cplusplus
}
#endif

#endif /* MLFF_H */
