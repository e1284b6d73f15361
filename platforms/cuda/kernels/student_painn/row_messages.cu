/*
 * student_painn/row_messages.cu: the messages of block `layer`, forward and backward, into each
 * atom whose edges have filter rows (edge_filters.cu: its list holds all its edges), from its
 * pairs' rows of edgeFilter (this block's; 3H: w_s, w_v1, w_v2, row edgeFilterRow[e]) and u, d
 * from edgeDelta. The forward's sums are those of the kernels without rows (tiled.cu) and of the
 * replica kernels (replica_messages.cu), term by term in list order, so the paths' features agree
 * to the bit where their filters do. The backward walks each atom's edges in another order
 * (edgeWalk: by distance along the numbering, edge_filters.cu's mlffWalkPosition), so that a pair's
 * two reads of its row come closer together and the second more often finds it in the L2; its
 * gather into dE/d(s_i, v_i) then sums in that order and agrees with the other paths to rounding.
 *
 * The forward: a block per atom, thread c channel c (MLFF_BLOCK threads): few registers, so many
 * blocks an SM keep the rows streaming in at the L2's rate. The backward: a warp per atom
 * (EdgeThreads threads a block, CudaKernelConstants.h; warp w of the grid atom w), lane l
 * owning the MLFF_LANE_CHANNELS adjacent channels from l * MLFF_LANE_CHANNELS (H is a multiple of
 * 64 on the tiled path): a lane loads its part of a row as a few vectors where a block would load
 * a real a thread, and a sum over channels (dE/dn) is the warp's shuffles, with no barrier. A block
 * per atom was bound by issuing instructions there (Nsight Compute: 2.4 a cycle an SM, many of
 * them addresses and the block's sums of dE/dn, with 64 registers a thread holding it to half the
 * warps an SM); a warp per atom took the 12,000-atom droplet's launches from 1,943 to 1,611 µs an
 * evaluation (H200). Then bound by its loads' latency, it asked the L2 for each edge's rows an edge
 * ahead (prefetch: 1,632 -> 1,489 µs); now each lane copies its parts of the next edge's rows into
 * shared memory while the warp works on this edge (cp.async, MLFF_ROW_STAGES: 1,504 -> 1,346 µs,
 * and 128 registers a thread -> 118). Three edges' stages (two in flight) took 1,452 µs, fewer
 * warps fitting an SM's shared memory; capping the registers at 96 for five blocks an SM spilled
 * (1,858); copies through the L1 (cp.async.ca) 1,708, or for j's rows alone 1,540.
 * The forward as a warp per atom was slower (900 µs against 856): a lane keeps four channels'
 * sums, and an SM fewer rows in flight.
 *
 * Both take their edges' records (j, the pair's row, u and d; in the backward whether the edge
 * owns its pair and has a partner) 32 at a time, a lane's each, in one coalesced load, and hand
 * each edge's to the warp by shuffles: an edge's rows then wait on one round trip rather than on
 * its record's first (H100, the 12,000-atom droplet, exact, µs an evaluation: forward 974 -> 913,
 * backward 1,719 -> 1,587; step 5,484 -> 5,325, tabulated 4,477 -> 4,304). The forward with 8 edges'
 * loads at once rather than 4 lost it again (982 µs).
 *
 * The backward's walk took its launches from 1,590 to 1,532 µs (H100, the same droplet); the
 * forward walked so gained nothing (916 -> 920 µs, the walk's own load per 32 edges in its way),
 * nor did it with 8 blocks an SM rather than 16 (941), which a simulation had favoured.
 */

/** Lane `from`'s v, to every lane of the warp. */
DEVICE inline real4 mlffShuffleReal4(const real4& v, int from) {
    return make_real4(__shfl_sync(0xffffffffu, v.x, from), __shfl_sync(0xffffffffu, v.y, from),
                      __shfl_sync(0xffffffffu, v.z, from), __shfl_sync(0xffffffffu, v.w, from));
}

/**
 * What an edge's loads need first: its neighbour j, its pair's filter row, in the first block j's
 * element (mlZ[j], whose embedding row is s_j there; else 0), u and d. A warp loads the records of
 * 32 edges at once, coalesced, a lane's each (mlffLoadEdgeRecord), and hands each edge's to every
 * lane (mlffShuffleEdgeRecord), so that the edge's loads of its rows wait on one round trip rather
 * than on its record's first (and on j's element after it).
 */
