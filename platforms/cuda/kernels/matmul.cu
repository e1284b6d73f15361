/*
 * matmul.cu: C = A B for the row-wise layers of the tiled path, in `real`.
 *   A (rows, I) row-major: one row per ML atom (or per edge);
 *   B (I, O) row-major: the weights, input-major;
 * a thread block of MLFF_MATMUL_THREADS computes a tile of MLFF_MATMUL_ROWS rows by 16 TN columns,
 * staging A and B through shared memory MLFF_MATMUL_DEPTH inputs at a time (the next step's loads
 * in flight during this step's sums). Each weight is read from global memory once per 64 rows.
 *
 * In float on sm_80 and later the sums run on tensor cores as three TF32 products (3xTF32: with
 * x = big(x) + small(x), both TF32, a b ~ big(a) big(b) + big(a) small(b) + small(a) big(b)), which
 * keeps float32's accuracy; each element is split once, as it is stored to shared memory, and each
 * warp computes 16 rows by 8 TN columns with mma.sync m16n8k8. In double, or before sm_80, each
 * thread sums 4 adjacent rows by TN adjacent columns on the FMA pipes, over the inputs in order.
 * Both are deterministic. (The tensor cores gain only 15 to 20 % here: these tiles wait on their
 * loads and barriers, not on arithmetic; docs/performance.md.)
 *
 * The epilogue, a functor, receives each row with TN adjacent sums, whichever way they were made:
 * epilogue(row, firstColumn, sums), thread (tx, ty) = (threadIdx.x % 16, threadIdx.x / 16) getting
 * rows 4 ty .. 4 ty + 3 of the tile and columns TN tx .. TN tx + TN - 1.
 * Grid: (ceil(rows / MLFF_MATMUL_ROWS), O / (16 TN)), or more: blocks wholly past `rows` return
 * at once (`rows` may be known only on the device). Rows past `rows` read as 0 and are not passed
 * to the epilogue; inputs past I (when I is not a multiple of the depth) read as 0 from both A
 * and B. mlffMatmulFrom reads A through a functor instead (a mapped or gathered A).
 */
#define MLFF_MATMUL_THREADS 256
#define MLFF_MATMUL_ROWS 64
#define MLFF_MATMUL_DEPTH 32
// For kernels built on mlffMatmul: two blocks per SM, so that one block's barrier waits overlap the other's sums.
#define MLFF_MATMUL_BOUNDS __launch_bounds__(MLFF_MATMUL_THREADS, 2)

#if !defined(USE_DOUBLE_PRECISION) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
#define MLFF_MATMUL_TENSOR_CORES 1
#endif

#ifdef MLFF_MATMUL_TENSOR_CORES
/** x split into TF32 parts, big + small ~ x to float32's precision (round to nearest, both). */
DEVICE inline void mlffSplitTf32(float x, unsigned int* big, unsigned int* small) {
    asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(*big) : "f"(x));
    asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(*small) : "f"(x - __uint_as_float(*big)));
}

