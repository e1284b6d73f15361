/*
 * student_painn.h: the parameters of the "student-painn" architecture (docs/student-painn.md),
 * as loaded from a model file. Every matrix is row-major (out, in), as PyTorch stores a
 * Linear layer's weight: y = W x + b. All values are double, whatever the file stored.
 *
 * The arrays belong to the mlff_model they were read from.
 */
#ifndef MLFF_STUDENT_PAINN_H
#define MLFF_STUDENT_PAINN_H

#ifdef __cplusplus
extern "C" {
#endif

#define MLFF_ARCHITECTURE_STUDENT_PAINN "student-painn"

typedef struct {
    /* filter network (interactions.l.message.rbf_to_scalar) */
    const double *filter_w0; /* (H, K)  rbf_to_scalar.0.weight */
    const double *filter_b0; /* (H)     rbf_to_scalar.0.bias */
    const double *filter_w2; /* (3H, H) rbf_to_scalar.2.weight; rows [0,H) w_s, [H,2H) w_v1, [2H,3H) w_v2 */
    const double *filter_b2; /* (3H)    rbf_to_scalar.2.bias */
    /* update network (interactions.l.update) */
    const double *update_w0; /* (H, 2H) update_mlp.0.weight; input is concat(s, |v|) */
    const double *update_b0; /* (H)     update_mlp.0.bias */
    const double *update_w2; /* (3H, H) update_mlp.2.weight; rows [0,H) a, [H,2H) g1, [2H,3H) g2 */
    const double *update_b2; /* (3H)    update_mlp.2.bias */
    const double *mixing;    /* (3, 3)  mixing_matrix, row-major; zeros where the file lacks it (last block) */
} mlff_student_painn_block;

typedef struct {
    int hidden_channels;   /* H */
    int num_blocks;        /* L */
    int num_rbf;           /* K */
    int max_atomic_number; /* Z_max; the embedding has Z_max + 1 rows */
    double cutoff;         /* r_c, Å */

    const double *embedding;   /* (Z_max + 1, H) embedding.weight */
    const double *rbf_centers; /* (K) rbf.centers, Å */
    const double *rbf_widths;  /* (K) rbf.widths, Å */
    const mlff_student_painn_block *blocks; /* (L) interactions.l */
    const double *head_w0;     /* (H/2, H)   energy_head.0.weight */
    const double *head_b0;     /* (H/2) */
    const double *head_w2;     /* (H/4, H/2) energy_head.2.weight */
    const double *head_b2;     /* (H/4) */
    const double *head_w4;     /* (1, H/4)   energy_head.4.weight */
    const double *head_b4;     /* (1) */
} mlff_student_painn;

#ifdef __cplusplus
}
#endif

#endif /* MLFF_STUDENT_PAINN_H */
