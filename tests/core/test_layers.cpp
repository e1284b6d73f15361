// test_layers.cpp: each layer's hand-written backward against central finite differences.
//
// Every check takes a scalar loss = sum(R * outputs) with random R, so the backward fed
// with gradient R must give d(loss)/d(input) for every input value.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <random>
#include <vector>

#include "test_support.h"

extern "C" {
#include "painn_layers.h"
}

namespace {

using Vector = std::vector<double>;

Vector random_vector(std::size_t n, std::mt19937_64 &rng, double scale = 1.0) {
    std::uniform_real_distribution<double> uniform(-scale, scale);
    Vector v(n);
    for (double &x : v) x = uniform(rng);
    return v;
}

double dot(const Vector &a, const Vector &b) {
    double sum = 0.0;
    for (std::size_t k = 0; k < a.size(); k++) sum += a[k] * b[k];
    return sum;
}

// Compares `analytic` with central differences of `loss` over every entry of `x`.
void expect_gradient(const char *what, Vector &x, const Vector &analytic, const std::function<double()> &loss) {
    ASSERT_EQ(x.size(), analytic.size()) << what;
    const double h = 1e-6;
    double worst = 0.0;
    for (std::size_t k = 0; k < x.size(); k++) {
        double saved = x[k];
        x[k] = saved + h;
        double plus = loss();
        x[k] = saved - h;
        double minus = loss();
        x[k] = saved;
        double numeric = (plus - minus) / (2 * h);
        double error = std::fabs(numeric - analytic[k]) / std::max(1.0, std::fabs(numeric));
        worst = std::max(worst, error);
        EXPECT_LT(error, 1e-7) << what << " entry " << k << ": analytic " << analytic[k] << ", numeric " << numeric;
    }
    ::testing::Test::RecordProperty(what, std::to_string(worst));
}

// Pairs among N atoms with random displacements of length in [1, 4.5] Å (cutoff 5).
std::vector<mlff_pair> random_pairs(int N, std::mt19937_64 &rng) {
    std::vector<mlff_pair> pairs;
    std::uniform_real_distribution<double> uniform(-1.0, 1.0), length(1.0, 4.5);
    for (int i = 0; i < N; i++)
        for (int j = i + 1; j < N; j++) {
            mlff_pair p{};
            p.i = i;
            p.j = j;
            double u[3] = {uniform(rng), uniform(rng), uniform(rng)};
            double norm = std::sqrt(u[0] * u[0] + u[1] * u[1] + u[2] * u[2]), d = length(rng);
            for (int a = 0; a < 3; a++) p.u[a] = u[a] / norm * d;
            p.d = d;
            pairs.push_back(p);
        }
    return pairs;
}

void set_displacement(mlff_pair &pair, const double *u) {
    for (int a = 0; a < 3; a++) pair.u[a] = u[a];
    pair.d = std::sqrt(u[0] * u[0] + u[1] * u[1] + u[2] * u[2]);
}

class LayerTest : public ::testing::Test {
protected:
    void SetUp() override {
        mlff_test::ModelSpec spec;
        spec.hidden = 8;
        spec.rbf = 5;
        spec.blocks = 1;
        spec.seed = 7;
        model_ = mlff_test::random_model_or_fail(spec);
        ASSERT_TRUE(model_);
        painn_ = mlff_model_student_painn(model_.get());
        H = painn_->hidden_channels;
        K = painn_->num_rbf;
        scratch_.assign(MLFF_PAINN_SCRATCH(H, K), 0.0);
    }
    mlff_test::ModelPtr model_;
    const mlff_student_painn *painn_ = nullptr;
    int H = 0, K = 0;
    Vector scratch_;
    std::mt19937_64 rng_{2024};
};

TEST_F(LayerTest, RadialBasisBackward) {
    auto pairs = random_pairs(4, rng_);
    std::size_t P = pairs.size();
    Vector R = random_vector(P * K, rng_), e(P * K), d(P), gd(P, 0.0);
    auto loss = [&] {
        for (std::size_t p = 0; p < P; p++) pairs[p].d = d[p];
        mlff_rbf_forward(e.data(), pairs.data(), P, painn_);
        return dot(R, e);
    };
    for (std::size_t p = 0; p < P; p++) d[p] = pairs[p].d;
    loss();
    mlff_rbf_backward(gd.data(), R.data(), pairs.data(), P, painn_);
    expect_gradient("rbf d", d, gd, loss);
}

TEST_F(LayerTest, RadialBasisVanishesAtAndBeyondTheCutoff) {
    mlff_pair pairs[2] = {};
    pairs[0].d = painn_->cutoff;        // an edge (<=) whose basis is zero
    pairs[1].d = painn_->cutoff + 0.5;
    Vector e(2 * K, 1.0);
    mlff_rbf_forward(e.data(), pairs, 2, painn_);
    for (double value : e) EXPECT_NEAR(value, 0.0, 1e-30);
}

TEST_F(LayerTest, FilterBackward) {
    const std::size_t P = 3;
    const mlff_student_painn_block *block = &painn_->blocks[0];
    Vector e = random_vector(P * K, rng_), R = random_vector(P * 3 * H, rng_), w(P * 3 * H), hidden(P * H);
    auto loss = [&] {
        mlff_filter_forward(w.data(), hidden.data(), scratch_.data(), e.data(), P, block, H, K, 1);
        return dot(R, w);
    };
    loss();
    Vector ge(P * K, 0.0);
    mlff_filter_backward(ge.data(), scratch_.data(), R.data(), hidden.data(), P, block, H, K);
    expect_gradient("filter e", e, ge, loss);
}

// The first block's filters without w_v1 (it multiplies v = 0 there): w_s and w_v2 those of the
// whole product to the bit, w_v1 0. 11 pairs: a whole tile of rows and part of one.
TEST_F(LayerTest, FilterForwardWithoutV1) {
    const std::size_t P = 11;
    const mlff_student_painn_block *block = &painn_->blocks[0];
    Vector e = random_vector(P * K, rng_), w(P * 3 * H), hidden(P * H), without(P * 3 * H, -7.0), hidden2(P * H);
    mlff_filter_forward(w.data(), hidden.data(), scratch_.data(), e.data(), P, block, H, K, 1);
    mlff_filter_forward(without.data(), hidden2.data(), scratch_.data(), e.data(), P, block, H, K, 0);
    EXPECT_EQ(hidden, hidden2);
    for (std::size_t p = 0; p < P; p++)
        for (int o = 0; o < 3 * H; o++) {
            const double expected = o >= H && o < 2 * H ? 0.0 : w[p * 3 * H + o];
            ASSERT_EQ(without[p * 3 * H + o], expected) << "pair " << p << ", output " << o;
        }
}

TEST_F(LayerTest, MessageBackward) {
    const int N = 4;
    auto pairs = random_pairs(N, rng_);
    std::size_t P = pairs.size();
    Vector s_in = random_vector(N * H, rng_), v_in = random_vector(N * 3 * H, rng_), w = random_vector(P * 3 * H, rng_);
    Vector Rs = random_vector(N * H, rng_), Rv = random_vector(N * 3 * H, rng_);
    Vector u(P * 3);
    for (std::size_t p = 0; p < P; p++)
        for (int a = 0; a < 3; a++) u[p * 3 + a] = pairs[p].u[a];
    auto loss = [&] {
        for (std::size_t p = 0; p < P; p++) set_displacement(pairs[p], &u[p * 3]);
        Vector s_out(N * H, 0.0), v_out(N * 3 * H, 0.0);
        mlff_message_forward(s_out.data(), v_out.data(), s_in.data(), v_in.data(), w.data(), pairs.data(), P, H);
        return dot(Rs, s_out) + dot(Rv, v_out);
    };
    Vector gs_in(N * H, 0.0), gv_in(N * 3 * H, 0.0), gw(P * 3 * H), gn(P * 3, 0.0), gu(P * 3, 0.0), gd(P, 0.0);
    mlff_message_backward(gs_in.data(), gv_in.data(), gw.data(), gn.data(), Rs.data(), Rv.data(), s_in.data(),
                          v_in.data(), w.data(), pairs.data(), P, H);
    mlff_geometry_backward(gu.data(), gd.data(), gn.data(), pairs.data(), P); // u reaches the messages through n alone
    expect_gradient("message s_in", s_in, gs_in, loss);
    expect_gradient("message v_in", v_in, gv_in, loss);
    expect_gradient("message w", w, gw, loss);
    expect_gradient("message u", u, gu, loss);
}

TEST_F(LayerTest, UpdateBackward) {
    const int N = 3;
    const mlff_student_painn_block *block = &painn_->blocks[0];
    Vector s_mid = random_vector(N * H, rng_), v_mid = random_vector(N * 3 * H, rng_);
    Vector Rs = random_vector(N * H, rng_), Rv = random_vector(N * 3 * H, rng_);
    Vector hidden(N * H), gates(N * 3 * H);
    auto loss = [&] {
        Vector s_out(N * H), v_out(N * 3 * H);
        mlff_update_forward(s_out.data(), v_out.data(), hidden.data(), gates.data(), scratch_.data(), s_mid.data(),
                            v_mid.data(), N, block, H);
        return dot(Rs, s_out) + dot(Rv, v_out);
    };
    loss();
    Vector gs_mid(N * H, 0.0), gv_mid(N * 3 * H, 0.0);
    mlff_update_backward(gs_mid.data(), gv_mid.data(), scratch_.data(), Rs.data(), Rv.data(), v_mid.data(),
                         hidden.data(), gates.data(), N, block, H);
    expect_gradient("update s_mid", s_mid, gs_mid, loss);
    expect_gradient("update v_mid", v_mid, gv_mid, loss);
}

TEST_F(LayerTest, UpdateGradientOfTheNormIsZeroAtZeroVectors) {
    // |v| has no epsilon: at v = 0 its gradient is taken as 0 (as PyTorch does), never NaN.
    const int N = 1;
    const mlff_student_painn_block *block = &painn_->blocks[0];
    Vector s_mid = random_vector(N * H, rng_), v_mid(N * 3 * H, 0.0), hidden(N * H), gates(N * 3 * H);
    Vector s_out(N * H), v_out(N * 3 * H), Rs = random_vector(N * H, rng_), Rv = random_vector(N * 3 * H, rng_);
    mlff_update_forward(s_out.data(), v_out.data(), hidden.data(), gates.data(), scratch_.data(), s_mid.data(),
                        v_mid.data(), N, block, H);
    Vector gs_mid(N * H, 0.0), gv_mid(N * 3 * H, 0.0);
    mlff_update_backward(gs_mid.data(), gv_mid.data(), scratch_.data(), Rs.data(), Rv.data(), v_mid.data(),
                         hidden.data(), gates.data(), N, block, H);
    for (double g : gv_mid) EXPECT_TRUE(std::isfinite(g));
}

TEST_F(LayerTest, ReadoutBackward) {
    const int N = 3;
    Vector s = random_vector(N * H, rng_), R = random_vector(N, rng_), eps(N);
    auto loss = [&] {
        mlff_readout_forward(eps.data(), scratch_.data(), s.data(), N, painn_);
        return dot(R, eps);
    };
    Vector gs(N * H, 0.0);
    mlff_readout_backward(gs.data(), scratch_.data(), R.data(), s.data(), N, painn_);
    expect_gradient("readout s", s, gs, loss);
}

TEST_F(LayerTest, GeometryBackwardThroughTheDistance) {
    auto pairs = random_pairs(3, rng_);
    std::size_t P = pairs.size();
    Vector R = random_vector(P * K, rng_), e(P * K), u(P * 3);
    for (std::size_t p = 0; p < P; p++)
        for (int a = 0; a < 3; a++) u[p * 3 + a] = pairs[p].u[a];
    auto loss = [&] {
        for (std::size_t p = 0; p < P; p++) set_displacement(pairs[p], &u[p * 3]);
        mlff_rbf_forward(e.data(), pairs.data(), P, painn_);
        return dot(R, e);
    };
    loss();
    Vector gd(P, 0.0), gn(P * 3, 0.0), gu(P * 3, 0.0);
    mlff_rbf_backward(gd.data(), R.data(), pairs.data(), P, painn_);
    mlff_geometry_backward(gu.data(), gd.data(), gn.data(), pairs.data(), P);
    expect_gradient("geometry u", u, gu, loss);
}

} // namespace
