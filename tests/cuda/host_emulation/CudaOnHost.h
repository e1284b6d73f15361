/*
 * CudaOnHost.h: enough of CUDA to run the plugin's kernel sources on the CPU, for tests on
 * machines without a GPU. Each CUDA thread of a block is a std::thread; __syncthreads is a
 * barrier of the block, and ballots and shuffles exchange through a barrier of the warp. Blocks
 * run one after another, so a kernel's __shared__ variables (static here) are its block's.
 * Asynchronous copies into shared memory (async_copy.cu) land as late as the thread's waits allow.
 * Precision: double (`real`), or float where the test defines MLFF_HOST_FLOAT (the warp-group
 * products, float alone on the GPU too). Warp-group products (warpgroup_matmul.cu's wgmma) are
 * computed when issued, from every thread of the warp group's fragments, through a barrier of the
 * warp group. Not a simulator of timing or of memory ordering beyond barriers: it checks what a
 * kernel computes, given that its barriers are where they must be.
 */
#pragma once

#include <barrier>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <deque>
#include <memory>
#include <thread>
#include <vector>

using std::cos;
using std::exp;
using std::floor;
using std::sin;
using std::sqrt;

struct float2 {
    float x, y;
};
struct float4 {
    float x, y, z, w;
};
inline float4 make_float4(float x, float y, float z, float w) {
    return {x, y, z, w};
}
struct double2 {
    double x, y;
};
struct double4 {
    double x, y, z, w;
};
struct int2 {
    int x, y;
};
inline int2 make_int2(int x, int y) {
    return {x, y};
}
struct int4 {
    int x, y, z, w;
};
inline int4 make_int4(int x, int y, int z, int w) {
    return {x, y, z, w};
}
#ifdef MLFF_HOST_FLOAT
typedef float real;
typedef float2 real2;
typedef float4 real4;
typedef float mixed;
#else
#define USE_DOUBLE_PRECISION
typedef double real;
typedef double2 real2;
typedef double4 real4;
typedef double mixed;
#endif
inline real4 make_real4(real x, real y, real z, real w) {
    return {x, y, z, w};
}
// OpenMM's CudaContext defines these for the kernels; the kernels' own sources then follow.
#define KERNEL
#define DEVICE
#define RESTRICT
#define __shared__ static
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))

inline int min(int a, int b) {
    return a < b ? a : b;
}
inline int max(int a, int b) {
    return a > b ? a : b;
}

struct CudaOnHostIndex {
    int x = 0, y = 0;
};
inline thread_local CudaOnHostIndex threadIdx, blockIdx;
inline CudaOnHostIndex blockDim, gridDim;

/** What a thread gives a warp-group product: its A fragment, and B's descriptor. */
struct CudaOnHostWarpgroupSlot {
    unsigned int a[4];
    unsigned long long b;
};

/** The barriers and exchange slots of the block that is running. */
struct CudaOnHostBlock {
    std::unique_ptr<std::barrier<>> block;
    std::vector<std::unique_ptr<std::barrier<>>> warps;
    std::vector<std::unique_ptr<std::barrier<>>> warpgroups; // where the block is whole warp groups
    std::vector<double> slots; // one per thread: the values a ballot or shuffle exchanges
    std::vector<CudaOnHostWarpgroupSlot> warpgroupSlots; // one per thread
};
inline CudaOnHostBlock cudaOnHostBlock;

inline void __syncthreads() {
    cudaOnHostBlock.block->arrive_and_wait();
}

/** A barrier of the warp (all 32 lanes must call). */
inline void __syncwarp() {
    cudaOnHostBlock.warps[threadIdx.x / 32]->arrive_and_wait();
}

/** Every lane of the warp publishes `value`, then reads lane `from(lane)`'s; all 32 lanes must call. */
template <class From>
inline double cudaOnHostExchange(double value, From from) {
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    double* slots = &cudaOnHostBlock.slots[32 * warp];
    slots[lane] = value;
    cudaOnHostBlock.warps[warp]->arrive_and_wait();
    const double result = from(slots, lane);
    cudaOnHostBlock.warps[warp]->arrive_and_wait();
    return result;
}