struct MlffEdgeRecord {
    int j, row, element;
    real4 g;
};

/** The record in block `layer` of the edge in slot `slot` of i's list, whose edge rows start at `first`. */
DEVICE inline MlffEdgeRecord mlffLoadEdgeRecord(int layer, const int* RESTRICT mlZ, const int* RESTRICT neighbors,
        int first, int slot, const real4* RESTRICT edgeDelta, const int* RESTRICT edgeFilterRow) {
    const int j = neighbors[slot];
    return {j, edgeFilterRow[first + slot], layer == 0 ? mlZ[j] : 0, edgeDelta[first + slot]};
}

/** Lane `from`'s record in block `layer`, to every lane of the warp. */
DEVICE inline MlffEdgeRecord mlffShuffleEdgeRecord(const MlffEdgeRecord& lanes, int from, int layer) {
    return {__shfl_sync(0xffffffffu, lanes.j, from), __shfl_sync(0xffffffffu, lanes.row, from),
            layer == 0 ? __shfl_sync(0xffffffffu, lanes.element, from) : 0, mlffShuffleReal4(lanes.g, from)};
}

/**
 * The messages of block `layer` into atom i (one thread block per atom, thread c = channel c),
 * then midV and the update's input (an atom without rows has its messages from tiled.cu's
 * kernel). No shared memory and no barrier; the edges' records pass between a warp's lanes.
 */
KERNEL void mlffMessagesForwardRows(int layer, const real* RESTRICT params, const int* RESTRICT mlZ,
        const int* RESTRICT neighborCount, const int* RESTRICT neighborList, int neighborCapacity,
        const int* RESTRICT edgeStart, const real4* RESTRICT edgeDelta, const int* RESTRICT edgeFilterRow,
        const real* RESTRICT edgeFilter, const real* RESTRICT stateS, const real* RESTRICT stateV,
        real* RESTRICT midV, real* RESTRICT updateInput) {
    mlffStartAfterPreviousLaunch();
    const int i = blockIdx.x, c = threadIdx.x, lane = threadIdx.x % 32;
    // Whole warps leave: the block's warps past H hold no channel (H is a multiple of 64 here).
    if (neighborCount[i] > neighborCapacity || c >= MLFF_H)
        return; // no rows (tiled.cu's kernel), or no channel
    real sMid = mlffBlockInputS(params, mlZ, stateS, layer, i, c), vMid[3];
    for (int a = 0; a < 3; a++)
        vMid[a] = mlffBlockInputV(stateV, layer, i, a, c);
    const int first = edgeStart[i], count = neighborCount[i];
    const int* neighbors = neighborList + (size_t) i * neighborCapacity;
    for (int base = 0; base < count; base += 32) {
        const MlffEdgeRecord lanes = base + lane < count
                                             ? mlffLoadEdgeRecord(layer, mlZ, neighbors, first, base + lane,
                                                                  edgeDelta, edgeFilterRow)
                                             : MlffEdgeRecord{};
        const int batch = min(32, count - base);
#pragma unroll 4
        for (int e = 0; e < batch; e++) {
            const MlffEdgeRecord edge = mlffShuffleEdgeRecord(lanes, e, layer);
            const real* w = edgeFilter + (size_t) edge.row * 3 * MLFF_H;
            const real inv = 1 / (edge.g.w + (real) MLFF_NORMAL_EPSILON);
            const real n[3] = {edge.g.x * inv, edge.g.y * inv, edge.g.z * inv};
            sMid += mlffBlockInputSOf(params, stateS, layer, edge.j, edge.element, c) * w[c];
            const real wv2 = w[2 * MLFF_H + c];
            if (!mlffFilterKindUsed(layer, 1)) { // v_j = 0: w_v1 multiplies nothing, and its row is not read
                for (int a = 0; a < 3; a++)
                    vMid[a] += n[a] * wv2;
            } else {
                const real wv1 = w[MLFF_H + c];
                for (int a = 0; a < 3; a++)
                    vMid[a] += mlffBlockInputV(stateV, layer, edge.j, a, c) * wv1 + n[a] * wv2;
            }
        }
    }
    mlffStoreMessages(i, layer, sMid, vMid, midV, updateInput, c);
}

