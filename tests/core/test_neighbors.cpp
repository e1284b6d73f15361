// test_neighbors: the core's neighbour search (core/src/neighbors.c) against an independent
// O(N^2) reference that tries the periodic images explicitly, plus exact edge cases, the
// error messages, reuse of the list, and a structure too large for brute force.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

extern "C" {
#include "neighbors.h"
}

namespace {

// ------------------------------------------------------------------------------------------
// Structures and the reference search

struct Structure {
    std::vector<double> positions; // (N, 3) Å
    std::vector<int> replicas;     // (N) or empty: all in replica 0
    int num_replicas = 1;
    std::vector<double> box;       // (9) rows a, b, c, or empty: not periodic

    int size() const { return (int)(positions.size() / 3); }
    void add(double x, double y, double z, int replica = 0) {
        positions.insert(positions.end(), {x, y, z});
        if (!replicas.empty() || replica != 0) {
            replicas.resize((size_t)size() - 1, 0);
            replicas.push_back(replica);
        }
    }
    mlff_structure view() const {
        mlff_structure s{};
        s.num_atoms = size();
        s.positions = positions.empty() ? nullptr : positions.data();
        s.atomic_numbers = nullptr;
        s.replicas = replicas.empty() ? nullptr : replicas.data();
        s.num_replicas = num_replicas;
        s.box = box.empty() ? nullptr : box.data();
        return s;
    }
};

struct Pair {
    int i, j;
    double u[3];
    double d;
};

int replica_of(const Structure &s, int atom) { return s.replicas.empty() ? 0 : s.replicas[(size_t)atom]; }

// Every pair i < j of one replica; with a box, each of the 27 images n in [-1, 1]^3 of the
// displacement after shifting it to fractional coordinates in [-1/2, 1/2]. That is enough: an
// image within cutoff <= min(ax, by, cz)/2 has fractional coordinates below 0.67 in magnitude
// in any reduced box (|f_k| <= cutoff / height_k, and height_a >= ax*by*cz / |b x c| with
// |bx|, |cx| <= ax/2, |cy| <= by/2). Asserts that at most one image is within the cutoff: the
// minimum image is then well defined.
std::vector<Pair> reference_pairs(const Structure &s, double cutoff) {
    std::vector<Pair> pairs;
    const double *box = s.box.empty() ? nullptr : s.box.data();
    int N = s.size();
    for (int i = 0; i < N; i++)
        for (int j = i + 1; j < N; j++) {
            if (replica_of(s, i) != replica_of(s, j)) continue;
            double u[3];
            for (int k = 0; k < 3; k++) u[k] = s.positions[(size_t)j * 3 + k] - s.positions[(size_t)i * 3 + k];
            if (box == nullptr) {
                double d = std::sqrt(u[0] * u[0] + u[1] * u[1] + u[2] * u[2]);
                if (d <= cutoff) pairs.push_back({i, j, {u[0], u[1], u[2]}, d});
                continue;
            }
            // fractional coordinates (r = f0 a + f1 b + f2 c), then shift by whole box vectors
            double f2 = u[2] / box[8], f1 = (u[1] - f2 * box[7]) / box[4],
                   f0 = (u[0] - f1 * box[3] - f2 * box[6]) / box[0];
            double shift[3] = {std::round(f0), std::round(f1), std::round(f2)};
            for (int k = 0; k < 3; k++) u[k] -= shift[0] * box[k] + shift[1] * box[3 + k] + shift[2] * box[6 + k];
            int found = 0;
            for (int n0 = -1; n0 <= 1; n0++)
                for (int n1 = -1; n1 <= 1; n1++)
                    for (int n2 = -1; n2 <= 1; n2++) {
                        double v[3];
                        for (int k = 0; k < 3; k++) v[k] = u[k] + n0 * box[k] + n1 * box[3 + k] + n2 * box[6 + k];
                        double d = std::sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]);
                        if (d <= cutoff) {
                            found++;
                            pairs.push_back({i, j, {v[0], v[1], v[2]}, d});
                        }
                    }
            EXPECT_LE(found, 1) << "atoms " << i << " and " << j << " have several images within the cutoff";
        }
    return pairs;
}

std::vector<Pair> build_or_fail(mlff_neighbor_list *list, const Structure &s, double cutoff) {
    mlff_structure view = s.view();
    mlff_error error{};
    mlff_status status = mlff_neighbor_list_build(list, &view, cutoff, &error);
    EXPECT_EQ(status, MLFF_OK) << error.message;
    if (status != MLFF_OK) return {};
    std::vector<Pair> pairs;
    for (size_t p = 0; p < list->count; p++) {
        const mlff_pair &q = list->pairs[p];
        pairs.push_back({q.i, q.j, {q.u[0], q.u[1], q.u[2]}, q.d});
    }
    return pairs;
}

