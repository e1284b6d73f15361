/*
 * warpgroup_matmul.cu: C = A B for a product over pairs (hundreds of thousands of rows) on sm_90a's
 * warp-group products (wgmma), which give a 64-row tile's product to the tensor cores in one
 * instruction where mma.sync (matmul.cu) takes a warp's 16 rows by 8 columns. The contract is
 * mlffMatmul's on tensor cores, in float:
 *   A (rows, I) row-major, rows 16-byte aligned where I is a multiple of 4 (I rounded up to 16,
 *   zeros past I: a pair of k-steps);
 *   B (I, O) row-major: the weights, input-major, given as their images (below);
 *   3xTF32 (matmul.cu says why), the small terms first, as mma.sync's path sums.
 * It needs a module built for sm_90a (the host adds "-arch=compute_90a" to OpenMM's flags).
 *
 * A block of 128 WarpGroups threads, one an SM, holds Columns of B's columns in shared memory for
 * the whole launch, split into TF32 big and small parts (2 Columns I floats). They were split once,
 * when the context was made, into an image of that shared memory (mlffPrepareWarpgroupTiles), which
 * the block copies in with bulk copies. Its warp groups then take 64-row tiles of A in turn, each
 * thread loading its rows' fragments straight from global memory into registers (products over
 * pairs prefetch them into the L2 first: MLFF_WARPGROUP_PREFETCH_AHEAD). The grid is a multiple of
 * the O / Columns column tiles: blocks c, c + O / Columns, ... share column tile c. The row count
 * is a number (the atoms) or a pointer to one on the device (the pairs, counted by an earlier
 * launch), read once B's tile is loaded.
 *
 * The epilogue receives two adjacent sums of a row at a time, as the accumulators hold them:
 * epilogue.template columns<2>(row, column, sums), for rows below the count only. It should store
 * them as one vector: 4-byte stores made the product 1.5 times slower (H200). A kernel that takes
 * more than one product on a tile (edge_filters.cu's filters' backward) builds on the parts:
 * mlffWarpgroupLoadTiles, which can hold a second, small product's weights (the side product)
 * beside B's, and mlffWarpgroupTileProduct.
 *
 * On the host (tests/cuda/host_emulation, MLFF_WARPGROUP_ON_HOST) each instruction that has no C++
 * of its own is a function here with a second body: a product is computed when it is issued, from
 * every thread of the warp group's fragments (CudaOnHost.h's cudaOnHostWarpgroupTf32), the weights'
 * image is copied in by one thread, and fences, commits, waits and prefetches do nothing.
 */
#if defined(__CUDA_ARCH__) && !defined(__CUDA_ARCH_FEAT_SM90_ALL)
#error "warpgroup_matmul.cu needs a module built for sm_90a"
#endif
#define MLFF_WARPGROUP_THREADS 128
// A kernel's launch bounds: MLFF_WARPGROUPS (the host's) warp groups a block, one block an SM.
#define MLFF_WARPGROUP_BOUNDS __launch_bounds__(MLFF_WARPGROUP_THREADS * MLFF_WARPGROUPS, 1)

/**
 * Shared memory of B's column tile as wgmma reads it without swizzling: K-major core matrices of
 * 8 columns by 4 inputs (16 bytes a column), a k-step's 8 inputs as two of them 128 bytes apart
 * (the leading byte offset), the column groups of 8 each 256 bytes apart (the stride byte offset),
 * so that a k-step of Columns columns is 32 Columns bytes.
 */
template <int Columns>
DEVICE inline int mlffWarpgroupBOffset(int kStep, int column, int kInStep) {
    return kStep * 8 * Columns + column / 8 * 64 + kInStep / 4 * 32 + column % 8 * 4 + kInStep % 4;
}

/**
 * wgmma's descriptor of a k-step's B at `shared`, in the layout above. On the host: the address in
 * 16-byte units alone (the emulation takes the layout's offsets as given).
 */
DEVICE inline unsigned long long mlffWarpgroupDescriptor(const void* shared) {
#ifdef MLFF_WARPGROUP_ON_HOST
    return (unsigned long long) reinterpret_cast<uintptr_t>(shared) >> 4;
#else
    const unsigned int address = (unsigned int) __cvta_generic_to_shared(shared);
    return (unsigned long long) ((address & 0x3FFFF) >> 4) | (unsigned long long) (128 >> 4) << 16 |
           (unsigned long long) (256 >> 4) << 32;
#endif
}

/**
 * The descriptor of the k-step `words` 4-byte words (a multiple of 4) after the one `descriptor`
 * describes, computed where it is used: an add the compiler cannot hoist out of a loop over tiles,
 * where every k-step's descriptor would hold two registers for the whole loop.
 */
