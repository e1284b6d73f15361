// mlff-product-probe: the plugin's matrix products alone, on random matrices of the network's
// shapes, timed side by side: matmul.cu's mlffMatmul (mma.sync, 3xTF32) against
// warpgroup_matmul.cu's mlffWarpgroupMatmul (wgmma, 3xTF32), each with a plain epilogue that
// stores C. A product's cost here, without the plugin around it, says whether a new shape of it
// is worth putting in the plugin, before the plugin is changed (docs/performance.md).
//
//   mlff-product-probe ROWS [REPEATS]
//
// For each shape (the filters' products over pairs and the update's over atoms, H = 128, K = 20):
// each product's largest error against a double-precision product on the host, over a sample of
// rows, relative to the largest |C|; then their medians over REPEATS alternating launches (default
// 30), between CUDA events. The warp-group product runs twice: as the update's products over atoms
// run (wgmma), and with A's inputs prefetched into the L2 as the products over pairs run (wgmma:P,
// MLFF_WARPGROUP_PREFETCH_AHEAD pairs of k-steps ahead). Then it runs in parts: its launch alone
// (wgmma:0: its grid, blocks and shared memory, no work), its copy of B's tile alone (wgmma:B), and
// its products and stores without A's loads (wgmma:-A: each row's first inputs at every k-step).
// Needs an sm_90 GPU (H100, H200): it is built for sm_90a.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

// What OpenMM's CudaContext and layers.cu define before the kernel sources (MlffRealVector as
// student_painn/layers.cu has it: the sources below use it, and layers.cu needs a model's sizes).
typedef float real;
#define DEVICE __device__
#define KERNEL extern "C" __global__
#define RESTRICT __restrict__
template <int W>
struct alignas(W * sizeof(real)) MlffRealVector {
    real v[W];
};
#include "../platforms/cuda/src/ProductShapes.h"
using namespace MLFFPlugin::ProductShapes;
#define MLFF_MATMUL_TENSOR_CORES 1
#define MLFF_WARPGROUPS 4 // ProductShapes.h's Warpgroups, checked below
#include "../platforms/cuda/kernels/dependent_launch.cu"
#include "../platforms/cuda/kernels/async_copy.cu"
#include "../platforms/cuda/kernels/matmul.cu"
#include "../platforms/cuda/kernels/warpgroup_matmul.cu"

static_assert(MLFF_WARPGROUPS == Warpgroups && MLFF_WARPGROUP_THREADS == WarpgroupThreads &&
                      MLFF_MATMUL_THREADS == MatmulThreads && MLFF_MATMUL_DEPTH == MatmulDepth &&
                      MLFF_MATMUL_STAGES == MatmulStages,
              "the kernels' sizes as ProductShapes.h has them");