// The documented order: by replica, then strictly increasing (i, j); i < j, same replica,
// d = |u| <= cutoff.
void expect_well_formed(const Structure &s, const std::vector<Pair> &pairs, double cutoff) {
    for (size_t p = 0; p < pairs.size(); p++) {
        const Pair &q = pairs[p];
        ASSERT_GE(q.i, 0);
        ASSERT_LT(q.i, q.j) << "pair " << p;
        ASSERT_LT(q.j, s.size()) << "pair " << p;
        ASSERT_EQ(replica_of(s, q.i), replica_of(s, q.j)) << "pair " << p << " crosses replicas";
        ASSERT_LE(q.d, cutoff) << "pair " << p;
        ASSERT_EQ(q.d, std::sqrt(q.u[0] * q.u[0] + q.u[1] * q.u[1] + q.u[2] * q.u[2])) << "pair " << p;
        if (p > 0) {
            const Pair &r = pairs[p - 1];
            auto key = [&](const Pair &x) { return std::make_tuple(replica_of(s, x.i), x.i, x.j); };
            ASSERT_LT(key(r), key(q)) << "pairs " << p - 1 << " and " << p << " are out of order";
        }
    }
}

// The same set of pairs as the reference, with the same u and d (to rounding).
void expect_matches_reference(mlff_neighbor_list *list, const Structure &s, double cutoff, double tolerance = 1e-9) {
    std::vector<Pair> found = build_or_fail(list, s, cutoff);
    expect_well_formed(s, found, cutoff);
    std::vector<Pair> expected = reference_pairs(s, cutoff);
    std::sort(found.begin(), found.end(), [](const Pair &a, const Pair &b) {
        return std::make_pair(a.i, a.j) < std::make_pair(b.i, b.j);
    });
    size_t a = 0, b = 0;
    int reported = 0;
    while ((a < found.size() || b < expected.size()) && reported < 10) {
        bool take_found = b == expected.size() ||
                          (a < found.size() && std::make_pair(found[a].i, found[a].j) <
                                                   std::make_pair(expected[b].i, expected[b].j));
        bool take_expected = a == found.size() ||
                             (b < expected.size() && std::make_pair(expected[b].i, expected[b].j) <
                                                         std::make_pair(found[a].i, found[a].j));
        if (take_found) {
            ADD_FAILURE() << "extra pair (" << found[a].i << ", " << found[a].j << ") at d = " << found[a].d;
            reported++, a++;
        } else if (take_expected) {
            ADD_FAILURE() << "missing pair (" << expected[b].i << ", " << expected[b].j << ") at d = " << expected[b].d;
            reported++, b++;
        } else {
            for (int k = 0; k < 3; k++)
                if (!(std::fabs(found[a].u[k] - expected[b].u[k]) <= tolerance)) {
                    ADD_FAILURE() << "pair (" << found[a].i << ", " << found[a].j << "): u[" << k
                                  << "] = " << found[a].u[k] << ", reference " << expected[b].u[k];
                    reported++;
                }
            if (!(std::fabs(found[a].d - expected[b].d) <= tolerance)) {
                ADD_FAILURE() << "pair (" << found[a].i << ", " << found[a].j << "): d = " << found[a].d
                              << ", reference " << expected[b].d;
                reported++;
            }
            a++, b++;
        }
    }
    EXPECT_EQ(found.size(), expected.size());
}

struct ListGuard {
    mlff_neighbor_list list{};
    ~ListGuard() { mlff_neighbor_list_clear(&list); }
};

// Atoms uniform in a cube [origin, origin + side)^3.
Structure random_cloud(int n, double side, std::uint64_t seed, double origin = 0.0) {
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<double> x(origin, origin + side);
    Structure s;
    for (int a = 0; a < n; a++) s.add(x(rng), x(rng), x(rng));
    return s;
}

// Atoms uniform in the box (random fractional coordinates), optionally moved by whole box
// vectors up to `images` in each direction.
Structure random_in_box(int n, const std::vector<double> &box, std::uint64_t seed, int images = 0) {
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<double> f(0.0, 1.0);
    std::uniform_int_distribution<int> shift(-images, images);
    Structure s;
    s.box = box;
    for (int a = 0; a < n; a++) {
        double g[3] = {f(rng), f(rng), f(rng)};
        for (int k = 0; k < 3; k++) g[k] += shift(rng);
        s.add(g[0] * box[0] + g[1] * box[3] + g[2] * box[6], g[1] * box[4] + g[2] * box[7], g[2] * box[8]);
    }
    return s;
}