DEVICE inline unsigned long long mlffWarpgroupDescriptorAfter(unsigned long long descriptor, int words) {
#ifdef MLFF_WARPGROUP_ON_HOST
    return descriptor + words / 4;
#else
    unsigned long long after;
    asm volatile("add.s64 %0, %1, %2;" : "=l"(after) : "l"(descriptor), "l"((unsigned long long) (words / 4)));
    return after;
#endif
}

/**
 * d (+)= a b for one m64nNk8 TF32 product of the warp group (N = 16, 32, 64 or 128 columns): a from
 * registers (mma.sync's A fragment of each warp's 16 rows), b by descriptor; d as wgmma lays it
 * out, N / 2 a thread.
 */
#ifdef MLFF_WARPGROUP_ON_HOST
template <int N>
DEVICE inline void mlffWarpgroupTf32(float* d, const unsigned int* a, unsigned long long b, bool accumulate) {
    cudaOnHostWarpgroupTf32<N>(d, a, b, accumulate);
}
#else
template <int N>
DEVICE inline void mlffWarpgroupTf32(float* d, const unsigned int* a, unsigned long long b, bool accumulate);

template <>
DEVICE inline void mlffWarpgroupTf32<16>(float* d, const unsigned int* a, unsigned long long b, bool accumulate) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %12, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n16k8.f32.tf32.tf32 "
                 "{%0, %1, %2, %3, %4, %5, %6, %7}, "
                 "{%8, %9, %10, %11}, %13, p, 1, 1;\n}"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"((int) accumulate), "l"(b));
}

template <>
DEVICE inline void mlffWarpgroupTf32<32>(float* d, const unsigned int* a, unsigned long long b, bool accumulate) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %20, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n32k8.f32.tf32.tf32 "
                 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}, "
                 "{%16, %17, %18, %19}, %21, p, 1, 1;\n}"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
                   "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"((int) accumulate), "l"(b));
}

template <>
DEVICE inline void mlffWarpgroupTf32<64>(float* d, const unsigned int* a, unsigned long long b, bool accumulate) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %36, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n64k8.f32.tf32.tf32 "
                 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
                 "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, "
                 "{%32, %33, %34, %35}, %37, p, 1, 1;\n}"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
                   "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
                   "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
                   "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"((int) accumulate), "l"(b));
}

template <>
DEVICE inline void mlffWarpgroupTf32<128>(float* d, const unsigned int* a, unsigned long long b, bool accumulate) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %68, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k8.f32.tf32.tf32 "
                 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
                 "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
                 "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
                 "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "
                 "{%64, %65, %66, %67}, %69, p, 1, 1;\n}"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
                   "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
                   "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
                   "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
                   "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
                   "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
                   "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
                   "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"((int) accumulate), "l"(b));
}
#endif

/**
 * d (+)= one k-step of a 3xTF32 product, the small terms first: A's fragment in its two parts, times
 * B's k-step in its two parts, described by bBig and bSmall.
 */
template <int N>
DEVICE inline void mlffWarpgroupTf32x3(float* d, const unsigned int* aBig, const unsigned int* aSmall,
                                       unsigned long long bBig, unsigned long long bSmall, bool accumulate) {
    mlffWarpgroupTf32<N>(d, aSmall, bBig, accumulate);
    mlffWarpgroupTf32<N>(d, aBig, bSmall, true);
    mlffWarpgroupTf32<N>(d, aBig, bBig, true);
}

/**
 * mlffWarpgroupTf32x3 on the k-step of B `offset` words past the ones that the descriptors bBig and
 * bSmall describe, its descriptors formed by mlffWarpgroupDescriptorAfter's add.
 */
template <int N>
DEVICE inline void mlffWarpgroupKStep(float* d, const unsigned int* aBig, const unsigned int* aSmall,
                                      unsigned long long bBig, unsigned long long bSmall, int offset, bool accumulate) {
    mlffWarpgroupTf32x3<N>(d, aBig, aSmall, mlffWarpgroupDescriptorAfter(bBig, offset),
                           mlffWarpgroupDescriptorAfter(bSmall, offset), accumulate);
}

/** Orders the warp group's register writes before the products issued next read them (wgmma.fence). */
DEVICE inline void mlffWarpgroupFence() {
#ifndef MLFF_WARPGROUP_ON_HOST
    asm volatile("wgmma.fence.sync.aligned;" ::: "memory");
#endif
}

/** Closes the group of the products issued since the last (wgmma.commit_group). */
DEVICE inline void mlffWarpgroupCommit() {
#ifndef MLFF_WARPGROUP_ON_HOST
    asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory");
#endif
}

