// test_atom_order.cpp: the core's own order of the atoms (atom_order.h). Small structures keep
// theirs; a large one's atoms go along space, by replica, and its pairs are relabelled to the new
// places: the same pairs, i < j, sorted. Through mlff_compute, every atom gets its own energy and
// force back: a structure and a shuffled copy of it give each atom the same numbers, to the bit
// (both reach the network in the same order), on one thread or two.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>
#include <numeric>
#include <random>
#include <tuple>
#include <vector>

extern "C" {
#include "atom_order.h"
#include "neighbors.h"
}
#include "test_support.h"

namespace {

const double CUTOFF = 5.0;

struct OrderDeleter {
    void operator()(mlff_atom_order *order) const {
        mlff_atom_order_clear(order);
        delete order;
    }
};
using OrderPtr = std::unique_ptr<mlff_atom_order, OrderDeleter>;

struct Ordered {
    mlff_neighbor_list list{};
    OrderPtr order{new mlff_atom_order{}};
    ~Ordered() { mlff_neighbor_list_clear(&list); }
};

// The structure's pairs and its order; fails the test on an error.
void build(Ordered *out, const mlff_test::Structure &structure) {
    const mlff_structure view = structure.view();
    mlff_error error{};
    ASSERT_EQ(mlff_neighbor_list_build(&out->list, &view, CUTOFF, &error), MLFF_OK) << error.message;
    ASSERT_EQ(mlff_atom_order_build(out->order.get(), &view, out->list.pairs, out->list.count, &error), MLFF_OK)
            << error.message;
}

// The same atoms in another order: copy[k] is structure's atom perm[k].
mlff_test::Structure permuted(const mlff_test::Structure &structure, const std::vector<int> &perm) {
    mlff_test::Structure copy = structure;
    for (std::size_t k = 0; k < perm.size(); k++) {
        copy.atomic_numbers[k] = structure.atomic_numbers[perm[k]];
        for (int a = 0; a < 3; a++) copy.positions[k * 3 + a] = structure.positions[perm[k] * 3 + a];
        if (!structure.replicas.empty()) copy.replicas[k] = structure.replicas[perm[k]];
    }
    return copy;
}

std::vector<int> shuffled_indices(std::size_t n, std::uint64_t seed) {
    std::vector<int> perm(n);
    std::iota(perm.begin(), perm.end(), 0);
    std::mt19937_64 rng(seed);
    std::shuffle(perm.begin(), perm.end(), rng);
    return perm;
}

// 700 atoms at about water's density, shuffled: no spatial order in the structure's.
mlff_test::Structure shuffled_liquid(bool periodic) {
    mlff_test::Structure s = mlff_test::random_structure(700, 9, 19.0, 1.0, 5);
    if (periodic) s.box = {19, 0, 0, 0, 19, 0, 0, 0, 19};
    return permuted(s, shuffled_indices(700, 17));
}

TEST(AtomOrder, SmallStructuresAndSmallReplicasKeepTheirOrder) {
    Ordered small;
    build(&small, mlff_test::random_structure(MLFF_ATOM_ORDER_MIN_ATOMS, 9, 14.0, 1.0, 3));
    EXPECT_EQ(small.order->reordered, 0);

    // 600 atoms in 3 replicas of 200, one after the other, then interleaved (where no run shows it)
    mlff_test::Structure replicas = mlff_test::random_structure(600, 9, 18.0, 1.0, 4);
    replicas.num_replicas = 3;
    for (int i = 0; i < 600; i++) replicas.replicas.push_back(i / 200);
    Ordered in_runs;
    build(&in_runs, replicas);
    EXPECT_EQ(in_runs.order->reordered, 0);
    for (int i = 0; i < 600; i++) replicas.replicas[static_cast<std::size_t>(i)] = i % 3;
    Ordered interleaved;
    build(&interleaved, replicas);
    EXPECT_EQ(interleaved.order->reordered, 0);
}

void expect_an_order_along_space(bool periodic) {
    mlff_test::Structure structure = shuffled_liquid(periodic);
    // two replicas, interleaved: the second of 300 atoms, the first of 400
    structure.num_replicas = 2;
    for (int i = 0; i < 700; i++) structure.replicas.push_back(i % 7 < 3 ? 1 : 0);
    Ordered ordered;
    build(&ordered, structure);
    const mlff_atom_order &order = *ordered.order;
    ASSERT_EQ(order.reordered, 1);

    // a permutation and its inverse; replicas in runs, ascending
    std::vector<int> seen(700, 0);
    for (int place = 0; place < 700; place++) {
        int atom = order.atom_at[place];
        ASSERT_TRUE(atom >= 0 && atom < 700) << "place " << place;
        seen[atom]++;
        EXPECT_EQ(order.place_of[atom], place);
        EXPECT_EQ(order.atomic_numbers[place], structure.atomic_numbers[atom]);
        if (place > 0) {
            EXPECT_LE(structure.replicas[order.atom_at[place - 1]], structure.replicas[atom]);
        }
    }
    EXPECT_EQ(std::count(seen.begin(), seen.end(), 1), 700);

    // the same pairs, relabelled: i < j, sorted by (i, j), u = r_j - r_i
    const mlff_neighbor_list &list = ordered.list;
    std::map<std::pair<int, int>, const mlff_pair *> original;
    for (std::size_t p = 0; p < list.count; p++) original[{list.pairs[p].i, list.pairs[p].j}] = &list.pairs[p];
    std::vector<int> shuffled_spread, ordered_spread; // |i - j| of each pair
    for (std::size_t p = 0; p < list.count; p++) {
        const mlff_pair &pair = order.pairs[p];
        ASSERT_LT(pair.i, pair.j) << "pair " << p;
        if (p > 0) {
            ASSERT_LT(std::make_tuple(order.pairs[p - 1].i, order.pairs[p - 1].j), std::make_tuple(pair.i, pair.j));
        }
        int a = order.atom_at[pair.i], b = order.atom_at[pair.j];
        auto found = original.find({std::min(a, b), std::max(a, b)});
        ASSERT_NE(found, original.end()) << "pair " << p << " is no pair of the structure's";
        double sign = a < b ? 1.0 : -1.0;
        EXPECT_EQ(pair.d, found->second->d);
        for (int k = 0; k < 3; k++) EXPECT_EQ(pair.u[k], sign * found->second->u[k]);
        shuffled_spread.push_back(found->second->j - found->second->i);
        ordered_spread.push_back(pair.j - pair.i);
    }
    // the point of it: a pair's atoms near each other in memory (the median: with a box, the pairs
    // across its faces are far apart on the curve)
    auto median = [](std::vector<int> v) {
        std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(v.size() / 2), v.end());
        return v[v.size() / 2];
    };
    EXPECT_LT(4 * median(ordered_spread), median(shuffled_spread))
            << "the pairs' median |i - j|: " << median(ordered_spread) << " ordered, " << median(shuffled_spread)
            << " shuffled";
}

