// test_messages.cpp: the messages atom by atom (painn_messages.h) against the per-pair reference
// layers (mlff_message_forward, mlff_message_backward), to the bit: the edges grouped by receiver
// chunk by chunk, every edge once and in pair order within its group; the forward and backward
// over those groups, in any split of a chunk's edges among threads, adding what the reference adds.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <set>
#include <vector>

extern "C" {
#include "painn_layers.h"
#include "painn_messages.h"
}

namespace {

using Vector = std::vector<double>;

Vector random_vector(std::size_t n, std::mt19937_64 &rng) {
    std::uniform_real_distribution<double> uniform(-1.0, 1.0);
    Vector v(n);
    for (double &x : v) x = uniform(rng);
    return v;
}

// P pairs among N atoms in a shuffled order, as a cell list might give them (i < j in each),
// some atoms in many pairs, some in none.
std::vector<mlff_pair> random_pairs(int N, std::size_t P, std::mt19937_64 &rng) {
    std::uniform_int_distribution<int> atom(0, N - 1);
    std::uniform_real_distribution<double> uniform(-1.0, 1.0);
    std::vector<mlff_pair> pairs;
    while (pairs.size() < P) {
        int i = atom(rng) % (N / 2 + 1), j = atom(rng); // the first half of the atoms in more pairs
        if (i == j) continue;
        mlff_pair p{};
        p.i = std::min(i, j);
        p.j = std::max(i, j);
        for (int a = 0; a < 3; a++) p.u[a] = uniform(rng);
        p.d = std::sqrt(p.u[0] * p.u[0] + p.u[1] * p.u[1] + p.u[2] * p.u[2]);
        pairs.push_back(p);
    }
    return pairs;
}

struct Receivers {
    mlff_receivers r{};
    ~Receivers() { mlff_receivers_clear(&r); }
};

void expect_bitwise_equal(const Vector &expected, const Vector &actual, const char *what) {
    ASSERT_EQ(expected.size(), actual.size());
    for (std::size_t k = 0; k < expected.size(); k++)
        ASSERT_EQ(expected[k], actual[k]) << what << " [" << k << "]";
}

constexpr int N = 40, H = 8;
constexpr std::size_t P = 300, CHUNK = 64;

TEST(Receivers, EachChunksEdgesOnceGroupedByReceiverInPairOrder) {
    std::mt19937_64 rng(3);
    auto pairs = random_pairs(N, P, rng);
    Receivers receivers;
    mlff_error error;
    ASSERT_EQ(mlff_receivers_build(&receivers.r, pairs.data(), P, CHUNK, N, &error), MLFF_OK) << error.message;
    const mlff_receivers &r = receivers.r;
    ASSERT_EQ(r.chunks, (P + CHUNK - 1) / CHUNK);
    ASSERT_EQ(r.chunk_group[r.chunks], r.groups);
    for (std::size_t c = 0; c < r.chunks; c++) {
        std::size_t p0 = c * CHUNK, p1 = std::min(P, p0 + CHUNK);
        ASSERT_EQ(r.group_start[r.chunk_group[c]], (int)(2 * p0)) << "chunk " << c;
        std::multiset<std::pair<int, int>> expected, seen; // (receiver, pair from the chunk's first)
        for (std::size_t p = p0; p < p1; p++) {
            expected.insert({pairs[p].i, (int)(p - p0)});
            expected.insert({pairs[p].j, (int)(p - p0)});
        }
        std::set<int> atoms;
        for (std::size_t g = r.chunk_group[c]; g < r.chunk_group[c + 1]; g++) {
            int x = r.group_atom[g];
            EXPECT_TRUE(atoms.insert(x).second) << "atom " << x << " in two groups of chunk " << c;
            ASSERT_LT(r.group_start[g], r.group_start[g + 1]) << "empty group " << g;
            for (int e = r.group_start[g]; e < r.group_start[g + 1]; e++) {
                int p = r.edge_pair[e];
                const mlff_pair &pair = pairs[p0 + (std::size_t)p];
                EXPECT_TRUE(pair.i == x || pair.j == x) << "edge " << e << " does not reach atom " << x;
                if (e > r.group_start[g]) {
                    EXPECT_LT(r.edge_pair[e - 1], p) << "group " << g << " out of pair order";
                }
                seen.insert({x, p});
            }
        }
        EXPECT_EQ(seen, expected) << "chunk " << c;
    }
}

TEST(Receivers, NoPairs) {
    Receivers receivers;
    mlff_error error;
    ASSERT_EQ(mlff_receivers_build(&receivers.r, nullptr, 0, CHUNK, N, &error), MLFF_OK) << error.message;
    EXPECT_EQ(receivers.r.groups, 0u);
    EXPECT_EQ(receivers.r.chunks, 0u);
}

// Splits of a chunk's edges among "threads": one share, and shares that cut groups anywhere.
std::vector<std::size_t> splits(std::size_t edges, std::mt19937_64 &rng) {
    std::vector<std::size_t> cuts = {0};
    std::uniform_int_distribution<std::size_t> step(1, 23);
    for (std::size_t e = step(rng); e < edges; e += step(rng)) cuts.push_back(e);
    cuts.push_back(edges);
    return cuts;
}

TEST(MessagesByReceiver, ForwardAddsWhatThePerPairForwardAdds) {
    std::mt19937_64 rng(5);
    auto pairs = random_pairs(N, P, rng);
    Vector s_in = random_vector(N * H, rng), v_in = random_vector(N * 3 * H, rng), w = random_vector(P * 3 * H, rng);
    Vector s_start = random_vector(N * H, rng), v_start = random_vector(N * 3 * H, rng);
    Vector s_expected = s_start, v_expected = v_start;
    for (std::size_t p0 = 0; p0 < P; p0 += CHUNK) // chunk by chunk, as the network calls it
        mlff_message_forward(s_expected.data(), v_expected.data(), s_in.data(), v_in.data(), w.data() + p0 * 3 * H,
                             pairs.data() + p0, std::min(CHUNK, P - p0), H);

    Receivers receivers;
    mlff_error error;
    ASSERT_EQ(mlff_receivers_build(&receivers.r, pairs.data(), P, CHUNK, N, &error), MLFF_OK) << error.message;
    for (bool one_share : {true, false}) {
        Vector s_out = s_start, v_out = v_start;
        for (std::size_t c = 0, p0 = 0; p0 < P; c++, p0 += CHUNK) {
            std::size_t edges = 2 * std::min(CHUNK, P - p0);
            auto cuts = one_share ? std::vector<std::size_t>{0, edges} : splits(edges, rng);
            for (std::size_t k = 0; k + 1 < cuts.size(); k++)
                mlff_message_forward_received(s_out.data(), v_out.data(), s_in.data(), v_in.data(), w.data() + p0 * 3 * H,
                                              pairs.data() + p0, &receivers.r, c, cuts[k], cuts[k + 1], H);
        }
        expect_bitwise_equal(s_expected, s_out, "s_out");
        expect_bitwise_equal(v_expected, v_out, "v_out");
    }
}

TEST(MessagesByReceiver, BackwardGivesWhatThePerPairBackwardGives) {
    std::mt19937_64 rng(7);
    auto pairs = random_pairs(N, P, rng);
    Vector s_in = random_vector(N * H, rng), v_in = random_vector(N * 3 * H, rng), w = random_vector(P * 3 * H, rng);
    Vector gs_out = random_vector(N * H, rng), gv_out = random_vector(N * 3 * H, rng);
    Vector gs_start = random_vector(N * H, rng), gv_start = random_vector(N * 3 * H, rng);
    Vector gn_start = random_vector(P * 3, rng);
    Vector gs_expected = gs_start, gv_expected = gv_start, gw_expected(P * 3 * H), gn_expected = gn_start;
    for (std::size_t p0 = 0; p0 < P; p0 += CHUNK)
        mlff_message_backward(gs_expected.data(), gv_expected.data(), gw_expected.data() + p0 * 3 * H,
                              gn_expected.data() + p0 * 3, gs_out.data(), gv_out.data(), s_in.data(), v_in.data(),
                              w.data() + p0 * 3 * H, pairs.data() + p0, std::min(CHUNK, P - p0), H);

    Receivers receivers;
    mlff_error error;
    ASSERT_EQ(mlff_receivers_build(&receivers.r, pairs.data(), P, CHUNK, N, &error), MLFF_OK) << error.message;
    Vector gs_in = gs_start, gv_in = gv_start, gw(P * 3 * H, -1.0), gn = gn_start;
    for (std::size_t c = 0, p0 = 0; p0 < P; c++, p0 += CHUNK) {
        std::size_t count = std::min(CHUNK, P - p0);
        for (std::size_t begin = 0; begin < count; begin += 17) // the pairs' part in shares too
            mlff_message_backward_pairs(gw.data() + (p0 + begin) * 3 * H, gn.data() + (p0 + begin) * 3, gs_out.data(),
                                        gv_out.data(), s_in.data(), v_in.data(), w.data() + (p0 + begin) * 3 * H,
                                        pairs.data() + p0 + begin, std::min<std::size_t>(17, count - begin), H);
        auto cuts = splits(2 * count, rng);
        for (std::size_t k = 0; k + 1 < cuts.size(); k++)
            mlff_message_backward_received(gs_in.data(), gv_in.data(), gs_out.data(), gv_out.data(), w.data() + p0 * 3 * H,
                                           pairs.data() + p0, &receivers.r, c, cuts[k], cuts[k + 1], H);
    }
    expect_bitwise_equal(gs_expected, gs_in, "gs_in");
    expect_bitwise_equal(gv_expected, gv_in, "gv_in");
    expect_bitwise_equal(gw_expected, gw, "gw");
    expect_bitwise_equal(gn_expected, gn, "gn");
}

// v_in NULL (the first block's v = 0): the sums of v_in all +0, to the bit, with w_v1 not read
// (NaN there here) and dE/dw_v1 +0.
TEST(MessagesByReceiver, WithoutInputVectorsAsWithZeros) {
    std::mt19937_64 rng(9);
    auto pairs = random_pairs(N, P, rng);
    Vector s_in = random_vector(N * H, rng), zeros(N * 3 * H, 0.0), w = random_vector(P * 3 * H, rng);
    Vector w_nan_v1 = w;
    for (std::size_t p = 0; p < P; p++)
        for (int k = 0; k < H; k++) w_nan_v1[p * 3 * H + H + k] = std::nan("");
    Vector s_start = random_vector(N * H, rng), v_start(N * 3 * H, 0.0); // the residual: v = 0
    Receivers receivers;
    mlff_error error;
    ASSERT_EQ(mlff_receivers_build(&receivers.r, pairs.data(), P, CHUNK, N, &error), MLFF_OK) << error.message;
    Vector s_expected = s_start, v_expected = v_start, s_out = s_start, v_out = v_start;
    for (std::size_t c = 0, p0 = 0; p0 < P; c++, p0 += CHUNK) {
        std::size_t edges = 2 * std::min(CHUNK, P - p0);
        mlff_message_forward_received(s_expected.data(), v_expected.data(), s_in.data(), zeros.data(),
                                      w.data() + p0 * 3 * H, pairs.data() + p0, &receivers.r, c, 0, edges, H);
        mlff_message_forward_received(s_out.data(), v_out.data(), s_in.data(), nullptr, w_nan_v1.data() + p0 * 3 * H,
                                      pairs.data() + p0, &receivers.r, c, 0, edges, H);
    }
    ASSERT_EQ(std::memcmp(s_expected.data(), s_out.data(), s_out.size() * sizeof(double)), 0) << "s_out";
    ASSERT_EQ(std::memcmp(v_expected.data(), v_out.data(), v_out.size() * sizeof(double)), 0) << "v_out";

    Vector gs_out = random_vector(N * H, rng), gv_out = random_vector(N * 3 * H, rng);
    Vector gn_start = random_vector(P * 3, rng);
    Vector gw_expected(P * 3 * H, -1.0), gn_expected = gn_start, gw(P * 3 * H, -1.0), gn = gn_start;
    mlff_message_backward_pairs(gw_expected.data(), gn_expected.data(), gs_out.data(), gv_out.data(), s_in.data(),
                                zeros.data(), w.data(), pairs.data(), P, H);
    mlff_message_backward_pairs(gw.data(), gn.data(), gs_out.data(), gv_out.data(), s_in.data(), nullptr, w.data(),
                                pairs.data(), P, H);
    ASSERT_EQ(std::memcmp(gw_expected.data(), gw.data(), gw.size() * sizeof(double)), 0) << "gw";
    ASSERT_EQ(std::memcmp(gn_expected.data(), gn.data(), gn.size() * sizeof(double)), 0) << "gn";
}

} // namespace