std::vector<double> reduced_box(double ax, double bx, double by, double cx, double cy, double cz) {
    return {ax, 0, 0, bx, by, 0, cx, cy, cz};
}

// Expects `status` INVALID_ARGUMENT with `text` in the message, and an emptied list.
void expect_error(const Structure &s, double cutoff, const std::string &text,
                  mlff_status expected = MLFF_ERROR_INVALID_ARGUMENT) {
    ListGuard g;
    // a previous good build, so that the failed one must empty the list
    Structure good = random_cloud(10, 3.0, 99);
    build_or_fail(&g.list, good, 5.0);
    ASSERT_GT(g.list.count, 0u);
    mlff_structure view = s.view();
    mlff_error error{};
    EXPECT_EQ(mlff_neighbor_list_build(&g.list, &view, cutoff, &error), expected);
    EXPECT_EQ(error.status, expected);
    EXPECT_NE(std::string(error.message).find(text), std::string::npos)
        << "message \"" << error.message << "\" lacks \"" << text << "\"";
    EXPECT_EQ(g.list.count, 0u);
    // and without an error struct: same status, no crash
    EXPECT_EQ(mlff_neighbor_list_build(&g.list, &view, cutoff, nullptr), expected);
}

// ------------------------------------------------------------------------------------------
// Trivial structures

TEST(Neighbors, ZeroAtomsGiveNoPairs) {
    ListGuard g;
    Structure s;
    EXPECT_TRUE(build_or_fail(&g.list, s, 5.0).empty());
    s.box = reduced_box(20, 0, 20, 0, 0, 20);
    EXPECT_TRUE(build_or_fail(&g.list, s, 5.0).empty());
}

TEST(Neighbors, SingleAtomGivesNoPairs) {
    ListGuard g;
    Structure s;
    s.add(1, 2, 3);
    EXPECT_TRUE(build_or_fail(&g.list, s, 5.0).empty());
    s.box = reduced_box(10, 0, 10, 0, 0, 10);
    EXPECT_TRUE(build_or_fail(&g.list, s, 5.0).empty());
}

TEST(Neighbors, CoincidentAtomsArePairedAtDistanceZero) {
    ListGuard g;
    Structure s;
    s.add(1, 1, 1);
    s.add(1, 1, 1);
    std::vector<Pair> pairs = build_or_fail(&g.list, s, 5.0);
    ASSERT_EQ(pairs.size(), 1u);
    EXPECT_EQ(pairs[0].d, 0.0);
}

// ------------------------------------------------------------------------------------------
// Exact edges

TEST(Neighbors, PairAtExactlyTheCutoffIsIncluded) {
    ListGuard g;
    Structure s;
    s.add(1, 2, 3);
    s.add(4, 6, 3); // u = (3, 4, 0), d = 5 exactly
    s.add(1, 2, std::nextafter(8.0, 9.0)); // u = (0, 0, 5 + 2^-49) from atom 0: just beyond
    std::vector<Pair> pairs = build_or_fail(&g.list, s, 5.0);
    ASSERT_EQ(pairs.size(), 1u);
    EXPECT_EQ(pairs[0].i, 0);
    EXPECT_EQ(pairs[0].j, 1);
    EXPECT_EQ(pairs[0].u[0], 3.0);
    EXPECT_EQ(pairs[0].u[1], 4.0);
    EXPECT_EQ(pairs[0].u[2], 0.0);
    EXPECT_EQ(pairs[0].d, 5.0);
}

