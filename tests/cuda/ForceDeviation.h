// ForceDeviation.h: how far one evaluation's energy and forces are from another's (the oracle's),
// the measures the CUDA tests bound and mlff-bench's --check reports. Free of gtest, for both.
#pragma once

#include "openmm/Vec3.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace mlff_cuda_test {

/** |actual - expected| / |expected|; inf or NaN for a zero `expected`. */
inline double relativeError(double actual, double expected) {
    return std::fabs(actual - expected) / std::fabs(expected);
}

/** Relative to the oracle's. A zero oracle energy or zero forces give inf or NaN, never a small number. */
struct ForceDeviation {
    double energyRelative;   // |E - E_ref| / |E_ref|
    double forceRmsRelative; // |F - F_ref| / |F_ref| over all 3N components
    double forceMaxRelative; // the largest atom's |F_i - F_ref,i| over the largest |F_ref,i|
};

inline ForceDeviation forceDeviation(const std::vector<OpenMM::Vec3>& forces, double energy,
                                     const std::vector<OpenMM::Vec3>& expectedForces, double expectedEnergy) {
    double sumError2 = 0, sumForce2 = 0, maxError = 0, maxForce = 0;
    for (size_t i = 0; i < expectedForces.size(); i++) {
        const OpenMM::Vec3 d = forces[i] - expectedForces[i];
        const double error2 = d.dot(d), force2 = expectedForces[i].dot(expectedForces[i]);
        sumError2 += error2;
        sumForce2 += force2;
        maxError = std::max(maxError, std::sqrt(error2));
        maxForce = std::max(maxForce, std::sqrt(force2));
    }
    return {relativeError(energy, expectedEnergy), std::sqrt(sumError2 / sumForce2),
            maxError / maxForce};
}

} // namespace mlff_cuda_test
