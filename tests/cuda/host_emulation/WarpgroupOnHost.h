/*
 * WarpgroupOnHost.h: what the host tests of warp-group products (warpgroup_matmul.cu) share,
 * included after KernelsOnHost.h with MLFF_HOST_FLOAT: a block's dynamic shared memory, the weights'
 * images as the plugin makes them, and a launch of MLFF_WARPGROUPS warp groups a block.
 */
#pragma once

#include <vector>

// The dynamic shared memory of a warp-group product's block (an H100's most).
alignas(128) unsigned int mlffWarpgroupMemory[232448 / 4];

/**
 * A product's images (mlffPrepareWarpgroupTiles) for blocks 0 .. layer, laid out as the plugin lays
 * them out, block `layer`'s made and the others' left zero: B (I, O) in column tiles of Columns, its
 * k-steps' inputs in the order of A's loads or of an earlier product's accumulators, and where J > 0
 * the side product's F (J, sideOutputs) and c.
 */
template <int I, int O, int Columns, int J>
std::vector<unsigned int> warpgroupImagesOnHost(int layer, const real* b, int accumulatorOrder = 0,
                                                const real* f = nullptr, int sideOutputs = 0, const real* c = nullptr) {
    constexpr size_t perBlock = (size_t) (O / Columns) * MlffWarpgroupTileWords<I, Columns, J>::value;
    std::vector<unsigned int> images((layer + 1) * perBlock, 0);
    unsigned int* image = images.data() + layer * perBlock;
    cudaOnHostLaunch(O / Columns, 256, [&] {
        mlffPrepareWarpgroupTiles(b, I, O, Columns, accumulatorOrder, f, J, sideOutputs, c, image);
    });
    return images;
}

/** A warp-group product's launch: its O / Columns column tiles, `perColumn` blocks each. */
template <int O, int Columns, class Kernel>
void launchWarpgroupsOnHost(int perColumn, Kernel kernel, int gridY = 1) {
    cudaOnHostLaunch(O / Columns * perColumn, 128 * MLFF_WARPGROUPS, kernel, gridY);
}