// The same pair across the periodic boundary, alone (brute force) and among 200 far atoms (cells).
TEST(Neighbors, PairAtExactlyTheCutoffAcrossTheBoundaryIsIncluded) {
    for (int filler : {0, 200}) {
        SCOPED_TRACE("filler atoms: " + std::to_string(filler));
        ListGuard g;
        Structure s;
        s.box = reduced_box(40, 0, 40, 0, 0, 40);
        s.add(1, 10, 10);
        s.add(38, 14, 10); // u = (38 - 40 - 1, 4, 0) = (-3, 4, 0)
        s.add(1, 10, std::nextafter(15.0, 16.0)); // just beyond the cutoff from atom 0
        // filler in the far half of the box, more than the cutoff from the three above
        std::mt19937_64 rng(7);
        std::uniform_real_distribution<double> x(0, 40), z(22, 38);
        for (int a = 0; a < filler; a++) s.add(x(rng), x(rng), z(rng));
        std::vector<Pair> pairs = build_or_fail(&g.list, s, 5.0);
        ASSERT_FALSE(pairs.empty());
        EXPECT_EQ(pairs[0].i, 0);
        EXPECT_EQ(pairs[0].j, 1);
        EXPECT_EQ(pairs[0].u[0], -3.0);
        EXPECT_EQ(pairs[0].u[1], 4.0);
        EXPECT_EQ(pairs[0].u[2], 0.0);
        EXPECT_EQ(pairs[0].d, 5.0);
        for (size_t p = 1; p < pairs.size(); p++)
            EXPECT_GE(pairs[p].i, 3) << "atom " << pairs[p].i << " paired with atom " << pairs[p].j;
        if (filler > 0) expect_matches_reference(&g.list, s, 5.0);
    }
}

// A simple cubic lattice with spacing equal to the cutoff: every bond is at d = cutoff exactly
// and atoms sit on multiples of the cutoff; the number of pairs is known exactly.
TEST(Neighbors, LatticeAtSpacingEqualToCutoff) {
    const int n = 12;
    const double spacing = 5.0;
    Structure open;
    for (int x = 0; x < n; x++)
        for (int y = 0; y < n; y++)
            for (int z = 0; z < n; z++) open.add(x * spacing, y * spacing, z * spacing);
    ListGuard g;
    std::vector<Pair> pairs = build_or_fail(&g.list, open, spacing);
    EXPECT_EQ(pairs.size(), (size_t)3 * n * n * (n - 1));
    for (const Pair &p : pairs) ASSERT_EQ(p.d, spacing);
    expect_matches_reference(&g.list, open, spacing);

    Structure periodic = open;
    periodic.box = reduced_box(n * spacing, 0, n * spacing, 0, 0, n * spacing);
    pairs = build_or_fail(&g.list, periodic, spacing);
    EXPECT_EQ(pairs.size(), (size_t)3 * n * n * n);
    for (const Pair &p : pairs) ASSERT_EQ(p.d, spacing);
    expect_matches_reference(&g.list, periodic, spacing);
}

// Atoms exactly on the box faces (fractional 0 and 1), just inside and just outside them.
TEST(Neighbors, AtomsOnTheBoxBoundary) {
    std::vector<double> box = reduced_box(30, 5, 28, -7, 9, 26);
    Structure s = random_in_box(300, box, 11);
    const double tiny = 1e-300;
    double edges[] = {0.0, -tiny, tiny, 1.0, std::nextafter(1.0, 0.0), std::nextafter(1.0, 2.0)};
    for (double f0 : edges)
        for (double f2 : edges) {
            double f1 = 0.37;
            s.add(f0 * box[0] + f1 * box[3] + f2 * box[6], f1 * box[4] + f2 * box[7], f2 * box[8]);
        }
    ListGuard g;
    expect_matches_reference(&g.list, s, 5.0);
    Structure small(s); // the same, pair by pair
    small.positions.resize(60 * 3);
    expect_matches_reference(&g.list, small, 5.0);
}

// ------------------------------------------------------------------------------------------
// Random structures against the reference

TEST(Neighbors, SmallCloudMatchesReference) {
    ListGuard g;
    for (std::uint64_t seed = 1; seed <= 20; seed++) {
        SCOPED_TRACE("seed " + std::to_string(seed));
        expect_matches_reference(&g.list, random_cloud(40, 8.0, seed, -3.0), 4.0);
    }
}

TEST(Neighbors, LargeCloudMatchesReference) {
    ListGuard g;
    // ~20 neighbours each; also shifted far from the origin
    expect_matches_reference(&g.list, random_cloud(3000, 40.0, 3), 5.0);
    expect_matches_reference(&g.list, random_cloud(3000, 40.0, 4, -1.0e6), 5.0, 1e-8);
}

