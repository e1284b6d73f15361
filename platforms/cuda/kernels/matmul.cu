/*
 * matmul.cu: C = A B for the per-atom layers of the tiled path, in `real`.
 *   A (rows, I) row-major: one row per ML atom;
 *   B (I, O) row-major: the weights, input-major;
 * a thread block of MLFF_MATMUL_THREADS computes a tile of MLFF_MATMUL_ROWS rows by 16 TN columns,
 * each thread 4 adjacent rows by TN adjacent columns, staging A and B through shared memory
 * MLFF_MATMUL_DEPTH inputs at a time (the next step's loads in flight during this step's sums).
 * Each weight is read from global memory once per 64 atoms (the fused path reads it once per
 * atom), and each sum runs over the inputs in order.
 * The epilogue, a functor, receives each of the thread's rows with its TN sums:
 * epilogue(row, firstColumn, sums). Grid: (ceil(rows / MLFF_MATMUL_ROWS), O / (16 TN)).
 */
#define MLFF_MATMUL_THREADS 256
#define MLFF_MATMUL_ROWS 64
#define MLFF_MATMUL_DEPTH 32
// For kernels built on mlffMatmul: two blocks per SM, so that one block's barrier waits overlap the other's sums.
#define MLFF_MATMUL_BOUNDS __launch_bounds__(MLFF_MATMUL_THREADS, 2)

template <int I, int O, int TN, class Epilogue>
DEVICE inline void mlffMatmul(const real* RESTRICT a, const real* RESTRICT b, int rows, Epilogue epilogue) {
    constexpr int columns = 16 * TN;
    constexpr int aPerThread = MLFF_MATMUL_ROWS * MLFF_MATMUL_DEPTH / MLFF_MATMUL_THREADS;
    constexpr int bPerThread = MLFF_MATMUL_DEPTH * columns / MLFF_MATMUL_THREADS;
    static_assert(I % MLFF_MATMUL_DEPTH == 0, "the inputs must fill whole steps");
    static_assert(O % columns == 0, "the outputs must fill whole tiles");
    // A transposed (a row's inputs down a column), each row of the tile padded by 4 so that the
    // transposing stores fall in different banks while the 4 rows a thread reads stay aligned.
    __shared__ real aTile[MLFF_MATMUL_DEPTH][MLFF_MATMUL_ROWS + 4];
    __shared__ real bTile[MLFF_MATMUL_DEPTH][columns];
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    const int firstRow = blockIdx.x * MLFF_MATMUL_ROWS, firstColumn = blockIdx.y * columns;

    // The next step's elements are loaded into registers while the current step computes.
    real aNext[aPerThread], bNext[bPerThread];
    auto loadStep = [&](int k0) {
#pragma unroll
        for (int q = 0; q < aPerThread; q++) {
            const int e = threadIdx.x + q * MLFF_MATMUL_THREADS;
            const int row = firstRow + e / MLFF_MATMUL_DEPTH;
            aNext[q] = row < rows ? a[(size_t) row * I + k0 + e % MLFF_MATMUL_DEPTH] : 0;
        }
#pragma unroll
        for (int q = 0; q < bPerThread; q++) {
            const int e = threadIdx.x + q * MLFF_MATMUL_THREADS;
            bNext[q] = b[(size_t) (k0 + e / columns) * O + firstColumn + e % columns];
        }
    };
    real sums[4][TN];
#pragma unroll
    for (int r = 0; r < 4; r++)
#pragma unroll
        for (int t = 0; t < TN; t++)
            sums[r][t] = 0;
    loadStep(0);
    for (int k0 = 0; k0 < I; k0 += MLFF_MATMUL_DEPTH) {
#pragma unroll
        for (int q = 0; q < aPerThread; q++) {
            const int e = threadIdx.x + q * MLFF_MATMUL_THREADS;
            aTile[e % MLFF_MATMUL_DEPTH][e / MLFF_MATMUL_DEPTH] = aNext[q];
        }
#pragma unroll
        for (int q = 0; q < bPerThread; q++) {
            const int e = threadIdx.x + q * MLFF_MATMUL_THREADS;
            bTile[e / columns][e % columns] = bNext[q];
        }
        __syncthreads();
        if (k0 + MLFF_MATMUL_DEPTH < I)
            loadStep(k0 + MLFF_MATMUL_DEPTH);
#pragma unroll
        for (int k = 0; k < MLFF_MATMUL_DEPTH; k++) {
            real x[4], w[TN];
#pragma unroll
            for (int r = 0; r < 4; r++)
                x[r] = aTile[k][4 * ty + r];
#pragma unroll
            for (int t = 0; t < TN; t++)
                w[t] = bTile[k][TN * tx + t];
#pragma unroll
            for (int r = 0; r < 4; r++)
#pragma unroll
                for (int t = 0; t < TN; t++)
                    sums[r][t] += x[r] * w[t];
        }
        __syncthreads(); // the next step overwrites the tiles
    }
#pragma unroll
    for (int r = 0; r < 4; r++) {
        const int row = firstRow + 4 * ty + r;
        if (row < rows)
            epilogue(row, firstColumn + TN * tx, sums[r]);
    }
}