namespace {

/** C's TN adjacent columns of a row, stored as they come (C: (rows, O) row-major). */
template <int O, int TN>
struct StoreEpilogue {
    float* c;
    template <int N>
    __device__ void columns(int row, int column, const float* sums) const {
        mlffStoreRow<N>(c + (size_t) row * O + column, sums);
    }
    __device__ void operator()(int row, int column, const float* sums) const {
        columns<TN>(row, column, sums);
    }
};

template <int I, int O, int TN, int Rows>
__global__ void MLFF_MATMUL_BOUNDS mmaProduct(const float* a, const float* b, int rows, float* c) {
    mlffMatmul<I, O, TN, Rows>(a, b, rows, StoreEpilogue<O, TN>{c});
}

template <int I, int O, int Columns, int PrefetchAhead>
__global__ void MLFF_WARPGROUP_BOUNDS warpgroupProduct(const float* a, const unsigned int* bImages, const int* rows,
                                                       float* c) {
    mlffWarpgroupMatmul<I, O, Columns, MLFF_WARPGROUPS, PrefetchAhead>(a, bImages, rows, StoreEpilogue<O, 2>{c});
}

/** A row of A whose inputs are the same four registers at every k-step. */
struct RegisterRow {
    float4 x;
    template <int Inputs>
    __device__ float4 inputs(int, int) const {
        return x;
    }
    __device__ void prefetch(int) const {
    }
};

// The warp-group product's loop with A's first inputs of each row reused at every k-step: its
// products and stores without A's loads (C is not A B).
template <int I, int O, int Columns>
__global__ void MLFF_WARPGROUP_BOUNDS warpgroupWithoutLoads(const float* a, const unsigned int* bImages,
                                                            const int* rowCount, float* c) {
    constexpr int columnTiles = O / Columns;
    const MlffWarpgroupTiles tiles = mlffWarpgroupLoadTiles<I, O, Columns, 0>(bImages);
    const int rows = *rowCount, t = threadIdx.x % 4;
    const MlffWarpgroupRowTiles rowTiles = mlffWarpgroupRowTiles<MLFF_WARPGROUPS>(rows, columnTiles);
    for (int tile = rowTiles.first; tile < rowTiles.count; tile += rowTiles.stride) {
        const MlffWarpgroupThreadRows mine = mlffWarpgroupThreadRows(tile, rows);
        float d[Columns / 2];
        MlffWarpgroupFragments fragments;
        const RegisterRow a0{reinterpret_cast<const float4*>(a + (size_t) mine.r0 * I)[t]};
        const RegisterRow a1{reinterpret_cast<const float4*>(a + (size_t) mine.r1 * I)[t]};
        mlffWarpgroupTileProduct<I, Columns, 0>(a0, a1, tiles.bBig, tiles.bSmall, d, fragments);
        mlffWarpgroupWait<0>();
        StoreEpilogue<O, 2> epilogue{c};
        mlffWarpgroupTileEpilogue<Columns>(epilogue, d, mine.row0, mine.row1, rows, tiles.firstColumn, t);
    }
}

// The warp-group product's parts, launched as it is: nothing (what a launch of its blocks and
// shared memory costs), and its blocks' copy of B's tile alone. C is not written.
template <int I, int O, int Columns>
__global__ void MLFF_WARPGROUP_BOUNDS warpgroupLaunchOnly(const float*, const unsigned int*, const int*, float*) {
}

template <int I, int O, int Columns>
__global__ void MLFF_WARPGROUP_BOUNDS warpgroupLoadOnly(const float*, const unsigned int* bImages, const int* rows,
                                                        float* c) {
    const MlffWarpgroupTiles tiles = mlffWarpgroupLoadTiles<I, O, Columns, 0>(bImages);
    if (rows == nullptr) // never: keeps the tile's loads and stores
        c[threadIdx.x] = (float) tiles.bBig[threadIdx.x];
}

void check(cudaError_t result, const char* what) {
    if (result != cudaSuccess) {
        std::fprintf(stderr, "mlff-product-probe: %s: %s\n", what, cudaGetErrorString(result));
        std::exit(1);
    }
}

/** A launch of one product: its kernel, grid, block and dynamic shared memory. */
struct Launch {
    const void* kernel;
    unsigned int grid, block, sharedBytes;
    void** args;
};

float timeLaunch(const Launch& launch, cudaEvent_t start, cudaEvent_t stop) {
    check(cudaEventRecord(start), "recording");
    check(cudaLaunchKernel(launch.kernel, launch.grid, launch.block, launch.args, launch.sharedBytes, 0), "launching");
    check(cudaEventRecord(stop), "recording");
    check(cudaEventSynchronize(stop), "running");
    float ms = 0;
    check(cudaEventElapsedTime(&ms, start, stop), "timing");
    return 1000 * ms;
}

float median(std::vector<float> values) {
    std::sort(values.begin(), values.end());
    return values[values.size() / 2];
}

/** The largest |C - A B| over every 97th row, against double sums on the host, over the largest |A B|. */
template <int I, int O>
double relativeError(const std::vector<float>& a, const std::vector<float>& b, const std::vector<float>& c,
                     int rows) {
    double largestError = 0, largest = 0;
    for (int row = 0; row < rows; row += 97)
        for (int o = 0; o < O; o++) {
            double sum = 0;
            for (int k = 0; k < I; k++)
                sum += (double) a[(size_t) row * I + k] * b[(size_t) k * O + o];
            largestError = std::max(largestError, std::fabs(sum - c[(size_t) row * O + o]));
            largest = std::max(largest, std::fabs(sum));
        }
    return largestError / largest;
}

/**
 * Both products of one shape: mlffMatmul in tiles of Rows by 16 TN, as the plugin launches it
 * (launchMatmul), and mlffWarpgroupMatmul with Columns a block, a block an SM (launchWarpgroupMatmul);
 * then the warp-group product's parts (wgmma:0, wgmma:B, wgmma:-A), whose times say where the
 * product's goes.
 */
template <int I, int O, int TN, int Rows, int Columns>
void probe(const char* name, int rows, int repeats, int multiprocessors) {
    std::mt19937 random(7);
    std::uniform_real_distribution<float> uniform(-1, 1);
    std::vector<float> a((size_t) rows * I), b((size_t) I * O), c((size_t) rows * O);
    for (float& x : a)
        x = uniform(random);
    for (float& x : b)
        x = uniform(random) / std::sqrt((float) I);
    float *aDevice, *bDevice, *cDevice;
    int* rowsDevice;
    check(cudaMalloc(&aDevice, a.size() * sizeof(float)), "allocating A");
    check(cudaMalloc(&bDevice, b.size() * sizeof(float)), "allocating B");
    check(cudaMalloc(&cDevice, c.size() * sizeof(float)), "allocating C");
    check(cudaMalloc(&rowsDevice, sizeof(int)), "allocating the row count");
    check(cudaMemcpy(aDevice, a.data(), a.size() * sizeof(float), cudaMemcpyHostToDevice), "copying A");
    check(cudaMemcpy(bDevice, b.data(), b.size() * sizeof(float), cudaMemcpyHostToDevice), "copying B");
    check(cudaMemcpy(rowsDevice, &rows, sizeof(int), cudaMemcpyHostToDevice), "copying the row count");
    // B's images, split once, as the plugin makes them (prepareWarpgroupImages).
    unsigned int* bImages;
    constexpr int columnTiles = O / Columns;
    check(cudaMalloc(&bImages, columnTiles * MlffWarpgroupTileWords<I, Columns, 0>::value * sizeof(unsigned int)),
          "allocating B's images");
    mlffPrepareWarpgroupTiles<<<columnTiles, 256>>>(bDevice, I, O, Columns, 0, nullptr, 0, 0, nullptr, bImages);
    check(cudaDeviceSynchronize(), "splitting B");

    // The plugin's shapes (ProductShapes.h).
    constexpr int columns = 16 * TN;
    const unsigned int mmaShared = matmulSharedBytes(Rows, columns);
    const unsigned int warpgroupShared = warpgroupSharedBytes((I + 15) / 16 * 16, Columns);
    auto mma = mmaProduct<I, O, TN, Rows>;
    check(cudaFuncSetAttribute(mma, cudaFuncAttributeMaxDynamicSharedMemorySize, mmaShared), "mma.sync's shared memory");
    constexpr int variants = 6, products = 3; // the last three do not compute A B
    constexpr int prefetch = MLFF_WARPGROUP_PREFETCH_AHEAD; // wgmma:P, as the products over pairs run
    const void* warpgroupKernels[variants - 1] = {(const void*) warpgroupProduct<I, O, Columns, 0>,
                                                  (const void*) warpgroupProduct<I, O, Columns, prefetch>,
                                                  (const void*) warpgroupLaunchOnly<I, O, Columns>,
                                                  (const void*) warpgroupLoadOnly<I, O, Columns>,
                                                  (const void*) warpgroupWithoutLoads<I, O, Columns>};
    for (const void* kernel : warpgroupKernels)
        check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, warpgroupShared),
              "wgmma's shared memory");
    void* mmaArgs[] = {&aDevice, &bDevice, &rows, &cDevice};
    void* warpgroupArgs[] = {&aDevice, &bImages, &rowsDevice, &cDevice};
    const unsigned int warpgroupGrid = warpgroupBlocks(rows, O, Columns, multiprocessors);
    const char* labels[variants] = {"mma", "wgmma", "wgmma:P", "wgmma:0", "wgmma:B", "wgmma:-A"};
    Launch launches[variants] = {
        {(const void*) mma, matmulBlocks(rows, O, Rows, columns), MatmulThreads, mmaShared, mmaArgs}};
    for (int v = 1; v < variants; v++)
        launches[v] = {warpgroupKernels[v - 1], warpgroupGrid, WarpgroupThreads * Warpgroups, warpgroupShared,
                       warpgroupArgs};

    double errors[products];
    for (int v = 0; v < products; v++) {
        check(cudaMemset(cDevice, 0, c.size() * sizeof(float)), "clearing C");
        check(cudaLaunchKernel(launches[v].kernel, launches[v].grid, launches[v].block, launches[v].args,
                               launches[v].sharedBytes, 0),
              "launching");
        check(cudaDeviceSynchronize(), "running");
        check(cudaMemcpy(c.data(), cDevice, c.size() * sizeof(float), cudaMemcpyDeviceToHost), "copying C");
        errors[v] = relativeError<I, O>(a, b, c, rows);
    }
    cudaEvent_t start, stop;
    check(cudaEventCreate(&start), "creating an event");
    check(cudaEventCreate(&stop), "creating an event");
    std::vector<float> times[variants];
    for (int r = 0; r < repeats; r++)
        for (int v = 0; v < variants; v++)
            times[v].push_back(timeLaunch(launches[v], start, stop));
    const double flops = 2.0 * 3 * rows * I * O; // 3xTF32: three products
    for (int v = 0; v < variants; v++) {
        const float us = median(times[v]);
        if (v < products)
            std::printf("%-18s %8d %5d %5d  %-8s %9.1f %9.1f %10.1e\n", name, rows, I, O, labels[v], us,
                        flops / us * 1e-6, errors[v]);
        else
            std::printf("%-18s %8d %5d %5d  %-8s %9.1f %9s %10s\n", name, rows, I, O, labels[v], us, "-", "-");
    }
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
    cudaFree(aDevice);
    cudaFree(bDevice);
    cudaFree(bImages);
    cudaFree(cDevice);
    cudaFree(rowsDevice);
}

} // namespace