// Two clusters a million Å apart, atoms scattered up to 1e9 Å, a close pair at 1e12 Å: cells
// stay small where the atoms are dense, and the far pair is still found.
TEST(Neighbors, HugeCoordinateSpreads) {
    Structure s = random_cloud(1500, 30.0, 5);
    Structure other = random_cloud(1500, 30.0, 6, 1.0e6);
    s.positions.insert(s.positions.end(), other.positions.begin(), other.positions.end());
    std::mt19937_64 rng(8);
    std::uniform_real_distribution<double> far(-1.0e9, 1.0e9);
    for (int a = 0; a < 100; a++) s.add(far(rng), far(rng), far(rng));
    s.add(1.0e12, -1.0e12, 1.0e12);
    s.add(1.0e12 + 1.0, -1.0e12, 1.0e12);
    s.add(-1.7e308, 1.7e308, 0.0);
    s.add(1.7e308, -1.7e308, 0.0);
    ListGuard g;
    std::vector<Pair> pairs = build_or_fail(&g.list, s, 5.0);
    bool far_pair = false;
    for (const Pair &p : pairs) far_pair |= p.i == 3100 && p.j == 3101;
    EXPECT_TRUE(far_pair);
    expect_matches_reference(&g.list, s, 5.0);
}

TEST(Neighbors, RectangularBoxMatchesReference) {
    ListGuard g;
    std::vector<double> box = reduced_box(31, 0, 27, 0, 0, 22);
    for (int n : {50, 1500}) {
        SCOPED_TRACE("atoms: " + std::to_string(n));
        expect_matches_reference(&g.list, random_in_box(n, box, 21 + (std::uint64_t)n), 5.0);
        expect_matches_reference(&g.list, random_in_box(n, box, 22 + (std::uint64_t)n), 11.0); // half of 22
    }
}

// Atoms anywhere up to 100 box lengths away: the same pairs as wrapped ones.
TEST(Neighbors, AtomsFarOutsideTheBoxAreWrapped) {
    ListGuard g;
    std::vector<double> box = reduced_box(30, -9, 29, 12, 14, 27);
    for (int n : {60, 2000}) {
        SCOPED_TRACE("atoms: " + std::to_string(n));
        Structure inside = random_in_box(n, box, 31);
        Structure outside = random_in_box(n, box, 31, 100);
        std::vector<Pair> wrapped = build_or_fail(&g.list, inside, 5.0);
        std::vector<Pair> unwrapped = build_or_fail(&g.list, outside, 5.0);
        ASSERT_EQ(wrapped.size(), unwrapped.size());
        for (size_t p = 0; p < wrapped.size(); p++) {
            ASSERT_EQ(wrapped[p].i, unwrapped[p].i);
            ASSERT_EQ(wrapped[p].j, unwrapped[p].j);
            for (int k = 0; k < 3; k++) ASSERT_NEAR(wrapped[p].u[k], unwrapped[p].u[k], 1e-9);
        }
        expect_matches_reference(&g.list, outside, 5.0);
    }
}

// Reduced-form boxes, random and at every limit |bx| = ax/2, |cx| = ax/2, |cy| = by/2, with
// cutoffs up to half the smallest of ax, by, cz: the reduced-form minimum image must find the
// one image within the cutoff that the reference finds by trying them all.
TEST(Neighbors, TriclinicBoxesMatchReference) {
    ListGuard g;
    std::mt19937_64 rng(41);
    std::uniform_real_distribution<double> length(24, 36), unit(-0.5, 0.5);
    int case_number = 0;
    for (int skew = 0; skew < 12; skew++) {
        double ax = length(rng), by = length(rng), cz = length(rng);
        double bx = unit(rng) * ax, cx = unit(rng) * ax, cy = unit(rng) * by;
        if (skew >= 4) { // the limits, each sign
            bx = (skew & 1 ? 0.5 : -0.5) * ax;
            cx = (skew & 2 ? 0.5 : -0.5) * ax;
            cy = (skew & 4 ? 0.5 : -0.5) * by;
        }
        std::vector<double> box = reduced_box(ax, bx, by, cx, cy, cz);
        double half = 0.5 * std::min(ax, std::min(by, cz));
        for (double cutoff : {5.0, half}) {
            for (int n : {60, 800}) {
                SCOPED_TRACE("case " + std::to_string(case_number++) + ": box (" + std::to_string(ax) + ", " +
                             std::to_string(bx) + ", " + std::to_string(by) + ", " + std::to_string(cx) + ", " +
                             std::to_string(cy) + ", " + std::to_string(cz) + "), cutoff " + std::to_string(cutoff) +
                             ", atoms " + std::to_string(n));
                expect_matches_reference(&g.list, random_in_box(n, box, 100 + (std::uint64_t)case_number, 3), cutoff);
            }
        }
    }
}

