#include "CudaLaunchTimer.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>

using namespace MLFFPlugin;

CudaLaunchTimer::CudaLaunchTimer() {
    const char* setting = std::getenv("MLFF_CUDA_TIMING");
    if (setting == nullptr || *setting == '\0' || std::string(setting) == "0")
        mode = Mode::Off;
    else
        mode = std::string(setting) == "timeline" ? Mode::Timeline : Mode::Events;
}

CudaLaunchTimer::~CudaLaunchTimer() {
    if (mode == Mode::Events) {
        collect();
        print("MLFF_CUDA_TIMING: median us per evaluation, by launch");
    }
    if (mode == Mode::Timeline) {
        collectTimeline();
        print("MLFF_CUDA_TIMING=timeline: median us per evaluation, by launch, from the stamp before it to "
              "its own");
    }
    for (CUevent e : pool)
        cuEventDestroy(e);
    if (stamps != 0)
        cuMemFree(stamps);
}

void CudaLaunchTimer::print(const char* heading) {
    if (order.empty())
        return;
    // The sum is of the launches of most evaluations: one that ran once (the weights' split at the
    // Context's start, 0.3 ms) or rarely (the atom index's inversion after a reorder) is listed
    // but would make the sum a step that never was.
    size_t timedEvaluations = 0;
    for (const auto& entry : microseconds)
        timedEvaluations = std::max(timedEvaluations, entry.second.size());
    double total = 0;
    std::fprintf(stderr, "%s\n", heading);
    for (const std::string& name : order) {
        std::vector<double>& times = microseconds[name];
        if (times.empty())
            continue;
        std::sort(times.begin(), times.end());
        const double median = times[times.size() / 2];
        if (2 * times.size() >= timedEvaluations)
            total += median;
        std::fprintf(stderr, "  %10.1f  %s (%zu evaluations)\n", median, name.c_str(), times.size());
    }
    std::fprintf(stderr, "  %10.1f  sum of the medians\n", total);
}

void CudaLaunchTimer::setStampKernel(CUfunction kernel, bool dependent) {
    stampKernel = kernel;
    dependentStamps = dependent;
}

CUevent CudaLaunchTimer::event() {
    if (!free.empty()) {
        CUevent e = free.back();
        free.pop_back();
        return e;
    }
    CUevent e = nullptr;
    if (cuEventCreate(&e, CU_EVENT_DEFAULT) != CUDA_SUCCESS)
        return nullptr;
    pool.push_back(e);
    return e;
}

void CudaLaunchTimer::beginEvaluation(CUstream stream) {
    if (mode == Mode::Events)
        collect();
    if (mode != Mode::Timeline || stampKernel == nullptr)
        return;
    timelineOpen = true;
    evaluations.push_back({numStamps, {}});
    if (!stamp(stream))
        closeTimelineEvaluation();
}

void CudaLaunchTimer::endEvaluation() {
    timelineOpen = false;
}

void CudaLaunchTimer::before(const char* name, CUstream stream) {
    if (mode == Mode::Timeline && timelineOpen)
        evaluations.back().names.push_back(name);
    if (mode != Mode::Events)
        return;
    Mark mark{name, event(), event()};
    if (mark.start != nullptr)
        cuEventRecord(mark.start, stream);
    pending.push_back(mark);
}

void CudaLaunchTimer::after(CUstream stream) {
    if (mode == Mode::Timeline && timelineOpen && !stamp(stream))
        closeTimelineEvaluation();
    if (mode == Mode::Events && !pending.empty() && pending.back().end != nullptr)
        cuEventRecord(pending.back().end, stream);
}

bool CudaLaunchTimer::stamp(CUstream stream) {
    if (stamps == 0 && cuMemAlloc(&stamps, StampCapacity * sizeof(unsigned long long)) != CUDA_SUCCESS)
        stamps = 0;
    if (stamps == 0 || numStamps == StampCapacity)
        return false;
    CUdeviceptr slot = stamps + numStamps * sizeof(unsigned long long);
    void* args[] = {&slot};
    CUlaunchAttribute dependent = {};
    dependent.id = CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
    dependent.value.programmaticStreamSerializationAllowed = 1;
    CUlaunchConfig config = {};
    config.gridDimX = config.gridDimY = config.gridDimZ = 1;
    config.blockDimX = config.blockDimY = config.blockDimZ = 1;
    config.hStream = stream;
    config.attrs = &dependent;
    config.numAttrs = dependentStamps ? 1 : 0;
    if (cuLaunchKernelEx(&config, stampKernel, args, nullptr) != CUDA_SUCCESS)
        return false;
    numStamps++;
    return true;
}

void CudaLaunchTimer::closeTimelineEvaluation() {
    // Full, or a stamp failed: this evaluation is dropped, and the timeline stops.
    evaluations.pop_back();
    timelineOpen = false;
    stampKernel = nullptr;
}

void CudaLaunchTimer::collectTimeline() {
    if (evaluations.empty() || cuCtxSynchronize() != CUDA_SUCCESS)
        return;
    std::vector<unsigned long long> ns(numStamps);
    if (cuMemcpyDtoH(ns.data(), stamps, numStamps * sizeof(unsigned long long)) != CUDA_SUCCESS)
        return;
    for (size_t e = 0; e < evaluations.size(); e++) {
        const TimelineEvaluation& evaluation = evaluations[e];
        // Its stamps end where the next evaluation's begin: a launch that threw left one short.
        const size_t end = e + 1 < evaluations.size() ? evaluations[e + 1].firstStamp : numStamps;
        if (end - evaluation.firstStamp != evaluation.names.size() + 1)
            continue;
        std::map<std::string, double> totals;
        for (size_t k = 0; k < evaluation.names.size(); k++) {
            const std::string& name = evaluation.names[k];
            if (std::find(order.begin(), order.end(), name) == order.end())
                order.push_back(name);
            const size_t s = evaluation.firstStamp + k;
            totals[name] += 1e-3 * (double) (ns[s + 1] - ns[s]);
        }
        for (const auto& entry : totals)
            microseconds[entry.first].push_back(entry.second);
    }
}

void CudaLaunchTimer::collect() {
    if (pending.empty())
        return;
    std::map<std::string, double> totals;
    bool complete = true;
    for (const Mark& mark : pending) {
        float ms = 0;
        if (mark.start == nullptr || mark.end == nullptr || cuEventSynchronize(mark.end) != CUDA_SUCCESS ||
            cuEventElapsedTime(&ms, mark.start, mark.end) != CUDA_SUCCESS)
            complete = false;
        if (std::find(order.begin(), order.end(), mark.name) == order.end())
            order.push_back(mark.name);
        totals[mark.name] += 1000.0 * ms;
        for (CUevent e : {mark.start, mark.end})
            if (e != nullptr)
                free.push_back(e);
    }
    pending.clear();
    if (!complete)
        return;
    for (const auto& entry : totals)
        microseconds[entry.first].push_back(entry.second);
}
