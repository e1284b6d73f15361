// test_silu.cpp: the network's activation. vector_exp.h's mlff_exp against libm's exp: within 1 ulp
// over the whole range where e^x is finite and nonzero (a sweep and random points), and the same
// where libm's result is exact or special (0, 1, infinity, NaN, the thresholds of overflow and
// underflow). silu.h's arrays, in the vector lanes of the clone the CPU runs, against the scalar
// formulas computed here, to the bit. SiLU's derivative against finite differences.
//
// Built three ways (tests/core/CMakeLists.txt): with the core's clones, without the AVX-512 one
// ("Lanes4."), and without any ("Baseline."). Like the core, without fused multiply-adds, so that
// the formulas here round as silu.c's do.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

extern "C" {
#include "silu.h"
#include "vector_exp.h"
}

namespace {

const double inf = std::numeric_limits<double>::infinity(), nan = std::numeric_limits<double>::quiet_NaN();

// |a - b| in units of the last place of b (b finite), 0 where they are the same double.
double ulps_apart(double a, double b) {
    if (a == b) return 0.0;
    double ulp = std::nextafter(std::fabs(b), inf) - std::fabs(b);
    return std::fabs(a - b) / ulp;
}

bool same_bits(double a, double b) {
    return std::memcmp(&a, &b, sizeof a) == 0 || (std::isnan(a) && std::isnan(b));
}

TEST(VectorExp, WithinOneUlpOfLibmOverTheWholeRange) {
    double worst = 0.0, worst_at = 0.0;
    auto check = [&](double x) {
        double apart = ulps_apart(mlff_exp(x), std::exp(x));
        if (apart > worst) {
            worst = apart;
            worst_at = x;
        }
    };
    for (double x = -746.0; x <= 710.0; x += 1.0 / 1024 + 1e-7) check(x); // subnormal results included
    std::mt19937_64 rng(7);
    std::uniform_real_distribution<double> wide(-746.0, 710.0), narrow(-40.0, 40.0), tiny(-1e-3, 1e-3);
    for (int k = 0; k < 1000000; k++) {
        check(wide(rng));
        check(narrow(rng)); // where the network's SiLUs take their arguments
        check(tiny(rng));
    }
    EXPECT_LE(worst, 1.0) << "at x = " << worst_at;
}

TEST(VectorExp, SpecialValuesAreLibms) {
    for (double x : {0.0, -0.0, 1e-300, -1e-300, 5e-324, 709.78, 709.782712893384, 709.7827128933841, 709.8, 710.0,
                     1e300, inf, -708.39, -740.0, -745.13, -745.14, -746.0, -1e300, -inf, nan})
        EXPECT_TRUE(same_bits(mlff_exp(x), std::exp(x))) << "x = " << x << ": " << mlff_exp(x) << " against "
                                                          << std::exp(x);
}

TEST(Silu, ArraysAreTheScalarFormulasToTheBit) {
    std::vector<double> x = {0.0, -0.0, 1.0, -1.0, 30.0, -30.0, 745.5, -745.5, 1e300, -1e300, inf, -inf, nan};
    std::mt19937_64 rng(11);
    std::uniform_real_distribution<double> uniform(-12.0, 12.0);
    while (x.size() < 1027) x.push_back(uniform(rng)); // whole vectors of any width, and a remainder
    std::vector<double> silu = x, grad(x.size()), times_grad(x.size());
    mlff_silu_in_place(silu.data(), silu.size());
    mlff_silu_grad_array(grad.data(), x.data(), x.size());
    for (std::size_t k = 0; k < x.size(); k++) times_grad[k] = 0.5 + static_cast<double>(k % 7);
    mlff_times_silu_grad(times_grad.data(), x.data(), x.size());
    for (std::size_t k = 0; k < x.size(); k++) {
        double sigmoid = 1.0 / (1.0 + mlff_exp(-x[k]));
        double expected_silu = x[k] / (1.0 + mlff_exp(-x[k])), expected_grad = sigmoid * (1.0 + x[k] * (1.0 - sigmoid));
        EXPECT_TRUE(same_bits(silu[k], expected_silu)) << "SiLU(" << x[k] << ") = " << silu[k];
        EXPECT_TRUE(same_bits(grad[k], expected_grad)) << "SiLU'(" << x[k] << ") = " << grad[k];
        EXPECT_TRUE(same_bits(times_grad[k], (0.5 + static_cast<double>(k % 7)) * expected_grad))
                << "g SiLU'(" << x[k] << ") = " << times_grad[k];
        EXPECT_TRUE(same_bits(mlff_silu(x[k]), expected_silu)) << "mlff_silu(" << x[k] << ")";
        EXPECT_TRUE(same_bits(mlff_silu_grad(x[k]), expected_grad)) << "mlff_silu_grad(" << x[k] << ")";
    }
    EXPECT_EQ(mlff_silu(-1e300), 0.0);
    EXPECT_EQ(mlff_silu(1e300), 1e300);
    EXPECT_TRUE(std::isnan(mlff_silu(nan)));
}

TEST(Silu, GradientMatchesFiniteDifferences) {
    for (double x : {-30.0, -3.0, -0.5, 0.0, 0.7, 4.0, 30.0}) {
        double h = 1e-6, numeric = (mlff_silu(x + h) - mlff_silu(x - h)) / (2 * h);
        EXPECT_NEAR(mlff_silu_grad(x), numeric, 1e-8) << "x = " << x;
    }
}

} // namespace
