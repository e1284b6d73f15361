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
 * Threads: a model may be shared by threads computing at once; a workspace may not.
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
void mlff_workspace_free(mlff_workspace *workspace);

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

#ifdef __cplusplus
}
#endif

#endif /* MLFF_H */
