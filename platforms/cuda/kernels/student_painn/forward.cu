/*
 * student_painn/forward.cu: the messages of one interaction block (mlffMessagesInto, shared by
 * both kernel paths) and the fused path's forward kernel: one interaction block of the forward
 * pass, one thread block per ML atom i (grid MLFF_NUM_ATOMS, MLFF_BLOCK threads; thread c owns
 * channel c):
 *   message  s'_i = s_i + sum_j s_j w_s(ij),  v'_i = v_i + sum_j (v_j w_v1(ij) + n(ij) w_v2(ij)),
 *            the filters w recomputed per edge (MLFF_EDGE_BATCH edges at a time) from d, by the
 *            filter network or, with MLFF_TABULATED, from filterTable (null otherwise);
 *   update   s_out = s' + a, v_out = v' g1 + (M v') g2;
 * and in the last block the readout (per-atom energy) and the start of the backward pass: the
 * gradient of the energy with respect to the last block's post-message features.
 *
 * Feature storage (global, `real`): stateS (L+1, N, H) holds s at the start of each block
 * (slot 0 unused: the embedding is read directly), stateV (L, N, 3, H) v likewise (slot 0 unused:
 * v starts at 0), midS (L, N, H) / midV (L, N, 3, H) the post-message features that the
 * backward pass needs. Component a of channel c of atom i: v[(i*3 + a)*H + c].
 */

/**
 * s_j of the block `layer`, j's element being `element` (the element's embedding row in the first
 * block, where alone `element` is read): for callers that hold j's element already.
 */
DEVICE inline real mlffBlockInputSOf(const real* RESTRICT params, const real* RESTRICT stateS, int layer, int j,
                                     int element, int c) {
    if (layer == 0)
        return params[MLFF_P_EMBEDDING + (size_t) element * MLFF_H + c];
    return stateS[((size_t) layer * MLFF_NUM_ATOMS + j) * MLFF_H + c];
}

/** s_j of the block `layer` (the embedding in the first block). */
DEVICE inline real mlffBlockInputS(const real* RESTRICT params, const int* RESTRICT mlZ, const real* RESTRICT stateS,
                                   int layer, int j, int c) {
    return mlffBlockInputSOf(params, stateS, layer, j, layer == 0 ? mlZ[j] : 0, c);
}

/** Component a of v_j in the block `layer` (0 in the first block). */
DEVICE inline real mlffBlockInputV(const real* RESTRICT stateV, int layer, int j, int a, int c) {
    if (layer == 0)
        return 0;
    return stateV[(((size_t) layer * MLFF_NUM_ATOMS + j) * 3 + a) * MLFF_H + c];
}

/** Stores thread c's s, v as the input of block `layer` (the output of block layer - 1) of atom i. */
DEVICE inline void mlffStoreBlockInput(real* RESTRICT stateS, real* RESTRICT stateV, int layer, int i, int c, real s,
                                       const real* v) {
    stateS[((size_t) layer * MLFF_NUM_ATOMS + i) * MLFF_H + c] = s;
    for (int a = 0; a < 3; a++)
        stateV[(((size_t) layer * MLFF_NUM_ATOMS + i) * 3 + a) * MLFF_H + c] = v[a];
}

/** Stores thread c's dE/d(s_i, v_i) into gradS (N, H), gradV (N, 3, H). */
DEVICE inline void mlffStoreAtomGradient(real* RESTRICT gradS, real* RESTRICT gradV, int i, int c, real gs,
                                         const real* gv) {
    gradS[(size_t) i * MLFF_H + c] = gs;
    for (int a = 0; a < 3; a++)
        gradV[((size_t) i * 3 + a) * MLFF_H + c] = gv[a];
}

/** Shared scratch of the messages into one atom. */
struct MlffMessageScratch {
    MlffEdgeCursor cursor;
    int edgeAtom[MLFF_EDGE_BATCH];
    real4 geometry[MLFF_EDGE_BATCH];
#ifndef MLFF_TABULATED
    alignas(16) real e[MLFF_K][MLFF_EDGE_BATCH];
    alignas(16) real activation[MLFF_H][MLFF_EDGE_BATCH];
#endif
};

/**
 * The messages of block `layer` into atom i, for thread c's channel: *sMid, vMid (registers) =
 * the block's input features of i plus the sum over its edges, in list order. Called by all
 * threads of the block; threads c >= MLFF_H get zeros.
 */
