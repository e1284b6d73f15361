#ifndef MLFF_PRODUCT_SHAPES_H
#define MLFF_PRODUCT_SHAPES_H

/*
 * How matmul.cu's and warpgroup_matmul.cu's matrix products are launched: their blocks, dynamic
 * shared memory and grids. The plugin (CudaLaunches.cpp) launches them so, and
 * benchmarks/product_probe.cu too, so that the probe times the products as the plugin runs them.
 * Plain C++: no OpenMM or CUDA header.
 */

#include <algorithm>
#include <cstddef>

namespace MLFFPlugin {
namespace ProductShapes {

// matmul.cu's tiles: MLFF_MATMUL_THREADS, MLFF_MATMUL_DEPTH, and MLFF_MATMUL_ROWS and
// MLFF_MATMUL_STAGES of each way of summing (tensor cores or FMA pipes).
constexpr int MatmulThreads = 256;
constexpr int MatmulDepth = 32;
constexpr int MatmulMaxRowsTensorCores = 128, MatmulStages = 3; // 64 or 128 rows: each kernel's choice
constexpr int MatmulRowsFma = 64;
constexpr int MatmulMaxColumns = 96; // the widest tile the kernels use (16 TN, TN = 6)

// warpgroup_matmul.cu's products (sm_90a: the filters' three over pairs, and the update's over
// atoms that CudaCalcMLFFForceKernel::updateProducts lists): MLFF_WARPGROUPS warp groups of
// MLFF_WARPGROUP_THREADS a block, each taking 64-row tiles of A in turn. 4 groups rather than 2 or 3 (H200, the filters' output
// product alone over 1,024 benzenes' 67,584 pairs: 93 µs, against 122 and 100; mma.sync's 164;
// their backward one with its side product 135 against 3's 171; mma.sync's 166).
constexpr int WarpgroupThreads = 128;
constexpr int Warpgroups = 4;
constexpr int WarpgroupRows = 64;

/** The dynamic shared memory of a tensor-core tile of `rows` by `columns`: MlffMatmulShared in matmul.cu (floats). */
inline unsigned int matmulSharedBytes(int rows, int columns) {
    const size_t stages = (size_t) MatmulStages * (rows * (MatmulDepth + 4) + MatmulDepth * (columns + 8));
    const size_t staging = (size_t) rows * (columns + 4);
    return (unsigned int) (std::max(stages, staging) * sizeof(float));
}

/** mlffMatmul's grid: a block a tile of `rowsPerTile` rows by `columnsPerTile` of the `outputs`. */
inline unsigned int matmulBlocks(size_t rows, int outputs, int rowsPerTile, int columnsPerTile) {
    return (unsigned int) ((rows + rowsPerTile - 1) / rowsPerTile * (outputs / columnsPerTile));
}

/**
 * The dynamic shared memory of a warp-group product's block: B's column tile, split in two TF32
 * parts (floats); `inputs` is rounded up to 16 already, and with a side product counts its inputs
 * too (rounded up to 16), whose bias takes a float a column.
 */
inline unsigned int warpgroupSharedBytes(int inputs, int columns, bool sideProduct = false) {
    return (unsigned int) ((2 * (size_t) inputs + (sideProduct ? 1 : 0)) * columns * sizeof(float));
}

/**
 * mlffWarpgroupMatmul's grid over at most `rows` rows: a multiple of the outputs' column tiles, a
 * block an SM (B's column tile fills its shared memory), or fewer where a row tile a warp group
 * takes every row.
 */
inline unsigned int warpgroupBlocks(size_t rows, int outputs, int columns, int multiprocessors) {
    const size_t columnTiles = outputs / columns;
    const size_t rowTiles = (rows + WarpgroupRows - 1) / WarpgroupRows;
    const size_t blocksForEveryRowTile = (rowTiles + Warpgroups - 1) / Warpgroups; // a row tile a warp group
    return (unsigned int) (std::max<size_t>(std::min<size_t>(multiprocessors / columnTiles, blocksForEveryRowTile), 1) *
                           columnTiles);
}

} // namespace ProductShapes
} // namespace MLFFPlugin

#endif