inline unsigned int __ballot_sync(unsigned int, bool predicate) {
    return (unsigned int) cudaOnHostExchange(predicate ? 1.0 : 0.0, [](const double* slots, int) {
        unsigned int mask = 0;
        for (int k = 0; k < 32; k++)
            mask |= (slots[k] != 0 ? 1u : 0u) << k;
        return (double) mask;
    });
}

inline double __shfl_xor_sync(unsigned int, double value, int offset) {
    return cudaOnHostExchange(value, [offset](const double* slots, int lane) { return slots[lane ^ offset]; });
}

/** Lane `from`'s value (the same lane for every lane: a broadcast). */
inline double __shfl_sync(unsigned int, double value, int from) {
    return cudaOnHostExchange(value, [from](const double* slots, int) { return slots[from]; });
}

inline int __shfl_sync(unsigned int mask, int value, int from) {
    return (int) __shfl_sync(mask, (double) value, from);
}

inline int __shfl_up_sync(unsigned int, int value, int offset) {
    return (int) cudaOnHostExchange(value, [offset](const double* slots, int lane) {
        return slots[lane >= offset ? lane - offset : lane];
    });
}

inline int __popc(unsigned int x) {
    return __builtin_popcount(x);
}

inline int __ffs(unsigned int x) {
    return __builtin_ffs(x);
}

inline unsigned int __float_as_uint(float x) {
    return std::bit_cast<unsigned int>(x);
}

inline float __uint_as_float(unsigned int x) {
    return std::bit_cast<float>(x);
}

inline unsigned long long atomicAdd(unsigned long long* address, unsigned long long value) {
    return __atomic_fetch_add(address, value, __ATOMIC_RELAXED);
}

inline int atomicAdd(int* address, int value) {
    return __atomic_fetch_add(address, value, __ATOMIC_RELAXED);
}

// async_copy.cu's copies (cp.async on the GPU). Each thread's copies gather into a group until it
// commits them; a group lands only when a wait leaves fewer groups in flight than there are, so a
// kernel that reads a copy's destination before waiting for it, or waits for too few groups, reads
// what was there before, and one that reuses a destination still in flight finds it overwritten.
#define MLFF_COPIES_ON_HOST 1
struct CudaOnHostCopy {
    void* to;
    const void* from;
    int bytes;
    bool valid; // else zeros
};
struct CudaOnHostCopies {
    std::vector<CudaOnHostCopy> open;                 // not committed yet
    std::deque<std::vector<CudaOnHostCopy>> inFlight; // committed, oldest first
};
inline thread_local CudaOnHostCopies cudaOnHostCopies;

inline void cudaOnHostCopyAsync(void* to, const void* from, int bytes, bool valid) {
    cudaOnHostCopies.open.push_back({to, from, bytes, valid});
}

inline void cudaOnHostCommitCopies() {
    cudaOnHostCopies.inFlight.push_back(std::move(cudaOnHostCopies.open));
    cudaOnHostCopies.open.clear();
}

/** Lands the oldest groups until at most `pending` are in flight. */
inline void cudaOnHostWaitCopies(int pending) {
    while ((int) cudaOnHostCopies.inFlight.size() > pending) {
        for (const CudaOnHostCopy& copy : cudaOnHostCopies.inFlight.front()) {
            if (copy.valid)
                std::memcpy(copy.to, copy.from, copy.bytes);
            else
                std::memset(copy.to, 0, copy.bytes);
        }
        cudaOnHostCopies.inFlight.pop_front();
    }
}

// warpgroup_matmul.cu's products (wgmma on the GPU).
#define MLFF_WARPGROUP_ON_HOST 1

