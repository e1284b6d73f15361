/*
 * vector_clones.h: MLFF_VECTOR_CLONES before a function's definition compiles it twice on x86-64,
 * for the baseline (SSE2) and for AVX2, and lets the loader pick by the CPU the program runs on
 * (GCC's and Clang's target_clones). The core builds without fused multiply-adds
 * (-ffp-contract=off), so both clones do the same operations in the same order: the same numbers,
 * two or four doubles an instruction. MLFF_NO_VECTOR_CLONES leaves the AVX2 clones out (a test
 * builds the baseline code so).
 *
 * MLFF_AVX512_TARGET, where the compiler has it, compiles one function for AVX-512 alone: code
 * written for 8-double vectors, which the caller runs where __builtin_cpu_supports("avx512f") says
 * (linear_tiles.c). MLFF_NO_VECTOR_CLONES leaves it out too.
 *
 * Helpers called from a cloned function should be MLFF_ALWAYS_INLINE, so that each clone gets them
 * compiled with its own instructions.
 */
#ifndef MLFF_VECTOR_CLONES_H
#define MLFF_VECTOR_CLONES_H

#if defined(__x86_64__) && defined(__GNUC__) && defined(__has_attribute) && !defined(MLFF_NO_VECTOR_CLONES)
#if __has_attribute(target_clones)
#define MLFF_VECTOR_CLONES __attribute__((target_clones("avx2", "default")))
#endif
#if __has_attribute(target)
#define MLFF_AVX512_TARGET __attribute__((target("avx512f")))
#endif
#endif
#ifndef MLFF_VECTOR_CLONES
#define MLFF_VECTOR_CLONES
#endif

/* MLFF_WIDE_VECTOR_CLONES: MLFF_VECTOR_CLONES with an AVX-512F clone too, for loops whose vector
 * lanes are busy with arithmetic rather than waiting on memory (silu.c); MLFF_NO_AVX512 leaves the
 * AVX-512F clone out. */
#if defined(MLFF_AVX512_TARGET) && !defined(MLFF_NO_AVX512)
#define MLFF_WIDE_VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define MLFF_WIDE_VECTOR_CLONES MLFF_VECTOR_CLONES
#endif

#define MLFF_ALWAYS_INLINE static inline __attribute__((always_inline))

#endif /* MLFF_VECTOR_CLONES_H */
