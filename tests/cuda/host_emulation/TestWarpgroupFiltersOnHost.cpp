// The exact filters' products over pairs on warp-group products (warpgroup_matmul.cu,
// edge_filters.cu), run on the CPU (CudaOnHost.h) in float, as on the GPU, each against the filter
// network's definition in double: forward, the hidden layer and the output as two products
// (mlffEdgeFilterHidden, mlffEdgeFilterOutput) and as one from the basis (mlffEdgeFilterFromBasis,
// the hidden layer in registers, which in the first block leaves w_v1 out); backward, each pair's
// dE/dd from its dE/dw (mlffEdgeFilterBackwardToDistance, with its side product, and the first
// block's ...FirstBlock, without dE/dw_v1). The two forward products and the backward pass on an H100 against the Reference platform, so they check the emulation of wgmma as
// much as it checks them. The weights' images are made by mlffPrepareWarpgroupTiles, as the plugin
// makes them. Built twice: the output's rows stored straight from the accumulators (Direct/) and
// through shared memory (Staged/, MLFF_STAGED_FILTER_STORES).
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <string>

#define MLFF_HOST_FLOAT 1 // warp-group products are float alone
#define MLFF_HOST_EXACT_FILTERS 1
// As CudaCalcMLFFForceKernel::addKernelDefines gives them on an H100 for H = 64 in float.
#define MLFF_WARPGROUPS 4
#define MLFF_WARPGROUP_FILTER_FORWARD 1
#define MLFF_WARPGROUP_FORWARD_COLUMNS 64
#define MLFF_FILTER_HIDDEN_IN_REGISTERS 1
#define MLFF_WARPGROUP_FILTER_BACKWARD 1
#define MLFF_WARPGROUP_BACKWARD_COLUMNS 64
#include "KernelsOnHost.h"
#include "WarpgroupOnHost.h"