/**
 * d (+)= a b for one m64nNk8 TF32 product of the warp group, as wgmma.mma_async computes it, at
 * once: every thread of the warp group publishes its A fragment (mma.sync's layout: a0 (g, t), a1
 * (g + 8, t), a2 (g, t + 4), a3 (g + 8, t + 4) of its warp's 16 rows, g = lane / 4, t = lane % 4)
 * and B's descriptor (on the host the shared address / 16: mlffWarpgroupDescriptor), then each
 * computes its own sums, d[4 j + 2 r + c] at row g + 8 r of its warp's, column 8 j + 2 t + c. B is
 * read as the descriptor's layout has it on the GPU: K-major core matrices of 8 columns by 4
 * inputs, the two of a k-step 128 bytes apart and the column groups of 8 256 bytes apart
 * (mlffWarpgroupBOffset). TF32 operands lose their 13 low bits, as on the tensor cores; the sum of
 * the k-step is taken in double and rounded once (the GPU's order within it is its own): to nearest,
 * or with MLFF_HOST_ROUND_TOWARD_ZERO toward zero, as the tensor cores round their sums (Fasi,
 * Higham, Mikaitis and Pranesh, "Numerical behavior of NVIDIA tensor cores", 2021), so that a test
 * can see the bias that rounding leaves in a long product. All 128 threads of the warp group must
 * call, with the same descriptor.
 */
template <int N>
inline void cudaOnHostWarpgroupTf32(float* d, const unsigned int* a, unsigned long long b, bool accumulate) {
    const int group = threadIdx.x / 128, thread = threadIdx.x % 128;
    CudaOnHostWarpgroupSlot* slots = &cudaOnHostBlock.warpgroupSlots[128 * group];
    slots[thread] = {{a[0], a[1], a[2], a[3]}, b};
    cudaOnHostBlock.warpgroups[group]->arrive_and_wait();
    const auto tf32 = [](unsigned int bits) { return (double) std::bit_cast<float>(bits & 0xffffe000u); };
    const char* shared = reinterpret_cast<const char*>((uintptr_t) (slots[0].b << 4));
    const int warp = thread / 32, g = thread % 32 / 4, t = thread % 4;
    for (int i = 0; i < N / 2; i++) {
        const int row = g + 8 * (i / 2 % 2), column = 8 * (i / 4) + 2 * t + i % 2; // row in the warp's 16
        double sum = 0;
        for (int k = 0; k < 8; k++) {
            const CudaOnHostWarpgroupSlot& owner = slots[32 * warp + 4 * (row % 8) + k % 4];
            unsigned int bBits;
            std::memcpy(&bBits, shared + column / 8 * 256 + k / 4 * 128 + column % 8 * 16 + k % 4 * 4, 4);
            sum += tf32(owner.a[row / 8 + 2 * (k / 4)]) * tf32(bBits);
        }
        const double exact = (accumulate ? (double) d[i] : 0.0) + sum;
        float rounded = (float) exact;
#ifdef MLFF_HOST_ROUND_TOWARD_ZERO
        if (std::fabs((double) rounded) > std::fabs(exact))
            rounded = std::nextafter(rounded, 0.0f);
#endif
        d[i] = rounded;
    }
    cudaOnHostBlock.warpgroups[group]->arrive_and_wait(); // the slots read before the next product's
}

/**
 * Runs `kernel` (a callable, arguments bound) over `grid` x `gridY` blocks of `threads` (a multiple
 * of 32), in the order of their linear index, as a GPU starts them.
 */
template <class Kernel>
void cudaOnHostLaunch(int grid, int threads, Kernel kernel, int gridY = 1) {
    blockDim.x = threads;
    gridDim.x = grid;
    gridDim.y = gridY;
    for (int linear = 0; linear < grid * gridY; linear++) {
        const int b = linear % grid, by = linear / grid;
        cudaOnHostBlock.block = std::make_unique<std::barrier<>>(threads);
        cudaOnHostBlock.warps.clear();
        for (int w = 0; w < threads / 32; w++)
            cudaOnHostBlock.warps.push_back(std::make_unique<std::barrier<>>(32));
        cudaOnHostBlock.warpgroups.clear();
        for (int w = 0; threads % 128 == 0 && w < threads / 128; w++)
            cudaOnHostBlock.warpgroups.push_back(std::make_unique<std::barrier<>>(128));
        cudaOnHostBlock.slots.assign(threads, 0.0);
        cudaOnHostBlock.warpgroupSlots.assign(threads, CudaOnHostWarpgroupSlot{});
        std::vector<std::thread> group;
        for (int t = 0; t < threads; t++)
            group.emplace_back([&kernel, t, b, by] {
                threadIdx.x = t;
                blockIdx.x = b;
                blockIdx.y = by;
                kernel();
            });
        for (std::thread& thread : group)
            thread.join();
    }
}
