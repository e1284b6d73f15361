/* error.h: filling an mlff_error. */
#ifndef MLFF_ERROR_H
#define MLFF_ERROR_H

#include "mlff/mlff.h"

#if defined(__GNUC__)
#define MLFF_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define MLFF_PRINTF(f, a)
#endif

/* Writes the formatted sentence into *error (if not NULL) and returns `status`. */
mlff_status mlff_fail(mlff_error *error, mlff_status status, const char *format, ...) MLFF_PRINTF(3, 4);

#endif /* MLFF_ERROR_H */
