// MLFFTestHelpers.h: what the OpenMM-level tests share: platform cases, tolerances by
// precision, the core's answer for a structure, unit helpers and message assertions.
#pragma once

#include "MLFFForce.h"
#include "internal/MLFFUnits.h"
#include "test_support.h"

#include "openmm/Context.h"
#include "openmm/HarmonicBondForce.h"
#include "openmm/OpenMMException.h"
#include "openmm/Platform.h"
#include "openmm/State.h"
#include "openmm/System.h"
#include "openmm/VerletIntegrator.h"
#include "openmm/serialization/XmlSerializer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

namespace mlff_openmm_test {

using MLFFPlugin::MLFFForce;
namespace units = MLFFPlugin::MLFFUnits;

enum class Precision { Single, Mixed, Double };

/** One instantiation: a platform by name, its properties, and the precision they select. */
struct PlatformCase {
    std::string platform;
    std::map<std::string, std::string> properties;
    Precision precision;
};

inline std::string platformCaseName(const ::testing::TestParamInfo<PlatformCase>& info) {
    const char* precision = info.param.precision == Precision::Single  ? "single"
                            : info.param.precision == Precision::Mixed ? "mixed"
                                                                       : "double";
    return info.param.platform + "_" + precision;
}

inline void PrintTo(const PlatformCase& c, std::ostream* os) {
    *os << c.platform;
    for (const auto& p : c.properties)
        *os << " " << p.first << "=" << p.second;
}

/**
 * Relative tolerances by precision. Double: the platform computes with the core itself, so
 * only rounding of the nm <-> Å round trip separates them. Single/mixed: float32 network
 * arithmetic over O(100) terms per atom gives ~1e-6 relative per value, summed energies
 * ~1e-5; forces are compared against the largest force component.
 */
struct Tolerances {
    double energy;       // |E - E_ref| <= energy * max(|E_ref|, 1 kJ/mol)
    double force;        // |F - F_ref| <= force * max |F_ref|
    double fdStep;       // nm, central-difference step
    double finiteDiff;   // |F - F_fd| <= finiteDiff * max |F|
    double nveDrift;     // NVE drift bound, see EnergyIsConservedInNVE
};

inline Tolerances tolerancesFor(Precision precision) {
    switch (precision) {
    case Precision::Double:
        return {1e-9, 1e-8, 1e-5, 1e-5, 2e-3};
    case Precision::Mixed:
        // The CUDA platform's mixed precision evaluates the network in float32 like single, so the
        // finite-difference step is single's: at 1e-4 nm the energy's float32 rounding, divided
        // by the step, is as large as the difference it should resolve.
        return {2e-5, 2e-4, 1e-3, 5e-3, 5e-3};
    case Precision::Single:
    default:
        return {1e-4, 1e-3, 1e-3, 1e-2, 2e-2};
    }
}

// ------------------------------------------------------------------------------------------
// Helpers

/** A random model with small H so each test runs in well under a second. */
inline mlff_test::ModelSpec smallModelSpec(std::uint64_t seed = 7) {
    mlff_test::ModelSpec spec;
    spec.hidden = 16;
    spec.blocks = 2;
    spec.rbf = 8;
    spec.max_z = 10;
    spec.cutoff = 5.0;
    spec.seed = seed;
    return spec;
}

/** A System with one MLFFForce over a Structure (positions Å, replicas, optional box). */
struct MLSystem {
    OpenMM::System system;
    std::vector<OpenMM::Vec3> positions; // nm
    MLFFForce* force = nullptr;          // owned by system
};

inline std::unique_ptr<MLSystem> makeSystem(const std::string& modelBytes, const mlff_test::Structure& structure,
                                            double mass = 12.0) {
    std::unique_ptr<MLSystem> s(new MLSystem());
    s->force = new MLFFForce(modelBytes, MLFFForce::ModelBytes);
    for (size_t i = 0; i < structure.atomic_numbers.size(); i++) {
        int particle = s->system.addParticle(mass);
        int replica = structure.replicas.empty() ? 0 : structure.replicas[i];
        s->force->addParticle(particle, structure.atomic_numbers[i], replica);
        s->positions.push_back(OpenMM::Vec3(structure.positions[3 * i], structure.positions[3 * i + 1],
                                            structure.positions[3 * i + 2]) / units::AngstromPerNm);
    }
    if (!structure.box.empty()) {
        const std::vector<double>& b = structure.box;
        s->system.setDefaultPeriodicBoxVectors(OpenMM::Vec3(b[0], b[1], b[2]) / units::AngstromPerNm,
                                               OpenMM::Vec3(b[3], b[4], b[5]) / units::AngstromPerNm,
                                               OpenMM::Vec3(b[6], b[7], b[8]) / units::AngstromPerNm);
        s->force->setUsesPeriodicBoundaryConditions(true);
    }
    s->system.addForce(s->force);
    return s;
}

/** The core's answer for a structure: per-replica energies (eV) and forces (eV/Å). */
struct CoreAnswer {
    std::vector<double> replicaEnergies;
    std::vector<double> forces;
    double total() const {
        double sum = 0;
        for (double e : replicaEnergies)
            sum += e;
        return sum;
    }
};

inline CoreAnswer coreAnswer(const std::string& modelBytes, const mlff_test::Structure& structure) {
    CoreAnswer answer;
    mlff_test::ModelPtr model = mlff_test::load_model_or_fail(modelBytes);
    mlff_test::WorkspacePtr workspace(mlff_workspace_create());
    if (!model || !workspace)
        return answer;
    answer.replicaEnergies.assign(static_cast<size_t>(structure.num_replicas), 0.0);
    answer.forces.assign(structure.positions.size(), 0.0);
    mlff_structure view = structure.view();
    mlff_result result{};
    result.replica_energies = answer.replicaEnergies.data();
    result.forces = answer.forces.data();
    mlff_error error{};
    if (mlff_compute(model.get(), workspace.get(), &view, &result, &error) != MLFF_OK)
        ADD_FAILURE() << "mlff_compute: " << error.message;
    return answer;
}

/** The core's force on `atom` (eV/Å) in OpenMM's units (kJ/mol/nm). */
inline OpenMM::Vec3 coreForce(const CoreAnswer& core, size_t atom) {
    return OpenMM::Vec3(core.forces[3 * atom], core.forces[3 * atom + 1], core.forces[3 * atom + 2]) *
           units::ForceToOpenMM;
}

inline OpenMM::Vec3 nm(const std::vector<double>& angstrom, size_t atom) {
    return OpenMM::Vec3(angstrom[3 * atom], angstrom[3 * atom + 1], angstrom[3 * atom + 2]) / units::AngstromPerNm;
}

inline double maxAbs(const std::vector<OpenMM::Vec3>& forces) {
    double largest = 0;
    for (const OpenMM::Vec3& f : forces)
        for (int d = 0; d < 3; d++)
            largest = std::max(largest, std::fabs(f[d]));
    return largest;
}

inline std::string lowercase(std::string text) {
    std::transform(text.begin(), text.end(), text.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return text;
}

/** Runs `statement`, expecting an OpenMMException whose message contains every one of `parts`. */
#define MLFF_EXPECT_THROW_WITH(statement, ...)                                                       \
    do {                                                                                             \
        bool mlffThrew = false;                                                                      \
        try {                                                                                        \
            statement;                                                                               \
        }                                                                                            \
        catch (const OpenMM::OpenMMException& e) {                                                   \
            mlffThrew = true;                                                                        \
            for (const std::string& part : std::vector<std::string>{__VA_ARGS__})                   \
                EXPECT_NE(std::string(e.what()).find(part), std::string::npos)                       \
                    << "message \"" << e.what() << "\" lacks \"" << part << "\"";                    \
        }                                                                                            \
        EXPECT_TRUE(mlffThrew) << #statement " did not throw";                                       \
    } while (0)

} // namespace mlff_openmm_test