// A flat, strongly skewed box (ax much larger than by and cz), where the heights between faces
// are well below ax: cells must follow the true heights, not ax.
TEST(Neighbors, FlatSkewedBoxMatchesReference) {
    ListGuard g;
    std::vector<double> box = reduced_box(120, 60, 24, -60, 12, 21);
    expect_matches_reference(&g.list, random_in_box(1500, box, 51, 2), 5.0);
    expect_matches_reference(&g.list, random_in_box(1500, box, 52, 2), 10.5);
}

// ------------------------------------------------------------------------------------------
// Replicas

TEST(Neighbors, InterleavedReplicasNeverPairAcrossReplicas) {
    ListGuard g;
    // replicas 0..5: 1 and 4 empty, 3 has one atom, 0 and 5 small, 2 large (cells)
    std::mt19937_64 rng(61);
    std::vector<int> sizes = {30, 0, 900, 1, 0, 50};
    for (bool periodic : {false, true}) {
        SCOPED_TRACE(periodic ? "periodic" : "open");
        Structure s;
        s.num_replicas = (int)sizes.size();
        std::vector<int> labels;
        for (int r = 0; r < (int)sizes.size(); r++) labels.insert(labels.end(), (size_t)sizes[(size_t)r], r);
        std::shuffle(labels.begin(), labels.end(), rng); // interleaved in the atom order
        std::uniform_real_distribution<double> x(0, 25);
        for (int r : labels) s.add(x(rng), x(rng), x(rng), r);
        if (periodic) s.box = reduced_box(25, 3, 25, -4, 6, 25);
        expect_matches_reference(&g.list, s, 5.0);
    }
}

// The same positions in every replica: each replica gets the same pairs, shifted in index.
TEST(Neighbors, IdenticalReplicasGetIdenticalPairs) {
    ListGuard g;
    const int per_replica = 400, R = 3;
    Structure one = random_cloud(per_replica, 20.0, 71);
    std::vector<Pair> single = build_or_fail(&g.list, one, 5.0);
    Structure many;
    many.num_replicas = R;
    for (int a = 0; a < per_replica; a++)
        for (int r = 0; r < R; r++) // atom a of replica r has index a * R + r
            many.add(one.positions[(size_t)a * 3], one.positions[(size_t)a * 3 + 1], one.positions[(size_t)a * 3 + 2], r);
    std::vector<Pair> all = build_or_fail(&g.list, many, 5.0);
    ASSERT_EQ(all.size(), single.size() * R);
    for (int r = 0; r < R; r++)
        for (size_t p = 0; p < single.size(); p++) {
            const Pair &q = all[(size_t)r * single.size() + p];
            ASSERT_EQ(q.i, single[p].i * R + r);
            ASSERT_EQ(q.j, single[p].j * R + r);
            ASSERT_EQ(q.d, single[p].d);
        }
}

// Many more replicas than atoms (a sort without a per-replica array).
TEST(Neighbors, FarMoreReplicasThanAtoms) {
    ListGuard g;
    Structure s = random_cloud(200, 10.0, 81);
    s.num_replicas = 1000000;
    std::mt19937_64 rng(82);
    std::uniform_int_distribution<int> replica(0, 2);
    s.replicas.resize(200);
    for (int &r : s.replicas) r = replica(rng) * 333333 + 7;
    expect_matches_reference(&g.list, s, 5.0);
    s.num_replicas = 2147483647;
    for (int &r : s.replicas) r = replica(rng) == 0 ? 2147483646 : 0;
    expect_matches_reference(&g.list, s, 5.0);
}

// ------------------------------------------------------------------------------------------
// Reuse and determinism

TEST(Neighbors, ListIsReusedAcrossBuildsOfDifferentSizes) {
    ListGuard g;
    expect_matches_reference(&g.list, random_cloud(2000, 30.0, 91), 5.0);
    size_t capacity = g.list.capacity;
    expect_matches_reference(&g.list, random_cloud(10, 3.0, 92), 5.0);
    EXPECT_EQ(g.list.count, 45u);
    EXPECT_EQ(g.list.capacity, capacity) << "a smaller build should reuse the memory";
    expect_matches_reference(&g.list, Structure{}, 5.0);
    EXPECT_EQ(g.list.count, 0u);
    expect_matches_reference(&g.list, random_in_box(2500, reduced_box(30, 0, 30, 0, 0, 30), 93), 5.0);
    mlff_neighbor_list_clear(&g.list);
    EXPECT_EQ(g.list.pairs, nullptr);
    EXPECT_EQ(g.list.count, 0u);
    expect_matches_reference(&g.list, random_cloud(100, 8.0, 94), 5.0);
    mlff_neighbor_list_clear(&g.list);
    mlff_neighbor_list_clear(&g.list); // twice is harmless
}

