#ifndef MLFF_CUDA_LAUNCH_TIMER_H_
#define MLFF_CUDA_LAUNCH_TIMER_H_

#include <cuda.h>

#include <map>
#include <string>
#include <vector>

namespace MLFFPlugin {

/**
 * Where a force evaluation's GPU time goes, launch by launch, when the environment variable
 * MLFF_CUDA_TIMING is set; at the Context's end this prints to stderr, per launch name, the
 * median time per evaluation (summed over the launches of that name in one evaluation), and the
 * sum of the medians of the launches that ran in at least half the evaluations. A developer's tool
 * for benchmarks/; off, it does nothing. Two ways:
 *
 * - MLFF_CUDA_TIMING=1: CUDA events bracket each launch. Each launch is timed alone, its start
 *   and tail included: the events keep a launch from starting while the one before it runs
 *   (dependent_launch.cu), and an evaluation's events are read at the start of the next (the
 *   read waits for them), so the GPU idles while the host issues each step. The times add up to
 *   more than the step.
 * - MLFF_CUDA_TIMING=timeline: after each launch a one-thread launch (dependent_launch.cu's
 *   mlffStampTime) writes the GPU's clock once the launch has finished, and each launch's time is
 *   its stamp less the stamp before it: its share of the evaluation with the launches overlapping
 *   as they do untimed (the next launch's blocks still start early). The host never waits; the
 *   stamps are read when the Context ends. Each stamp adds its own wait, about 1.5 us (H100).
 */
class CudaLaunchTimer {
public:
    CudaLaunchTimer();
    ~CudaLaunchTimer(); // prints the table; call with the owner's CUDA context current
    bool enabled() const {
        return mode != Mode::Off;
    }
    /** The timeline's stamp kernel, launched dependent (sm_90) like the owner's own launches. */
    void setStampKernel(CUfunction kernel, bool dependent);
    /** Starts an evaluation: events collect the previous one's times; the timeline stamps its start. */
    void beginEvaluation(CUstream stream);
    /** Ends it: the timeline stamps no launch from here to the next evaluation's start. */
    void endEvaluation();
    void before(const char* name, CUstream stream);
    void after(CUstream stream);

private:
    enum class Mode { Off, Events, Timeline };
    struct Mark {
        std::string name;
        CUevent start, end;
    };
    struct TimelineEvaluation {
        size_t firstStamp;              // its stamps: the start, then one after each launch
        std::vector<std::string> names; // its launches, in order
    };
    CUevent event();
    void collect();
    bool stamp(CUstream stream);
    void closeTimelineEvaluation();
    void collectTimeline();
    void print(const char* heading);

    Mode mode = Mode::Off;
    std::vector<CUevent> pool;     // every event made, for destruction
    std::vector<CUevent> free;     // events ready for reuse
    std::vector<Mark> pending;     // this evaluation's launches
    std::vector<std::string> order; // names in first-launch order
    std::map<std::string, std::vector<double>> microseconds; // per name, one total per evaluation

    CUfunction stampKernel = nullptr;
    bool dependentStamps = false;
    CUdeviceptr stamps = 0;        // unsigned long long [StampCapacity], ns
    size_t numStamps = 0;
    bool timelineOpen = false;     // an evaluation is being stamped
    std::vector<TimelineEvaluation> evaluations;
    static constexpr size_t StampCapacity = 1 << 20; // 8 MB: 10,000 evaluations of 100 launches
};

} // namespace MLFFPlugin

#endif // MLFF_CUDA_LAUNCH_TIMER_H_