DEVICE inline void mlffMessagesInto(int i, int layer, const real* RESTRICT params, const real* RESTRICT filterTable,
        const real4* RESTRICT pos, const int* RESTRICT mlZ, const int* RESTRICT mlReplica,
        const int* RESTRICT replicaStart, const int* RESTRICT neighborCount, const int* RESTRICT neighborList,
        int neighborCapacity, real4 boxA, real4 boxB, real4 boxC, real4 invBoxSize, const real* RESTRICT stateS,
        const real* RESTRICT stateV, MlffMessageScratch* scratch, real* sMid, real* vMid) {
    const int c = threadIdx.x;
    const bool active = c < MLFF_H;
    *sMid = 0;
    vMid[0] = vMid[1] = vMid[2] = 0;
    if (active) {
        *sMid = mlffBlockInputS(params, mlZ, stateS, layer, i, c);
        for (int a = 0; a < 3; a++)
            vMid[a] = mlffBlockInputV(stateV, layer, i, a, c);
    }
#ifndef MLFF_TABULATED
    const real* block = params + MLFF_P_BLOCKS + (size_t) layer * MLFF_P_BLOCK_STRIDE;
#endif
    const real4 ri = pos[i];
    const int replica = mlReplica[i];
    const int count = neighborCount[i];
    const bool overflowed = count > neighborCapacity;
    const int num = mlffNumNeighborCandidates(count, overflowed, replica, replicaStart);
    mlffStartEdges(&scratch->cursor);
    for (int batch = 0; num > 0; batch++) {
        mlffLoadEdgeBatch(i, batch, num, overflowed, replicaStart[replica], neighborList, neighborCapacity, pos, ri,
                          boxA, boxB, boxC, invBoxSize, &scratch->cursor, scratch->edgeAtom, scratch->geometry);
        __syncthreads();
        real ws[MLFF_EDGE_BATCH], wv1[MLFF_EDGE_BATCH], wv2[MLFF_EDGE_BATCH];
#ifdef MLFF_TABULATED
        mlffFilterFromTable(mlffBlockTable(filterTable, layer), layer, scratch->geometry, ws, wv1, wv2, 0,
                            0, 0);
#else
        real hidden[MLFF_EDGE_BATCH];
        mlffFilterForward(params, block, scratch->geometry, scratch->e, (real(*)[MLFF_K]) 0, scratch->activation, hidden,
                          ws, wv1, wv2);
#endif
        if (active) {
#pragma unroll
            for (int b = 0; b < MLFF_EDGE_BATCH; b++) {
                const int j = scratch->edgeAtom[b];
                if (j < 0)
                    continue;
                const real4 g = scratch->geometry[b];
                const real inv = 1 / (g.w + (real) MLFF_NORMAL_EPSILON);
                const real n[3] = {g.x * inv, g.y * inv, g.z * inv};
                *sMid += mlffBlockInputS(params, mlZ, stateS, layer, j, c) * ws[b];
                for (int a = 0; a < 3; a++)
                    vMid[a] += mlffBlockInputV(stateV, layer, j, a, c) * wv1[b] + n[a] * wv2[b];
            }
        }
        __syncthreads(); // the next batch reuses the shared arrays
        if (!mlffMoreEdges(&scratch->cursor, batch + 1, num))
            break;
    }
}

KERNEL void mlffStudentForward(int layer, const real* RESTRICT params, const real* RESTRICT filterTable,
        const real4* RESTRICT pos,
        const int* RESTRICT mlZ, const int* RESTRICT mlReplica, const int* RESTRICT replicaStart,
        const int* RESTRICT neighborCount, const int* RESTRICT neighborList, int neighborCapacity,
        real4 boxA, real4 boxB, real4 boxC, real4 invBoxSize,
        real* RESTRICT stateS, real* RESTRICT stateV, real* RESTRICT midS, real* RESTRICT midV,
        real* RESTRICT atomEnergy, real* RESTRICT gradMidS, real* RESTRICT gradMidV) {
    mlffStartAfterPreviousLaunch();
    __shared__ MlffMessageScratch messageScratch;
    __shared__ MlffUpdateScratch updateScratch;
    __shared__ MlffReadoutScratch readoutScratch;

    const int i = blockIdx.x;
    const int c = threadIdx.x;
    const bool active = c < MLFF_H;
    const real* block = params + MLFF_P_BLOCKS + (size_t) layer * MLFF_P_BLOCK_STRIDE;

    real sMid, vMid[3];
    mlffMessagesInto(i, layer, params, filterTable, pos, mlZ, mlReplica, replicaStart, neighborCount, neighborList,
                     neighborCapacity, boxA, boxB, boxC, invBoxSize, stateS, stateV, &messageScratch, &sMid, vMid);
    if (active) {
        midS[((size_t) layer * MLFF_NUM_ATOMS + i) * MLFF_H + c] = sMid;
        for (int a = 0; a < 3; a++)
            midV[(((size_t) layer * MLFF_NUM_ATOMS + i) * 3 + a) * MLFF_H + c] = vMid[a];
    }

    // Update.
    real m = 0, hidden = 0, da = 0, g1 = 0, g2 = 0;
    mlffUpdateMlp(block, sMid, vMid, &updateScratch, &m, &hidden, &da, &g1, &g2);
    const real sOut = sMid + da;
    if (layer + 1 < MLFF_L) {
        if (active) {
            real vOut[3];
            mlffUpdateVector(block, vMid, g1, g2, vOut);
            mlffStoreBlockInput(stateS, stateV, layer + 1, i, c, sOut, vOut);
        }
        return;
    }

    // Last block: the readout, then d eps_i / d(s', v') of this block (the vector update is dead).
    real eps = 0, gs = 0;
    mlffReadout(params, sOut, &readoutScratch, &eps, &gs);
    if (c == 0)
        atomEnergy[i] = eps;
    const real zero[3] = {0, 0, 0};
    real gsMid = 0, gvMid[3] = {0, 0, 0};
    mlffUpdateBackward(block, vMid, m, hidden, g1, g2, gs, zero, &updateScratch, &gsMid, gvMid);
    if (active)
        mlffStoreAtomGradient(gradMidS, gradMidV, i, c, gsMid, gvMid);
}
