#ifndef MLFF_CUDA_LAUNCH_TIMER_H_
#define MLFF_CUDA_LAUNCH_TIMER_H_

#include <cuda.h>

#include <map>
#include <string>
#include <vector>

namespace MLFFPlugin {

/**
 * Where a force evaluation's GPU time goes, launch by launch: when the environment variable
 * MLFF_CUDA_TIMING is set, CudaCalcMLFFForceKernel brackets each launch with CUDA events on its
 * stream, and at the Context's end this prints, per launch name, the median time per evaluation
 * (summed over the launches of that name in one evaluation) to stderr. A developer's tool for
 * benchmarks/ (the events cost a few microseconds of host time a launch); off, it does nothing.
 * The events of an evaluation are read at the start of the next (they have finished by then,
 * or the read waits for them), never in the evaluation itself.
 */
class CudaLaunchTimer {
public:
    CudaLaunchTimer();
    ~CudaLaunchTimer(); // prints the table; call with the owner's CUDA context current
    bool enabled() const {
        return on;
    }
    /** Starts an evaluation: collects the previous one's times. */
    void beginEvaluation();
    void before(const char* name, CUstream stream);
    void after(CUstream stream);

private:
    struct Mark {
        std::string name;
        CUevent start, end;
    };
    CUevent event();
    void collect();

    bool on = false;
    std::vector<CUevent> pool;     // every event made, for destruction
    std::vector<CUevent> free;     // events ready for reuse
    std::vector<Mark> pending;     // this evaluation's launches
    std::vector<std::string> order; // names in first-launch order
    std::map<std::string, std::vector<double>> microseconds; // per name, one total per evaluation
};

} // namespace MLFFPlugin

#endif // MLFF_CUDA_LAUNCH_TIMER_H_
