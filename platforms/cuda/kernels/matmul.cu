/*
 * matmul.cu: C = A B for the row-wise layers of the tiled path, in `real`.
 *   A (rows, I) row-major: one row per ML atom (or per pair of atoms);
 *   B (I, O) row-major: the weights, input-major;
 * a thread block of MLFF_MATMUL_THREADS computes a tile of R rows by 16 TN columns,
 * MLFF_MATMUL_DEPTH inputs a step.
 *
 * Tensor cores (MLFF_MATMUL_TENSOR_CORES, set by the host in float on sm_80 and later): R = 64 or
 * 128 rows a tile, the kernel's choice (mlffMatmul's TensorCoreRows). 128 reads each B tile for
 * twice the rows, which pays for the products over pairs (hundreds of thousands of rows); 64 gives
 * the products over atoms more blocks to spread over the SMs (H200, 1,024 benzenes: the update's
 * backward to its input 139 -> 118 µs, its hidden layer 99 -> 92, but its output 105 -> 109, so
 * that one keeps 128; the 12,000-atom droplet, exact, with every product at 64: 9.1 -> 10.4 ms a
 * step).
 * The steps' A and B tiles stream into shared memory with asynchronous copies
 * (cp.async), MLFF_MATMUL_STAGES steps in flight, so that the loads of later steps overlap this
 * step's sums. The sums are three TF32 products (3xTF32: with x = big(x) + small(x), both TF32,
 * a b ~ big(a) big(b) + big(a) small(b) + small(a) big(b)), which keeps float32's accuracy; each
 * warp computes R / 4 rows by 8 TN columns with mma.sync m16n8k8, splitting its fragments as it
 * reads them. The shared memory is dynamic: the host sizes it (CudaCalcMLFFForceKernel's
 * matmulSharedBytes, from MlffMatmulShared's layout below).
 * FMA pipes (double, or before sm_80): R = MLFF_MATMUL_ROWS = 64 rows a tile, whatever the
 * kernel asks; the next step's elements are loaded into registers while this step computes; each
 * thread sums 4 adjacent rows by TN adjacent columns, over the inputs in order. Both are
 * deterministic.
 *
 * The epilogue, a functor, receives each row with TN adjacent sums, whichever way they were made:
 * epilogue(row, firstColumn, sums), or its load and apply (MlffEpilogueSteps, below), thread
 * (tx, ty) = (threadIdx.x % 16, threadIdx.x / 16) getting rows 64 h + 4 ty .. 64 h + 4 ty + 3 of
 * the tile (h < R / 64) and columns TN tx .. TN tx + TN - 1.
 * Grid: ceil(rows / R) x O / (16 TN) blocks in one dimension, the column tiles of
 * a row tile adjacent (so that they share A's reads from L2), or more: blocks wholly past `rows`
 * return at once (`rows` may be known only on the device). Rows past `rows` read as 0 and are not
 * passed to the epilogue; inputs past I (when I is not a multiple of the depth) read as 0 from
 * both A and B. With tensor cores, A's rows and B's start must be 16-byte aligned where I is a
 * multiple of 4 (the parameters' layout aligns every matrix).
 */
#define MLFF_MATMUL_THREADS 256
#define MLFF_MATMUL_DEPTH 32
// For kernels built on mlffMatmul: two blocks per SM, so that one block's barrier waits overlap the other's sums.
#define MLFF_MATMUL_BOUNDS __launch_bounds__(MLFF_MATMUL_THREADS, 2)

/**
 * x rounded to TF32 (10 bits of mantissa) to nearest, ties away from zero: cvt.rna.tf32.f32's
 * result for every float but NaN, in two integer instructions. Adding half of the last kept bit
 * to the bits carries into the kept ones (and the exponent) exactly when the magnitude rounds up.
 * ptxas makes the cvt a test for infinity and NaN, a predicated add and a mask, and the products
 * are bound by issuing instructions (docs/performance-log.md, "TF32 rounding in two instructions":
 * 1,024 benzenes 931 -> 887 µs a step).
 */
DEVICE inline unsigned int mlffRoundTf32(float x) {
    return (__float_as_uint(x) + 0x1000u) & 0xffffe000u;
}

/** x split into TF32 parts, big + small ~ x to float32's precision (round to nearest, both). */
DEVICE inline void mlffSplitTf32(float x, unsigned int* big, unsigned int* small) {
    *big = mlffRoundTf32(x);
    *small = mlffRoundTf32(x - __uint_as_float(*big));
}

