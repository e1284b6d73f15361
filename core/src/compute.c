/* compute.c: mlff_compute, the core's entry point: checks the structure, finds the pairs, puts
 * the atoms of large structures in an order of its own (atom_order.h), runs the architecture's
 * network and sums the energies per replica. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "atom_order.h"
#include "error.h"
#include "filter_table.h"
#include "model.h"
#include "neighbors.h"
#include "painn_network.h"
#include "thread_pool.h"

struct mlff_workspace {
    mlff_neighbor_list neighbors;
    mlff_atom_order order;
    mlff_painn_buffers network;
    double *atom_energies; /* (atom_capacity), when the caller wants none */
    size_t atom_capacity;
    mlff_thread_pool *threads; /* NULL: the caller's thread alone */
};

mlff_workspace *mlff_workspace_create(void) {
    return calloc(1, sizeof(mlff_workspace));
}

void mlff_workspace_free(mlff_workspace *workspace) {
    if (workspace == NULL) return;
    mlff_neighbor_list_clear(&workspace->neighbors);
    mlff_atom_order_clear(&workspace->order);
    mlff_painn_buffers_clear(&workspace->network);
    free(workspace->atom_energies);
    mlff_thread_pool_free(workspace->threads);
    free(workspace);
}

mlff_status mlff_workspace_set_num_threads(mlff_workspace *workspace, int num_threads, mlff_error *error) {
    if (workspace == NULL)
        return mlff_fail(error, MLFF_ERROR_INVALID_ARGUMENT, "mlff_workspace_set_num_threads: workspace is NULL");
    if (num_threads < 1)
        return mlff_fail(error, MLFF_ERROR_INVALID_ARGUMENT,
                         "mlff_workspace_set_num_threads: num_threads is %d, expected >= 1", num_threads);
    if (num_threads == mlff_workspace_num_threads(workspace)) return MLFF_OK;
    mlff_thread_pool *threads = NULL; /* one thread: no pool */
    if (num_threads > 1) {
        mlff_status status = mlff_thread_pool_create(num_threads, &threads, error);
        if (status != MLFF_OK) return status;
    }
    mlff_thread_pool_free(workspace->threads);
    workspace->threads = threads;
    return MLFF_OK;
}

int mlff_workspace_num_threads(const mlff_workspace *workspace) {
    return workspace != NULL ? mlff_thread_pool_size(workspace->threads) : 1;
}

static mlff_status check_arguments(const mlff_model *model, const mlff_workspace *workspace,
                                   const mlff_structure *structure, const mlff_result *result, mlff_error *error) {
    if (model == NULL) return mlff_fail(error, MLFF_ERROR_INVALID_ARGUMENT, "mlff_compute: model is NULL");
    if (workspace == NULL) return mlff_fail(error, MLFF_ERROR_INVALID_ARGUMENT, "mlff_compute: workspace is NULL");
    if (structure == NULL) return mlff_fail(error, MLFF_ERROR_INVALID_ARGUMENT, "mlff_compute: structure is NULL");
    if (result == NULL || result->replica_energies == NULL)
        return mlff_fail(error, MLFF_ERROR_INVALID_ARGUMENT, "mlff_compute: result->replica_energies is NULL");
    if (structure->num_atoms < 0)
        return mlff_fail(error, MLFF_ERROR_INVALID_ARGUMENT, "mlff_compute: num_atoms is %d, expected >= 0",
                         structure->num_atoms);
    if (structure->num_atoms > 0 && structure->atomic_numbers == NULL)
        return mlff_fail(error, MLFF_ERROR_INVALID_ARGUMENT, "mlff_compute: atomic_numbers is NULL");
    int max_z = model->painn.max_atomic_number;
    for (int i = 0; i < structure->num_atoms; i++) {
        int z = structure->atomic_numbers[i];
        if (z < 0 || z > max_z)
            return mlff_fail(error, MLFF_ERROR_INVALID_ARGUMENT,
                             "atom %d has atomic number %d, but the model knows atomic numbers 0 to %d", i, z, max_z);
    }
    return MLFF_OK;
}

mlff_status mlff_compute(const mlff_model *model, mlff_workspace *workspace, const mlff_structure *structure,
                         mlff_result *result, mlff_error *error) {
    return mlff_compute_tabulated(model, NULL, workspace, structure, result, error);
}

mlff_status mlff_compute_tabulated(const mlff_model *model, const mlff_filter_table *table,
                                   mlff_workspace *workspace, const mlff_structure *structure, mlff_result *result,
                                   mlff_error *error) {
    mlff_status status = check_arguments(model, workspace, structure, result, error);
    if (status != MLFF_OK) return status;
    if (table != NULL) {
        status = mlff_filter_table_check_model(table, model, error);
        if (status != MLFF_OK) return status;
    }
    int N = structure->num_atoms;

    /* the neighbour search checks replicas, positions and the box */
    status = mlff_neighbor_list_build(&workspace->neighbors, structure, model->painn.cutoff, error);
    if (status != MLFF_OK) return status;
    const mlff_pair *pairs = workspace->neighbors.pairs;
    size_t P = workspace->neighbors.count;
    for (size_t p = 0; p < P; p++)
        if (pairs[p].d == 0.0)
            return mlff_fail(error, MLFF_ERROR_INVALID_ARGUMENT,
                             "atoms %d and %d are at the same position: the model is undefined there", pairs[p].i,
                             pairs[p].j);

    double *atom_energies = result->atom_energies;
    if (atom_energies == NULL) {
        if ((size_t)N > workspace->atom_capacity) {
            double *grown = realloc(workspace->atom_energies, (size_t)N * sizeof(double));
            if (grown == NULL)
                return mlff_fail(error, MLFF_ERROR_OUT_OF_MEMORY, "out of memory for the energies of %d atoms", N);
            workspace->atom_energies = grown;
            workspace->atom_capacity = (size_t)N;
        }
        atom_energies = workspace->atom_energies;
    }

    mlff_atom_order *order = &workspace->order;
    status = mlff_atom_order_build(order, structure, pairs, P, error);
    if (status != MLFF_OK) return status;
    if (!order->reordered) {
        status = mlff_painn_evaluate(&model->painn, table, structure->atomic_numbers, N, pairs, P, atom_energies,
                                     result->forces, &workspace->network, workspace->threads, error);
    } else {
        double *forces = result->forces != NULL ? order->forces : NULL;
        status = mlff_painn_evaluate(&model->painn, table, order->atomic_numbers, N, order->pairs, P,
                                     order->atom_energies, forces, &workspace->network, workspace->threads, error);
        for (int place = 0; status == MLFF_OK && place < N; place++) {
            int atom = order->atom_at[place];
            atom_energies[atom] = order->atom_energies[place];
            if (forces != NULL)
                for (int k = 0; k < 3; k++) result->forces[(size_t)atom * 3 + k] = forces[(size_t)place * 3 + k];
        }
    }
    mlff_thread_pool_rest(workspace->threads); /* the caller goes on without them: no spinning */
    if (status != MLFF_OK) return status;

    for (int r = 0; r < structure->num_replicas; r++) result->replica_energies[r] = 0.0;
    for (int i = 0; i < N; i++)
        result->replica_energies[structure->replicas != NULL ? structure->replicas[i] : 0] += atom_energies[i];
    return MLFF_OK;
}