TEST(Neighbors, SameInputGivesIdenticalList) {
    Structure s = random_in_box(3000, reduced_box(35, 10, 33, -8, 5, 31), 101, 4);
    ListGuard first, second;
    std::vector<Pair> a = build_or_fail(&first.list, s, 5.0);
    build_or_fail(&second.list, random_cloud(500, 9.0, 102), 5.0); // a different history
    std::vector<Pair> b = build_or_fail(&second.list, s, 5.0);
    ASSERT_EQ(a.size(), b.size());
    EXPECT_EQ(std::memcmp(first.list.pairs, second.list.pairs, a.size() * sizeof(mlff_pair)), 0);
}

// ------------------------------------------------------------------------------------------
// Linear cost: 201,600 atoms, about 2e10 pair checks by brute force (minutes even without
// sanitizers); with cells, a second or two. A lattice of spacing 3 and cutoff 5 has exactly 18
// neighbours per atom (6 at 3 Å, 12 at 3*sqrt(2) Å; the next shell is at 3*sqrt(3) > 5).
TEST(Neighbors, TwoHundredThousandAtomsInLinearTime) {
    const int nx = 60, ny = 60, nz = 56;
    const double spacing = 3.0;
    for (bool periodic : {true, false}) {
        SCOPED_TRACE(periodic ? "periodic" : "open");
        Structure s;
        s.positions.reserve((size_t)nx * ny * nz * 3);
        for (int x = 0; x < nx; x++)
            for (int y = 0; y < ny; y++)
                for (int z = 0; z < nz; z++) s.add(x * spacing, y * spacing, z * spacing);
        if (periodic) s.box = reduced_box(nx * spacing, 0, ny * spacing, 0, 0, nz * spacing);
        ListGuard g;
        std::vector<Pair> pairs = build_or_fail(&g.list, s, 5.0);
        expect_well_formed(s, pairs, 5.0);
        std::vector<int> degree((size_t)s.size(), 0);
        for (const Pair &p : pairs) {
            degree[(size_t)p.i]++, degree[(size_t)p.j]++;
            double d2 = p.d * p.d;
            ASSERT_TRUE(std::fabs(d2 - 9.0) < 1e-9 || std::fabs(d2 - 18.0) < 1e-9) << "d = " << p.d;
        }
        // expected degree: the 18 offsets that stay inside the lattice (all of them if periodic)
        for (int x = 0; x < nx; x++)
            for (int y = 0; y < ny; y++)
                for (int z = 0; z < nz; z++) {
                    int expected = 0;
                    for (int dx = -1; dx <= 1; dx++)
                        for (int dy = -1; dy <= 1; dy++)
                            for (int dz = -1; dz <= 1; dz++) {
                                int taxi = std::abs(dx) + std::abs(dy) + std::abs(dz);
                                if (taxi == 0 || taxi == 3) continue;
                                bool inside = x + dx >= 0 && x + dx < nx && y + dy >= 0 && y + dy < ny &&
                                              z + dz >= 0 && z + dz < nz;
                                expected += periodic || inside;
                            }
                    int atom = (x * ny + y) * nz + z;
                    ASSERT_EQ(degree[(size_t)atom], expected) << "atom " << atom;
                }
    }
}

// ------------------------------------------------------------------------------------------
// Bad input: a clear message naming the argument or atom

Structure three_atoms() {
    Structure s;
    s.add(0, 0, 0);
    s.add(1, 0, 0);
    s.add(0, 1, 0);
    return s;
}

TEST(NeighborsErrors, NullListOrStructure) {
    Structure s = three_atoms();
    mlff_structure view = s.view();
    mlff_error error{};
    EXPECT_EQ(mlff_neighbor_list_build(nullptr, &view, 5.0, &error), MLFF_ERROR_INVALID_ARGUMENT);
    EXPECT_NE(std::string(error.message).find("list is NULL"), std::string::npos) << error.message;
    ListGuard g;
    EXPECT_EQ(mlff_neighbor_list_build(&g.list, nullptr, 5.0, &error), MLFF_ERROR_INVALID_ARGUMENT);
    EXPECT_NE(std::string(error.message).find("structure is NULL"), std::string::npos) << error.message;
}