/** Waits until at most Pending groups of products are in flight, their sums in d (wgmma.wait_group). */
template <int Pending>
DEVICE inline void mlffWarpgroupWait() {
#ifndef MLFF_WARPGROUP_ON_HOST
    asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(Pending) : "memory");
#endif
}

/**
 * Memory input m of A (E) and B (F) is k-step 2 p + q, input t + 4 hi of it, m = 16 p + 4 t + 2 q + hi,
 * so that a thread's A fragments of two k-steps are one float4 (t: the thread in its quad). Where
 * input m, column n of a column tile of B goes in the layout above (in each TF32 part).
 */
template <int Columns>
DEVICE inline int mlffWarpgroupBIndex(int m, int n) {
    const int p = m / 16, t = m % 16 / 4, q = m % 4 / 2, hi = m % 2;
    return mlffWarpgroupBOffset<Columns>(2 * p + q, n, t + 4 * hi);
}

/**
 * Where input m, column n of a column tile of B goes when A's fragments are the accumulators of an
 * earlier product rather than loads (edge_filters.cu's filters from the basis): a thread holds
 * columns 8 j + 2 t and 8 j + 2 t + 1 of its rows there, which become k-step j's inputs t and t + 4.
 * So input m is k-step m / 8, input (m % 8) / 2 + 4 (m % 2) of it.
 */
template <int Columns>
DEVICE inline int mlffWarpgroupBIndexOfAccumulators(int m, int n) {
    return mlffWarpgroupBOffset<Columns>(m / 8, n, m % 8 / 2 + 4 * (m % 2));
}

/** The words of a column tile's image (MlffWarpgroupTiles): B's two parts, F's two, and c where J > 0. */
template <int I, int Columns, int J>
struct MlffWarpgroupTileWords {
    static constexpr int value = Columns * (2 * ((I + 15) / 16 * 16) + 2 * ((J + 15) / 16 * 16) + (J > 0 ? 1 : 0));
};

/** Block `layer`'s images among those of every block, side by side (mlffPrepareWarpgroupTiles). */
template <int I, int O, int Columns, int J>
DEVICE inline const unsigned int* mlffWarpgroupImagesOf(const unsigned int* images, int layer) {
    return images + (size_t) layer * (O / Columns) * MlffWarpgroupTileWords<I, Columns, J>::value;
}

/**
 * B's Columns columns from firstColumn on (B: (inputs, outputs) row-major), split into TF32 parts in
 * the layout above (inputs rounded up to 16, zeros past them), by the block's threads; each k-step's
 * inputs in the order of A's loads, or of its accumulators (mlffWarpgroupBIndexOfAccumulators).
 */
template <int Columns>
DEVICE inline void mlffWarpgroupSplitColumns(const real* RESTRICT b, int inputs, int outputs, int firstColumn,
                                             bool accumulatorOrder, unsigned int* RESTRICT big,
                                             unsigned int* RESTRICT small) {
    const int count = Columns * ((inputs + 15) / 16 * 16);
    for (int e = threadIdx.x; e < count; e += blockDim.x) {
        const int m = e / Columns, n = e % Columns;
        const int offset = accumulatorOrder ? mlffWarpgroupBIndexOfAccumulators<Columns>(m, n)
                                            : mlffWarpgroupBIndex<Columns>(m, n);
        mlffSplitTf32(m < inputs ? b[(size_t) m * outputs + firstColumn + n] : 0.0f, &big[offset], &small[offset]);
    }
}

/**
 * The weights of one warp-group product as its blocks hold them in shared memory: for each of the
 * outputs / columns column tiles (a block each), its image, as mlffWarpgroupLoadTiles copies it in
 * with no more work: B (inputs, outputs) split into TF32 parts, its k-steps' inputs in the order of
 * A's loads or, with accumulatorOrder, of an earlier product's accumulators; then, where sideInputs
 * > 0, the side product's F (sideInputs, sideOutputs) likewise (in the order of loads) and c
 * (sideOutputs), each tile's columns of them: columns (firstColumn mod sideOutputs) on, so that
 * where sideOutputs = columns every tile holds the whole of F.
 * Launched once, when the context is made: the weights do not change after it.
 */
