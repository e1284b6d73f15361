// matmul.cu's mlffRoundTf32, run on the CPU: the 3xTF32 products split each float into two TF32
// parts with it, and it must round as cvt.rna.tf32.f32 does (to nearest with 10 bits of mantissa,
// ties away from zero), checked against that definition written in floating point: every sign and
// exponent, a spread of kept mantissas, and every pattern of the 13 dropped bits.
#include <gtest/gtest.h>

#include <cfloat>
#include <cmath>
#include <limits>

#include "KernelsOnHost.h"

namespace {

/** x rounded to 11 significant bits (TF32's subnormals keep the spacing of its smallest normals). */
float tf32RoundedByDefinition(float x) {
    int exponent;
    std::frexp(x, &exponent); // x = m 2^exponent, 0.5 <= |m| < 1
    const double spacing = std::ldexp(1.0, std::max(exponent, FLT_MIN_EXP) - 11);
    return (float) (std::round(x / spacing) * spacing); // std::round: ties away from zero
}

TEST(Tf32RoundingOnHost, RoundsToNearestWithTiesAwayFromZero) {
    const unsigned int keptMantissas[] = {0x0, 0x1, 0x155, 0x2aa, 0x3fe, 0x3ff};
    int failures = 0;
    for (unsigned int sign = 0; sign < 2; sign++)
        for (unsigned int exponent = 0; exponent < 255; exponent++) // 255: infinities and NaNs
            for (unsigned int kept : keptMantissas)
                for (unsigned int dropped = 0; dropped < 0x2000; dropped++) {
                    const unsigned int bits = sign << 31 | exponent << 23 | kept << 13 | dropped;
                    const float x = __uint_as_float(bits);
                    const float expected = tf32RoundedByDefinition(x);
                    if (__uint_as_float(mlffRoundTf32(x)) != expected && failures++ < 10)
                        ADD_FAILURE() << std::hexfloat << x << " (bits 0x" << std::hex << bits << ") rounds to "
                                      << __uint_as_float(mlffRoundTf32(x)) << ", not " << expected;
                }
    EXPECT_EQ(failures, 0);
    const float infinity = std::numeric_limits<float>::infinity();
    EXPECT_EQ(__uint_as_float(mlffRoundTf32(infinity)), infinity);
    EXPECT_EQ(__uint_as_float(mlffRoundTf32(-infinity)), -infinity);
}

} // namespace