/** d += a b for one m16n8k8 TF32 tile (fragments in mma.sync's layouts). */
DEVICE inline void mlffMmaTf32(float* d, const unsigned int* a, const unsigned int* b) {
    asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
#endif

/**
 * Shared memory of one tile. Tensor cores: A row by row, each row padded by 4, and B input by
 * input, padded by 8, so that a fragment's 32 reads fall in 32 banks; each as its TF32 parts; the
 * output staging reuses the same memory. FMA pipes: A transposed, each column padded by 4 (4
 * adjacent rows read as one vector), and B input by input.
 */
template <int Columns>
union MlffMatmulTiles {
#ifdef MLFF_MATMUL_TENSOR_CORES
    struct { // split into TF32 parts as stored, once per element
        unsigned int aBig[MLFF_MATMUL_ROWS][MLFF_MATMUL_DEPTH + 4], aSmall[MLFF_MATMUL_ROWS][MLFF_MATMUL_DEPTH + 4];
        unsigned int bBig[MLFF_MATMUL_DEPTH][Columns + 8], bSmall[MLFF_MATMUL_DEPTH][Columns + 8];
    } in;
    real out[MLFF_MATMUL_ROWS][Columns + 4];
#else
    struct {
        real a[MLFF_MATMUL_DEPTH][MLFF_MATMUL_ROWS + 4];
        real b[MLFF_MATMUL_DEPTH][Columns + 8];
    } in;
#endif
};

struct MlffIdentity {
    DEVICE real operator()(real x) const {
        return x;
    }
};

/** A as a row-major (rows, I) array, each element mapped by Input as it is loaded (say, an activation). */
template <int I, class Input = MlffIdentity>
struct MlffRowMajor {
    const real* a;
    DEVICE real operator()(int row, int k) const {
        return Input()(a[(size_t) row * I + k]);
    }
};

/** C = A B with A given by a functor: loadA(row, k) = A[row][k] (mlffMatmul for a plain array). */
template <int I, int O, int TN, class Epilogue, class LoadA>
DEVICE inline void mlffMatmulFrom(LoadA loadA, const real* RESTRICT b, int rows, Epilogue epilogue) {
    constexpr int columns = 16 * TN;
    constexpr int steps = (I + MLFF_MATMUL_DEPTH - 1) / MLFF_MATMUL_DEPTH;
    constexpr int aPerThread = MLFF_MATMUL_ROWS * MLFF_MATMUL_DEPTH / MLFF_MATMUL_THREADS;
    constexpr int bPerThread = MLFF_MATMUL_DEPTH * columns / MLFF_MATMUL_THREADS;
    static_assert(O % columns == 0, "the outputs must fill whole tiles");
    __shared__ MlffMatmulTiles<columns> tiles;
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    const int firstRow = blockIdx.x * MLFF_MATMUL_ROWS, firstColumn = blockIdx.y * columns;
    if (firstRow >= rows)
        return; // the whole block: no barrier is skipped

    // The next step's elements are loaded into registers while the current step computes.
    real aNext[aPerThread], bNext[bPerThread];
    auto loadStep = [&](int k0) {
#pragma unroll
        for (int q = 0; q < aPerThread; q++) {
            const int e = threadIdx.x + q * MLFF_MATMUL_THREADS;
            const int row = firstRow + e / MLFF_MATMUL_DEPTH, k = k0 + e % MLFF_MATMUL_DEPTH;
            aNext[q] = row < rows && (I % MLFF_MATMUL_DEPTH == 0 || k < I) ? loadA(row, k) : 0;
        }
#pragma unroll
        for (int q = 0; q < bPerThread; q++) {
            const int e = threadIdx.x + q * MLFF_MATMUL_THREADS;
            const int k = k0 + e / columns;
            bNext[q] = I % MLFF_MATMUL_DEPTH == 0 || k < I ? b[(size_t) k * O + firstColumn + e % columns] : 0;
        }
    };
    auto storeStep = [&]() {
#pragma unroll
        for (int q = 0; q < aPerThread; q++) {
            const int e = threadIdx.x + q * MLFF_MATMUL_THREADS;
#ifdef MLFF_MATMUL_TENSOR_CORES
            mlffSplitTf32(aNext[q], &tiles.in.aBig[e / MLFF_MATMUL_DEPTH][e % MLFF_MATMUL_DEPTH],
                          &tiles.in.aSmall[e / MLFF_MATMUL_DEPTH][e % MLFF_MATMUL_DEPTH]);
#else
            tiles.in.a[e % MLFF_MATMUL_DEPTH][e / MLFF_MATMUL_DEPTH] = aNext[q];
#endif
        }
#pragma unroll
        for (int q = 0; q < bPerThread; q++) {
            const int e = threadIdx.x + q * MLFF_MATMUL_THREADS;
#ifdef MLFF_MATMUL_TENSOR_CORES
            mlffSplitTf32(bNext[q], &tiles.in.bBig[e / columns][e % columns], &tiles.in.bSmall[e / columns][e % columns]);
#else
            tiles.in.b[e / columns][e % columns] = bNext[q];
#endif
        }
    };

#ifdef MLFF_MATMUL_TENSOR_CORES
    // Warp w: rows 16 (w % 4) .. +16 of the tile, columns 8 TN (w / 4) .. +8 TN, as TN tiles of 8.
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const int g = lane / 4, t = lane % 4; // mma.sync's group and thread in group
    const int warpRow = 16 * (warp % 4), warpColumn = 8 * TN * (warp / 4);
    float acc[TN][4];
#pragma unroll
    for (int j = 0; j < TN; j++)
        acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0;
    loadStep(0);
    for (int step = 0; step < steps; step++) {
        storeStep();
        __syncthreads();
        if (step + 1 < steps)
            loadStep((step + 1) * MLFF_MATMUL_DEPTH);
#pragma unroll
        for (int k = 0; k < MLFF_MATMUL_DEPTH; k += 8) {
            const int r0 = warpRow + g, r1 = warpRow + g + 8;
            const unsigned int aBig[4] = {tiles.in.aBig[r0][k + t], tiles.in.aBig[r1][k + t],
                                          tiles.in.aBig[r0][k + t + 4], tiles.in.aBig[r1][k + t + 4]};
            const unsigned int aSmall[4] = {tiles.in.aSmall[r0][k + t], tiles.in.aSmall[r1][k + t],
                                            tiles.in.aSmall[r0][k + t + 4], tiles.in.aSmall[r1][k + t + 4]};
#pragma unroll
            for (int j = 0; j < TN; j++) {
                const int n = warpColumn + 8 * j + g;
                const unsigned int bBig[2] = {tiles.in.bBig[k + t][n], tiles.in.bBig[k + t + 4][n]};
                const unsigned int bSmall[2] = {tiles.in.bSmall[k + t][n], tiles.in.bSmall[k + t + 4][n]};
                mlffMmaTf32(acc[j], aSmall, bBig); // the small terms first: they are the finer ones
                mlffMmaTf32(acc[j], aBig, bSmall);
                mlffMmaTf32(acc[j], aBig, bBig);
            }
        }
        __syncthreads(); // the next step overwrites the tiles (and the staging below reuses them)
    }
    // Stage the tile's sums so that each thread gets the rows and columns the epilogue expects.
#pragma unroll
    for (int j = 0; j < TN; j++) {
        const int column = warpColumn + 8 * j + 2 * t;
        tiles.out[warpRow + g][column] = acc[j][0];
        tiles.out[warpRow + g][column + 1] = acc[j][1];
        tiles.out[warpRow + g + 8][column] = acc[j][2];
        tiles.out[warpRow + g + 8][column + 1] = acc[j][3];
    }
    __syncthreads();
    real sums[4][TN];
#pragma unroll
    for (int r = 0; r < 4; r++)
#pragma unroll
        for (int q = 0; q < TN; q++)
            sums[r][q] = tiles.out[4 * ty + r][TN * tx + q];
#else
    real sums[4][TN];
#pragma unroll
    for (int r = 0; r < 4; r++)
#pragma unroll
        for (int q = 0; q < TN; q++)
            sums[r][q] = 0;
    loadStep(0);
    for (int step = 0; step < steps; step++) {
        storeStep();
        __syncthreads();
        if (step + 1 < steps)
            loadStep((step + 1) * MLFF_MATMUL_DEPTH);
#pragma unroll
        for (int k = 0; k < MLFF_MATMUL_DEPTH; k++) {
            real x[4], w[TN];
#pragma unroll
            for (int r = 0; r < 4; r++)
                x[r] = tiles.in.a[k][4 * ty + r];
#pragma unroll
            for (int q = 0; q < TN; q++)
                w[q] = tiles.in.b[k][TN * tx + q];
#pragma unroll
            for (int r = 0; r < 4; r++)
#pragma unroll
                for (int q = 0; q < TN; q++)
                    sums[r][q] += x[r] * w[q];
        }
        __syncthreads(); // the next step overwrites the tiles
    }
#endif
#pragma unroll
    for (int r = 0; r < 4; r++) {
        const int row = firstRow + 4 * ty + r;
        if (row < rows)
            epilogue(row, firstColumn + TN * tx, sums[r]);
    }
}

template <int I, int O, int TN, class Epilogue>
DEVICE inline void mlffMatmul(const real* RESTRICT a, const real* RESTRICT b, int rows, Epilogue epilogue) {
    mlffMatmulFrom<I, O, TN>(MlffRowMajor<I>{a}, b, rows, epilogue);
}