#ifdef MLFF_MATMUL_TENSOR_CORES
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
#error "MLFF_MATMUL_TENSOR_CORES needs sm_80 or later"
#endif
#define MLFF_MATMUL_STAGES 3

/** d += a b for one m16n8k8 TF32 tile (fragments in mma.sync's layouts). */
DEVICE inline void mlffMmaTf32(float* d, const unsigned int* a, const unsigned int* b) {
    asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

/**
 * acc += a b for one k-step of a 3xTF32 product, A and B in their two parts, the small terms first:
 * they are the finer ones. With MLFF_TF32_SUMS_OUTSIDE (a probe) the k-step's products are summed
 * from zero and added to acc outside the tensor cores, rounded to nearest (warpgroup_matmul.cu's
 * mlffWarpgroupTileProduct says why).
 */
DEVICE inline void mlffMmaTf32x3(float* acc, const unsigned int* aBig, const unsigned int* aSmall,
                                 const unsigned int* bBig, const unsigned int* bSmall) {
#ifdef MLFF_TF32_SUMS_OUTSIDE
    float sum[4] = {0, 0, 0, 0};
    mlffMmaTf32(sum, aSmall, bBig);
    mlffMmaTf32(sum, aBig, bSmall);
    mlffMmaTf32(sum, aBig, bBig);
#pragma unroll
    for (int e = 0; e < 4; e++)
        acc[e] += sum[e];
#else
    mlffMmaTf32(acc, aSmall, bBig);
    mlffMmaTf32(acc, aBig, bSmall);
    mlffMmaTf32(acc, aBig, bBig);
#endif
}

/**
 * Dynamic shared memory of one tile: the stages' A (row by row, each row padded by 4) and B
 * (input by input, padded by 8), so that a fragment's 32 reads fall in 32 banks; the output
 * staging reuses the same memory.
 */
template <int Rows, int Columns>
union MlffMatmulShared {
    struct {
        float a[Rows][MLFF_MATMUL_DEPTH + 4];
        float b[MLFF_MATMUL_DEPTH][Columns + 8];
    } stage[MLFF_MATMUL_STAGES];
    float out[Rows][Columns + 4];
};
#else
#define MLFF_MATMUL_ROWS 64

/** Shared memory of one tile: A transposed, each column padded by 4 (4 adjacent rows read as one vector), and B input by input. */
template <int Columns>
struct MlffMatmulShared {
    real a[MLFF_MATMUL_DEPTH][MLFF_MATMUL_ROWS + 4];
    real b[MLFF_MATMUL_DEPTH][Columns + 8];
};
#endif

/**
 * An epilogue's TN adjacent elements of a row, at p = a row of a multiple of 4 elements plus a
 * column that is a multiple of TN, loaded or stored in vectors as wide as that alignment allows
 * (scattered 4-byte stores would cost the L2 a partial sector each). MlffRealVector: layers.cu.
 */
template <int TN>
struct MlffRowVector {
    static constexpr int width = sizeof(real) == 4 && TN % 4 == 0 ? 4 : TN % 2 == 0 ? 2 : 1;
    typedef MlffRealVector<width> Type;
};

template <int TN>
DEVICE inline void mlffLoadRow(const real* p, real* values) {
    typedef MlffRowVector<TN> V;
#pragma unroll
    for (int q = 0; q < TN; q += V::width) {
        const typename V::Type x = *reinterpret_cast<const typename V::Type*>(p + q);
#pragma unroll
        for (int e = 0; e < V::width; e++)
            values[q + e] = x.v[e];
    }
}

template <int TN>
DEVICE inline void mlffStoreRow(real* p, const real* values) {
    typedef MlffRowVector<TN> V;
#pragma unroll
    for (int q = 0; q < TN; q += V::width) {
        typename V::Type x;
#pragma unroll
        for (int e = 0; e < V::width; e++)
            x.v[e] = values[q + e];
        *reinterpret_cast<typename V::Type*>(p + q) = x;
    }
}

/**
 * Inputs first .. first + count - 1 left out of C = A B, whole steps of MLFF_MATMUL_DEPTH: A's
 * elements there are neither loaded nor summed, so they may be unwritten (the filters' backward in
 * the first block, edge_filters.cu). None by default.
 */
struct MlffSkippedInputs {
    int first = 0, count = 0;
    /** The first input of the step-th step summed. */
    DEVICE int stepInput(int step) const {
        const int k0 = step * MLFF_MATMUL_DEPTH;
        return k0 < first ? k0 : k0 + count;
    }
};

/**
 * An epilogue that reads rows of its own (the atoms' features, gradients it adds to) may declare
 * `Inputs`, what one call reads, and load(row, column, inputs) and apply(row, column, sums,
 * inputs) in place of operator(): the tensor-core path then loads every row of the thread's before
 * it applies any. Called row by row, each row's loads come after the row before's stores, which the
 * compiler cannot tell they do not alias, so that the rows wait on the L2 one after another (the
 * update's output and its backward to its input: 6 µs an evaluation of 1,024 benzenes; the log's
 * section "The update's epilogues' rows loaded ahead"). MlffEpilogueSteps gives every epilogue
 * that form; one without `Inputs` loads nothing ahead.
 */
template <class...>
struct MlffVoid {
    typedef void type;
};

template <class Epilogue, class = void>
struct MlffEpilogueSteps {
    struct Inputs {};
    DEVICE static void load(Epilogue&, int, int, Inputs&) {}
    DEVICE static void apply(Epilogue& epilogue, int row, int column, const real* sums, const Inputs&) {
        epilogue(row, column, sums);
    }
};

template <class Epilogue>
struct MlffEpilogueSteps<Epilogue, typename MlffVoid<typename Epilogue::Inputs>::type> {
    typedef typename Epilogue::Inputs Inputs;
    DEVICE static void load(Epilogue& epilogue, int row, int column, Inputs& inputs) {
        epilogue.load(row, column, inputs);
    }
    DEVICE static void apply(Epilogue& epilogue, int row, int column, const real* sums, const Inputs& inputs) {
        epilogue.apply(row, column, sums, inputs);
    }
};

/** C = A B (the file's comment says how), without the inputs `skipped`. */
template <int I, int O, int TN, int TensorCoreRows, class Epilogue>
DEVICE inline void mlffMatmul(const real* RESTRICT a, const real* RESTRICT b, int rows, Epilogue epilogue,
                              MlffSkippedInputs skipped = {}) {
#ifdef MLFF_MATMUL_TENSOR_CORES
    static_assert(TensorCoreRows == 64 || TensorCoreRows == 128, "a tensor-core tile has 64 or 128 rows");
    constexpr int tileRows = TensorCoreRows;
#else
    constexpr int tileRows = MLFF_MATMUL_ROWS;
#endif
    constexpr int columns = 16 * TN, columnTiles = O / columns;
    const int steps = (I + MLFF_MATMUL_DEPTH - 1) / MLFF_MATMUL_DEPTH - skipped.count / MLFF_MATMUL_DEPTH;
    static_assert(O % columns == 0, "the outputs must fill whole tiles");
    const int firstRow = blockIdx.x / columnTiles * tileRows;
    const int firstColumn = blockIdx.x % columnTiles * columns;
    if (firstRow >= rows)
        return; // the whole block: no barrier is skipped
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    typedef MlffEpilogueSteps<Epilogue> Steps;
#ifdef MLFF_MATMUL_TENSOR_CORES
    extern __shared__ float4 mlffMatmulMemory[];
    typedef MlffMatmulShared<tileRows, columns> Tiles;
    Tiles& tiles = *reinterpret_cast<Tiles*>(mlffMatmulMemory);

    // A in 16-byte chunks of 4 inputs where I allows (a chunk then lies wholly inside or past I),
    // else element by element; B in 16-byte chunks of 4 columns.
    constexpr int aChunk = I % 4 == 0 ? 4 : 1, aChunksPerRow = MLFF_MATMUL_DEPTH / aChunk;
    constexpr int aCopies = tileRows * aChunksPerRow / MLFF_MATMUL_THREADS;
    constexpr int bChunksPerRow = columns / 4, bCopies = MLFF_MATMUL_DEPTH * bChunksPerRow / MLFF_MATMUL_THREADS;
    static_assert(bCopies * MLFF_MATMUL_THREADS == MLFF_MATMUL_DEPTH * bChunksPerRow, "B's chunks must fill the threads");
    auto copyStep = [&](int stage, int step) {
        const int k0 = skipped.stepInput(step);
#pragma unroll
        for (int q = 0; q < aCopies; q++) {
            const int e = threadIdx.x + q * MLFF_MATMUL_THREADS;
            const int r = e / aChunksPerRow, k = aChunk * (e % aChunksPerRow);
            const bool valid = firstRow + r < rows && k0 + k < I;
            mlffCopyAsync<4 * aChunk>(&tiles.stage[stage].a[r][k], valid ? a + (size_t) (firstRow + r) * I + k0 + k : a,
                                      valid);
        }
#pragma unroll
        for (int q = 0; q < bCopies; q++) {
            const int e = threadIdx.x + q * MLFF_MATMUL_THREADS;
            const int k = e / bChunksPerRow, n = 4 * (e % bChunksPerRow);
            const bool valid = k0 + k < I;
            mlffCopyAsync<16>(&tiles.stage[stage].b[k][n], valid ? b + (size_t) (k0 + k) * O + firstColumn + n : b, valid);
        }
    };

    // Warp w: rows R (w % 4) .. +R of the tile (R = tileRows / 4) as R / 16 tiles of 16, columns
    // 8 TN (w / 4) .. +8 TN as TN tiles of 8.
    constexpr int warpRows = tileRows / 4, M = warpRows / 16;
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const int g = lane / 4, t = lane % 4; // mma.sync's group and thread in group
    const int warpRow = warpRows * (warp % 4), warpColumn = 8 * TN * (warp / 4);
    float acc[M][TN][4];
#pragma unroll
    for (int m = 0; m < M; m++)
#pragma unroll
        for (int j = 0; j < TN; j++)
            acc[m][j][0] = acc[m][j][1] = acc[m][j][2] = acc[m][j][3] = 0;
#pragma unroll
    for (int stage = 0; stage < MLFF_MATMUL_STAGES - 1; stage++) {
        if (stage < steps)
            copyStep(stage, stage);
        mlffCommitCopies(); // one group a step, empty or not, so that the waits below count steps
    }
    for (int step = 0; step < steps; step++) {
        mlffWaitCopies<MLFF_MATMUL_STAGES - 2>(); // this thread's copies of this step have landed
        __syncthreads(); // everyone's have; and everyone is done with the stage refilled next
        const int next = step + MLFF_MATMUL_STAGES - 1;
        if (next < steps)
            copyStep(next % MLFF_MATMUL_STAGES, next);
        mlffCommitCopies();
        const auto& tile = tiles.stage[step % MLFF_MATMUL_STAGES];
#pragma unroll
        for (int k = 0; k < MLFF_MATMUL_DEPTH; k += 8) {
            unsigned int aBig[M][4], aSmall[M][4];
#pragma unroll
            for (int m = 0; m < M; m++) {
                const int r0 = warpRow + 16 * m + g, r1 = r0 + 8;
                const float x[4] = {tile.a[r0][k + t], tile.a[r1][k + t], tile.a[r0][k + t + 4], tile.a[r1][k + t + 4]};
#pragma unroll
                for (int q = 0; q < 4; q++)
                    mlffSplitTf32(x[q], &aBig[m][q], &aSmall[m][q]);
            }
#pragma unroll
            for (int j = 0; j < TN; j++) {
                const int n = warpColumn + 8 * j + g;
                unsigned int bBig[2], bSmall[2];
                mlffSplitTf32(tile.b[k + t][n], &bBig[0], &bSmall[0]);
                mlffSplitTf32(tile.b[k + t + 4][n], &bBig[1], &bSmall[1]);
#pragma unroll
                for (int m = 0; m < M; m++)
                    mlffMmaTf32x3(acc[m][j], aBig[m], aSmall[m], bBig, bSmall);
            }
        }
    }
    mlffWaitCopies<0>(); // only empty groups are left; none may land on the staging below
    __syncthreads();
    // Stage the tile's sums so that each thread gets the rows and columns the epilogue expects.
#pragma unroll
    for (int m = 0; m < M; m++)
#pragma unroll
        for (int j = 0; j < TN; j++) {
            const int row = warpRow + 16 * m + g, column = warpColumn + 8 * j + 2 * t;
            tiles.out[row][column] = acc[m][j][0];
            tiles.out[row][column + 1] = acc[m][j][1];
            tiles.out[row + 8][column] = acc[m][j][2];
            tiles.out[row + 8][column + 1] = acc[m][j][3];
        }
    // Every row's inputs in flight at once, their wait overlapping the barrier's.
    typename Steps::Inputs inputs[tileRows / 64][4];
#pragma unroll
    for (int h = 0; h < tileRows / 64; h++)
#pragma unroll
        for (int r = 0; r < 4; r++) {
            const int row = firstRow + 64 * h + 4 * ty + r;
            if (row < rows)
                Steps::load(epilogue, row, firstColumn + TN * tx, inputs[h][r]);
        }
    __syncthreads();
#pragma unroll
    for (int h = 0; h < tileRows / 64; h++)
#pragma unroll
        for (int r = 0; r < 4; r++) {
            const int row = 64 * h + 4 * ty + r;
            real sums[TN];
#pragma unroll
            for (int q = 0; q < TN; q++)
                sums[q] = tiles.out[row][TN * tx + q];
            if (firstRow + row < rows)
                Steps::apply(epilogue, firstRow + row, firstColumn + TN * tx, sums, inputs[h][r]);
        }
#else
    __shared__ MlffMatmulShared<columns> tiles;
    constexpr int aPerThread = MLFF_MATMUL_ROWS * MLFF_MATMUL_DEPTH / MLFF_MATMUL_THREADS;
    constexpr int bPerThread = MLFF_MATMUL_DEPTH * columns / MLFF_MATMUL_THREADS;
    // The next step's elements are loaded into registers while the current step computes.
    real aNext[aPerThread], bNext[bPerThread];
    auto loadStep = [&](int k0) {
#pragma unroll
        for (int q = 0; q < aPerThread; q++) {
            const int e = threadIdx.x + q * MLFF_MATMUL_THREADS;
            const int row = firstRow + e / MLFF_MATMUL_DEPTH, k = k0 + e % MLFF_MATMUL_DEPTH;
            aNext[q] = row < rows && (I % MLFF_MATMUL_DEPTH == 0 || k < I) ? a[(size_t) row * I + k] : 0;
        }
#pragma unroll
        for (int q = 0; q < bPerThread; q++) {
            const int e = threadIdx.x + q * MLFF_MATMUL_THREADS;
            const int k = k0 + e / columns;
            bNext[q] = I % MLFF_MATMUL_DEPTH == 0 || k < I ? b[(size_t) k * O + firstColumn + e % columns] : 0;
        }
    };
    real sums[4][TN];
#pragma unroll
    for (int r = 0; r < 4; r++)
#pragma unroll
        for (int q = 0; q < TN; q++)
            sums[r][q] = 0;
    loadStep(skipped.stepInput(0));
    for (int step = 0; step < steps; step++) {
#pragma unroll
        for (int q = 0; q < aPerThread; q++) {
            const int e = threadIdx.x + q * MLFF_MATMUL_THREADS;
            tiles.a[e % MLFF_MATMUL_DEPTH][e / MLFF_MATMUL_DEPTH] = aNext[q];
        }
#pragma unroll
        for (int q = 0; q < bPerThread; q++) {
            const int e = threadIdx.x + q * MLFF_MATMUL_THREADS;
            tiles.b[e / columns][e % columns] = bNext[q];
        }
        __syncthreads();
        if (step + 1 < steps)
            loadStep(skipped.stepInput(step + 1));
#pragma unroll
        for (int k = 0; k < MLFF_MATMUL_DEPTH; k++) {
            real x[4], w[TN];
#pragma unroll
            for (int r = 0; r < 4; r++)
                x[r] = tiles.a[k][4 * ty + r];
#pragma unroll
            for (int q = 0; q < TN; q++)
                w[q] = tiles.b[k][TN * tx + q];
#pragma unroll
            for (int r = 0; r < 4; r++)
#pragma unroll
                for (int q = 0; q < TN; q++)
                    sums[r][q] += x[r] * w[q];
        }
        __syncthreads(); // the next step overwrites the tiles
    }
#pragma unroll
    for (int r = 0; r < 4; r++) {
        const int row = firstRow + 4 * ty + r;
        if (row < rows) { // a row at a time, as before: loading ahead was timed on the tensor cores alone
            typename Steps::Inputs inputs;
            Steps::load(epilogue, row, firstColumn + TN * tx, inputs);
            Steps::apply(epilogue, row, firstColumn + TN * tx, sums[r], inputs);
        }
    }
#endif
}
