/* filter_table.h: the filter table (mlff_filter_table of mlff.h, docs/tabulated-filters.md),
 * shared by its builder (filter_table.c), the layers that interpolate it (painn_layers.c) and
 * the network. */
#ifndef MLFF_FILTER_TABLE_H
#define MLFF_FILTER_TABLE_H

#include "mlff/mlff.h"

struct mlff_filter_table {
    int num_blocks;     /* L */
    int num_outputs;    /* 3H */
    int num_nodes;      /* M + 1 >= 2; node n at d = n * spacing, node M exactly at the cutoff */
    double spacing;     /* cutoff / M, Å */
    double inv_spacing; /* M / cutoff, 1/Å */
    double cutoff;      /* Å */
    /* (L, 2, num_nodes, 3H), owned: block l's values (num_nodes, 3H) start at
     * data + l * 2 * num_nodes * 3H and its derivatives dw/dd (num_nodes, 3H) follow them. */
    double *data;
};

/* Block l's values (num_nodes, 3H) and derivatives (num_nodes, 3H); l must be in [0, L). */
static inline const double *mlff_filter_table_block_values(const struct mlff_filter_table *table, int l) {
    return table->data + (size_t)l * 2 * (size_t)table->num_nodes * (size_t)table->num_outputs;
}
static inline const double *mlff_filter_table_block_derivatives(const struct mlff_filter_table *table, int l) {
    return mlff_filter_table_block_values(table, l) + (size_t)table->num_nodes * (size_t)table->num_outputs;
}

/* MLFF_OK if `table` was made from `model` (shape, cutoff, and every block's nodes at 0 and at the
 * cutoff recomputed bit for bit); MLFF_ERROR_INVALID_ARGUMENT otherwise. */
mlff_status mlff_filter_table_check_model(const struct mlff_filter_table *table, const mlff_model *model,
                                          mlff_error *error);

#endif /* MLFF_FILTER_TABLE_H */