TEST(AtomOrder, ALargeStructuresAtomsGoAlongSpaceOpen) { expect_an_order_along_space(false); }
TEST(AtomOrder, ALargeStructuresAtomsGoAlongSpacePeriodic) { expect_an_order_along_space(true); }

struct Result {
    std::vector<double> atom_energies, forces;
};

Result compute(const mlff_model *model, const mlff_test::Structure &structure, int threads) {
    Result out;
    const std::size_t N = structure.atomic_numbers.size();
    out.atom_energies.assign(N, 0.0);
    out.forces.assign(3 * N, 0.0);
    std::vector<double> replica_energies(static_cast<std::size_t>(structure.num_replicas));
    mlff_test::WorkspacePtr workspace(mlff_workspace_create());
    mlff_error error{};
    EXPECT_EQ(mlff_workspace_set_num_threads(workspace.get(), threads, &error), MLFF_OK) << error.message;
    const mlff_structure view = structure.view();
    mlff_result result = {replica_energies.data(), out.atom_energies.data(), out.forces.data()};
    EXPECT_EQ(mlff_compute(model, workspace.get(), &view, &result, &error), MLFF_OK) << error.message;
    return out;
}

void expect_every_atom_its_own_numbers(bool periodic) {
    mlff_test::ModelSpec spec;
    spec.hidden = 16;
    mlff_test::ModelPtr model = mlff_test::random_model_or_fail(spec);
    ASSERT_TRUE(model);
    const mlff_test::Structure structure = shuffled_liquid(periodic);
    const std::vector<int> perm = shuffled_indices(700, 29);
    const mlff_test::Structure copy = permuted(structure, perm);
    const Result first = compute(model.get(), structure, 1);
    ASSERT_NE(first.forces[0], 0.0);
    for (int threads : {1, 2}) {
        SCOPED_TRACE(std::to_string(threads) + " threads");
        const Result second = compute(model.get(), copy, threads);
        for (std::size_t k = 0; k < perm.size(); k++) {
            EXPECT_EQ(second.atom_energies[k], first.atom_energies[perm[k]]) << "atom " << k;
            for (int a = 0; a < 3; a++) EXPECT_EQ(second.forces[k * 3 + a], first.forces[perm[k] * 3 + a]) << "atom " << k;
        }
    }
}

TEST(AtomOrder, ComputeGivesEveryAtomItsOwnEnergyAndForceOpen) { expect_every_atom_its_own_numbers(false); }
TEST(AtomOrder, ComputeGivesEveryAtomItsOwnEnergyAndForcePeriodic) { expect_every_atom_its_own_numbers(true); }

} // namespace