int main(int argc, char** argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: mlff-product-probe ROWS [REPEATS]\n");
        return 2;
    }
    const int rows = std::atoi(argv[1]), repeats = argc > 2 ? std::atoi(argv[2]) : 30;
    if (rows < 1 || repeats < 1) {
        std::fprintf(stderr, "mlff-product-probe: ROWS and REPEATS must be positive\n");
        return 2;
    }
    int device = 0, major = 0, multiprocessors = 0;
    check(cudaGetDevice(&device), "finding the GPU");
    check(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device), "its compute capability");
    check(cudaDeviceGetAttribute(&multiprocessors, cudaDevAttrMultiProcessorCount, device), "its SMs");
    if (major != 9) {
        std::fprintf(stderr, "mlff-product-probe: needs compute capability 9.0 (wgmma); this GPU has %d.x\n", major);
        return 1;
    }
    std::printf("%-18s %8s %5s %5s  %-8s %9s %9s %10s\n", "product", "rows", "I", "O", "kernel", "us", "TFLOP/s",
                "rel. error");
    // H = 128, K = 20; mma.sync's tiles as the plugin's kernels take them, wgmma's columns likewise
    // (the filters' backward here without its side product).
    probe<20, 128, 4, 128, 128>("filters' hidden", rows, repeats, multiprocessors);
    probe<128, 384, 6, 128, 128>("filters' output", rows, repeats, multiprocessors);
    probe<384, 128, 4, 128, 64>("filters' backward", rows, repeats, multiprocessors);
    probe<256, 128, 4, 64, 64>("update's hidden", rows, repeats, multiprocessors);
    probe<384, 128, 4, 64, 64>("update's backward", rows, repeats, multiprocessors);
    return 0;
}
