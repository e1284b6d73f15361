/* silu.h: the network's activation, SiLU(x) = x / (1 + e^-x), and its derivative, one value at a time
 * or over an array in vector lanes (the same numbers either way, at every vector width). e^x is
 * vector_exp.h's, within 1 ulp of libm's. */
#ifndef MLFF_SILU_H
#define MLFF_SILU_H

#include <stddef.h>

double mlff_silu(double x);
double mlff_silu_grad(double x); /* d SiLU / dx */

/* x (count) = SiLU(x), in place. */
void mlff_silu_in_place(double *x, size_t count);

/* grad (count) = SiLU'(x) ; x (count). */
void mlff_silu_grad_array(double *grad, const double *x, size_t count);

/* g (count) *= SiLU'(x) ; x (count). */
void mlff_times_silu_grad(double *g, const double *x, size_t count);

#endif /* MLFF_SILU_H */