KERNEL void mlffPrepareWarpgroupTiles(const real* RESTRICT b, int inputs, int outputs, int columns,
                                      int accumulatorOrder, const real* RESTRICT f, int sideInputs, int sideOutputs,
                                      const real* RESTRICT c, unsigned int* RESTRICT image) {
    mlffStartAfterPreviousLaunch();
    const int padded = (inputs + 15) / 16 * 16, sidePadded = (sideInputs + 15) / 16 * 16;
    const int firstColumn = blockIdx.x * columns, firstSideColumn = sideInputs > 0 ? firstColumn % sideOutputs : 0;
    unsigned int* bBig = image + (size_t) blockIdx.x * columns * (2 * padded + 2 * sidePadded + (sideInputs > 0));
    unsigned int* bSmall = bBig + columns * padded;
    unsigned int* fBig = bSmall + columns * padded;
    unsigned int* fSmall = fBig + columns * sidePadded;
    if (columns == 16) { // the readout's (tiled.cu's mlffReadoutWarpgroup), which has no side product
        mlffWarpgroupSplitColumns<16>(b, inputs, outputs, firstColumn, accumulatorOrder, bBig, bSmall);
    } else if (columns == 32) {
        mlffWarpgroupSplitColumns<32>(b, inputs, outputs, firstColumn, accumulatorOrder, bBig, bSmall);
    } else if (columns == 64) {
        mlffWarpgroupSplitColumns<64>(b, inputs, outputs, firstColumn, accumulatorOrder, bBig, bSmall);
        mlffWarpgroupSplitColumns<64>(f, sideInputs, sideOutputs, firstSideColumn, false, fBig, fSmall);
    } else {
        mlffWarpgroupSplitColumns<128>(b, inputs, outputs, firstColumn, accumulatorOrder, bBig, bSmall);
        mlffWarpgroupSplitColumns<128>(f, sideInputs, sideOutputs, firstSideColumn, false, fBig, fSmall);
    }
    if (sideInputs > 0)
        for (int n = threadIdx.x; n < columns; n += blockDim.x)
            reinterpret_cast<float*>(fSmall + columns * sidePadded)[n] = c[firstSideColumn + n];
}

/**
 * Inputs first + k .. + 3 of a row of A (Inputs a row; first a multiple of 16, known once the
 * loop over pairs is unrolled; k = 4 t), zero from Inputs on. Past the row's end the address is
 * clamped and the value selected away, without a branch (see below).
 */
template <int Inputs>
DEVICE inline float4 mlffWarpgroupLoadInputs(const real* RESTRICT row, int first, int k) {
    k += first;
    if (Inputs % 16 == 0)
        return *reinterpret_cast<const float4*>(row + k);
    float4 x;
    if (Inputs % 4 == 0)
        x = *reinterpret_cast<const float4*>(row + min(k, Inputs - 4));
    else
        x = make_float4(row[min(k, Inputs - 1)], row[min(k + 1, Inputs - 1)], row[min(k + 2, Inputs - 1)],
                        row[min(k + 3, Inputs - 1)]);
    x.x = k < Inputs ? x.x : 0.0f;
    x.y = k + 1 < Inputs ? x.y : 0.0f;
    x.z = k + 2 < Inputs ? x.z : 0.0f;
    x.w = k + 3 < Inputs ? x.w : 0.0f;
    return x;
}

/**
 * How many pairs of k-steps ahead a product over pairs prefetches its rows' inputs into the L2
 * (mlffWarpgroupTileProduct's PrefetchAhead). Their A is tens to hundreds of MB, read from DRAM,
 * and a thread's load of the next pair, issued with this pair's products, waits for DRAM once they
 * are issued. Loads written further ahead do not help: ptxas moves them back to one pair ahead
 * (docs/performance-log.md, "A's rows prefetched into the L2").
 */
#define MLFF_WARPGROUP_PREFETCH_AHEAD 2

/** A row of A in global memory, as the products read it (mlffWarpgroupLoadInputs). */
struct MlffWarpgroupMemoryRow {
    const real* row;
    template <int Inputs>
    DEVICE float4 inputs(int first, int k) const {
        return mlffWarpgroupLoadInputs<Inputs>(row, first, k);
    }
    /** Brings the cache line of input `first` (a multiple of 32, below Inputs) into the L2, for later loads. */
    DEVICE void prefetch(int first) const {
#ifndef MLFF_WARPGROUP_ON_HOST
        asm volatile("prefetch.global.L2 [%0];" ::"l"(row + first));
#endif
    }
};

/** A's fragments of two pairs of k-steps, split into TF32 parts: a pair's products run while the next pair's are split. */
struct MlffWarpgroupFragments {
    unsigned int big[2][2][4], small[2][2][4]; // [set][k-step of the pair][mma.sync's A fragment]
};

// mlffWarpgroupTileProduct's and mlffWarpgroupMatmul's SumsOutside by default (a macro: NVRTC kept a
// constexpr variable as a global of the module).
#ifdef MLFF_TF32_SUMS_OUTSIDE
#define MLFF_SUMS_OUTSIDE_BY_DEFAULT true
#else
#define MLFF_SUMS_OUTSIDE_BY_DEFAULT false
#endif
// With the sums outside, whether the next pair is split while a pair's products run
// (MLFF_TF32_SUMS_OVERLAPPED, the probe's second setting) rather than after its sum is added.
#ifdef MLFF_TF32_SUMS_OVERLAPPED
#define MLFF_SUMS_OVERLAPPED true
#else
#define MLFF_SUMS_OVERLAPPED false
#endif

