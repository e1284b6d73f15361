// CudaReferenceComparison.h: evaluating one System on the CUDA platform and on the Reference
// platform (the C core in double precision), and the error measures the CUDA tests bound.
#pragma once

#include "ForceDeviation.h"
#include "MLFFForce.h"
#include "MLFFTestHelpers.h"
#include "internal/MLFFUnits.h"
#include "test_support.h"

#include "openmm/Context.h"
#include "openmm/Platform.h"
#include "openmm/State.h"
#include "openmm/System.h"
#include "openmm/VerletIntegrator.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace mlff_cuda_test {

using MLFFPlugin::MLFFForce;
using mlff_openmm_test::MLSystem;
using mlff_openmm_test::makeSystem;
namespace units = MLFFPlugin::MLFFUnits;

/**
 * The bounds of issue 5, CUDA against Reference: energy relative error <= 1e-5 in single and
 * mixed (float32 network arithmetic; the energy is summed in double) and <= 1e-10 in double;
 * forces, as the norm of the difference over the norm of the reference forces (all 3N
 * components), <= 1e-4 in single and mixed and <= 1e-8 in double.
 */
struct Bounds {
    double energy, force;
};

inline Bounds boundsFor(const std::string& precision) {
    if (precision == "double")
        return {1e-10, 1e-8};
    return {1e-5, 1e-4};
}

inline std::unique_ptr<OpenMM::Context> makeContext(OpenMM::System& system, OpenMM::Integrator& integrator,
                                                    const std::string& precision) {
    if (precision == "reference")
        return std::unique_ptr<OpenMM::Context>(
            new OpenMM::Context(system, integrator, OpenMM::Platform::getPlatformByName("Reference")));
    std::map<std::string, std::string> properties = {{"Precision", precision}};
    return std::unique_ptr<OpenMM::Context>(
        new OpenMM::Context(system, integrator, OpenMM::Platform::getPlatformByName("CUDA"), properties));
}

struct Evaluation {
    double energy = 0;
    std::vector<OpenMM::Vec3> forces;
    std::vector<double> replicaEnergies;
};

inline Evaluation evaluate(OpenMM::Context& context, const MLFFForce& force) {
    Evaluation result;
    OpenMM::State state = context.getState(OpenMM::State::Energy | OpenMM::State::Forces);
    result.energy = state.getPotentialEnergy();
    result.forces = state.getForces();
    result.replicaEnergies = force.getReplicaEnergies(context);
    return result;
}

/** Evaluates `s` at its positions on a fresh Context of `precision` ("reference" for the oracle). */
inline Evaluation evaluateOn(MLSystem& s, const std::string& precision) {
    OpenMM::VerletIntegrator integrator(0.0005);
    auto context = makeContext(s.system, integrator, precision);
    context->setPositions(s.positions);
    return evaluate(*context, *s.force);
}

/** Where forces differ most, to tell a local error from a global one when a bound fails. */
inline std::string largestForceDifference(const std::vector<OpenMM::Vec3>& actual, const std::vector<OpenMM::Vec3>& expected) {
    size_t worst = 0;
    double worstNorm = -1, rms = 0;
    for (size_t i = 0; i < expected.size(); i++) {
        const OpenMM::Vec3 d = actual[i] - expected[i];
        rms += expected[i].dot(expected[i]);
        if (std::sqrt(d.dot(d)) > worstNorm) {
            worstNorm = std::sqrt(d.dot(d));
            worst = i;
        }
    }
    rms = std::sqrt(rms / static_cast<double>(expected.size()));
    char text[200];
    std::snprintf(text, sizeof(text), "largest difference %.3e at atom %zu (|F_ref| there %.3e, rms |F_ref| %.3e)",
                  worstNorm, worst, std::sqrt(expected[worst].dot(expected[worst])), rms);
    return text;
}

/**
 * Checks a CUDA evaluation against the Reference one within the precision's bounds, and prints
 * the errors measured (the closing note quotes them).
 */
inline void expectMatchesReference(const Evaluation& cuda, const Evaluation& reference, const std::string& precision,
                                   const std::string& what, double forceBound = 0) {
    Bounds bounds = boundsFor(precision);
    if (forceBound > 0) // a test's own figure, justified where it is given
        bounds.force = forceBound;
    ASSERT_GT(std::fabs(reference.energy), 1.0) << what << ": a relative error needs a nonzero energy";
    const ForceDeviation deviation = forceDeviation(cuda.forces, cuda.energy, reference.forces, reference.energy);
    const double energyError = deviation.energyRelative, forceError = deviation.forceRmsRelative;
    std::printf("[cuda-vs-reference] %-6s %-44s energy %.3e  forces %.3e\n", precision.c_str(), what.c_str(),
                energyError, forceError);
    EXPECT_LE(energyError, bounds.energy) << what << ": energy " << cuda.energy << " vs " << reference.energy;
    EXPECT_LE(forceError, bounds.force) << what << ": " << largestForceDifference(cuda.forces, reference.forces);
    ASSERT_EQ(cuda.replicaEnergies.size(), reference.replicaEnergies.size()) << what;
    double scale = 0;
    for (double e : reference.replicaEnergies)
        scale = std::max(scale, std::fabs(e));
    for (size_t r = 0; r < reference.replicaEnergies.size(); r++)
        EXPECT_LE(std::fabs(cuda.replicaEnergies[r] - reference.replicaEnergies[r]), bounds.energy * scale)
            << what << ": replica " << r;
}

} // namespace mlff_cuda_test