// The backward, a warp per atom.

#define MLFF_LANE_CHANNELS (MLFF_H / 32)
// A lane's loads: vectors of four reals where its channels come in fours, else of two.
#define MLFF_LANE_VECTOR (MLFF_LANE_CHANNELS % 4 == 0 ? 4 : 2)

/** A lane's channels of one row of H reals (s, a component of v, or one kind of filter). */
struct MlffLaneSlice {
    real v[MLFF_LANE_CHANNELS];
};

/** Lane `lane`'s channels of `row` (H reals, aligned to MLFF_LANE_VECTOR reals, as all rows here are). */
DEVICE inline MlffLaneSlice mlffLoadLaneSlice(const real* RESTRICT row, int lane) {
    typedef MlffRealVector<MLFF_LANE_VECTOR> Vector;
    const Vector* from = reinterpret_cast<const Vector*>(row + lane * MLFF_LANE_CHANNELS);
    MlffLaneSlice slice;
#pragma unroll
    for (int q = 0; q < MLFF_LANE_CHANNELS / MLFF_LANE_VECTOR; q++) {
        const Vector v = from[q];
#pragma unroll
        for (int k = 0; k < MLFF_LANE_VECTOR; k++)
            slice.v[q * MLFF_LANE_VECTOR + k] = v.v[k];
    }
    return slice;
}

DEVICE inline void mlffStoreLaneSlice(real* RESTRICT row, int lane, const MlffLaneSlice& slice) {
    typedef MlffRealVector<MLFF_LANE_VECTOR> Vector;
    Vector* to = reinterpret_cast<Vector*>(row + lane * MLFF_LANE_CHANNELS);
#pragma unroll
    for (int q = 0; q < MLFF_LANE_CHANNELS / MLFF_LANE_VECTOR; q++) {
        Vector v;
#pragma unroll
        for (int k = 0; k < MLFF_LANE_VECTOR; k++)
            v.v[k] = slice.v[q * MLFF_LANE_VECTOR + k];
        to[q] = v;
    }
}

DEVICE inline MlffLaneSlice mlffZeroLaneSlice() {
    MlffLaneSlice slice;
#pragma unroll
    for (int q = 0; q < MLFF_LANE_CHANNELS; q++)
        slice.v[q] = 0;
    return slice;
}

/** The lane's channels of s_j at the start of block `layer` (the embedding in the first block). */
DEVICE inline MlffLaneSlice mlffLaneInputS(const real* RESTRICT params, const int* RESTRICT mlZ,
                                           const real* RESTRICT stateS, int layer, int j, int lane) {
    if (layer == 0)
        return mlffLoadLaneSlice(params + MLFF_P_EMBEDDING + (size_t) mlZ[j] * MLFF_H, lane);
    return mlffLoadLaneSlice(stateS + ((size_t) layer * MLFF_NUM_ATOMS + j) * MLFF_H, lane);
}

/** The lane's channels of v_j (3 components) at the start of block `layer` (0 in the first block). */
DEVICE inline void mlffLaneInputV(const real* RESTRICT stateV, int layer, int j, int lane, MlffLaneSlice* v) {
#pragma unroll
    for (int a = 0; a < 3; a++)
        v[a] = layer == 0 ? mlffZeroLaneSlice()
                          : mlffLoadLaneSlice(stateV + (((size_t) layer * MLFF_NUM_ATOMS + j) * 3 + a) * MLFF_H, lane);
}

/** The lane's channels of dE/d(s'_j, v'_j) (gradS (N, H), gradV (N, 3, H)). */
DEVICE inline void mlffLaneAtomGradient(const real* RESTRICT gradS, const real* RESTRICT gradV, int j, int lane,
                                        MlffLaneSlice* gs, MlffLaneSlice* gv) {
    *gs = mlffLoadLaneSlice(gradS + (size_t) j * MLFF_H, lane);
#pragma unroll
    for (int a = 0; a < 3; a++)
        gv[a] = mlffLoadLaneSlice(gradV + ((size_t) j * 3 + a) * MLFF_H, lane);
}