/** d (=) d + a pair of k-steps' sum, in float, rounded to nearest (SumsOutside below); d = sum for the first pair. */
template <int N>
DEVICE inline void mlffWarpgroupAddPairSum(float* d, const float* pairSum, bool first) {
#pragma unroll
    for (int i = 0; i < N; i++)
        d[i] = first ? pairSum[i] : d[i] + pairSum[i];
}

/**
 * The first input of the pair of k-steps `pair` (16 inputs) of a product that skips the inputs
 * Skipped .. Skipped + SkippedCount - 1 (mlffWarpgroupTileProduct).
 */
template <int Skipped, int SkippedCount>
DEVICE constexpr int mlffWarpgroupPairInput(int pair) {
    return 16 * pair < Skipped ? 16 * pair : 16 * pair + SkippedCount;
}

/**
 * d (=) the 64-row tile's A (Inputs a row; this thread's rows a0 and a1: MlffWarpgroupMemoryRow, or
 * any Row whose inputs<Inputs>(first, k) gives the same four inputs without a branch, and whose
 * prefetch(first) readies a pair and the next, or does nothing) times B's column tile in shared
 * memory. The products are left in flight: the caller waits for them (wgmma.wait_group 0) before it
 * reads d. FirstSet is the fragment set of the first pair, the one a product issued just before did
 * not use last. With PrefetchAhead > 0 the inputs that many pairs ahead are prefetched as each pair
 * is split (MLFF_WARPGROUP_PREFETCH_AHEAD says when). The inputs Skipped .. Skipped + SkippedCount
 * - 1, where A is known to be 0, are neither read nor multiplied (multiples of 32, past the first,
 * so that the pairs keep their cache lines and the first pair its overwrite of d).
 *
 * With SumsOutside (by default under MLFF_TF32_SUMS_OUTSIDE, a probe: CudaKernelChoices.cpp) each
 * pair's products are summed from zero in the tensor cores and added to d outside them, in float,
 * rounded to nearest: the tensor cores round their sums toward zero, which over a long product's
 * running sum leaves its outputs some 1e-6 nearer zero than float would; a pair's sum is smaller,
 * and so is its rounding (emulated on the host, 9 times smaller at 128 inputs). It costs Columns / 2
 * registers and the overlap of a pair's split with the products before it; with MLFF_SUMS_OVERLAPPED
 * a pair's sum is waited for and added only once the next pair is split (into the other fragment
 * set, which the pair before has left), so that the split runs beside the products. Two sets of
 * pair sums, one added while the next pair's products run into the other, made ptxas serialize the
 * products at H = 64 and 128.
 */
template <int Inputs, int Columns, int FirstSet, int PrefetchAhead = 0, int Skipped = 0, int SkippedCount = 0,
          bool SumsOutside = MLFF_SUMS_OUTSIDE_BY_DEFAULT, class Row>
