// mlff-bench: times MLFFForce on OpenMM's CUDA platform for one structure, and prints one JSON
// object. benchmarks/bench.py drives it, row by row, beside the PyTorch implementation.
//
//   mlff-bench MODEL STRUCTURE [--tabulated] [--precision mixed] [--md-steps 2000] [--repeats 20]
//              [--without-force] [--check]
//
// --without-force times the same particles with no force at all: OpenMM's own step, the floor
// under step_us. --check also evaluates the structure as written on the CPU platform (the C core
// in double precision, its threads) and prints how far the CUDA platform's energy and forces are
// from it: energy_rel_error, force_max_error_rel (the largest |F - F_cpu| over the largest |F_cpu|)
// and force_rms_error_rel (RMS of |F - F_cpu| over RMS of |F_cpu|).
//
// STRUCTURE is a text file: a first line "N [ax ay az bx by bz cx cy cz]" (the box in Å, OpenMM's
// reduced form; present means periodic), then N lines "Z x y z replica" (Å).
//
// The structure is reset because a model's forces move the atoms, and the edges with them: a
// random model's push them apart (on the CPU platform the 96-atom droplet's edges fell from 2,822
// to 1,392 in 400 steps), and a long run would time ever sparser systems, faster steps.
//
// The figures, medians over the repeats:
//   force_us  the ML force's own evaluation, forces and energy (OpenMM's calcForcesAndEnergy on the
//             force's group alone: buffer clearing, the MLFF kernels and OpenMM's force reduction),
//             between CUDA events on OpenMM's stream;
//   step_us   a full MD step: LangevinMiddleIntegrator (300 K, 1/ps, 0.5 fs), between CUDA events
//             around runs of at most 20 steps, each from the structure as written (positions and
//             velocities reset before it, untimed), --md-steps in all (no fewer than --repeats
//             runs);
//   issue_us  the host's time to issue one such step (OpenMM's launches and the force's), on the
//             host's clock over bursts of 10 steps started with the GPU idle: where it is close to
//             step_us, the host, not the GPU, sets the pace of the step.
#include "ForceDeviation.h"
#include "MLFFForce.h"

#include "openmm/Context.h"
#include "openmm/LangevinMiddleIntegrator.h"
#include "openmm/VerletIntegrator.h"
#include "openmm/OpenMMException.h"
#include "openmm/Platform.h"
#include "openmm/State.h"
#include "openmm/System.h"
#include "openmm/cuda/CudaContext.h"
#include "openmm/cuda/CudaPlatform.h"
#include "openmm/internal/ContextImpl.h"

#include <cuda.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

using namespace OpenMM;
using MLFFPlugin::MLFFForce;