/**
 * The backward's record of an edge: the forward's, its index in the edge rows (first + its slot in
 * i's list), whether it owns its pair, and its partner j -> i where it owns the pair and the
 * partner has a row (edgePartner; else -1). The loop over edges takes these (mlffRowEdgeOfBatch)
 * an edge before it stages the edge's rows (mlffStageRowEdge), so that the copies' addresses do
 * not wait on them.
 */
struct MlffRowEdge : MlffEdgeRecord {
    int edge, partner;
    bool owner;
};

/** The record of the edge that i's walk (edgeWalk, edge_filters.cu) takes at step `step` in block `layer`. */
DEVICE inline MlffRowEdge mlffLoadRowEdge(int layer, const int* RESTRICT mlZ, const int* RESTRICT neighbors,
        int first, int step, const real4* RESTRICT edgeDelta, const int* RESTRICT edgeFilterRow,
        const int* RESTRICT edgeOwnedRank, const int* RESTRICT edgePartner, const int* RESTRICT edgeWalk) {
    const int slot = edgeWalk[first + step];
    MlffRowEdge edge;
    static_cast<MlffEdgeRecord&>(edge) =
            mlffLoadEdgeRecord(layer, mlZ, neighbors, first, slot, edgeDelta, edgeFilterRow);
    edge.edge = first + slot;
    edge.owner = edgeOwnedRank[first + slot] >= 0;
    edge.partner = edgePartner[first + slot];
    return edge;
}

/**
 * The records of 32 edges from `base` on, lane l holding edge base + l's (zeros past the last): a
 * warp loads them at once, coalesced, where an edge's own loads waited a round trip each.
 */
struct MlffRowEdgeBatch {
    MlffRowEdge lanes;
    int base;
};

/**
 * The record of the edge at step `step` of i's walk, to every lane. The steps come one at a time,
 * in increasing order, the same in every lane: the batch moves on to the next 32 when a step
 * passes it.
 */
DEVICE inline MlffRowEdge mlffRowEdgeOfBatch(MlffRowEdgeBatch& batch, int step, int count, int layer,
        const int* RESTRICT mlZ, const int* RESTRICT neighbors, int first, const real4* RESTRICT edgeDelta,
        const int* RESTRICT edgeFilterRow, const int* RESTRICT edgeOwnedRank, const int* RESTRICT edgePartner,
        const int* RESTRICT edgeWalk, int lane) {
    if (step >= batch.base + 32) {
        batch.base += 32;
        batch.lanes = batch.base + lane < count
                              ? mlffLoadRowEdge(layer, mlZ, neighbors, first, batch.base + lane, edgeDelta,
                                                edgeFilterRow, edgeOwnedRank, edgePartner, edgeWalk)
                              : MlffRowEdge{};
    }
    const int e = step - batch.base;
    MlffRowEdge edge;
    static_cast<MlffEdgeRecord&>(edge) = mlffShuffleEdgeRecord(batch.lanes, e, layer);
    edge.edge = __shfl_sync(0xffffffffu, batch.lanes.edge, e);
    edge.partner = __shfl_sync(0xffffffffu, batch.lanes.partner, e);
    edge.owner = __shfl_sync(0xffffffffu, (int) batch.lanes.owner, e) != 0;
    return edge;
}

// An edge's rows, staged in shared memory (rows of H reals, each lane's channels where they are in
// a row in global memory): its pair's filter row w_s, w_v1, w_v2; j's gradients dE/d(s'_j, v'_j);
// j's inputs s_j, v_j (in the first block s_j alone, its element's embedding row, and v_j = 0).
#define MLFF_STAGE_FILTER 0
#define MLFF_STAGE_GRADIENT 3
#define MLFF_STAGE_INPUT 7
// The rows in all: the host defines MLFF_STAGE_ROWS from its own count (RowStageRows), by which it
// sizes the shared memory, and this checks it; where no host defines it (the build check, the tests
// on the host), it is the rows above.
#ifndef MLFF_STAGE_ROWS
#define MLFF_STAGE_ROWS (MLFF_STAGE_INPUT + 4)
#endif
static_assert(MLFF_STAGE_ROWS == MLFF_STAGE_INPUT + 4, "MLFF_STAGE_ROWS (the host's RowStageRows): an edge's rows");
// Edges whose rows a warp stages at once: the one it works on and MLFF_ROW_STAGES - 1 whose copies
// are in flight. The host defines it (RowStages) and sizes the shared memory from it.
#ifndef MLFF_ROW_STAGES
#define MLFF_ROW_STAGES 2
#endif
// A lane's copies: 16 bytes each where its channels come in 16 bytes, else 4.
#define MLFF_LANE_BYTES (MLFF_LANE_CHANNELS * (int) sizeof(real))
#define MLFF_LANE_COPY_BYTES (MLFF_LANE_BYTES % 16 == 0 ? 16 : 4)