DEVICE inline void mlffWarpgroupTileProduct(const Row& a0, const Row& a1, const unsigned int* bBig,
                                            const unsigned int* bSmall, float* d, MlffWarpgroupFragments& f) {
    static_assert(SkippedCount == 0 || (Skipped > 0 && Skipped % 32 == 0 && SkippedCount % 32 == 0 &&
                                        Skipped + SkippedCount < Inputs),
                  "a skipped range of whole cache lines, after the first pair and before the last");
    constexpr int pairs = (Inputs + 15) / 16 - SkippedCount / 16;
    const int k = 4 * (threadIdx.x % 4);
    float4 x0 = a0.template inputs<Inputs>(0, k), x1 = a1.template inputs<Inputs>(0, k);
    float pairSum[Columns / 2]; // with SumsOutside
    float* sum = SumsOutside ? pairSum : d;
    constexpr bool overlapped = SumsOutside && MLFF_SUMS_OVERLAPPED;
#pragma unroll
    for (int pair = 0; pair < pairs; pair++) {
        const int set = (FirstSet + pair) % 2;
        const float x[2][4] = {{x0.x, x1.x, x0.y, x1.y}, {x0.z, x1.z, x0.w, x1.w}};
#pragma unroll
        for (int q = 0; q < 2; q++)
#pragma unroll
            for (int i = 0; i < 4; i++)
                mlffSplitTf32(x[q][i], &f.big[set][q][i], &f.small[set][q][i]);
        if (PrefetchAhead > 0 && pair + PrefetchAhead < pairs && (pair + PrefetchAhead) % 2 == 0) {
            const int ahead = mlffWarpgroupPairInput<Skipped, SkippedCount>(pair + PrefetchAhead);
            a0.prefetch(ahead); // two pairs' 128 bytes a line
            a1.prefetch(ahead);
        }
        if (pair + 1 < pairs) {
            const int next = mlffWarpgroupPairInput<Skipped, SkippedCount>(pair + 1);
            x0 = a0.template inputs<Inputs>(next, k);
            x1 = a1.template inputs<Inputs>(next, k);
        }
        if (overlapped && pair > 0) {
            mlffWarpgroupWait<0>(); // the pair before's sum in
            mlffWarpgroupAddPairSum<Columns / 2>(d, pairSum, pair == 1);
        }
        mlffWarpgroupFence();
#pragma unroll
        for (int q = 0; q < 2; q++) {
            const int step = mlffWarpgroupPairInput<Skipped, SkippedCount>(pair) / 8 + q;
            // Descriptors from the addresses here (not mlffWarpgroupKStep's add): with the add, the
            // filters' backward to the distances spilled 12 bytes rather than 4 (ptxas, sm_90a).
            const int offset = mlffWarpgroupBOffset<Columns>(step, 0, 0);
            const bool accumulate = SumsOutside ? q > 0 : step > 0;
            mlffWarpgroupTf32x3<Columns>(sum, f.big[set][q], f.small[set][q], mlffWarpgroupDescriptor(bBig + offset),
                                         mlffWarpgroupDescriptor(bSmall + offset), accumulate);
        }
        mlffWarpgroupCommit();
        if (!SumsOutside) {
            mlffWarpgroupWait<1>(); // the set refilled next is free
        } else if (!overlapped) {
            mlffWarpgroupWait<0>(); // the pair's sum in
            mlffWarpgroupAddPairSum<Columns / 2>(d, pairSum, pair == 0);
        } // overlapped: the sum is added once the next pair is split, above
    }
    if (overlapped) {
        mlffWarpgroupWait<0>(); // the last pair's sum in
        mlffWarpgroupAddPairSum<Columns / 2>(d, pairSum, pairs == 1);
    }
}

/** The row count, given or read on the device. */
DEVICE inline int mlffWarpgroupRows(int rows) {
    return rows;
}

DEVICE inline int mlffWarpgroupRows(const int* RESTRICT rows) {
    return *rows;
}

/** A block's column tile of the weights in shared memory: B's, and the side product's F and c (J > 0). */
struct MlffWarpgroupTiles {
    const unsigned int *bBig, *bSmall; // (inputs / 8, Columns, 8), the layout above
    const unsigned int *fBig, *fSmall; // (sideInputs / 8, Columns, 8)
    const float* c;                    // (Columns): read from global memory in each tile instead, its loads
                                       // were hoisted out of the loop over tiles, into registers that spilled
    int firstColumn;                   // of the block's tile in O
};

/**
 * Copies `words` 4-byte words of weights' images from `source` into the block's dynamic shared
 * memory, which it returns, by bulk copies that complete on an mbarrier; then the wait for the
 * launch before. The images depend on no launch of a step, so the copies start while the launch
 * before may still run (cp.async.bulk: the only global access tests/cuda/compile_kernels.sh allows
 * before the wait, in these kernels); everything else waits for it. Called by all the block's
 * threads.
 */
template <unsigned int Words>
DEVICE inline unsigned int* mlffWarpgroupCopyImages(const unsigned int* RESTRICT source) {
    constexpr unsigned int chunkBytes = 16384;
    static_assert(4 * Words % 16 == 0 && 4 * Words < (1u << 20), "bulk copies of 16-byte units, one mbarrier's count");
    extern __shared__ __align__(128) unsigned int mlffWarpgroupMemory[];
#ifdef MLFF_WARPGROUP_ON_HOST
    if (threadIdx.x == 0)
        memcpy(mlffWarpgroupMemory, source, 4 * Words);
    mlffStartAfterPreviousLaunch();
    __syncthreads();
#else
    __shared__ __align__(8) unsigned long long tileCopied; // the mbarrier the copies complete on
    const unsigned int barrier = (unsigned int) __cvta_generic_to_shared(&tileCopied);
    if (threadIdx.x == 0) {
        asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(barrier) : "memory");
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory"); // seen by the copies' completion
        asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(barrier), "r"(4 * Words)
                     : "memory");
        const unsigned int destination = (unsigned int) __cvta_generic_to_shared(mlffWarpgroupMemory);
        for (unsigned int offset = 0; offset < 4 * Words; offset += chunkBytes)
            asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(
                                 destination + offset),
                         "l"(source + offset / 4), "r"(min(chunkBytes, 4 * Words - offset)), "r"(barrier)
                         : "memory");
    }
    mlffStartAfterPreviousLaunch();
    __syncthreads(); // the mbarrier initialised
    unsigned int copied = 0;
    while (!copied)
        asm volatile("{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], 0;\nselp.u32 %0, 1, 0, p;\n}"
                     : "=r"(copied)
                     : "r"(barrier)
                     : "memory");