namespace {

constexpr int H = MLFF_H, K = MLFF_K, Columns = MLFF_WARPGROUP_FORWARD_COLUMNS;
static_assert(MLFF_WARPGROUP_BACKWARD_COLUMNS == Columns, "one column count for the images below");
constexpr int Layer = 1; // not the first, so that the blocks' offsets count

template <int I, int O, int J>
std::vector<unsigned int> imagesOf(const real* b, int accumulatorOrder, const real* f, int sideOutputs,
                                   const real* c, int layer = Layer) {
    return warpgroupImagesOnHost<I, O, Columns, J>(layer, b, accumulatorOrder, f, sideOutputs, c);
}

template <int O, class Kernel>
void launchWarpgroups(int perColumn, Kernel kernel, int gridRows = 1) {
    launchWarpgroupsOnHost<O, Columns>(perColumn, kernel, gridRows);
}

struct FilterNetwork {
    std::vector<real> params, basis; // basis: (rows, K), e(d) of each pair's distance
    std::vector<real4> delta;        // (rows): each pair's u and d (w), its owning edge's being its row
    std::vector<int2> filterEdges;   // (rows): (r, -1)
    int rows;
    int layer = Layer; // the block whose weights these are
    const real* block() const {
        return params.data() + MLFF_P_BLOCKS + (size_t) layer * MLFF_P_BLOCK_STRIDE;
    }
    /** The hidden layer's input of pair r, channel h, by the definition: e W0^T + b0. */
    double hiddenInput(int r, int h) const {
        double x = block()[MLFF_B_FILTER_B0 + h];
        for (int k = 0; k < K; k++)
            x += (double) basis[(size_t) r * K + k] * block()[MLFF_B_FILTER_W0T + k * H + h];
        return x;
    }
    /** The hidden layer, SiLU(x). */
    double hidden(int r, int h) const {
        const double x = hiddenInput(r, h);
        return x / (1 + std::exp(-x));
    }
    /**
     * Expects `filters` (rows, 3H) to be the network's output, hidden W2^T + b2, each to 1e-5 of
     * the sum of its terms' magnitudes (3xTF32 keeps float's precision; the sums are float); with
     * `withoutV1`, w_v1 (outputs H to 2H) as it was before, `unwritten` in every place.
     */
    void expectFilters(const std::vector<real>& filters, const std::string& what, bool withoutV1 = false,
                       real unwritten = 0) const {
        int failures = 0;
        for (int r = 0; r < rows; r++) {
            double h[H];
            for (int k = 0; k < H; k++)
                h[k] = hidden(r, k);
            for (int o = 0; o < 3 * H; o++) {
                if (withoutV1 && o >= H && o < 2 * H) {
                    const real got = filters[(size_t) r * 3 * H + o];
                    if (got != unwritten && failures++ < 5)
                        ADD_FAILURE() << what << ": pair " << r << ", output " << o << " (w_v1) written: " << got;
                    continue;
                }
                double w = block()[MLFF_B_FILTER_B2 + o], scale = std::fabs(w);
                for (int k = 0; k < H; k++) {
                    const double term = h[k] * block()[MLFF_B_FILTER_W2T + k * 3 * H + o];
                    w += term;
                    scale += std::fabs(term);
                }
                const double got = filters[(size_t) r * 3 * H + o];
                if (!(std::fabs(got - w) <= 1e-5 * scale) && failures++ < 5)
                    ADD_FAILURE() << what << ": pair " << r << ", output " << o << ": " << got << ", not " << w
                                  << " (terms' magnitudes " << scale << ")";
            }
        }
        EXPECT_EQ(failures, 0) << what;
    }
};

/** Random weights and pairs 0.8 to 5.2 Å apart (some past the cutoff), the basis' centres 0.5 Å apart. */
FilterNetwork randomFilterNetwork(int rows) {
    std::mt19937 rng(31);
    FilterNetwork network{randomReals(rng, MLFF_PARAMETERS_SIZE), {}, {}, {}, rows};
    for (int k = 0; k < K; k++) {
        network.params[MLFF_P_RBF_CENTERS + k] = 0.5f * k;
        network.params[MLFF_P_RBF_WIDTHS + k] = 0.6f;
    }
    std::uniform_real_distribution<float> distance(0.8f, 5.2f);
    for (int r = 0; r < rows; r++) {
        const real d = distance(rng);
        network.delta.push_back(make_real4(d, 0, 0, d));
        network.filterEdges.push_back(make_int2(r, -1));
        for (int k = 0; k < K; k++) {
            real e;
            mlffRadialBasis(network.params.data(), d, k, &e, nullptr);
            network.basis.push_back(e);
        }
    }
    return network;
}

// 150 pairs: two whole row tiles of 64 and a part, whose rows past the last the products clamp and drop.
TEST(WarpgroupFiltersOnHost, TwoProductsGiveTheFilters) {
    const FilterNetwork network = randomFilterNetwork(150);
    const real* block = network.block();
    const std::vector<unsigned int> hiddenImages =
            imagesOf<K, H, 0>(block + MLFF_B_FILTER_W0T, 0, nullptr, 0, nullptr);
    const std::vector<unsigned int> outputImages =
            imagesOf<H, 3 * H, 0>(block + MLFF_B_FILTER_W2T, 0, nullptr, 0, nullptr);
    std::vector<real> hidden((size_t) network.rows * H, -7), filters((size_t) network.rows * 3 * H, -7);
    launchWarpgroups<H>(1, [&] {
        mlffEdgeFilterHidden(Layer, network.params.data(), &network.rows, network.basis.data(), hidden.data(),
                             hiddenImages.data());
    });
    for (int r = 0; r < network.rows; r++)
        for (int h = 0; h < H; h++)
            ASSERT_NEAR(hidden[(size_t) r * H + h], network.hidden(r, h), 1e-5 * (1 + std::fabs(network.hidden(r, h))))
                    << "pair " << r << ", channel " << h;
    launchWarpgroups<3 * H>(1, [&] {
        mlffEdgeFilterOutput(Layer, network.params.data(), &network.rows, hidden.data(), filters.data(),
                             outputImages.data());
    });
    network.expectFilters(filters, "two products");
}

// The same filters from one product, the hidden layer in registers; with two blocks a column tile,
// so that a block takes every other row tile. In the first block w_v1 is left out (v = 0 there), its
// tile's blocks taking the other tiles' rows: three blocks share two tiles, six take three rows each.
TEST(WarpgroupFiltersOnHost, OneProductFromTheBasisGivesTheFilters) {
    for (int layer : {Layer, 0}) {
        FilterNetwork network = randomFilterNetwork(150);
        network.layer = layer;
        const real* block = network.block();
        const std::vector<unsigned int> images = imagesOf<H, 3 * H, K>(
                block + MLFF_B_FILTER_W2T, 1, block + MLFF_B_FILTER_W0T, H, block + MLFF_B_FILTER_B0, layer);
        for (int perColumn : {1, 2}) {
            std::vector<real> filters((size_t) network.rows * 3 * H, -7);
            launchWarpgroups<3 * H>(perColumn, [&] {
                mlffEdgeFilterFromBasis(layer, network.params.data(), &network.rows, network.basis.data(),
                                        filters.data(), 0, images.data());
            });
            network.expectFilters(filters,
                                  "block " + std::to_string(layer) + ", one product, " + std::to_string(perColumn) +
                                          " blocks a column tile",
                                  layer == 0, -7);
        }
    }
}

// Every block's filters from one launch, a row of its grid a block, each block's rows blockStride
// apart, with every block's images side by side as the plugin lays them out: each block's own.
TEST(WarpgroupFiltersOnHost, EveryBlocksFiltersFromOneLaunch) {
    FilterNetwork network = randomFilterNetwork(150);
    std::vector<unsigned int> images;
    for (int layer = 0; layer < MLFF_L; layer++) {
        network.layer = layer;
        const real* block = network.block();
        const std::vector<unsigned int> upToThis = imagesOf<H, 3 * H, K>(
                block + MLFF_B_FILTER_W2T, 1, block + MLFF_B_FILTER_W0T, H, block + MLFF_B_FILTER_B0, layer);
        const size_t perBlock = upToThis.size() / (layer + 1);
        images.insert(images.end(), upToThis.begin() + layer * perBlock, upToThis.end());
    }
    const size_t blockStride = (size_t) (network.rows + 5) * 3 * H; // a bound past the rows, as the plugin's
    std::vector<real> filters(MLFF_L * blockStride, -7);
    launchWarpgroups<3 * H>(
            2,
            [&] {
                mlffEdgeFilterFromBasis(0, network.params.data(), &network.rows, network.basis.data(), filters.data(),
                                        blockStride, images.data());
            },
            MLFF_L);
    for (int layer = 0; layer < MLFF_L; layer++) {
        network.layer = layer;
        const std::vector<real> ofBlock(filters.begin() + layer * blockStride,
                                        filters.begin() + layer * blockStride + (size_t) network.rows * 3 * H);
        network.expectFilters(ofBlock, "block " + std::to_string(layer) + " of one launch", layer == 0, -7);
    }
}

// Each pair's dE/dd from its dE/dw: g = (dE/dw W2) SiLU'(x), dE/dd = g . (de/dd W0^T), x recomputed
// by the side product from the pair's basis. In the first block dE/dw_v1 is 0 and left unwritten
// by the messages' backward (mlffFilterKindUsed): NaN here, which the first block's kernel must skip.
TEST(WarpgroupFiltersOnHost, BackwardGivesEachPairsGradientOfItsDistance) {
    for (int layer : {Layer, 0}) {
        SCOPED_TRACE("block " + std::to_string(layer));
        FilterNetwork network = randomFilterNetwork(150);
        network.layer = layer;
        const real* block = network.block();
        std::mt19937 rng(32);
        std::vector<real> gradFilter = randomReals(rng, (size_t) network.rows * 3 * H);
        const auto read = [&](int o) { return mlffFilterKindUsed(layer, o / H); };
        for (size_t x = 0; x < gradFilter.size(); x++)
            if (!read(x % (3 * H)))
                gradFilter[x] = std::numeric_limits<real>::quiet_NaN();
        const std::vector<unsigned int> images = imagesOf<3 * H, H, K>(
                block + MLFF_B_FILTER_W2, 0, block + MLFF_B_FILTER_W0T, H, block + MLFF_B_FILTER_B0, layer);
        constexpr int columnTiles = H / MLFF_WARPGROUP_BACKWARD_COLUMNS;
        std::vector<real> parts((size_t) network.rows * MLFF_L * columnTiles, -7);
        launchWarpgroups<H>(1, [&] {
            const auto kernel =
                    layer == 0 ? mlffEdgeFilterBackwardToDistanceFirstBlock : mlffEdgeFilterBackwardToDistance;
            kernel(layer, network.params.data(), &network.rows, gradFilter.data(), network.basis.data(),
                   network.filterEdges.data(), network.delta.data(), parts.data(), images.data());
        });
        int failures = 0;
        for (int r = 0; r < network.rows; r++) {
            double dedd[K];
            for (int k = 0; k < K; k++) {
                real e, derivative;
                mlffRadialBasis(network.params.data(), network.delta[r].w, k, &e, &derivative);
                dedd[k] = derivative;
            }
            double expected = 0, scale = 0;
            for (int h = 0; h < H; h++) {
                double gw = 0, gwScale = 0, dxdd = 0;
                for (int o = 0; o < 3 * H; o++) {
                    if (!read(o))
                        continue;
                    const double term =
                            (double) gradFilter[(size_t) r * 3 * H + o] * block[MLFF_B_FILTER_W2 + o * H + h];
                    gw += term;
                    gwScale += std::fabs(term);
                }
                for (int k = 0; k < K; k++)
                    dxdd += dedd[k] * block[MLFF_B_FILTER_W0T + k * H + h];
                const double x = network.hiddenInput(r, h), sigmoid = 1 / (1 + std::exp(-x));
                const double siluGrad = sigmoid * (1 + x * (1 - sigmoid));
                expected += gw * siluGrad * dxdd;
                scale += gwScale * std::fabs(siluGrad * dxdd);
            }
            double got = 0;
            for (int tile = 0; tile < columnTiles; tile++)
                got += parts[((size_t) r * MLFF_L + layer) * columnTiles + tile];
            if (!(std::fabs(got - expected) <= 1e-5 * scale) && failures++ < 5)
                ADD_FAILURE() << "pair " << r << " (d = " << network.delta[r].w << "): dE/dd " << got << ", not "
                              << expected << " (terms' magnitudes " << scale << ")";
        }
        EXPECT_EQ(failures, 0);
    }
}

} // namespace
