/*
 * warpgroup_matmul.cu: C = A B for a product over pairs (hundreds of thousands of rows) on sm_90a's
 * warp-group products (wgmma), which give a 64-row tile's product to the tensor cores in one
 * instruction where mma.sync (matmul.cu) takes a warp's 16 rows by 8 columns. The contract is
 * mlffMatmul's on tensor cores, in float:
 *   A (rows, I) row-major, rows 16-byte aligned where I is a multiple of 4 (I rounded up to 16,
 *   zeros past I: a pair of k-steps);
 *   B (I, O) row-major: the weights, input-major;
 *   3xTF32 (matmul.cu says why), the small terms first, as mma.sync's path sums.
 * It needs a module built for sm_90a (the host adds "-arch=compute_90a" to OpenMM's flags).
 *
 * A block of 128 WarpGroups threads, one an SM, holds Columns of B's columns in shared memory for
 * the whole launch, split once into TF32 big and small parts (2 Columns I floats). Its warp groups
 * then take 64-row tiles of A in turn, each thread loading its rows' fragments straight from global
 * memory into registers. The grid is a multiple of the O / Columns column tiles: blocks c,
 * c + O / Columns, ... share column tile c. The row count is a number (the atoms) or a pointer to
 * one on the device (the pairs, counted by an earlier launch), read once B's tile is loaded.
 *
 * The epilogue receives two adjacent sums of a row at a time, as the accumulators hold them:
 * epilogue.template columns<2>(row, column, sums), for rows below the count only. It should store
 * them as one vector: 4-byte stores made the product 1.5 times slower (H200). A kernel that takes
 * more than one product on a tile (edge_filters.cu's filters' backward) builds on the parts:
 * mlffWarpgroupLoadTiles, which can hold a second, small product's weights (the side product)
 * beside B's, and mlffWarpgroupTileProduct.
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

/** wgmma's descriptor of a k-step's B at `shared`, in the layout above. */
DEVICE inline unsigned long long mlffWarpgroupDescriptor(const void* shared) {
    const unsigned int address = (unsigned int) __cvta_generic_to_shared(shared);
    return (unsigned long long) ((address & 0x3FFFF) >> 4) | (unsigned long long) (128 >> 4) << 16 |
           (unsigned long long) (256 >> 4) << 32;
}

/**
 * d (+)= a b for one m64nNk8 TF32 product of the warp group (N = 64 or 128 columns): a from
 * registers (mma.sync's A fragment of each warp's 16 rows), b by descriptor; d as wgmma lays it
 * out, N / 2 a thread.
 */
template <int N>
DEVICE inline void mlffWarpgroupTf32(float* d, const unsigned int* a, unsigned long long b, bool accumulate);

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

/**
 * Memory input m of A (E) and B (F) is k-step 2 p + q, input t + 4 hi of it, m = 16 p + 4 t + 2 q + hi,
 * so that a thread's A fragments of two k-steps are one float4 (t: the thread in its quad).
 * B's column tile (B: (Inputs, O) row-major) into shared memory in the layout above, split into TF32
 * parts (each Inputs rounded up to 16 by Columns), the inputs from Inputs on zero, by a block of
 * Threads. Each thread issues its loads 16 at a time, then splits and stores them: one at a time,
 * each of a block's 512 threads waited on up to 48 loads from L2 in turn before its first product.
 */