namespace {

constexpr int MLGroup = 1;
constexpr int MaxStepsPerRepeat = 20; // 10 fs: the atoms stay near the structure as written

struct Structure {
    std::vector<int> z, replica;
    std::vector<Vec3> positions; // nm
    std::vector<Vec3> box;       // nm; empty when not periodic
};

Structure readStructure(const std::string& path) {
    std::ifstream in(path);
    if (!in)
        throw std::runtime_error("cannot open structure file '" + path + "'");
    std::string line;
    std::getline(in, line);
    std::istringstream header(line);
    int n = 0;
    header >> n;
    Structure s;
    double b[9];
    if (header >> b[0]) {
        for (int k = 1; k < 9; k++)
            header >> b[k];
        for (int k = 0; k < 3; k++)
            s.box.push_back(Vec3(b[3 * k], b[3 * k + 1], b[3 * k + 2]) * 0.1);
    }
    for (int i = 0; i < n; i++) {
        int z, replica;
        double x, y, w;
        if (!(in >> z >> x >> y >> w >> replica))
            throw std::runtime_error("structure file '" + path + "': atom " + std::to_string(i) + " is unreadable");
        s.z.push_back(z);
        s.replica.push_back(replica);
        s.positions.push_back(Vec3(x, y, w) * 0.1);
    }
    return s;
}

double massOf(int z) {
    switch (z) {
    case 1: return 1.008;
    case 6: return 12.011;
    case 7: return 14.007;
    case 8: return 15.999;
    default: return 2.0 * z;
    }
}

/** A Force never added to a System, for its protected access to a Context's implementation. */
class ContextProbe : public Force {
public:
    CudaContext& cudaContext(Context& context) {
        ContextImpl& impl = getContextImpl(context);
        auto* data = static_cast<CudaPlatform::PlatformData*>(impl.getPlatformData());
        return *data->contexts[0];
    }
    ContextImpl& impl(Context& context) {
        return getContextImpl(context);
    }

protected:
    ForceImpl* createImpl() const override {
        throw OpenMMException("ContextProbe is not a real force");
    }
};

void check(CUresult result, const char* what) {
    if (result != CUDA_SUCCESS)
        throw std::runtime_error(std::string("CUDA error in ") + what + ": " + std::to_string(result));
}

/**
 * Median GPU time (µs) of `work`, run `repeats` times between events on the context's stream, each
 * after `prepare` (untimed).
 */
template <class Prepare, class Work>
double medianMicroseconds(CudaContext& cu, int repeats, double divisor, Prepare prepare, Work work) {
    CUevent start, stop;
    check(cuEventCreate(&start, CU_EVENT_DEFAULT), "cuEventCreate");
    check(cuEventCreate(&stop, CU_EVENT_DEFAULT), "cuEventCreate");
    std::vector<double> times;
    for (int r = 0; r < repeats; r++) {
        prepare();
        check(cuEventRecord(start, cu.getCurrentStream()), "cuEventRecord");
        work();
        check(cuEventRecord(stop, cu.getCurrentStream()), "cuEventRecord");
        check(cuEventSynchronize(stop), "cuEventSynchronize");
        float ms = 0;
        check(cuEventElapsedTime(&ms, start, stop), "cuEventElapsedTime");
        times.push_back(1000.0 * ms / divisor);
    }
    cuEventDestroy(start);
    cuEventDestroy(stop);
    std::sort(times.begin(), times.end());
    return times[times.size() / 2];
}

/** Median host time (µs) to issue `work`, run `repeats` times, each after `prepare` and the stream has drained. */
template <class Prepare, class Work>
double medianIssueMicroseconds(CudaContext& cu, int repeats, double divisor, Prepare prepare, Work work) {
    std::vector<double> times;
    for (int r = 0; r < repeats; r++) {
        prepare();
        check(cuStreamSynchronize(cu.getCurrentStream()), "cuStreamSynchronize");
        const auto start = std::chrono::steady_clock::now();
        work();
        const auto stop = std::chrono::steady_clock::now();
        times.push_back(std::chrono::duration<double, std::micro>(stop - start).count() / divisor);
    }
    check(cuStreamSynchronize(cu.getCurrentStream()), "cuStreamSynchronize");
    std::sort(times.begin(), times.end());
    return times[times.size() / 2];
}

int run(int argc, char** argv) {
    if (argc < 3) {
        std::cerr << "usage: mlff-bench MODEL STRUCTURE [--tabulated] [--precision P] [--md-steps N] [--repeats R] "
                     "[--without-force] [--check]\n";
        return 2;
    }
    const std::string modelPath = argv[1], structurePath = argv[2];
    bool tabulated = false, withoutForce = false, checkAgainstCpu = false;
    std::string precision = "mixed";
    int mdSteps = 2000, repeats = 20;
    for (int a = 3; a < argc; a++) {
        const std::string arg = argv[a];
        auto value = [&]() -> std::string {
            if (a + 1 >= argc)
                throw std::runtime_error("option " + arg + " needs a value");
            return argv[++a];
        };
        if (arg == "--tabulated")
            tabulated = true;
        else if (arg == "--without-force")
            withoutForce = true;
        else if (arg == "--check")
            checkAgainstCpu = true;
        else if (arg == "--precision")
            precision = value();
        else if (arg == "--md-steps")
            mdSteps = std::stoi(value());
        else if (arg == "--repeats")
            repeats = std::stoi(value());
        else
            throw std::runtime_error("unknown option '" + arg + "'");
    }
    if (repeats < 1 || mdSteps < repeats)
        throw std::runtime_error("--repeats must be >= 1 and --md-steps >= --repeats");

    if (checkAgainstCpu && withoutForce)
        throw std::runtime_error("--check needs the force (not --without-force)");
    Platform::loadPluginsFromDirectory(Platform::getDefaultPluginsDirectory());
    Platform::loadPluginLibrary(MLFF_CUDA_PLUGIN);
    if (checkAgainstCpu)
        Platform::loadPluginLibrary(MLFF_REFERENCE_PLUGIN);
    const Structure s = readStructure(structurePath);

    int numReplicas = 0;
    auto makeSystem = [&](System& system, bool withForce) {
        auto force = std::make_unique<MLFFForce>(modelPath);
        force->setUseTabulatedFilters(tabulated);
        force->setForceGroup(MLGroup);
        for (size_t i = 0; i < s.z.size(); i++)
            force->addParticle(system.addParticle(massOf(s.z[i])), s.z[i], s.replica[i]);
        if (!s.box.empty()) {
            system.setDefaultPeriodicBoxVectors(s.box[0], s.box[1], s.box[2]);
            force->setUsesPeriodicBoundaryConditions(true);
        }
        numReplicas = force->getNumReplicas();
        if (withForce)
            system.addForce(force.release());
    };
    System system;
    makeSystem(system, !withoutForce);
    LangevinMiddleIntegrator integrator(300.0, 1.0, 0.0005);
    Context context(system, integrator, Platform::getPlatformByName("CUDA"), {{"Precision", precision}});
    context.setPositions(s.positions);
    context.setVelocitiesToTemperature(300.0, 1);
    const std::vector<Vec3> startVelocities = context.getState(State::Velocities).getVelocities();
    auto restart = [&] { // back to the structure as written (see the top of this file)
        context.setPositions(s.positions);
        context.setVelocities(startVelocities);
    };
    auto nothing = [] {};

    ContextProbe probe;
    CudaContext& cu = probe.cudaContext(context);
    cu.setAsCurrent(); // the events below belong to OpenMM's CUDA context
    ContextImpl& impl = probe.impl(context);
    const double energy = context.getState(State::Energy).getPotentialEnergy();
    mlff_cuda_test::ForceDeviation deviation{};
    if (checkAgainstCpu) {
        const State mine = context.getState(State::Energy | State::Forces, false, 1 << MLGroup);
        System cpuSystem;
        makeSystem(cpuSystem, true);
        VerletIntegrator cpuIntegrator(0.0005);
        Context cpu(cpuSystem, cpuIntegrator, Platform::getPlatformByName("CPU"));
        cpu.setPositions(s.positions);
        const State theirs = cpu.getState(State::Energy | State::Forces, false, 1 << MLGroup);
        deviation = mlff_cuda_test::forceDeviation(mine.getForces(), mine.getPotentialEnergy(), theirs.getForces(),
                                                   theirs.getPotentialEnergy());
        cu.setAsCurrent();
    }

    // Warm-up, then the force alone and the MD step.
    for (int k = 0; k < 10; k++)
        impl.calcForcesAndEnergy(true, true, 1 << MLGroup);
    const double forceUs = medianMicroseconds(cu, std::max(repeats, 50), 1.0, nothing,
                                              [&] { impl.calcForcesAndEnergy(true, true, 1 << MLGroup); });
    integrator.step(std::min(mdSteps / 10 + 1, 200)); // the lists grown, the integrator's kernels compiled
    const int stepsPerRepeat = std::max(1, std::min(MaxStepsPerRepeat, mdSteps / repeats));
    const int stepRepeats = std::max(repeats, mdSteps / stepsPerRepeat);
    const double stepUs =
        medianMicroseconds(cu, stepRepeats, stepsPerRepeat, restart, [&] { integrator.step(stepsPerRepeat); });
    constexpr int IssueBurst = 10; // steps: few enough launches for CUDA's queue, so issuing never waits for the GPU
    const double issueUs =
        medianIssueMicroseconds(cu, std::max(repeats, 20), IssueBurst, restart, [&] { integrator.step(IssueBurst); });
    const double finalEnergy = context.getState(State::Energy).getPotentialEnergy();

    std::string checked;
    if (checkAgainstCpu) {
        auto key = [](const char* name, double value) { // JSON has no inf or NaN: a zero CPU figure gives null
            char text[80];
            std::snprintf(text, sizeof text, std::isfinite(value) ? ", \"%s\": %.3e" : ", \"%s\": null", name, value);
            return std::string(text);
        };
        checked = key("energy_rel_error", deviation.energyRelative) +
                  key("force_max_error_rel", deviation.forceMaxRelative) +
                  key("force_rms_error_rel", deviation.forceRmsRelative);
    }
    std::printf("{\"atoms\": %zu, \"replicas\": %d, \"periodic\": %s, \"tabulated\": %s, \"without_force\": %s, "
                "\"precision\": \"%s\", "
                "\"energy_kj_mol\": %.10g, \"energy_after_md_kj_mol\": %.10g, \"force_us\": %.3f, \"step_us\": %.3f, "
                "\"issue_us\": %.3f, \"md_steps\": %d, \"repeats\": %d, \"device\": \"%s\"%s}\n",
                s.z.size(), numReplicas, s.box.empty() ? "false" : "true", tabulated ? "true" : "false",
                withoutForce ? "true" : "false",
                precision.c_str(), energy, finalEnergy, forceUs, stepUs, issueUs, stepsPerRepeat * stepRepeats, stepRepeats,
                context.getPlatform().getPropertyValue(context, "DeviceName").c_str(), checked.c_str());
    return 0;
}

} // namespace

int main(int argc, char** argv) {
    try {
        return run(argc, argv);
    }
    catch (const std::exception& e) {
        std::cerr << "mlff-bench: error: " << e.what() << "\n";
        return 1;
    }
}