#endif
    return mlffWarpgroupMemory;
}

/**
 * Column tile `columnTile` of the weights, copied from its image (mlffPrepareWarpgroupTiles:
 * `images` holds every tile's) into dynamic shared memory (mlffWarpgroupCopyImages, which also waits
 * for the launch before). Called by all the block's threads.
 */
template <int I, int O, int Columns, int J>
DEVICE inline MlffWarpgroupTiles mlffWarpgroupLoadTiles(const unsigned int* RESTRICT images, int columnTile) {
    static_assert((Columns == 64 || Columns == 128) && O % Columns == 0, "a product of 64 or 128 columns");
    constexpr int inputs = (I + 15) / 16 * 16, sideInputs = (J + 15) / 16 * 16;
    constexpr unsigned int words = MlffWarpgroupTileWords<I, Columns, J>::value;
    unsigned int* bBig = mlffWarpgroupCopyImages<words>(images + (size_t) columnTile * words);
    unsigned int* bSmall = bBig + Columns * inputs;
    unsigned int* fBig = bSmall + Columns * inputs;
    unsigned int* fSmall = fBig + Columns * sideInputs;
    float* cTile = reinterpret_cast<float*>(fSmall + Columns * sideInputs);
    return {bBig, bSmall, fBig, fSmall, cTile, Columns * columnTile};
}

/** The block's column tile of the weights, blockIdx.x % (O / Columns), as above. */
template <int I, int O, int Columns, int J>
DEVICE inline MlffWarpgroupTiles mlffWarpgroupLoadTiles(const unsigned int* RESTRICT images) {
    return mlffWarpgroupLoadTiles<I, O, Columns, J>(images, blockIdx.x % (O / Columns));
}

/**
 * A tile's sums, d as mlffWarpgroupTileProduct leaves them, to the epilogue: d[4 j + 2 r + c] is
 * row row0 + 8 r (row1 = row0 + 8), column 8 j + 2 t + c of the column tile from firstColumn (t:
 * the thread in its quad); rows from `rows` on are dropped.
 */
template <int Columns, class Epilogue>
DEVICE inline void mlffWarpgroupTileEpilogue(Epilogue& epilogue, const float* d, int row0, int row1, int rows,
                                             int firstColumn, int t) {
#pragma unroll
    for (int j = 0; j < Columns / 8; j++) {
        const int column = firstColumn + 8 * j + 2 * t;
        if (row0 < rows)
            epilogue.template columns<2>(row0, column, &d[4 * j]);
        if (row1 < rows)
            epilogue.template columns<2>(row1, column, &d[4 * j + 2]);
    }
}

/**
 * A warp's 16 rows of a tile by 32 columns in shared memory, on their way to global memory
 * (MlffWarpgroupStagedRows): each row padded by 4 floats, so that the accumulators' stores, two
 * floats a thread, fall in 32 banks, and a row's 32 floats are 16-byte aligned (and so the stage
 * itself: read as float4, a stage aligned as floats alone faulted, misaligned, on an H100).
 */
struct __align__(16) MlffWarpgroupRowStage {
    float rows[16][36];
};

/**
 * An epilogue that stores a tile's sums plus a bias (a float a column) into rows of OutStride reals
 * through shared memory, each warp's rows in its stage (stages[warp of the block]): 32 columns at a
 * time, the warp's accumulators go into the stage, then each row's 128 bytes go out as 8 lanes'
 * vectors, four rows an instruction. Stored straight from the accumulators, an instruction (two
 * floats a thread) touches 32 bytes of each of 8 rows; the filters' output waited on its stores'
 * queue (Nsight Compute, H100: 4.7 cycles an instruction).
 */
template <int OutStride>
struct MlffWarpgroupStagedRows {
    const real* bias;
    real* out;
    MlffWarpgroupRowStage* stages;
};

