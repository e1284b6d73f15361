/* filter_table.c: tabulating each block's radial filter in distance (mlff_filter_table of
 * mlff.h, docs/tabulated-filters.md). Node values come from the filter network itself
 * (mlff_rbf_forward, mlff_filter_forward) and node derivatives from its forward-mode
 * derivative (mlff_rbf_tangent_forward, mlff_filter_tangent_forward), at pairs placed at the
 * node distances. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "filter_table.h"
#include "model.h"
#include "painn_layers.h"

enum { NODE_CHUNK = 64 };

void mlff_filter_table_free(mlff_filter_table *table) {
    if (table == NULL) return;
    free(table->data);
    free(table);
}

/* Fills block l's values and derivatives at every node. `work` holds NODE_CHUNK pairs and
 * NODE_CHUNK * (2K + H) + MLFF_PAINN_SCRATCH(H, K) doubles. */
static void tabulate_block(mlff_filter_table *table, const mlff_student_painn *painn, int l, mlff_pair *pairs,
                           double *work) {
    const int H = painn->hidden_channels, K = painn->num_rbf, O = table->num_outputs, M = table->num_nodes - 1;
    double *e = work, *de = e + NODE_CHUNK * K, *hidden = de + NODE_CHUNK * K, *scratch = hidden + NODE_CHUNK * H;
    double *values = (double *)mlff_filter_table_block_values(table, l);
    double *derivatives = (double *)mlff_filter_table_block_derivatives(table, l);
    for (int n0 = 0; n0 <= M; n0 += NODE_CHUNK) {
        int count = M + 1 - n0 < NODE_CHUNK ? M + 1 - n0 : NODE_CHUNK;
        for (int k = 0; k < count; k++) {
            int n = n0 + k;
            double d = n == M ? table->cutoff : (double)n * table->spacing; /* the last node exactly at the cutoff */
            mlff_pair pair = {0, 1, {d, 0.0, 0.0}, d};
            pairs[k] = pair;
        }
        mlff_rbf_forward(e, pairs, (size_t)count, painn);
        mlff_rbf_tangent_forward(de, pairs, (size_t)count, painn);
        mlff_filter_forward(values + (size_t)n0 * O, hidden, scratch, e, (size_t)count, &painn->blocks[l], H, K, 1);
        mlff_filter_tangent_forward(derivatives + (size_t)n0 * O, scratch, de, hidden, (size_t)count,
                                    &painn->blocks[l], H, K);
    }
}

mlff_status mlff_filter_table_create(const mlff_model *model, double spacing, mlff_filter_table **table,
                                     mlff_error *error) {
    if (table == NULL)
        return mlff_fail(error, MLFF_ERROR_INVALID_ARGUMENT, "mlff_filter_table_create: table is NULL");
    *table = NULL;
    if (model == NULL)
        return mlff_fail(error, MLFF_ERROR_INVALID_ARGUMENT, "mlff_filter_table_create: model is NULL");
    const mlff_student_painn *painn = &model->painn;
    const double cutoff = painn->cutoff;
    if (spacing == 0.0) spacing = MLFF_FILTER_TABLE_DEFAULT_SPACING;
    if (!(spacing > 0.0) || !isfinite(spacing) || spacing > cutoff)
        return mlff_fail(error, MLFF_ERROR_INVALID_ARGUMENT,
                         "mlff_filter_table_create: spacing %g Å is invalid: expected 0 (the default, %g Å) or a "
                         "finite spacing in (0, %g] (the cutoff)",
                         spacing, MLFF_FILTER_TABLE_DEFAULT_SPACING, cutoff);
    /* ceil, forgiving rounding in cutoff / spacing (5.0 / 0.01 must give 500 intervals, not 501) */
    double intervals = ceil(cutoff / spacing * (1.0 - 1e-12));
    if (intervals > MLFF_FILTER_TABLE_MAX_INTERVALS)
        return mlff_fail(error, MLFF_ERROR_INVALID_ARGUMENT,
                         "mlff_filter_table_create: spacing %g Å needs %.0f intervals over the cutoff %g Å, more than "
                         "the %d allowed",
                         spacing, intervals, cutoff, MLFF_FILTER_TABLE_MAX_INTERVALS);
    int M = intervals < 1.0 ? 1 : (int)intervals;

    const int H = painn->hidden_channels, K = painn->num_rbf, L = painn->num_blocks;
    const size_t O = (size_t)3 * H, nodes = (size_t)M + 1;
    if (O > SIZE_MAX / sizeof(double) / 2 / nodes / (size_t)(L > 0 ? L : 1))
        return mlff_fail(error, MLFF_ERROR_OUT_OF_MEMORY, "mlff_filter_table_create: the table is too large");
    mlff_filter_table *made = calloc(1, sizeof(mlff_filter_table));
    double *work = malloc(((size_t)NODE_CHUNK * (2 * (size_t)K + (size_t)H) + MLFF_PAINN_SCRATCH(H, K)) * sizeof(double));
    mlff_pair *pairs = malloc(NODE_CHUNK * sizeof(mlff_pair));
    if (made != NULL) made->data = malloc((size_t)L * 2 * nodes * O * sizeof(double) + 1);
    if (made == NULL || made->data == NULL || work == NULL || pairs == NULL) {
        mlff_filter_table_free(made);
        free(work);
        free(pairs);
        return mlff_fail(error, MLFF_ERROR_OUT_OF_MEMORY, "mlff_filter_table_create: out of memory for %d blocks of %zu "
                         "nodes x %zu outputs", L, nodes, O);
    }
    made->num_blocks = L;
    made->num_outputs = (int)O;
    made->num_nodes = M + 1;
    made->cutoff = cutoff;
    made->spacing = cutoff / M;
    made->inv_spacing = M / cutoff;
    for (int l = 0; l < L; l++) tabulate_block(made, painn, l, pairs, work);
    free(work);
    free(pairs);
    *table = made;
    return MLFF_OK;
}