template <int Inputs, int O, int Columns, int Threads>
DEVICE inline void mlffWarpgroupLoadB(const real* RESTRICT b, int firstColumn, unsigned int* big, unsigned int* small) {
    constexpr int padded = (Inputs + 15) / 16 * 16, count = Columns * padded, chunk = 16;
#pragma unroll 1
    for (int first = threadIdx.x; first < count; first += chunk * Threads) {
        float x[chunk];
#pragma unroll
        for (int i = 0; i < chunk; i++) {
            const int e = first + i * Threads, m = e / Columns, n = e % Columns;
            x[i] = e < count && m < Inputs ? __ldg(&b[(size_t) m * O + firstColumn + n]) : 0.0f;
        }
#pragma unroll
        for (int i = 0; i < chunk; i++) {
            const int e = first + i * Threads, m = e / Columns, n = e % Columns;
            const int p = m / 16, t = m % 16 / 4, q = m % 4 / 2, hi = m % 2;
            const int offset = mlffWarpgroupBOffset<Columns>(2 * p + q, n, t + 4 * hi);
            if (e < count)
                mlffSplitTf32(x[i], &big[offset], &small[offset]);
        }
    }
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

/** A row of A in global memory, as the products read it (mlffWarpgroupLoadInputs). */
struct MlffWarpgroupMemoryRow {
    const real* row;
    template <int Inputs>
    DEVICE float4 inputs(int first, int k) const {
        return mlffWarpgroupLoadInputs<Inputs>(row, first, k);
    }
};

/** A's fragments of two pairs of k-steps, split into TF32 parts: a pair's products run while the next pair's are split. */
struct MlffWarpgroupFragments {
    unsigned int big[2][2][4], small[2][2][4]; // [set][k-step of the pair][mma.sync's A fragment]
};

/**
 * d (=) the 64-row tile's A (Inputs a row; this thread's rows a0 and a1: MlffWarpgroupMemoryRow, or
 * any Row whose inputs<Inputs>(first, k) gives the same four inputs without a branch) times B's
 * column tile in shared memory. The products are left in flight: the caller waits for them
 * (wgmma.wait_group 0) before it reads d. FirstSet is the fragment set of the first pair, the one a
 * product issued just before did not use last.
 */
template <int Inputs, int Columns, int FirstSet, class Row>
DEVICE inline void mlffWarpgroupTileProduct(const Row& a0, const Row& a1, const unsigned int* bBig,
                                            const unsigned int* bSmall, float* d, MlffWarpgroupFragments& f) {
    constexpr int pairs = (Inputs + 15) / 16;
    const int k = 4 * (threadIdx.x % 4);
    float4 x0 = a0.template inputs<Inputs>(0, k), x1 = a1.template inputs<Inputs>(0, k);
#pragma unroll
    for (int pair = 0; pair < pairs; pair++) {
        const int set = (FirstSet + pair) % 2;
        const float x[2][4] = {{x0.x, x1.x, x0.y, x1.y}, {x0.z, x1.z, x0.w, x1.w}};
#pragma unroll
        for (int q = 0; q < 2; q++)
#pragma unroll
            for (int i = 0; i < 4; i++)
                mlffSplitTf32(x[q][i], &f.big[set][q][i], &f.small[set][q][i]);
        if (pair + 1 < pairs) {
            x0 = a0.template inputs<Inputs>(16 * (pair + 1), k);
            x1 = a1.template inputs<Inputs>(16 * (pair + 1), k);
        }
        asm volatile("wgmma.fence.sync.aligned;" ::: "memory");
#pragma unroll
        for (int q = 0; q < 2; q++) {
            const int step = 2 * pair + q;
            const unsigned long long big = mlffWarpgroupDescriptor(bBig + mlffWarpgroupBOffset<Columns>(step, 0, 0));
            const unsigned long long small = mlffWarpgroupDescriptor(bSmall + mlffWarpgroupBOffset<Columns>(step, 0, 0));
            mlffWarpgroupTf32<Columns>(d, f.small[set][q], big, step > 0); // the small terms first
            mlffWarpgroupTf32<Columns>(d, f.big[set][q], small, true);
            mlffWarpgroupTf32<Columns>(d, f.big[set][q], big, true);
        }
        asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory");
        asm volatile("wgmma.wait_group.sync.aligned 1;" ::: "memory"); // the set refilled next is free
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
 * The block's column tile (blockIdx.x % (O / Columns)) of B, and where J > 0 of F and c, into
 * dynamic shared memory, split into TF32 parts; then the wait for the launch before. The weights
 * depend on no launch, so they are loaded while the launch before may still run (read-only loads,
 * ld.global.nc: the only ones tests/cuda/compile_kernels.sh allows before the wait, in these
 * kernels); everything else waits for it. Called by all the block's threads.
 */
template <int I, int O, int Columns, int WarpGroups, int J>
DEVICE inline MlffWarpgroupTiles mlffWarpgroupLoadTiles(const real* RESTRICT b, const real* RESTRICT f,
                                                        const real* RESTRICT c) {
    static_assert((Columns == 64 || Columns == 128) && O % Columns == 0, "a product of 64 or 128 columns");
    constexpr int columnTiles = O / Columns, inputs = (I + 15) / 16 * 16, sideInputs = (J + 15) / 16 * 16;
    extern __shared__ __align__(128) unsigned int mlffWarpgroupMemory[];
    unsigned int* bBig = mlffWarpgroupMemory;
    unsigned int* bSmall = bBig + Columns * inputs;
    unsigned int* fBig = bSmall + Columns * inputs;
    unsigned int* fSmall = fBig + Columns * sideInputs;
    float* cTile = reinterpret_cast<float*>(fSmall + Columns * sideInputs);
    const int firstColumn = blockIdx.x % columnTiles * Columns;
    constexpr int threads = MLFF_WARPGROUP_THREADS * WarpGroups;
    mlffWarpgroupLoadB<I, O, Columns, threads>(b, firstColumn, bBig, bSmall);
    if (J > 0) {
        mlffWarpgroupLoadB<J, O, Columns, threads>(f, firstColumn, fBig, fSmall);
        for (int n = threadIdx.x; n < Columns; n += blockDim.x)
            cTile[n] = __ldg(&c[firstColumn + n]);
    }
    asm volatile("fence.proxy.async.shared::cta;" ::: "memory"); // generic writes, seen by wgmma's reads
    mlffStartAfterPreviousLaunch();
    __syncthreads();
    return {bBig, bSmall, fBig, fSmall, cTile, firstColumn};
}

/** C = A B, the file's comment says how. */
template <int I, int O, int Columns, int WarpGroups, class Epilogue, class RowCount>
DEVICE inline void mlffWarpgroupMatmul(const real* RESTRICT a, const real* RESTRICT b, RowCount rowCount,
                                       Epilogue epilogue) {
    constexpr int columnTiles = O / Columns;
    const MlffWarpgroupTiles tiles = mlffWarpgroupLoadTiles<I, O, Columns, WarpGroups, 0>(b, nullptr, nullptr);
    const int rows = mlffWarpgroupRows(rowCount);
    const int group = threadIdx.x / MLFF_WARPGROUP_THREADS, warp = threadIdx.x / 32 % 4, lane = threadIdx.x % 32;
    const int g = lane / 4, t = lane % 4;
    const int rowTiles = (rows + 63) / 64, blocksPerColumn = gridDim.x / columnTiles;
    for (int tile = blockIdx.x / columnTiles * WarpGroups + group; tile < rowTiles; tile += blocksPerColumn * WarpGroups) {
        const int row0 = 64 * tile + 16 * warp + g, row1 = row0 + 8;
        // Rows past the last are clamped, not skipped: a branch between the products would make
        // ptxas serialize them (tests/cuda/compile_kernels.sh fails on that); their sums are dropped.
        const int r0 = min(row0, rows - 1), r1 = min(row1, rows - 1);
        float d[Columns / 2];
        MlffWarpgroupFragments fragments;
        mlffWarpgroupTileProduct<I, Columns, 0>(MlffWarpgroupMemoryRow{a + (size_t) r0 * I},
                                                MlffWarpgroupMemoryRow{a + (size_t) r1 * I}, tiles.bBig, tiles.bSmall,
                                                d, fragments);
        asm volatile("wgmma.wait_group.sync.aligned 0;" ::: "memory");
        // d[4 j + 2 r + c]: row row0 + 8 r, column 8 j + 2 t + c of the tile.
#pragma unroll
        for (int j = 0; j < Columns / 8; j++) {
            const int column = tiles.firstColumn + 8 * j + 2 * t;
            if (row0 < rows)
                epilogue.template columns<2>(row0, column, &d[4 * j]);
            if (row1 < rows)
                epilogue.template columns<2>(row1, column, &d[4 * j + 2]);
        }
    }
}
