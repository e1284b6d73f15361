/*
 * vector_exp.h: mlff_exp(x), e^x in plain arithmetic with no call and no branch, so that a compiler
 * can put a loop of them in vector lanes (the core builds with -fno-trapping-math, which lets GCC do
 * so through the clamp's comparisons). libm's exp is a call a value: with it the SiLUs took 13 % of
 * an exact evaluation (docs/performance.md). Being the core's own, it also gives the same bits with
 * every C library, every vector width and every machine (no fused multiply-adds in the core).
 *
 * e^x = 2^n e^r with n the integer nearest x / ln 2 and |r| <= ln 2 / 2 (and a rounding): r is taken
 * with ln 2 in two parts (Cody and Waite's reduction, fdlibm's constants: n ln2_hi is exact for the
 * n here), e^r - 1 by its Taylor series to r^13 (the next term is under 4.3e-18 of e^r), and 2^n as
 * the product of two powers of two, so that a subnormal result rounds once. Within 1 ulp of libm's
 * exp over the whole range, and libm's own results at 0, infinities, NaN and the thresholds of
 * overflow and underflow (tests/core/test_silu.cpp).
 */
#ifndef MLFF_VECTOR_EXP_H
#define MLFF_VECTOR_EXP_H

#include <stdint.h>
#include <string.h>

/* 1.5 2^52: adding it to a double y with |y| < 2^51 rounds y to an integer k, and the sum's bits as
 * an integer are SHIFTER's plus k. */
#define MLFF_EXP_SHIFTER 0x1.8p52

/* 2^k for the integer k held in t = SHIFTER + k, |k| <= 1022: its bits are k + 1023 in the exponent
 * field (SHIFTER's own significand bits, 2^51, leave it in the shift). */
static inline __attribute__((always_inline)) double mlff_exp_power_of_two(double t) {
    uint64_t bits;
    memcpy(&bits, &t, sizeof bits);
    bits = (bits + 1023) << 52;
    double power;
    memcpy(&power, &bits, sizeof power);
    return power;
}

static inline __attribute__((always_inline)) double mlff_exp(double x) {
    const double log2e = 0x1.71547652b82fep0, ln2_hi = 0x1.62e42feep-1, ln2_lo = 0x1.a39ef35793c76p-33;
    /* e^709.8 overflows and e^-746 rounds to 0; the clamp keeps n in [-1077, 1024] (NaN passes) */
    double xc = x > 709.8 ? 709.8 : x;
    xc = xc < -746.0 ? -746.0 : xc;
    double n = (xc * log2e + MLFF_EXP_SHIFTER) - MLFF_EXP_SHIFTER;
    double r = (xc - n * ln2_hi) - n * ln2_lo;
    double p = 1.0 / 6227020800.0; /* 1/13! */
    p = 1.0 / 479001600.0 + r * p;
    p = 1.0 / 39916800.0 + r * p;
    p = 1.0 / 3628800.0 + r * p;
    p = 1.0 / 362880.0 + r * p;
    p = 1.0 / 40320.0 + r * p;
    p = 1.0 / 5040.0 + r * p;
    p = 1.0 / 720.0 + r * p;
    p = 1.0 / 120.0 + r * p;
    p = 1.0 / 24.0 + r * p;
    p = 1.0 / 6.0 + r * p;
    p = 0.5 + r * p;
    p = r + (r * r) * p; /* e^r - 1 */
    /* 2^n = 2^n1 2^n2 with n1 = n / 2 rounded to even, both in [-539, 512] */
    double half = n * 0.5 + MLFF_EXP_SHIFTER;
    double n2 = n - (half - MLFF_EXP_SHIFTER);
    return ((1.0 + p) * mlff_exp_power_of_two(half)) * mlff_exp_power_of_two(n2 + MLFF_EXP_SHIFTER);
}

#endif /* MLFF_VECTOR_EXP_H */
