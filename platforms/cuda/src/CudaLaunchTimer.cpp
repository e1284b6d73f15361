#include "CudaLaunchTimer.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>

using namespace MLFFPlugin;

CudaLaunchTimer::CudaLaunchTimer() {
    const char* setting = std::getenv("MLFF_CUDA_TIMING");
    on = setting != nullptr && *setting != '\0' && std::string(setting) != "0";
}

CudaLaunchTimer::~CudaLaunchTimer() {
    if (!on)
        return;
    collect();
    if (!order.empty()) {
        double total = 0;
        std::fprintf(stderr, "MLFF_CUDA_TIMING: median us per evaluation, by launch\n");
        for (const std::string& name : order) {
            std::vector<double>& times = microseconds[name];
            if (times.empty())
                continue;
            std::sort(times.begin(), times.end());
            const double median = times[times.size() / 2];
            total += median;
            std::fprintf(stderr, "  %10.1f  %s (%zu evaluations)\n", median, name.c_str(), times.size());
        }
        std::fprintf(stderr, "  %10.1f  sum of the medians\n", total);
    }
    for (CUevent e : pool)
        cuEventDestroy(e);
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

void CudaLaunchTimer::beginEvaluation() {
    if (on)
        collect();
}

void CudaLaunchTimer::before(const char* name, CUstream stream) {
    if (!on)
        return;
    Mark mark{name, event(), event()};
    if (mark.start != nullptr)
        cuEventRecord(mark.start, stream);
    pending.push_back(mark);
}

void CudaLaunchTimer::after(CUstream stream) {
    if (on && !pending.empty() && pending.back().end != nullptr)
        cuEventRecord(pending.back().end, stream);
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
