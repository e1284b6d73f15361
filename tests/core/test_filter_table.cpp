// test_filter_table.cpp: tabulated filters (docs/tabulated-filters.md): the table's layout and
// nodes, its interpolation error against the cubic Hermite bound, energies and forces of
// mlff_compute_tabulated against the exact path (random and seed models), forces against finite
// differences of the tabulated energy, the pair at exactly the cutoff, and bad arguments.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "test_support.h"

extern "C" {
#include "painn_layers.h"
}

namespace {

using mlff_test::Structure;
using mlff_test::pair_near_cutoff;
using Vector = std::vector<double>;

struct TableDeleter {
    void operator()(mlff_filter_table *table) const { mlff_filter_table_free(table); }
};
using TablePtr = std::unique_ptr<mlff_filter_table, TableDeleter>;

TablePtr make_table(const mlff_model *model, double spacing) {
    mlff_filter_table *table = nullptr;
    mlff_error error{};
    mlff_status status = mlff_filter_table_create(model, spacing, &table, &error);
    EXPECT_EQ(status, MLFF_OK) << error.message;
    return TablePtr(table);
}

// A random model whose basis is as narrow as the `original` seed model's (K = 20 Gaussians of
// width 0.25 Å over 5 Å), so that interpolation errors are of the seed models' size.
mlff_test::ModelSpec narrow_spec(std::uint64_t seed) {
    mlff_test::ModelSpec spec;
    spec.hidden = 16;
    spec.blocks = 3;
    spec.rbf = 20;
    spec.max_z = 9;
    spec.seed = seed;
    return spec;
}

// The exact filter network of block l at distance d: w (3H) and, if dw is given, dw/dd (3H) by
// the forward-mode derivative.
void exact_filter(const mlff_model *model, int l, double d, Vector *w, Vector *dw = nullptr) {
    const mlff_student_painn *painn = mlff_model_student_painn(model);
    const int H = painn->hidden_channels, K = painn->num_rbf;
    mlff_pair pair{};
    pair.i = 0;
    pair.j = 1;
    pair.u[0] = d;
    pair.d = d;
    Vector e(K), de(K), hidden(H), scratch(MLFF_PAINN_SCRATCH(H, K));
    w->assign(3 * H, 0.0);
    mlff_rbf_forward(e.data(), &pair, 1, painn);
    mlff_filter_forward(w->data(), hidden.data(), scratch.data(), e.data(), 1, &painn->blocks[l], H, K, 1);
    if (dw != nullptr) {
        dw->assign(3 * H, 0.0);
        mlff_rbf_tangent_forward(de.data(), &pair, 1, painn);
        mlff_filter_tangent_forward(dw->data(), scratch.data(), de.data(), hidden.data(), 1, &painn->blocks[l], H, K);
    }
}

void evaluate_table(const mlff_filter_table *table, int l, double d, Vector *w, Vector *dw) {
    int O = mlff_filter_table_num_outputs(table);
    w->assign(O, 0.0);
    dw->assign(O, 0.0);
    mlff_error error{};
    ASSERT_EQ(mlff_filter_table_evaluate(table, l, d, w->data(), dw->data(), &error), MLFF_OK) << error.message;
}

std::string sci(double x) {
    char text[32];
    std::snprintf(text, sizeof text, "%.3g", x);
    return text;
}

double max_abs(const Vector &v) {
    double m = 0.0;
    for (double x : v) m = std::max(m, std::fabs(x));
    return m;
}

double max_abs_difference(const Vector &a, const Vector &b) {
    EXPECT_EQ(a.size(), b.size());
    double m = 0.0;
    for (std::size_t k = 0; k < a.size() && k < b.size(); k++) m = std::max(m, std::fabs(a[k] - b[k]));
    return m;
}

struct Evaluation {
    double energy = 0.0;
    Vector forces;
};

// mlff_compute_tabulated (table may be null: the exact path); E summed over replicas.
Evaluation evaluate(const mlff_model *model, const mlff_filter_table *table, const Structure &structure) {
    Evaluation out;
    Vector replica_energies(structure.num_replicas, 0.0);
    out.forces.assign(structure.positions.size(), 0.0);
    mlff_test::WorkspacePtr workspace(mlff_workspace_create());
    mlff_structure view = structure.view();
    mlff_result result = {replica_energies.data(), nullptr, out.forces.data()};
    mlff_error error{};
    mlff_status status = mlff_compute_tabulated(model, table, workspace.get(), &view, &result, &error);
    EXPECT_EQ(status, MLFF_OK) << error.message;
    for (double e : replica_energies) out.energy += e;
    return out;
}

double energy_only(const mlff_model *model, const mlff_filter_table *table, const Structure &structure,
                   mlff_workspace *workspace) {
    Vector replica_energies(structure.num_replicas, 0.0);
    mlff_structure view = structure.view();
    mlff_result result = {replica_energies.data(), nullptr, nullptr};
    mlff_error error{};
    EXPECT_EQ(mlff_compute_tabulated(model, table, workspace, &view, &result, &error), MLFF_OK) << error.message;
    double sum = 0.0;
    for (double e : replica_energies) sum += e;
    return sum;
}

Structure random_molecule(int atoms, double side, std::uint64_t seed) {
    for (std::uint64_t attempt = 0;; attempt++) {
        Structure s = mlff_test::random_structure(atoms, 9, side, 0.9, seed + 1000 * attempt);
        if (!pair_near_cutoff(s, 5.0, 1e-3)) return s;
    }
}

// Tabulated against exact: |dE| / |E| and max |dF| / max |F|.
struct Deviation {
    double energy = 0.0, forces = 0.0;
};

Deviation deviation(const mlff_model *model, const mlff_filter_table *table, const Structure &s) {
    Evaluation exact = evaluate(model, nullptr, s), tabulated = evaluate(model, table, s);
    Deviation dev;
    dev.energy = std::fabs(tabulated.energy - exact.energy) / std::fabs(exact.energy);
    dev.forces = max_abs_difference(tabulated.forces, exact.forces) / max_abs(exact.forces);
    EXPECT_GT(max_abs(exact.forces), 1e-3) << "forces are too small for a relative comparison";
    return dev;
}

// ---------------------------------------------------------------------------------------
// Layout and nodes

TEST(FilterTable, Layout) {
    auto model = mlff_test::random_model_or_fail(narrow_spec(1));
    ASSERT_TRUE(model);
    auto table = make_table(model.get(), 0.01);
    ASSERT_TRUE(table);
    EXPECT_EQ(mlff_filter_table_num_blocks(table.get()), 3);
    EXPECT_EQ(mlff_filter_table_num_outputs(table.get()), 3 * 16);
    EXPECT_EQ(mlff_filter_table_num_nodes(table.get()), 501); // 5.0 / 0.01 = 500 intervals, not 501
    EXPECT_DOUBLE_EQ(mlff_filter_table_spacing(table.get()), 0.01);
    EXPECT_DOUBLE_EQ(mlff_filter_table_inv_spacing(table.get()), 100.0);
    EXPECT_EQ(mlff_filter_table_cutoff(table.get()), 5.0);
    for (int l = 0; l < 3; l++) {
        ASSERT_NE(mlff_filter_table_values(table.get(), l), nullptr);
        ASSERT_NE(mlff_filter_table_derivatives(table.get(), l), nullptr);
    }
    EXPECT_EQ(mlff_filter_table_values(table.get(), 3), nullptr);
    EXPECT_EQ(mlff_filter_table_values(table.get(), -1), nullptr);
    EXPECT_EQ(mlff_filter_table_derivatives(table.get(), 3), nullptr);

    // A spacing that doesn't divide the cutoff: ceil(5 / 0.3) = 17 equal intervals, a node at the cutoff.
    auto uneven = make_table(model.get(), 0.3);
    ASSERT_TRUE(uneven);
    EXPECT_EQ(mlff_filter_table_num_nodes(uneven.get()), 18);
    EXPECT_DOUBLE_EQ(mlff_filter_table_spacing(uneven.get()), 5.0 / 17);
    EXPECT_DOUBLE_EQ(mlff_filter_table_spacing(uneven.get()) * 17, 5.0);

    // 0: the default spacing.
    auto standard = make_table(model.get(), 0.0);
    ASSERT_TRUE(standard);
    EXPECT_DOUBLE_EQ(mlff_filter_table_spacing(standard.get()), MLFF_FILTER_TABLE_DEFAULT_SPACING);
    EXPECT_EQ(mlff_filter_table_num_nodes(standard.get()), 1001);
}

// Node values are the network's own filters; node derivatives agree with central differences of
// the network; interpolation at a node gives the node (to rounding), at the cutoff exactly.
TEST(FilterTable, NodesReproduceTheExactFilter) {
    auto model = mlff_test::random_model_or_fail(narrow_spec(2));
    ASSERT_TRUE(model);
    auto table = make_table(model.get(), 0.05);
    ASSERT_TRUE(table);
    const int O = mlff_filter_table_num_outputs(table.get()), nodes = mlff_filter_table_num_nodes(table.get());
    const double h = mlff_filter_table_spacing(table.get());
    ASSERT_EQ(nodes, 101);
    for (int l = 0; l < 3; l++) {
        const double *values = mlff_filter_table_values(table.get(), l);
        const double *derivatives = mlff_filter_table_derivatives(table.get(), l);
        double worst_value = 0.0, worst_derivative = 0.0, worst_interpolated = 0.0;
        for (int n = 0; n < nodes; n++) {
            double d = n == nodes - 1 ? 5.0 : n * h;
            Vector w, plus, minus, tw, tdw;
            exact_filter(model.get(), l, d, &w);
            for (int o = 0; o < O; o++) ASSERT_EQ(values[(size_t)n * O + o], w[o]) << "block " << l << " node " << n;
            if (n < nodes - 1) {
                // central differences inside (0, cutoff); one-sided at d = 0
                double step = 1e-6;
                exact_filter(model.get(), l, d + step, &plus);
                exact_filter(model.get(), l, n == 0 ? d : d - step, &minus);
                for (int o = 0; o < O; o++) {
                    double numeric = (plus[o] - minus[o]) / (n == 0 ? step : 2 * step);
                    worst_derivative = std::max(worst_derivative, std::fabs(numeric - derivatives[(size_t)n * O + o]));
                }
            }
            evaluate_table(table.get(), l, d, &tw, &tdw);
            for (int o = 0; o < O; o++) {
                worst_value = std::max(worst_value, std::fabs(w[o]));
                worst_interpolated = std::max(worst_interpolated, std::fabs(tw[o] - w[o]) +
                                                                      std::fabs(tdw[o] - derivatives[(size_t)n * O + o]));
            }
        }
        EXPECT_LT(worst_derivative, 2e-5) << "block " << l << ": node derivatives against finite differences";
        EXPECT_LT(worst_interpolated, 1e-12 * std::max(1.0, worst_value)) << "block " << l;

        // Exactly at the cutoff (an edge with e = 0): the last node, bit for bit.
        Vector w, tw, tdw;
        exact_filter(model.get(), l, 5.0, &w);
        evaluate_table(table.get(), l, 5.0, &tw, &tdw);
        for (int o = 0; o < O; o++) {
            EXPECT_EQ(tw[o], w[o]);
            EXPECT_EQ(tdw[o], derivatives[(size_t)(nodes - 1) * O + o]);
            EXPECT_EQ(tdw[o], 0.0); // de/dd = 0 at the cutoff
        }
    }
}

// The forward-mode derivative used for the node derivatives, against finite differences at
// random distances (away from nodes, independent of the table).
TEST(FilterTable, TangentForwardMatchesFiniteDifferences) {
    auto model = mlff_test::random_model_or_fail(narrow_spec(3));
    ASSERT_TRUE(model);
    std::mt19937_64 rng(3);
    std::uniform_real_distribution<double> distance(0.05, 4.95);
    for (int trial = 0; trial < 20; trial++) {
        double d = distance(rng), step = 1e-6;
        for (int l = 0; l < 3; l++) {
            Vector w, dw, plus, minus;
            exact_filter(model.get(), l, d, &w, &dw);
            exact_filter(model.get(), l, d + step, &plus);
            exact_filter(model.get(), l, d - step, &minus);
            for (std::size_t o = 0; o < w.size(); o++)
                EXPECT_NEAR(dw[o], (plus[o] - minus[o]) / (2 * step), 1e-7 * std::max(1.0, std::fabs(dw[o])))
                    << "d " << d << " block " << l << " output " << o;
        }
    }
}

// Off the nodes the error obeys the cubic Hermite bound |w - p| <= h^4 / 384 max|w''''|
// (max|w''''| estimated by fourth differences of the exact filter) and shrinks as h^4.
TEST(FilterTable, InterpolationErrorObeysTheHermiteBound) {
    auto model = mlff_test::random_model_or_fail(narrow_spec(4));
    ASSERT_TRUE(model);
    const double coarse = 0.04;
    auto table = make_table(model.get(), coarse), finer = make_table(model.get(), coarse / 2);
    ASSERT_TRUE(table && finer);
    for (int l = 0; l < 3; l++) {
        // max |w''''| over [0, cutoff], per output, from fourth differences with step 0.01 Å
        const double s = 0.01;
        double fourth = 0.0;
        std::vector<Vector> grid;
        for (int k = 0; k <= 500; k++) {
            Vector w;
            exact_filter(model.get(), l, std::min(k * s, 5.0), &w);
            grid.push_back(w);
        }
        for (int k = 2; k + 2 <= 500; k++)
            for (std::size_t o = 0; o < grid[k].size(); o++) {
                double diff = grid[k - 2][o] - 4 * grid[k - 1][o] + 6 * grid[k][o] - 4 * grid[k + 1][o] + grid[k + 2][o];
                fourth = std::max(fourth, std::fabs(diff) / std::pow(s, 4));
            }
        double bound = std::pow(coarse, 4) / 384 * fourth;

        double error = 0.0, error_finer = 0.0;
        for (int k = 0; k < 2000; k++) {
            double d = (k + 0.37) * 5.0 / 2000;
            Vector w, tw, tdw, fw, fdw;
            exact_filter(model.get(), l, d, &w);
            evaluate_table(table.get(), l, d, &tw, &tdw);
            evaluate_table(finer.get(), l, d, &fw, &fdw);
            error = std::max(error, max_abs_difference(tw, w));
            error_finer = std::max(error_finer, max_abs_difference(fw, w));
        }
        std::string summary = "block " + std::to_string(l) + ": error " + sci(error) + ", bound " + sci(bound) +
                              ", error at h/2 " + sci(error_finer);
        SCOPED_TRACE(summary);
        RecordProperty("block" + std::to_string(l), summary);
        EXPECT_LE(error, 1.05 * bound);
        EXPECT_GT(error, 0.0);
        double ratio = error / error_finer; // 16 for an h^4 method
        EXPECT_GT(ratio, 10.0);
        EXPECT_LT(ratio, 24.0);
    }
}

// The table layer's backward: gd += gw . dw/dd, against central differences in d.
TEST(FilterTable, TableBackwardMatchesFiniteDifferences) {
    auto model = mlff_test::random_model_or_fail(narrow_spec(5));
    ASSERT_TRUE(model);
    auto table = make_table(model.get(), 0.1);
    ASSERT_TRUE(table);
    const int O = mlff_filter_table_num_outputs(table.get());
    std::mt19937_64 rng(5);
    std::uniform_real_distribution<double> distance(0.01, 4.99), uniform(-1.0, 1.0);
    const std::size_t P = 12;
    std::vector<mlff_pair> pairs(P);
    Vector R(P * O);
    for (double &r : R) r = uniform(rng);
    for (std::size_t p = 0; p < P; p++) {
        pairs[p].i = 0;
        pairs[p].j = 1;
        pairs[p].d = pairs[p].u[0] = distance(rng);
    }
    for (int l = 0; l < 3; l++) {
        Vector w(P * O), dw(P * O), gd(P, 0.5); // gd starts non-zero: the backward accumulates
        mlff_filter_table_forward(w.data(), dw.data(), pairs.data(), P, table.get(), l, 1);
        mlff_filter_table_backward(gd.data(), R.data(), dw.data(), P, O / 3, 1);
        for (std::size_t p = 0; p < P; p++) {
            auto loss = [&](double d) {
                mlff_pair q = pairs[p];
                q.d = q.u[0] = d;
                Vector out(O);
                mlff_filter_table_forward(out.data(), nullptr, &q, 1, table.get(), l, 1);
                double sum = 0.0;
                for (int o = 0; o < O; o++) sum += R[p * O + o] * out[o];
                return sum;
            };
            double step = 1e-6, numeric = (loss(pairs[p].d + step) - loss(pairs[p].d - step)) / (2 * step);
            EXPECT_NEAR(gd[p] - 0.5, numeric, 1e-7 * std::max(1.0, std::fabs(numeric))) << "block " << l << " pair " << p;
        }
    }
}

// The table layer's backward sums each pair's terms in output order, whether it takes the pair in
// a group of four or alone: to the bit against the plain ordered sum, with and without w_v1.
TEST(FilterTable, TableBackwardSumsInOutputOrder) {
    const int H = 8, O = 3 * H;
    const std::size_t P = 7; // a group of four, then three alone
    std::mt19937_64 rng(11);
    std::uniform_real_distribution<double> uniform(-1.0, 1.0);
    Vector gw(P * O), dw(P * O);
    for (double &x : gw) x = uniform(rng) * std::pow(10.0, 8.0 * uniform(rng)); // magnitudes apart: order shows
    for (double &x : dw) x = uniform(rng);
    for (int with_v1 : {1, 0}) {
        Vector gd(P, 0.25), expected(P, 0.25);
        mlff_filter_table_backward(gd.data(), gw.data(), dw.data(), P, H, with_v1);
        for (std::size_t p = 0; p < P; p++) {
            double sum = 0.0;
            for (int o = 0; o < O; o++)
                if (with_v1 || o < H || o >= 2 * H) sum += gw[p * O + o] * dw[p * O + o];
            expected[p] += sum;
        }
        for (std::size_t p = 0; p < P; p++)
            ASSERT_EQ(std::memcmp(&gd[p], &expected[p], sizeof(double)), 0) << "pair " << p << ", with_v1 " << with_v1;
    }
}

// Without w_v1 (the first block's, which multiplies v = 0): w_v1 and its dw/dd are 0, the other
// outputs the same to the bit, and the backward's sum leaves w_v1's terms out.
TEST(FilterTable, TableWithoutV1) {
    auto model = mlff_test::random_model_or_fail(narrow_spec(5));
    ASSERT_TRUE(model);
    auto table = make_table(model.get(), 0.1);
    ASSERT_TRUE(table);
    const int O = mlff_filter_table_num_outputs(table.get()), H = O / 3;
    std::mt19937_64 rng(7);
    std::uniform_real_distribution<double> distance(0.01, 4.99), uniform(-1.0, 1.0);
    const std::size_t P = 9;
    std::vector<mlff_pair> pairs(P);
    for (std::size_t p = 0; p < P; p++) {
        pairs[p].i = 0;
        pairs[p].j = 1;
        pairs[p].d = pairs[p].u[0] = p + 1 < P ? distance(rng) : 5.0; // the last at the cutoff: the last node
    }
    Vector w(P * O), dw(P * O), without(P * O, -7.0), dw_without(P * O, -7.0);
    mlff_filter_table_forward(w.data(), dw.data(), pairs.data(), P, table.get(), 0, 1);
    mlff_filter_table_forward(without.data(), dw_without.data(), pairs.data(), P, table.get(), 0, 0);
    for (std::size_t p = 0; p < P; p++)
        for (int o = 0; o < O; o++) {
            const bool v1 = o >= H && o < 2 * H;
            ASSERT_EQ(without[p * O + o], v1 ? 0.0 : w[p * O + o]) << "pair " << p << ", output " << o;
            ASSERT_EQ(dw_without[p * O + o], v1 ? 0.0 : dw[p * O + o]) << "pair " << p << ", output " << o;
        }
    Vector R(P * O), R_without_v1(P * O);
    for (std::size_t k = 0; k < P * O; k++) {
        R[k] = uniform(rng);
        R_without_v1[k] = k % O >= (std::size_t)H && k % O < (std::size_t)2 * H ? 0.0 : R[k];
    }
    Vector gd(P, 0.5), expected(P, 0.5);
    mlff_filter_table_backward(gd.data(), R.data(), dw.data(), P, H, 0); // w_v1's terms left out, though not 0 here
    mlff_filter_table_backward(expected.data(), R_without_v1.data(), dw.data(), P, H, 1);
    EXPECT_EQ(gd, expected);
}

// ---------------------------------------------------------------------------------------
// Energies and forces

TEST(FilterTableCompute, NullTableIsTheExactPath) {
    auto model = mlff_test::random_model_or_fail(narrow_spec(6));
    ASSERT_TRUE(model);
    Structure s = random_molecule(10, 6.0, 6);
    double energy = 0.0;
    Vector forces;
    ASSERT_TRUE(mlff_test::compute_energy_forces(model.get(), s, &energy, &forces));
    Evaluation null_table = evaluate(model.get(), nullptr, s);
    EXPECT_EQ(null_table.energy, energy);
    EXPECT_EQ(null_table.forces, forces);
}

TEST(FilterTableCompute, RandomModelsMatchTheExactPath) {
    for (std::uint64_t seed : {7u, 8u, 9u}) {
        auto model = mlff_test::random_model_or_fail(narrow_spec(seed));
        ASSERT_TRUE(model);
        auto table = make_table(model.get(), 0.0); // the default spacing
        ASSERT_TRUE(table);
        for (int atoms : {3, 9, 24}) {
            Structure s = random_molecule(atoms, atoms == 3 ? 3.0 : 7.0, 100 * seed + atoms);
            SCOPED_TRACE("seed " + std::to_string(seed) + ", " + std::to_string(atoms) + " atoms");
            Deviation dev = deviation(model.get(), table.get(), s);
            EXPECT_LT(dev.energy, 1e-6);
            EXPECT_LT(dev.forces, 1e-5);
            RecordProperty("seed" + std::to_string(seed) + "_atoms" + std::to_string(atoms) + "_energy",
                           sci(dev.energy));
            RecordProperty("seed" + std::to_string(seed) + "_atoms" + std::to_string(atoms) + "_forces",
                           sci(dev.forces));
        }
    }
}

TEST(FilterTableCompute, PeriodicBoxAndReplicasMatchTheExactPath) {
    auto model = mlff_test::random_model_or_fail(narrow_spec(10));
    ASSERT_TRUE(model);
    auto table = make_table(model.get(), 0.0);
    ASSERT_TRUE(table);
    Structure s = random_molecule(24, 11.0, 10);
    s.box = {11, 0, 0, 3, 10.5, 0, -4, 2.5, 10.2};
    Deviation periodic = deviation(model.get(), table.get(), s);
    EXPECT_LT(periodic.energy, 1e-6);
    EXPECT_LT(periodic.forces, 1e-5);

    Structure replicas = random_molecule(16, 6.0, 11);
    replicas.num_replicas = 2;
    for (int i = 0; i < 16; i++) replicas.replicas.push_back(i % 2);
    Deviation batched = deviation(model.get(), table.get(), replicas);
    EXPECT_LT(batched.energy, 1e-6);
    EXPECT_LT(batched.forces, 1e-5);
}

// With a coarse table the tabulated path differs visibly from the exact one, and its forces are
// the derivative of its own energy, not of the exact energy.
TEST(FilterTableCompute, ForcesAreTheDerivativeOfTheTabulatedEnergy) {
    auto model = mlff_test::random_model_or_fail(narrow_spec(12));
    ASSERT_TRUE(model);
    auto table = make_table(model.get(), 0.25);
    ASSERT_TRUE(table);
    Structure s = random_molecule(8, 5.0, 12);
    Evaluation exact = evaluate(model.get(), nullptr, s), tabulated = evaluate(model.get(), table.get(), s);
    double scale = max_abs(tabulated.forces);
    ASSERT_GT(scale, 1e-3);
    EXPECT_GT(max_abs_difference(tabulated.forces, exact.forces) / scale, 1e-5) << "the coarse table is too good to tell";

    mlff_test::WorkspacePtr workspace(mlff_workspace_create());
    const double step = 1e-5;
    double worst = 0.0;
    for (std::size_t k = 0; k < s.positions.size(); k++) {
        Structure moved = s;
        moved.positions[k] = s.positions[k] + step;
        double plus = energy_only(model.get(), table.get(), moved, workspace.get());
        moved.positions[k] = s.positions[k] - step;
        double minus = energy_only(model.get(), table.get(), moved, workspace.get());
        worst = std::max(worst, std::fabs(-(plus - minus) / (2 * step) - tabulated.forces[k]));
    }
    EXPECT_LT(worst / std::max(1.0, scale), 1e-7) << "tabulated forces against central differences of the tabulated energy";
}

// A pair at exactly the cutoff is an edge with e = 0: the table's last node reproduces it bit for bit.
TEST(FilterTableCompute, PairAtExactlyTheCutoff) {
    auto model = mlff_test::random_model_or_fail(narrow_spec(13));
    ASSERT_TRUE(model);
    auto table = make_table(model.get(), 0.3);
    ASSERT_TRUE(table);
    Structure dimer;
    dimer.atomic_numbers = {3, 5};
    dimer.positions = {0.0, 0.0, 0.0, 5.0, 0.0, 0.0};
    Evaluation exact = evaluate(model.get(), nullptr, dimer), tabulated = evaluate(model.get(), table.get(), dimer);
    EXPECT_EQ(tabulated.energy, exact.energy);
    EXPECT_EQ(tabulated.forces, exact.forces);

    Structure apart = dimer; // beyond the cutoff: no edge
    apart.positions[3] = 5.0 + 1e-9;
    Evaluation exact_apart = evaluate(model.get(), nullptr, apart), tabulated_apart = evaluate(model.get(), table.get(), apart);
    EXPECT_EQ(tabulated_apart.energy, exact_apart.energy);
    EXPECT_NE(tabulated_apart.energy, tabulated.energy);
}

TEST(FilterTableCompute, SeedModelsMatchTheExactPath) {
    MLFF_SKIP_WITHOUT_SHARED();
    std::vector<mlff_test::GoldenCase> cases;
    std::string error;
    ASSERT_TRUE(mlff_test::read_golden(&cases, &error)) << error;
    ASSERT_FALSE(cases.empty());
    for (const std::string name : {"original", "tiny", "ultra_tiny"}) {
        auto model = mlff_test::load_model_file_or_fail(mlff_test::seed_model_path(name));
        ASSERT_TRUE(model);
        auto table = make_table(model.get(), 0.0);
        ASSERT_TRUE(table);
        for (const auto &golden : cases) { // every geometry, whichever model the golden values are for
            if (golden.model != "original") continue;
            Structure s;
            s.atomic_numbers = golden.atomic_numbers;
            s.positions = golden.positions;
            SCOPED_TRACE(name + "/" + golden.geometry);
            Deviation dev = deviation(model.get(), table.get(), s);
            EXPECT_LT(dev.energy, 1e-6);
            EXPECT_LT(dev.forces, 1e-5);
            RecordProperty(name + "_" + golden.geometry + "_energy", sci(dev.energy));
            RecordProperty(name + "_" + golden.geometry + "_forces", sci(dev.forces));
            std::printf("%-10s %-10s |dE|/|E| %.3g  max|dF|/max|F| %.3g\n", name.c_str(), golden.geometry.c_str(),
                        dev.energy, dev.forces);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Errors

TEST(FilterTableErrors, BadSpacing) {
    auto model = mlff_test::random_model_or_fail(narrow_spec(14));
    ASSERT_TRUE(model);
    for (double spacing : {-0.01, 5.01, 1e-9, std::numeric_limits<double>::quiet_NaN(),
                           std::numeric_limits<double>::infinity(), -std::numeric_limits<double>::infinity()}) {
        mlff_filter_table *table = reinterpret_cast<mlff_filter_table *>(&spacing); // a sentinel: must become NULL
        mlff_error error{};
        EXPECT_EQ(mlff_filter_table_create(model.get(), spacing, &table, &error), MLFF_ERROR_INVALID_ARGUMENT)
            << "spacing " << spacing;
        EXPECT_EQ(table, nullptr);
        EXPECT_EQ(error.status, MLFF_ERROR_INVALID_ARGUMENT);
        EXPECT_NE(std::string(error.message).find("spacing"), std::string::npos) << error.message;
    }
    // the whole cutoff as one interval is allowed
    auto one = make_table(model.get(), 5.0);
    ASSERT_TRUE(one);
    EXPECT_EQ(mlff_filter_table_num_nodes(one.get()), 2);
}

TEST(FilterTableErrors, NullArguments) {
    auto model = mlff_test::random_model_or_fail(narrow_spec(15));
    ASSERT_TRUE(model);
    mlff_filter_table *table = nullptr;
    mlff_error error{};
    EXPECT_EQ(mlff_filter_table_create(nullptr, 0.0, &table, &error), MLFF_ERROR_INVALID_ARGUMENT);
    EXPECT_EQ(table, nullptr);
    EXPECT_EQ(mlff_filter_table_create(model.get(), 0.0, nullptr, &error), MLFF_ERROR_INVALID_ARGUMENT);
    EXPECT_EQ(mlff_filter_table_create(model.get(), 0.0, &table, nullptr), MLFF_OK); // error is optional
    mlff_filter_table_free(table);
    mlff_filter_table_free(nullptr);
    EXPECT_EQ(mlff_filter_table_num_nodes(nullptr), 0);
    EXPECT_EQ(mlff_filter_table_values(nullptr, 0), nullptr);
}

TEST(FilterTableErrors, EvaluateOutOfRange) {
    auto model = mlff_test::random_model_or_fail(narrow_spec(16));
    ASSERT_TRUE(model);
    auto table = make_table(model.get(), 0.1);
    ASSERT_TRUE(table);
    Vector w(48), dw(48);
    mlff_error error{};
    for (double d : {-1e-12, 5.0 + 1e-12, std::numeric_limits<double>::quiet_NaN()}) {
        EXPECT_EQ(mlff_filter_table_evaluate(table.get(), 0, d, w.data(), dw.data(), &error),
                  MLFF_ERROR_INVALID_ARGUMENT) << d;
        EXPECT_NE(std::string(error.message).find("distance"), std::string::npos) << error.message;
    }
    EXPECT_EQ(mlff_filter_table_evaluate(table.get(), 3, 1.0, w.data(), dw.data(), &error), MLFF_ERROR_INVALID_ARGUMENT);
    EXPECT_NE(std::string(error.message).find("block 3"), std::string::npos) << error.message;
    EXPECT_EQ(mlff_filter_table_evaluate(table.get(), 0, 1.0, nullptr, dw.data(), &error), MLFF_ERROR_INVALID_ARGUMENT);
    EXPECT_EQ(mlff_filter_table_evaluate(table.get(), 0, 1.0, w.data(), nullptr, &error), MLFF_OK); // dw/dd optional
}

TEST(FilterTableErrors, TableOfAnotherModel) {
    auto model = mlff_test::random_model_or_fail(narrow_spec(17));
    auto same_shape = mlff_test::random_model_or_fail(narrow_spec(18));
    mlff_test::ModelSpec smaller = narrow_spec(17);
    smaller.hidden = 8;
    auto other_shape = mlff_test::random_model_or_fail(smaller);
    ASSERT_TRUE(model && same_shape && other_shape);
    Structure s = random_molecule(5, 4.0, 17);
    for (const mlff_model *other : {same_shape.get(), other_shape.get()}) {
        auto table = make_table(other, 0.1);
        ASSERT_TRUE(table);
        Vector energies(1), forces(15);
        mlff_test::WorkspacePtr workspace(mlff_workspace_create());
        mlff_structure view = s.view();
        mlff_result result = {energies.data(), nullptr, forces.data()};
        mlff_error error{};
        EXPECT_EQ(mlff_compute_tabulated(model.get(), table.get(), workspace.get(), &view, &result, &error),
                  MLFF_ERROR_INVALID_ARGUMENT);
        EXPECT_NE(std::string(error.message).find("not made from this model"), std::string::npos) << error.message;
    }
}

} // namespace