/** Starts the copy of lane `lane`'s channels of `row` (H reals) into the same place of `staged`. */
DEVICE inline void mlffStageLaneSlice(real* staged, const real* RESTRICT row, int lane) {
    char* to = reinterpret_cast<char*>(staged + lane * MLFF_LANE_CHANNELS);
    const char* from = reinterpret_cast<const char*>(row + lane * MLFF_LANE_CHANNELS);
#pragma unroll
    for (int b = 0; b < MLFF_LANE_BYTES; b += MLFF_LANE_COPY_BYTES)
        mlffCopyAsync<MLFF_LANE_COPY_BYTES>(to + b, from + b, true);
}

/**
 * Whether the messages' backward of block `layer` has work on `edge` in its own atom's warp. In the
 * first block (the backward pass's last) an edge that does not own its pair has only its dE/dn to
 * give, no gather: its pair's owner gives it (mlffAddEdgeGradN), which has the rows it needs, and
 * so the pair's filter row is read once rather than once an edge.
 */
DEVICE inline bool mlffRowEdgeHasWork(const MlffRowEdge& edge, int layer) {
    return layer > 0 || edge.owner;
}

/**
 * Starts the copies of the lane's parts of the rows that the messages' backward reads for `edge`
 * into `stage` (MLFF_STAGE_ROWS x H), which the caller then commits as one group: its pair's filter
 * row, and j's gradients and inputs where it needs them; none for an edge without work. The backward
 * is bound by its loads' latency; copies into shared memory keep an edge's rows in flight while the
 * warp works on the edge before, with no register to hold them.
 */
DEVICE inline void mlffStageRowEdge(const MlffRowEdge& edge, int layer, const real* RESTRICT params,
        const real* RESTRICT edgeFilter, const real* RESTRICT gradS, const real* RESTRICT gradV,
        const real* RESTRICT stateS, const real* RESTRICT stateV, real* stage, int lane) {
    if (!mlffRowEdgeHasWork(edge, layer))
        return;
    // The filter row: in the first block w_v2 alone (for dE/dn), since w_s and w_v1 serve only the
    // gather, which has nothing to pass to the embedding and v = 0.
    const real* w = edgeFilter + (size_t) edge.row * 3 * MLFF_H;
    for (int k = layer == 0 ? 2 : 0; k < 3; k++)
        mlffStageLaneSlice(stage + (MLFF_STAGE_FILTER + k) * MLFF_H, w + k * MLFF_H, lane);
    if (layer > 0 || (edge.owner && edge.partner >= 0)) {
        mlffStageLaneSlice(stage + MLFF_STAGE_GRADIENT * MLFF_H, gradS + (size_t) edge.j * MLFF_H, lane);
        for (int a = 0; a < 3; a++)
            mlffStageLaneSlice(stage + (MLFF_STAGE_GRADIENT + 1 + a) * MLFF_H,
                               gradV + ((size_t) edge.j * 3 + a) * MLFF_H, lane);
    }
    if (edge.owner && layer == 0) // the first block's inputs: the embedding, and v = 0 (nothing to copy)
        mlffStageLaneSlice(stage + MLFF_STAGE_INPUT * MLFF_H,
                           params + MLFF_P_EMBEDDING + (size_t) edge.element * MLFF_H, lane);
    if (edge.owner && layer > 0) {
        mlffStageLaneSlice(stage + MLFF_STAGE_INPUT * MLFF_H,
                           stateS + ((size_t) layer * MLFF_NUM_ATOMS + edge.j) * MLFF_H, lane);
        for (int a = 0; a < 3; a++)
            mlffStageLaneSlice(stage + (MLFF_STAGE_INPUT + 1 + a) * MLFF_H,
                               stateV + (((size_t) layer * MLFF_NUM_ATOMS + edge.j) * 3 + a) * MLFF_H, lane);
    }
}

