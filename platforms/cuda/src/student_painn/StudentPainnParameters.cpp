#include "student_painn/StudentPainnParameters.h"

#include <cstddef>
#include <cstdio>

namespace MLFFPlugin {

namespace {

// Appends matrices and vectors and records where each starts: at a multiple of 4 elements, so
// that matmul.cu can copy a matrix's rows 16 bytes at a time (in float).
class Packer {
public:
    explicit Packer(std::vector<double>& destination) : out(destination) {
    }
    size_t vector(const double* values, int n) {
        size_t start = align();
        out.insert(out.end(), values, values + n);
        return start;
    }
    size_t matrix(const double* values, int rows, int cols) { // (rows, cols) row-major, as stored
        return vector(values, rows * cols);
    }
    size_t padded(const double* values, int rows, int cols, int paddedCols) { // (rows, paddedCols), zeros past cols
        size_t start = align();
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < paddedCols; c++)
                out.push_back(c < cols ? values[(size_t) r * cols + c] : 0.0);
        return start;
    }
    size_t transposed(const double* values, int rows, int cols) { // stores (cols, rows)
        return vector(transpose(values, rows, cols).data(), rows * cols);
    }
    // (rows, groups * width) row-major whose columns are `groups` blocks of `width` channels, stored
    // with the columns channel-major: column g * width + c moves to c * groups + g. The tiled
    // path's matrix products then give each thread all the outputs of its channels together.
    size_t channelMajor(const double* values, int rows, int groups, int width) {
        size_t start = align();
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < width; c++)
                for (int g = 0; g < groups; g++)
                    out.push_back(values[(size_t) r * groups * width + (size_t) g * width + c]);
        return start;
    }
    // (inputs, outputs) row-major, stored by fours: element (k, o) at ((k / 4) outputs + o) 4 + k % 4,
    // zeros past the inputs (mlffWeightsByFours in layers.cu: a thread's four weights in one load).
    size_t byFours(const double* values, int inputs, int outputs) {
        size_t start = align();
        for (int k4 = 0; k4 < inputs; k4 += 4)
            for (int o = 0; o < outputs; o++)
                for (int k = k4; k < k4 + 4; k++)
                    out.push_back(k < inputs ? values[(size_t) k * outputs + o] : 0.0);
        return start;
    }
    static std::vector<double> transpose(const double* values, int rows, int cols) {
        std::vector<double> result;
        result.reserve((size_t) rows * cols);
        for (int c = 0; c < cols; c++)
            for (int r = 0; r < rows; r++)
                result.push_back(values[(size_t) r * cols + c]);
        return result;
    }

    // Pads to the next multiple of 4 elements; returns the size.
    size_t align() {
        out.resize((out.size() + 3) / 4 * 4, 0.0);
        return out.size();
    }

private:
    std::vector<double>& out;
};

std::string exactDouble(double value) {
    char text[64];
    std::snprintf(text, sizeof(text), "%.17g", value);
    return text;
}

} // namespace

