#include "CudaLaunchGraphs.h"

#include "CudaCheck.h"

#include <algorithm>
#include <cstring>
#include <string>

using namespace MLFFPlugin;
using OpenMM::OpenMMException;

namespace {

/** The attribute with only its meaningful fields set, the rest zero: so that launches compare by bytes. */
CUlaunchAttribute canonical(const CUlaunchAttribute& attribute) {
    CUlaunchAttribute copy;
    std::memset(&copy, 0, sizeof(copy));
    copy.id = attribute.id;
    if (attribute.id == CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION)
        copy.value.clusterDim = attribute.value.clusterDim;
    else if (attribute.id == CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION)
        copy.value.programmaticStreamSerializationAllowed = attribute.value.programmaticStreamSerializationAllowed;
    else
        copy.value = attribute.value;
    return copy;
}

} // namespace

bool CudaLaunchGraphs::Launch::operator==(const Launch& other) const {
    if (kernel != other.kernel || grid != other.grid || gridRows != other.gridRows || block != other.block ||
        sharedBytes != other.sharedBytes || argBytes != other.argBytes || memsetTarget != other.memsetTarget ||
        memsetValue != other.memsetValue || memsetCount != other.memsetCount ||
        attributes.size() != other.attributes.size())
        return false;
    return attributes.empty() ||
           std::memcmp(attributes.data(), other.attributes.data(), attributes.size() * sizeof(CUlaunchAttribute)) == 0;
}

bool CudaLaunchGraphs::supported() {
#if CUDA_VERSION >= 12040
    int driver = 0;
    return cuDriverGetVersion(&driver) == CUDA_SUCCESS && driver >= 12040;
#else
    return false;
#endif
}

CudaLaunchGraphs::CudaLaunchGraphs() {
    check(cuStreamCreate(&captureStream, CU_STREAM_NON_BLOCKING), "creating the stream that graphs are captured on");
}

CudaLaunchGraphs::~CudaLaunchGraphs() {
    for (Graph& graph : graphs)
        if (graph.exec != nullptr)
            cuGraphExecDestroy(graph.exec);
    if (captureStream != nullptr)
        cuStreamDestroy(captureStream);
}

void CudaLaunchGraphs::begin() {
    recorded.clear();
    isRecording = true;
}

const std::vector<std::pair<size_t, size_t>>& CudaLaunchGraphs::parameters(CUfunction kernel) {
    auto known = parameterLayouts.find(kernel);
    if (known != parameterLayouts.end())
        return known->second;
    std::vector<std::pair<size_t, size_t>> layout;
    for (size_t index = 0;; index++) {
        size_t offset = 0, size = 0;
#if CUDA_VERSION >= 12040
        const CUresult result = cuFuncGetParamInfo(kernel, index, &offset, &size);
#else
        const CUresult result = CUDA_ERROR_NOT_SUPPORTED; // (supported() is false: never constructed)
#endif
        if (result == CUDA_ERROR_INVALID_VALUE) // past the last parameter
            break;
        check(result, "reading a kernel's parameters");
        layout.emplace_back(offset, size);
    }
    return parameterLayouts.emplace(kernel, std::move(layout)).first->second;
}

void CudaLaunchGraphs::addKernel(const CUlaunchConfig& config, CUfunction kernel, void** args, const char* what) {
    Launch launch;
    launch.kernel = kernel;
    launch.grid = config.gridDimX;
    launch.gridRows = config.gridDimY;
    launch.block = config.blockDimX;
    launch.sharedBytes = config.sharedMemBytes;
    for (unsigned int k = 0; k < config.numAttrs; k++)
        launch.attributes.push_back(canonical(config.attrs[k]));
    const std::vector<std::pair<size_t, size_t>>& layout = parameters(kernel);
    const size_t bytes = layout.empty() ? 0 : layout.back().first + layout.back().second;
    launch.argBytes.assign(bytes, 0); // the padding between parameters stays zero
    for (size_t index = 0; index < layout.size(); index++)
        std::memcpy(launch.argBytes.data() + layout[index].first, args[index], layout[index].second);
    launch.what = what;
    recorded.push_back(std::move(launch));
}