/**
 * dE/dn of an edge, sum over channels of gv'_k w_v2 (k the edge's first atom: gv its dE/dv'_k, 3
 * lane slices), the lane's channels in order, then the warp's lanes; into the edge's gradN (xyz,
 * summed over the blocks) by lane 0.
 */
DEVICE inline void mlffAddEdgeGradN(int layer, const MlffLaneSlice* gv, const MlffLaneSlice& wv2, real4* gradN,
                                    int lane) {
    real gn[3] = {0, 0, 0};
#pragma unroll
    for (int q = 0; q < MLFF_LANE_CHANNELS; q++)
        for (int a = 0; a < 3; a++)
            gn[a] += gv[a].v[q] * wv2.v[q];
#pragma unroll
    for (int a = 0; a < 3; a++)
        for (int offset = 16; offset > 0; offset /= 2)
            gn[a] += __shfl_xor_sync(0xffffffffu, gn[a], offset);
    if (lane == 0) // summed over the blocks, from the backward pass's first
        mlffAddGradN(layer, gradN, gn[0], gn[1], gn[2]);
}

/** This warp's atom, or -1 where it has none (past the last atom) or its atom has no rows. */
DEVICE inline int mlffRowAtom(const int* RESTRICT neighborCount, int neighborCapacity) {
    const int i = (blockIdx.x * blockDim.x + threadIdx.x) / 32;
    return i < MLFF_NUM_ATOMS && neighborCount[i] <= neighborCapacity ? i : -1;
}

/**
 * The messages' backward of block `layer` into atom i, from its pairs' rows of edgeFilter, and
 * from gradIn = dE/d(s'_k, v'_k) of every atom k of this block:
 *   - the gather into i (layer > 0; the embedding and v = 0 need no gradient): dE/ds_i +=
 *     gs'_j w_s(ij), dE/dv_i += gv'_j w_v1(ij), from the residual gradIn of i;
 *   - dE/dn(ij) = sum over channels of gv'_i w_v2(ij), into the edge's edgeGradN (xyz, summed over
 *     the blocks; w keeps the pair's dE/dd, which edge_filters.cu sums) by mlffAddGradN; in the
 *     first block, where an edge that does not own its pair has nothing else to do, by its pair's
 *     owner, which skips it (mlffRowEdgeHasWork);
 *   - for each edge that owns its pair, the pair's dE/dw (3H: w_s, w_v1, w_v2) into its row of
 *     edgeGradFilter: this edge's part plus, when its partner j -> i has a row, the partner's, from
 *     dE/d(s'_j, v'_j), i's block inputs and n(ji) = -n(ij); so the filters' backward product reads
 *     plain rows.
 * Then (layer > 0) the direct part of block layer-1's update backward (tiled.cu). The filter
 * network's backward and the forces follow in edge_filters.cu. The edges come in edgeWalk's order,
 * their rows staged in shared memory a warp's own; a warp's barriers alone.
 */