template <int Columns, int OutStride>
DEVICE inline void mlffWarpgroupTileEpilogue(MlffWarpgroupStagedRows<OutStride>& epilogue, const float* d, int row0,
                                             int, int rows, int firstColumn, int t) {
    static_assert(Columns % 32 == 0 && OutStride % 4 == 0, "whole 32-column chunks of 16-byte aligned rows");
    const int lane = threadIdx.x % 32, g = lane / 4, warpRow0 = row0 - g;
    MlffWarpgroupRowStage& stage = epilogue.stages[threadIdx.x / 32];
#pragma unroll
    for (int chunk = 0; chunk < Columns / 32; chunk++) {
        __syncwarp(); // the chunk before read out of the stage
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const int column = 8 * j + 2 * t; // in the chunk
            const real* bias = epilogue.bias + firstColumn + 32 * chunk + column;
            const float* sums = &d[4 * (4 * chunk + j)];
            for (int r = 0; r < 2; r++) {
                stage.rows[g + 8 * r][column] = sums[2 * r] + bias[0];
                stage.rows[g + 8 * r][column + 1] = sums[2 * r + 1] + bias[1];
            }
        }
        __syncwarp();
#pragma unroll
        for (int q = 0; q < 4; q++) {
            const int row = 4 * q + lane / 8, column = 4 * (lane % 8);
            if (warpRow0 + row < rows)
                *reinterpret_cast<float4*>(epilogue.out + (size_t) (warpRow0 + row) * OutStride + firstColumn +
                                           32 * chunk + column) =
                        *reinterpret_cast<const float4*>(&stage.rows[row][column]);
        }
    }
}

/**
 * The 64-row tiles of a product's `rows` that this thread's warp group takes in turn, WarpGroups
 * warp groups a block, its column tile's blocks sharing them out: tiles first, first + stride, ...
 * below count.
 */
struct MlffWarpgroupRowTiles {
    int first, stride, count;
};

template <int WarpGroups>
DEVICE inline MlffWarpgroupRowTiles mlffWarpgroupRowTiles(int rows, int columnTiles) {
    const int group = threadIdx.x / MLFF_WARPGROUP_THREADS, blocksPerColumn = gridDim.x / columnTiles;
    return {(int) (blockIdx.x / columnTiles * WarpGroups + group), blocksPerColumn * WarpGroups, (rows + 63) / 64};
}

/**
 * This thread's two rows of tile `tile`: row0 and row1 = row0 + 8 (mma.sync's fragment rows of its
 * warp's 16), and r0 and r1, the same clamped to the last row for loads. Rows past the last are
 * clamped, not skipped: a branch between the products would make ptxas serialize them
 * (tests/cuda/compile_kernels.sh fails on that); their sums are dropped.
 */
struct MlffWarpgroupThreadRows {
    int row0, row1, r0, r1;
};

DEVICE inline MlffWarpgroupThreadRows mlffWarpgroupThreadRows(int tile, int rows) {
    const int row0 = 64 * tile + 16 * (threadIdx.x / 32 % 4) + threadIdx.x % 32 / 4, row1 = row0 + 8;
    return {row0, row1, min(row0, rows - 1), min(row1, rows - 1)};
}

/**
 * C = A B, the file's comment says how; A's inputs prefetched PrefetchAhead pairs of k-steps ahead (0: not),
 * the sums outside the tensor cores with SumsOutside (mlffWarpgroupTileProduct).
 */
template <int I, int O, int Columns, int WarpGroups, int PrefetchAhead, bool SumsOutside = MLFF_SUMS_OUTSIDE_BY_DEFAULT,
          class Epilogue, class RowCount>
DEVICE inline void mlffWarpgroupMatmul(const real* RESTRICT a, const unsigned int* RESTRICT bImages,
                                       RowCount rowCount, Epilogue epilogue) {
    constexpr int columnTiles = O / Columns;
    const MlffWarpgroupTiles tiles = mlffWarpgroupLoadTiles<I, O, Columns, 0>(bImages);
    const int rows = mlffWarpgroupRows(rowCount), t = threadIdx.x % 4;
    const MlffWarpgroupRowTiles rowTiles = mlffWarpgroupRowTiles<WarpGroups>(rows, columnTiles);
    for (int tile = rowTiles.first; tile < rowTiles.count; tile += rowTiles.stride) {
        const MlffWarpgroupThreadRows mine = mlffWarpgroupThreadRows(tile, rows);
        float d[Columns / 2];
        MlffWarpgroupFragments fragments;
        mlffWarpgroupTileProduct<I, Columns, 0, PrefetchAhead, 0, 0, SumsOutside>(
                MlffWarpgroupMemoryRow{a + (size_t) mine.r0 * I}, MlffWarpgroupMemoryRow{a + (size_t) mine.r1 * I},
                tiles.bBig, tiles.bSmall, d, fragments);
        mlffWarpgroupWait<0>();
        mlffWarpgroupTileEpilogue<Columns>(epilogue, d, mine.row0, mine.row1, rows, tiles.firstColumn, t);
    }
}