TEST(NeighborsErrors, Counts) {
    Structure s = three_atoms();
    mlff_structure view = s.view();
    view.num_atoms = -2;
    ListGuard g;
    mlff_error error{};
    EXPECT_EQ(mlff_neighbor_list_build(&g.list, &view, 5.0, &error), MLFF_ERROR_INVALID_ARGUMENT);
    EXPECT_NE(std::string(error.message).find("num_atoms is -2"), std::string::npos) << error.message;
    s.num_replicas = 0;
    expect_error(s, 5.0, "num_replicas is 0");
    s.num_replicas = -4;
    expect_error(s, 5.0, "num_replicas is -4");
}

TEST(NeighborsErrors, NullPositions) {
    Structure s = three_atoms();
    mlff_structure view = s.view();
    view.positions = nullptr;
    ListGuard g;
    mlff_error error{};
    EXPECT_EQ(mlff_neighbor_list_build(&g.list, &view, 5.0, &error), MLFF_ERROR_INVALID_ARGUMENT);
    EXPECT_NE(std::string(error.message).find("positions is NULL but num_atoms is 3"), std::string::npos)
        << error.message;
}

TEST(NeighborsErrors, ReplicaOutOfRange) {
    Structure s = three_atoms();
    s.num_replicas = 3;
    s.replicas = {0, 2, 3};
    expect_error(s, 5.0, "atom 2 has replica 3, outside [0, 3)");
    s.replicas = {0, -1, 1};
    expect_error(s, 5.0, "atom 1 has replica -1, outside [0, 3)");
}

TEST(NeighborsErrors, NonFinitePosition) {
    Structure s = three_atoms();
    s.positions[4] = std::numeric_limits<double>::quiet_NaN();
    expect_error(s, 5.0, "atom 1 has a non-finite position");
    s = three_atoms();
    s.positions[8] = -std::numeric_limits<double>::infinity();
    expect_error(s, 5.0, "atom 2 has a non-finite position");
}

TEST(NeighborsErrors, BadCutoff) {
    Structure s = three_atoms();
    expect_error(s, 0.0, "cutoff is 0");
    expect_error(s, -1.0, "cutoff is -1");
    expect_error(s, std::numeric_limits<double>::infinity(), "cutoff is inf");
    expect_error(s, std::numeric_limits<double>::quiet_NaN(), "cutoff is nan");
}

TEST(NeighborsErrors, BoxNotInReducedForm) {
    Structure s = three_atoms();
    s.box = {20, 0.5, 0, 0, 20, 0, 0, 0, 20};
    expect_error(s, 5.0, "a = (20, 0.5, 0) must lie along x");
    s.box = {20, 0, 0, 0, 20, -1, 0, 0, 20};
    expect_error(s, 5.0, "b = (0, 20, -1) must lie in the xy-plane");
    s.box = reduced_box(20, 0, 0, 0, 0, 20);
    expect_error(s, 5.0, "ax, by and cz must be positive, but they are 20, 0, 20");
    s.box = reduced_box(20, 0, 20, 0, 0, -20);
    expect_error(s, 5.0, "ax, by and cz must be positive");
    s.box = reduced_box(20, 10.5, 20, 0, 0, 20);
    expect_error(s, 5.0, "|bx| = 10.5 exceeds ax/2 = 10");
    s.box = reduced_box(20, 0, 20, -11, 0, 20);
    expect_error(s, 5.0, "|cx| = 11 exceeds ax/2 = 10");
    s.box = reduced_box(20, 0, 16, 0, 8.25, 20);
    expect_error(s, 5.0, "|cy| = 8.25 exceeds by/2 = 8");
    s.box = reduced_box(20, 0, 20, 0, std::numeric_limits<double>::quiet_NaN(), 20);
    expect_error(s, 5.0, "box vector c has a non-finite y component");
    // a rounding's worth past the limits is accepted
    ListGuard g;
    s.box = reduced_box(20, -10 * (1 + 1e-13), 20, 10 * (1 + 1e-13), -10 * (1 + 1e-13), 20);
    build_or_fail(&g.list, s, 5.0);
}

TEST(NeighborsErrors, CutoffLargerThanHalfTheBox) {
    Structure s = three_atoms();
    s.box = reduced_box(30, 0, 12, 0, 0, 40);
    expect_error(s, 6.5, "cutoff 6.5 Å is larger than half the smallest box height (height 12 Å, half 6 Å)");
    s.box = reduced_box(30, 0, 40, 0, 0, 11);
    expect_error(s, std::nextafter(5.5, 6.0), "half the smallest box height (height 11 Å, half 5.5 Å)");
    ListGuard g;
    build_or_fail(&g.list, s, 5.5); // exactly half is allowed
}

} // namespace