KERNEL void mlffMessagesBackwardRows(int layer, const real* RESTRICT params,
        const int* RESTRICT mlZ, const int* RESTRICT neighborCount, const int* RESTRICT neighborList,
        int neighborCapacity,
        const int* RESTRICT edgeStart, const real4* RESTRICT edgeDelta, const int* RESTRICT edgeFilterRow,
        const int* RESTRICT edgeOwnedRank, const int* RESTRICT edgePartner, const int* RESTRICT edgeWalk,
        const real* RESTRICT edgeFilter, real* RESTRICT edgeGradFilter, real4* RESTRICT edgeGradN,
        const real* RESTRICT stateS, const real* RESTRICT stateV, const real* RESTRICT midV,
        const real* RESTRICT updateOutput, const real* RESTRICT gradInS, const real* RESTRICT gradInV,
        real* RESTRICT updateGradOutput, real* RESTRICT gradOutV) {
    mlffStartAfterPreviousLaunch();
    const int i = mlffRowAtom(neighborCount, neighborCapacity), lane = threadIdx.x % 32;
    if (i < 0)
        return; // the whole warp
    MlffLaneSlice gsI, gvI[3]; // dE/d(s'_i, v'_i) of this block
    mlffLaneAtomGradient(gradInS, gradInV, i, lane, &gsI, gvI);
    const MlffLaneSlice sI = mlffLaneInputS(params, mlZ, stateS, layer, i, lane); // for its partners' dE/dw
    MlffLaneSlice vI[3];
    mlffLaneInputV(stateV, layer, i, lane, vI);
    MlffLaneSlice gsIn = gsI, gvIn[3] = {gvI[0], gvI[1], gvI[2]}; // the residual, then the gather
    const int first = edgeStart[i], count = neighborCount[i];
    const int* neighbors = neighborList + (size_t) i * neighborCapacity;
    extern __shared__ real mlffRowStages[]; // (warps, MLFF_ROW_STAGES, MLFF_STAGE_ROWS, H)
    real* stages = mlffRowStages + (size_t) (threadIdx.x / 32) * MLFF_ROW_STAGES * MLFF_STAGE_ROWS * MLFF_H;
    // At step `step` of the walk, ahead[q] holds the record of step + q's edge (q < MLFF_ROW_STAGES), and
    // the rows of the edges of steps step .. step + MLFF_ROW_STAGES - 2 are staged or on their way,
    // step t's in stage t % MLFF_ROW_STAGES; each edge's copies are one group, empty past the last.
    MlffRowEdge ahead[MLFF_ROW_STAGES];
    MlffRowEdgeBatch batch = {MlffRowEdge{}, -32};
#pragma unroll
    for (int q = 0; q < MLFF_ROW_STAGES; q++) {
        ahead[q] = q < count ? mlffRowEdgeOfBatch(batch, q, count, layer, mlZ, neighbors, first, edgeDelta,
                                                  edgeFilterRow, edgeOwnedRank, edgePartner, edgeWalk, lane)
                             : MlffRowEdge{};
        if (q < MLFF_ROW_STAGES - 1) {
            if (q < count)
                mlffStageRowEdge(ahead[q], layer, params, edgeFilter, gradInS, gradInV, stateS, stateV,
                                 stages + q * MLFF_STAGE_ROWS * MLFF_H, lane);
            mlffCommitCopies();
        }
    }
    for (int step = 0; step < count; step++) {
        // The last edge's stage is free again once its reads are done (the warp's barrier orders them).
        __syncwarp();
        const int next = step + MLFF_ROW_STAGES - 1;
        if (next < count)
            mlffStageRowEdge(ahead[MLFF_ROW_STAGES - 1], layer, params, edgeFilter, gradInS, gradInV, stateS,
                             stateV, stages + (next % MLFF_ROW_STAGES) * MLFF_STAGE_ROWS * MLFF_H, lane);
        mlffCommitCopies();
        const MlffRowEdge edge = ahead[0];
#pragma unroll
        for (int q = 0; q < MLFF_ROW_STAGES - 1; q++)
            ahead[q] = ahead[q + 1];
        if (next + 1 < count)
            ahead[MLFF_ROW_STAGES - 1] = mlffRowEdgeOfBatch(batch, next + 1, count, layer, mlZ, neighbors, first,
                                                            edgeDelta, edgeFilterRow, edgeOwnedRank, edgePartner,
                                                            edgeWalk, lane);
        if (!mlffRowEdgeHasWork(edge, layer))
            continue; // its pair's owner gives its dE/dn
        const real* stage = stages + (step % MLFF_ROW_STAGES) * MLFF_STAGE_ROWS * MLFF_H;
        mlffWaitCopies<MLFF_ROW_STAGES - 1>(); // this edge's rows have landed
        const MlffLaneSlice wv2 = mlffLoadLaneSlice(stage + (MLFF_STAGE_FILTER + 2) * MLFF_H, lane);
        const real inv = 1 / (edge.g.w + (real) MLFF_NORMAL_EPSILON);
        const real n[3] = {edge.g.x * inv, edge.g.y * inv, edge.g.z * inv};
        MlffLaneSlice gsJ, gvJ[3]; // j's gradients: for the gather, and the partner's dE/dw
        const bool partnerOwned = edge.owner && edge.partner >= 0;
        if (layer > 0 || partnerOwned)
            mlffLaneAtomGradient(stage + MLFF_STAGE_GRADIENT * MLFF_H, stage + (MLFF_STAGE_GRADIENT + 1) * MLFF_H, 0,
                                 lane, &gsJ, gvJ);
        if (layer > 0) { // the gather, with the rest of the filter row (staged in these blocks alone)
            const MlffLaneSlice ws = mlffLoadLaneSlice(stage + MLFF_STAGE_FILTER * MLFF_H, lane),
                                wv1 = mlffLoadLaneSlice(stage + (MLFF_STAGE_FILTER + 1) * MLFF_H, lane);
#pragma unroll
            for (int q = 0; q < MLFF_LANE_CHANNELS; q++) {
                gsIn.v[q] += gsJ.v[q] * ws.v[q];
                for (int a = 0; a < 3; a++)
                    gvIn[a].v[q] += gvJ[a].v[q] * wv1.v[q];
            }
        }

        mlffAddEdgeGradN(layer, gvI, wv2, &edgeGradN[edge.edge], lane); // dE/dn(ij)
        if (!edge.owner)
            continue; // the partner's warp writes the pair's dE/dw
        if (layer == 0 && partnerOwned) // dE/dn(ji), the same sum as its own warp's (mlffRowEdgeHasWork)
            mlffAddEdgeGradN(layer, gvJ, wv2, &edgeGradN[edge.partner], lane);

        // j's inputs, staged: in the first block its embedding row, and v = 0.
        const MlffLaneSlice sJ = mlffLoadLaneSlice(stage + MLFF_STAGE_INPUT * MLFF_H, lane);
        MlffLaneSlice vJ[3];
#pragma unroll
        for (int a = 0; a < 3; a++)
            vJ[a] = layer == 0 ? mlffZeroLaneSlice()
                               : mlffLoadLaneSlice(stage + (MLFF_STAGE_INPUT + 1 + a) * MLFF_H, lane);
        MlffLaneSlice gws, gwv1, gwv2;
#pragma unroll
        for (int q = 0; q < MLFF_LANE_CHANNELS; q++) {
            real v1 = 0, v2 = 0;
            for (int a = 0; a < 3; a++) {
                v1 += gvI[a].v[q] * vJ[a].v[q];
                v2 += gvI[a].v[q] * n[a];
            }
            real s = gsI.v[q] * sJ.v[q];
            if (edge.partner >= 0) { // j -> i: u(ji) = -u(ij)
                s += gsJ.v[q] * sI.v[q];
                real partnerV1 = 0, partnerV2 = 0;
                for (int a = 0; a < 3; a++) {
                    partnerV1 += gvJ[a].v[q] * vI[a].v[q];
                    partnerV2 -= gvJ[a].v[q] * n[a];
                }
                v1 += partnerV1;
                v2 += partnerV2;
            }
            gws.v[q] = s;
            gwv1.v[q] = v1;
            gwv2.v[q] = v2;
        }
        real* gradW = edgeGradFilter + (size_t) edge.row * 3 * MLFF_H;
        mlffStoreLaneSlice(gradW, lane, gws);
        if (mlffFilterKindUsed(layer, 1)) // else 0, and no filters' backward reads it
            mlffStoreLaneSlice(gradW + MLFF_H, lane, gwv1);
        mlffStoreLaneSlice(gradW + 2 * MLFF_H, lane, gwv2);
    }
    if (layer == 0)
        return; // the embedding and v = 0 have no gradient to pass on
#pragma unroll
    for (int q = 0; q < MLFF_LANE_CHANNELS; q++) {
        const real gv[3] = {gvIn[0].v[q], gvIn[1].v[q], gvIn[2].v[q]};
        mlffUpdateBackwardDirect(i, layer, params, midV, updateOutput, gsIn.v[q], gv, updateGradOutput, gradOutV,
                                 lane * MLFF_LANE_CHANNELS + q);
    }
}