void CudaLaunchGraphs::addMemset(CUdeviceptr target, unsigned int value, size_t count, const char* what) {
    Launch launch;
    launch.memsetTarget = target;
    launch.memsetValue = value;
    launch.memsetCount = count;
    launch.what = what;
    recorded.push_back(std::move(launch));
}

void CudaLaunchGraphs::issue(const std::vector<Launch>& launches, CUstream stream) {
    std::vector<void*> args;
    for (const Launch& launch : launches) {
        if (launch.kernel == nullptr) {
            check(cuMemsetD32Async(launch.memsetTarget, launch.memsetValue, launch.memsetCount, stream), launch.what);
            continue;
        }
        const std::vector<std::pair<size_t, size_t>>& layout = parameters(launch.kernel);
        args.clear();
        for (const auto& parameter : layout)
            args.push_back((void*) (launch.argBytes.data() + parameter.first));
        CUlaunchConfig config = {};
        config.gridDimX = launch.grid;
        config.gridDimY = launch.gridRows;
        config.gridDimZ = 1;
        config.blockDimX = launch.block;
        config.blockDimY = config.blockDimZ = 1;
        config.sharedMemBytes = launch.sharedBytes;
        config.hStream = stream;
        config.attrs = const_cast<CUlaunchAttribute*>(launch.attributes.data());
        config.numAttrs = (unsigned int) launch.attributes.size();
        check(cuLaunchKernelEx(&config, launch.kernel, args.data(), nullptr), launch.what);
    }
}

CUgraphExec CudaLaunchGraphs::build(const std::vector<Launch>& launches) {
    check(cuStreamBeginCapture(captureStream, CU_STREAM_CAPTURE_MODE_THREAD_LOCAL), "starting a graph's capture");
    CUgraph graph = nullptr;
    try {
        issue(launches, captureStream);
    }
    catch (...) {
        cuStreamEndCapture(captureStream, &graph); // ends the capture, which the error invalidated
        if (graph != nullptr)
            cuGraphDestroy(graph);
        throw;
    }
    check(cuStreamEndCapture(captureStream, &graph), "capturing a graph of the force's launches");
    CUgraphExec exec = nullptr;
    const CUresult result = cuGraphInstantiate(&exec, graph, 0);
    cuGraphDestroy(graph);
    check(result, "instantiating a graph of the force's launches");
    numGraphsBuilt++;
    return exec;
}

void CudaLaunchGraphs::discard() {
    isRecording = false;
    recorded.clear();
}

void CudaLaunchGraphs::submit(CUstream stream) {
    isRecording = false;
    numSubmits++;
    auto same = std::find_if(graphs.begin(), graphs.end(),
                             [&](const Graph& graph) { return graph.launches == recorded; });
    if (same == graphs.end()) { // new launches: one by one, and remembered in place of the least recently used
        issue(recorded, stream);
        if (graphs.size() < MaxGraphs)
            graphs.emplace_back();
        Graph& replaced = *std::min_element(graphs.begin(), graphs.end(),
                                            [](const Graph& a, const Graph& b) { return a.lastUse < b.lastUse; });
        if (replaced.exec != nullptr)
            check(cuGraphExecDestroy(replaced.exec), "destroying a graph");
        replaced.exec = nullptr;
        replaced.launches = std::move(recorded);
        replaced.lastUse = numSubmits;
        recorded.clear();
        return;
    }
    same->lastUse = numSubmits;
    if (same->exec == nullptr && failure.empty()) { // the second time: worth a graph
        try {
            same->exec = build(recorded);
        }
        catch (const OpenMMException& error) { // a driver that cannot capture them: one by one from now on
            failure = error.what();
        }
    }
    if (same->exec == nullptr) {
        issue(recorded, stream);
        return;
    }
    check(cuGraphLaunch(same->exec, stream), "launching the force's graph");
    numGraphLaunches++;
}
