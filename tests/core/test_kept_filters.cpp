// test_kept_filters.cpp: the filters kept from the forward for the backward (painn_network.c, where
// they fit) must give the energies and forces, to the bit, of filters recomputed in the backward,
// exact and tabulated, on one thread and on two, for structures of several chunks of pairs; and
// the kept run must have held them (its buffers the L P 4H doubles larger, 6H with a table: w and
// the hidden layer, or w and dw/dd). The tabulated case is smaller: tabulated filters are kept
// only while they take at most 2 MB.
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

extern "C" {
#include "model.h"
#include "neighbors.h"
#include "painn_network.h"
#include "thread_pool.h"
}
#include "test_support.h"

namespace {

struct Evaluation {
    std::vector<double> atom_energies, forces;
    std::size_t capacity = 0; // the buffers' doubles
};

Evaluation evaluate(const mlff_model *model, const mlff_filter_table *table, const mlff_neighbor_list &list,
                    const std::vector<int> &z, mlff_thread_pool *threads, bool recompute) {
    Evaluation out;
    const int N = static_cast<int>(z.size());
    out.atom_energies.assign(z.size(), 0.0);
    out.forces.assign(3 * z.size(), 0.0);
    mlff_painn_buffers buffers{};
    buffers.recompute_filters = recompute ? 1 : 0;
    mlff_error error{};
    for (int call = 0; call < 2; call++) // the second call reuses the grown buffers
        EXPECT_EQ(mlff_painn_evaluate(&model->painn, table, z.data(), N, list.pairs, list.count,
                                      out.atom_energies.data(), out.forces.data(), &buffers, threads, &error),
                  MLFF_OK)
                << error.message;
    out.capacity = buffers.capacity;
    mlff_painn_buffers_clear(&buffers);
    return out;
}

bool same_bits(const std::vector<double> &a, const std::vector<double> &b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(double)) == 0;
}

/** H channels, L = 3 blocks, `atoms` random atoms in a 16 Å cube (about 3,800 pairs for 300). */
void expect_kept_filters_give_the_bits_of_recomputed(bool tabulated, int H, int atoms) {
    const int L = 3;
    const mlff_test::ModelAndTable m = mlff_test::random_model_and_table_or_fail(H, L, tabulated);
    ASSERT_TRUE(m.model);
    const mlff_model *model = m.model.get();
    const mlff_filter_table *table = m.table.get();
    mlff_error error{};
    const mlff_test::Structure structure = mlff_test::random_structure(atoms, 9, 16.0, 0.9, 72);
    const mlff_structure view = structure.view();
    mlff_neighbor_list list{};
    ASSERT_EQ(mlff_neighbor_list_build(&list, &view, model->painn.cutoff, &error), MLFF_OK) << error.message;
    ASSERT_GT(list.count, 3u * 256u); // several chunks (256 pairs a thread), the last one short
    const std::size_t kept_a_pair = L * (tabulated ? 6 * H : 4 * H);
    if (tabulated) {
        ASSERT_LE(list.count * kept_a_pair * sizeof(double), 2u << 20); // within the tabulated limit
    }
    for (int num_threads : {1, 2}) {
        SCOPED_TRACE(std::to_string(num_threads) + " threads");
        mlff_thread_pool *threads = nullptr;
        if (num_threads > 1) {
            ASSERT_EQ(mlff_thread_pool_create(num_threads, &threads, &error), MLFF_OK) << error.message;
        }
        const Evaluation recomputed = evaluate(model, table, list, structure.atomic_numbers, threads, true);
        const Evaluation kept = evaluate(model, table, list, structure.atomic_numbers, threads, false);
        mlff_thread_pool_free(threads);
        ASSERT_NE(recomputed.forces[0], 0.0);
        EXPECT_EQ(kept.capacity - recomputed.capacity, list.count * kept_a_pair) << "the filters were not kept";
        EXPECT_TRUE(same_bits(kept.atom_energies, recomputed.atom_energies));
        EXPECT_TRUE(same_bits(kept.forces, recomputed.forces));
    }
    mlff_neighbor_list_clear(&list);
}

TEST(KeptFilters, GiveTheBitsOfFiltersRecomputedInTheBackwardExact) {
    expect_kept_filters_give_the_bits_of_recomputed(false, 16, 300);
}

TEST(KeptFilters, GiveTheBitsOfFiltersRecomputedInTheBackwardTabulated) {
    expect_kept_filters_give_the_bits_of_recomputed(true, 8, 160);
}

} // namespace
