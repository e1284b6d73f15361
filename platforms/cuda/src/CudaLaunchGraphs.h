#ifndef MLFF_CUDA_LAUNCH_GRAPHS_H_
#define MLFF_CUDA_LAUNCH_GRAPHS_H_

#include <cuda.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace MLFFPlugin {

/**
 * An evaluation's launches issued as one CUDA graph where they repeat: the host then makes one
 * call a step for the force rather than one a launch, and the GPU starts each launch sooner.
 *
 * Between begin() and submit() the owner's launches are recorded, not issued: each kernel with its
 * grid, block, shared memory, cluster, and its arguments' bytes (cuFuncGetParamInfo), each memset
 * with its target. submit() issues them on the stream: through a graph already built for the same
 * launches (every byte alike: any argument that changed, a box, a scale, a pointer to a grown
 * list, makes them different launches), else one by one as recorded, and builds the graph the
 * second time the same launches come, so that launches that change every step (a barostat's box)
 * never pay for a graph. A few graphs are kept, the least recently used replaced: the evaluations
 * alternate between two slots for the neighbour count (CudaNeighborLists.cpp), and energy-only
 * evaluations launch less. Where a graph cannot be built (a driver that cannot capture some
 * launch), the launches go one by one from then on, and buildFailure() says why.
 *
 * The graphs are built by capturing the launches on a stream of their own (capture runs nothing),
 * so OpenMM's stream is never captured. Dependent launches (programmatic stream serialization)
 * keep their attribute in the graph. The owner's CUDA context must be current for every call and
 * for the destructor; the graphs and the stream belong to this object.
 */
class CudaLaunchGraphs {
public:
    /** Whether the driver and the headers built against have what it needs (CUDA 12.4: cuFuncGetParamInfo). */
    static bool supported();
    CudaLaunchGraphs();
    ~CudaLaunchGraphs();
    CudaLaunchGraphs(const CudaLaunchGraphs&) = delete;
    CudaLaunchGraphs& operator=(const CudaLaunchGraphs&) = delete;

    /** Starts recording an evaluation. */
    void begin();
    bool recording() const {
        return isRecording;
    }
    /** Records a kernel launch (config's stream is ignored; its attributes are copied). */
    void addKernel(const CUlaunchConfig& config, CUfunction kernel, void** args, const char* what);
    /** Records cuMemsetD32Async(target, value, count). */
    void addMemset(CUdeviceptr target, unsigned int value, size_t count, const char* what);
    /** Issues the evaluation's launches on `stream` and stops recording. */
    void submit(CUstream stream);
    /** Stops recording and forgets what was recorded (an evaluation that failed part way). */
    void discard();

    /** How many evaluations went through a graph, and how many graphs were built. */
    long long graphLaunches() const {
        return numGraphLaunches;
    }
    long long graphsBuilt() const {
        return numGraphsBuilt;
    }
    /** Why no more graphs are built (a graph could not be captured), or "". */
    const std::string& buildFailure() const {
        return failure;
    }

private:
    /** A recorded launch: a kernel, or a memset where kernel is null. */
    struct Launch {
        CUfunction kernel = nullptr;
        unsigned int grid = 0, gridRows = 1, block = 0, sharedBytes = 0; // grid x gridRows blocks
        std::vector<CUlaunchAttribute> attributes;
        std::vector<unsigned char> argBytes; // the arguments at the kernel's own offsets
        CUdeviceptr memsetTarget = 0;
        unsigned int memsetValue = 0;
        size_t memsetCount = 0;
        const char* what = nullptr; // for errors; not compared
        bool operator==(const Launch& other) const;
    };
    struct Graph {
        std::vector<Launch> launches;
        CUgraphExec exec = nullptr; // null until the launches come a second time
        std::uint64_t lastUse = 0;
    };
    /** The kernel's parameters, (offset, size) each, from the driver; cached. */
    const std::vector<std::pair<size_t, size_t>>& parameters(CUfunction kernel);
    void issue(const std::vector<Launch>& launches, CUstream stream);
    CUgraphExec build(const std::vector<Launch>& launches);

    static constexpr size_t MaxGraphs = 4;
    bool isRecording = false;
    std::vector<Launch> recorded;
    std::vector<Graph> graphs;
    std::map<CUfunction, std::vector<std::pair<size_t, size_t>>> parameterLayouts;
    CUstream captureStream = nullptr;
    std::uint64_t numSubmits = 0;
    long long numGraphLaunches = 0, numGraphsBuilt = 0;
    std::string failure; // the first graph that could not be built: its error
};

} // namespace MLFFPlugin

#endif // MLFF_CUDA_LAUNCH_GRAPHS_H_