int mlff_filter_table_num_blocks(const mlff_filter_table *table) {
    return table != NULL ? table->num_blocks : 0;
}

int mlff_filter_table_num_outputs(const mlff_filter_table *table) {
    return table != NULL ? table->num_outputs : 0;
}

int mlff_filter_table_num_nodes(const mlff_filter_table *table) {
    return table != NULL ? table->num_nodes : 0;
}

double mlff_filter_table_spacing(const mlff_filter_table *table) {
    return table != NULL ? table->spacing : 0.0;
}

double mlff_filter_table_inv_spacing(const mlff_filter_table *table) {
    return table != NULL ? table->inv_spacing : 0.0;
}

double mlff_filter_table_cutoff(const mlff_filter_table *table) {
    return table != NULL ? table->cutoff : 0.0;
}

const double *mlff_filter_table_values(const mlff_filter_table *table, int block) {
    if (table == NULL || block < 0 || block >= table->num_blocks) return NULL;
    return mlff_filter_table_block_values(table, block);
}

const double *mlff_filter_table_derivatives(const mlff_filter_table *table, int block) {
    if (table == NULL || block < 0 || block >= table->num_blocks) return NULL;
    return mlff_filter_table_block_derivatives(table, block);
}

mlff_status mlff_filter_table_evaluate(const mlff_filter_table *table, int block, double d, double *w, double *dw_dd,
                                       mlff_error *error) {
    if (table == NULL || w == NULL)
        return mlff_fail(error, MLFF_ERROR_INVALID_ARGUMENT, "mlff_filter_table_evaluate: %s is NULL",
                         table == NULL ? "table" : "w");
    if (block < 0 || block >= table->num_blocks)
        return mlff_fail(error, MLFF_ERROR_INVALID_ARGUMENT,
                         "mlff_filter_table_evaluate: block %d is out of range: the table has %d blocks", block,
                         table->num_blocks);
    if (!(d >= 0.0 && d <= table->cutoff))
        return mlff_fail(error, MLFF_ERROR_INVALID_ARGUMENT,
                         "mlff_filter_table_evaluate: distance %g Å is outside the table's [0, %g]", d, table->cutoff);
    mlff_pair pair = {0, 1, {d, 0.0, 0.0}, d};
    mlff_filter_table_forward(w, dw_dd, &pair, 1, table, block, 1);
    return MLFF_OK;
}

/* Whether `table` was made from `model`: its shape and cutoff, and, for every block, its nodes at
 * d = 0 and d = cutoff recomputed bit for bit with the model's filter network. */
mlff_status mlff_filter_table_check_model(const mlff_filter_table *table, const mlff_model *model, mlff_error *error) {
    const mlff_student_painn *painn = &model->painn;
    const int H = painn->hidden_channels, K = painn->num_rbf, L = painn->num_blocks;
    if (table->num_blocks != L || table->num_outputs != 3 * H || table->cutoff != painn->cutoff)
        return mlff_fail(error, MLFF_ERROR_INVALID_ARGUMENT,
                         "the filter table (%d blocks of %d filters, cutoff %g Å) was not made from this model (%d "
                         "blocks of %d filters, cutoff %g Å)",
                         table->num_blocks, table->num_outputs, table->cutoff, L, 3 * H, painn->cutoff);
    const size_t O = (size_t)3 * H;
    double *work = malloc((2 * O + 2 * (size_t)H + 2 * (size_t)K + MLFF_PAINN_SCRATCH(H, K)) * sizeof(double));
    if (work == NULL) return mlff_fail(error, MLFF_ERROR_OUT_OF_MEMORY, "out of memory checking the filter table");
    double *w = work, *hidden = w + 2 * O, *e = hidden + 2 * H, *scratch = e + 2 * K;
    mlff_pair pairs[2] = {{0, 1, {0.0, 0.0, 0.0}, 0.0}, {0, 1, {painn->cutoff, 0.0, 0.0}, painn->cutoff}};
    mlff_rbf_forward(e, pairs, 2, painn);
    int last = table->num_nodes - 1;
    for (int l = 0; l < L; l++) {
        mlff_filter_forward(w, hidden, scratch, e, 2, &painn->blocks[l], H, K, 1);
        const double *values = mlff_filter_table_block_values(table, l);
        if (memcmp(w, values, O * sizeof(double)) != 0 ||
            memcmp(w + O, values + (size_t)last * O, O * sizeof(double)) != 0) {
            free(work);
            return mlff_fail(error, MLFF_ERROR_INVALID_ARGUMENT,
                             "the filter table was not made from this model: block %d's filters differ", l);
        }
    }
    free(work);
    return MLFF_OK;
}