StudentPainnLayout layoutStudentPainn(const mlff_student_painn& model) {
    const int H = model.hidden_channels, K = model.num_rbf, L = model.num_blocks, zMax = model.max_atomic_number;
    StudentPainnLayout layout;
    Packer pack(layout.values);
    auto& def = layout.defines;
    def["MLFF_H"] = std::to_string(H);
    def["MLFF_K"] = std::to_string(K);
    const int kPadded = (K + 31) / 32 * 32; // edge_filters.cu's basis backward: whole tiles of 32 columns
    def["MLFF_K_PADDED"] = std::to_string(kPadded);
    def["MLFF_L"] = std::to_string(L);
    def["MLFF_Z_MAX"] = std::to_string(zMax);
    def["MLFF_CUTOFF"] = exactDouble(model.cutoff);

    def["MLFF_P_EMBEDDING"] = std::to_string(pack.matrix(model.embedding, zMax + 1, H));
    def["MLFF_P_RBF_CENTERS"] = std::to_string(pack.vector(model.rbf_centers, K));
    def["MLFF_P_RBF_WIDTHS"] = std::to_string(pack.vector(model.rbf_widths, K));
    def["MLFF_P_HEAD_W0"] = std::to_string(pack.matrix(model.head_w0, H / 2, H));
    def["MLFF_P_HEAD_W0T"] = std::to_string(pack.transposed(model.head_w0, H / 2, H));
    def["MLFF_P_HEAD_B0"] = std::to_string(pack.vector(model.head_b0, H / 2));
    def["MLFF_P_HEAD_W2"] = std::to_string(pack.matrix(model.head_w2, H / 4, H / 2));
    def["MLFF_P_HEAD_W2T"] = std::to_string(pack.transposed(model.head_w2, H / 4, H / 2));
    def["MLFF_P_HEAD_B2"] = std::to_string(pack.vector(model.head_b2, H / 4));
    def["MLFF_P_HEAD_W4"] = std::to_string(pack.vector(model.head_w4, H / 4));
    def["MLFF_P_HEAD_B4"] = std::to_string(pack.vector(model.head_b4, 1));

    // Blocks: the same layout repeated with a fixed stride.
    const size_t blocksStart = pack.align(); // each block aligned, so that the offsets within agree
    std::map<std::string, size_t> within;
    for (int l = 0; l < L; l++) {
        const mlff_student_painn_block& block = model.blocks[l];
        const size_t base = pack.align();
        std::map<std::string, size_t> offsets;
        offsets["MLFF_B_FILTER_W0T"] = pack.transposed(block.filter_w0, H, K) - base;
        offsets["MLFF_B_FILTER_B0"] = pack.vector(block.filter_b0, H) - base;
        offsets["MLFF_B_FILTER_W0_PADDED"] = pack.padded(block.filter_w0, H, K, kPadded) - base;
        offsets["MLFF_B_FILTER_W2"] = pack.matrix(block.filter_w2, 3 * H, H) - base;
        offsets["MLFF_B_FILTER_W2T"] = pack.transposed(block.filter_w2, 3 * H, H) - base;
        offsets["MLFF_B_FILTER_B2"] = pack.vector(block.filter_b2, 3 * H) - base;
        offsets["MLFF_B_UPDATE_W0T"] = pack.transposed(block.update_w0, H, 2 * H) - base;
        offsets["MLFF_B_UPDATE_B0"] = pack.vector(block.update_b0, H) - base;
        offsets["MLFF_B_UPDATE_W2"] = pack.matrix(block.update_w2, 3 * H, H) - base;
        offsets["MLFF_B_UPDATE_B2"] = pack.vector(block.update_b2, 3 * H) - base;
        offsets["MLFF_B_MIXING"] = pack.vector(block.mixing, 9) - base;
        // The tiled path (kernels/student_painn/tiled.cu): U2^T and b2 with (a, g1, g2) of a channel
        // adjacent, and U0 with (s, |v|) of a channel adjacent.
        offsets["MLFF_B_UPDATE_W2T_BY_CHANNEL"] =
            pack.channelMajor(Packer::transpose(block.update_w2, 3 * H, H).data(), H, 3, H) - base;
        offsets["MLFF_B_UPDATE_B2_BY_CHANNEL"] = pack.channelMajor(block.update_b2, 1, 3, H) - base;
        offsets["MLFF_B_UPDATE_W0_BY_CHANNEL"] = pack.channelMajor(block.update_w0, H, 2, H) - base;
        // And U2^T's a columns alone (H, H): the last block's output, whose g1, g2 are dead.
        offsets["MLFF_B_UPDATE_W2T_SCALAR"] = pack.transposed(block.update_w2, H, H) - base;
        // The fused path (forward.cu, backward.cu): the matrices its threads stream, by fours.
        offsets["MLFF_B_FILTER_W2T_BY_FOURS"] = pack.byFours(Packer::transpose(block.filter_w2, 3 * H, H).data(), H, 3 * H) - base;
        offsets["MLFF_B_FILTER_W2_BY_FOURS"] = pack.byFours(block.filter_w2, 3 * H, H) - base;
        offsets["MLFF_B_UPDATE_W0T_BY_FOURS"] = pack.byFours(Packer::transpose(block.update_w0, H, 2 * H).data(), 2 * H, H) - base;
        offsets["MLFF_B_UPDATE_W2T_BY_FOURS"] = pack.byFours(Packer::transpose(block.update_w2, 3 * H, H).data(), H, 3 * H) - base;
        offsets["MLFF_B_UPDATE_W2_BY_FOURS"] = pack.byFours(block.update_w2, 3 * H, H) - base;
        offsets["MLFF_B_UPDATE_W0_BY_FOURS"] = pack.byFours(block.update_w0, H, 2 * H) - base;
        if (l == 0)
            within = offsets;
        if (l == 1)
            def["MLFF_P_BLOCK_STRIDE"] = std::to_string(base - blocksStart);
    }
    if (L == 1)
        def["MLFF_P_BLOCK_STRIDE"] = std::to_string(pack.align() - blocksStart);
    def["MLFF_P_BLOCKS"] = std::to_string(blocksStart);
    for (const auto& entry : within)
        def[entry.first] = std::to_string(entry.second);
    return layout;
}

} // namespace MLFFPlugin
