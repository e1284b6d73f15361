/* model.h: the loaded model, shared by the file loader (model_file.c) and the network. */
#ifndef MLFF_MODEL_H
#define MLFF_MODEL_H

#include "mlff/mlff.h"

struct mlff_model {
    char architecture[32];          /* "student-painn" */
    char length_unit[16];           /* "angstrom" */
    char energy_unit[16];           /* "eV" */
    mlff_student_painn painn;       /* pointers into `values` and `blocks` */
    mlff_student_painn_block *blocks; /* (L), owned */
    double *values;                 /* every tensor, converted to double, owned */
};

#endif /* MLFF_MODEL_H */
