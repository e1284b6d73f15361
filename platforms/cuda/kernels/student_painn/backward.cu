/*
 * student_painn/backward.cu: the analytic backward pass of one interaction block's messages
 * (mlffMessagesBackward, shared by both kernel paths) and the fused path's backward kernel, one
 * thread block per ML atom i (grid MLFF_NUM_ATOMS, MLFF_BLOCK threads; thread c owns channel c).
 *
 * In: gradIn = dE/d(s'_k, v'_k) for every atom k, the gradient with respect to the post-message
 * features of block `layer`. For each edge i <- j (list order, MLFF_EDGE_BATCH at a time) it
 *   - recomputes the filter w(ij) and its hidden layer (or, with MLFF_TABULATED, w and dw/dd
 *     from the table),
 *   - gathers the message backward into atom i: since w(ij) = w(ji), dE/ds_i += gs'_j w_s(ij) and
 *     dE/dv_i += gv'_j w_v1(ij) (a gather over i's list in a fixed order, not a scatter with float
 *     atomics, which is what keeps the forces bitwise reproducible),
 *   - takes dE/dw(ij) of the edge's own message to i, back through the filter network and the
 *     radial basis to dE/dd, adds dE/dn, and turns both into dE/du for u = r_j - r_i, which goes
 *     to the forces of i and j in OpenMM's fixed-point buffer (integer adds: order-independent).
 * The fused kernel then (layer > 0) applies the backward of block layer-1's update to atom i's
 * gradient, giving gradOut = dE/d(s', v') of block layer-1 for the next launch.
 *
 * Energies and gradients are in eV and Å; lambdaForceScale * replicaScale[r] (lambdaForceScale =
 * lambda * kJ/mol/nm per eV/Å) converts dE/du of replica r to OpenMM's forces.
 */

/** The sum over the block's threads of value[b][q] for each (b, q), into total[b][q], in a fixed order. */
template <int Batch>
DEVICE inline void mlffBlockSum4(real (*value)[4], real (*warpTotals)[Batch][4], real (*total)[4]) {
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
#pragma unroll
    for (int b = 0; b < Batch; b++) {
#pragma unroll
        for (int q = 0; q < 4; q++) {
            real v = value[b][q];
            for (int offset = 16; offset > 0; offset /= 2)
                v += __shfl_xor_sync(0xffffffffu, v, offset);
            if (lane == 0)
                warpTotals[warp][b][q] = v;
        }
    }
    __syncthreads();
    if (threadIdx.x < Batch * 4) {
        const int b = threadIdx.x / 4, q = threadIdx.x % 4;
        real sum = 0;
        for (int w = 0; w < MLFF_BLOCK / 32; w++)
            sum += warpTotals[w][b][q];
        total[b][q] = sum;
    }
    __syncthreads();
}

DEVICE inline void mlffAddForce(unsigned long long* RESTRICT forceBuffer, int sortedAtom, double fx, double fy, double fz) {
    atomicAdd(&forceBuffer[sortedAtom], (unsigned long long) ((long long) (fx * 0x100000000)));
    atomicAdd(&forceBuffer[sortedAtom + MLFF_PADDED_NUM_ATOMS], (unsigned long long) ((long long) (fy * 0x100000000)));
    atomicAdd(&forceBuffer[sortedAtom + 2 * MLFF_PADDED_NUM_ATOMS], (unsigned long long) ((long long) (fz * 0x100000000)));
}

/** An edge's dE/du = dE/dd u/d + (dn/du)^T dE/dn (g = (u, d), u = r_j - r_i, n = u / (d + eps)): gu. */
DEVICE inline void mlffEdgeGradU(real4 g, real gd, real gnx, real gny, real gnz, real gu[3]) {
    const real d = g.w, dEps = d + (real) MLFF_NORMAL_EPSILON;
    const real uDotGn = g.x * gnx + g.y * gny + g.z * gnz;
    const real radial = gd / d - uDotGn / (d * dEps * dEps);
    gu[0] = radial * g.x + gnx / dEps;
    gu[1] = radial * g.y + gny / dEps;
    gu[2] = radial * g.z + gnz / dEps;
}

/** An edge's dE/du (mlffEdgeGradU) to the forces: F_i += dE/du, F_j -= dE/du, times forceScale. */
DEVICE inline void mlffAddEdgeForces(real4 g, real gd, real gnx, real gny, real gnz, double forceScale, int sortedI,
        int sortedJ, unsigned long long* RESTRICT forceBuffer) {
    real gu[3];
    mlffEdgeGradU(g, gd, gnx, gny, gnz, gu);
    const double fx = forceScale * (double) gu[0], fy = forceScale * (double) gu[1], fz = forceScale * (double) gu[2];
    mlffAddForce(forceBuffer, sortedI, fx, fy, fz);
    mlffAddForce(forceBuffer, sortedJ, -fx, -fy, -fz);
}

/** Thread c's dE/d(s'_i, v'_i) from gradInS, gradInV (zeros for threads c >= MLFF_H). */
DEVICE inline void mlffLoadAtomGradient(const real* RESTRICT gradInS, const real* RESTRICT gradInV, int i, real* gsI,
                                        real* gvI) {
    const int c = threadIdx.x;
    *gsI = gvI[0] = gvI[1] = gvI[2] = 0;
    if (c >= MLFF_H)
        return;
    *gsI = gradInS[(size_t) i * MLFF_H + c];
    for (int a = 0; a < 3; a++)
        gvI[a] = gradInV[((size_t) i * 3 + a) * MLFF_H + c];
}

/** Shared scratch of the messages' backward into one atom. */
struct MlffMessageBackwardScratch {
    MlffEdgeCursor cursor;
    int edgeAtom[MLFF_EDGE_BATCH];
    real4 geometry[MLFF_EDGE_BATCH];
#ifndef MLFF_TABULATED
    alignas(16) real e[MLFF_K][MLFF_EDGE_BATCH];
    real dedd[MLFF_EDGE_BATCH][MLFF_K];
    alignas(16) real activation[MLFF_H][MLFF_EDGE_BATCH];
    alignas(16) real gradW[3 * MLFF_H][MLFF_EDGE_BATCH]; // dE/dw, edge-minor (layers.cu)
#endif
    real warpTotals[MLFF_BLOCK / 32][MLFF_EDGE_BATCH][4];
    real edgeGrad[MLFF_EDGE_BATCH][4]; // dE/dd, dE/dn
};

/**
 * The backward of block `layer`'s messages into atom i, for thread c's channel: from gsI, gvI =
 * dE/d(s'_i, v'_i) (registers) and gradInS, gradInV (those of every atom, for the gather), adds i's edges'
 * dE/du to the forces and returns *gsIn, gvIn = dE/d(s_i, v_i) at the block's start (the residual
 * plus the gathered messages; only the residual when layer = 0, where nothing needs more).
 * Called by all threads of the block.
 */
DEVICE inline void mlffMessagesBackward(int i, int layer, const real* RESTRICT params,
        const real* RESTRICT filterTable, const real4* RESTRICT pos, const int* RESTRICT mlZ,
        const int* RESTRICT mlReplica, const int* RESTRICT replicaStart, const int* RESTRICT neighborCount,
        const int* RESTRICT neighborList, int neighborCapacity, real4 boxA, real4 boxB, real4 boxC,
        real4 invBoxSize, const real* RESTRICT stateS, const real* RESTRICT stateV, const real* RESTRICT gradInS,
        const real* RESTRICT gradInV, real gsI, const real* gvI, const double* RESTRICT replicaScale,
        double lambdaForceScale, const int* RESTRICT mlParticle, const int* RESTRICT sortedIndexOfParticle,
        unsigned long long* RESTRICT forceBuffer, MlffMessageBackwardScratch* scratch, real* gsIn, real* gvIn) {
    const int c = threadIdx.x;
    const bool active = c < MLFF_H;
#ifndef MLFF_TABULATED
    const real* block = params + MLFF_P_BLOCKS + (size_t) layer * MLFF_P_BLOCK_STRIDE; // its filter network
#endif
    *gsIn = gsI;
    for (int a = 0; a < 3; a++)
        gvIn[a] = gvI[a];
    int* edgeAtom = scratch->edgeAtom;
    real4* geometry = scratch->geometry;

    const real4 ri = pos[i];
    const int replica = mlReplica[i];
    const double forceScale = lambdaForceScale * replicaScale[replica];
    const int sortedI = sortedIndexOfParticle[mlParticle[i]];
    const int count = neighborCount[i];
    const bool overflowed = count > neighborCapacity;
    const int num = mlffNumNeighborCandidates(count, overflowed, replica, replicaStart);
    mlffStartEdges(&scratch->cursor);
    for (int batch = 0; num > 0; batch++) {
        mlffLoadEdgeBatch(i, batch, num, overflowed, replicaStart[replica], neighborList, neighborCapacity, pos, ri,
                          boxA, boxB, boxC, invBoxSize, &scratch->cursor, edgeAtom, geometry);
        __syncthreads();
        real ws[MLFF_EDGE_BATCH], wv1[MLFF_EDGE_BATCH], wv2[MLFF_EDGE_BATCH];
#ifdef MLFF_TABULATED
        real dws[MLFF_EDGE_BATCH], dwv1[MLFF_EDGE_BATCH], dwv2[MLFF_EDGE_BATCH];
        mlffFilterFromTable(mlffBlockTable(filterTable, layer), layer, geometry, ws, wv1, wv2, dws, dwv1,
                            dwv2);
#else
        real hidden[MLFF_EDGE_BATCH];
        mlffFilterForward(params, block, geometry, scratch->e, scratch->dedd, scratch->activation, hidden, ws, wv1, wv2);
#endif

        // Message backward: the gather into i, and dE/dw(ij), dE/dn(ij) of i's own messages.
        real partial[MLFF_EDGE_BATCH][4];
#ifndef MLFF_TABULATED
        real gradWs[MLFF_EDGE_BATCH], gradWv1[MLFF_EDGE_BATCH], gradWv2[MLFF_EDGE_BATCH];
#endif
#pragma unroll
        for (int b = 0; b < MLFF_EDGE_BATCH; b++) {
            const int j = edgeAtom[b];
            real gws = 0, gwv1 = 0, gwv2 = 0;
            partial[b][0] = partial[b][1] = partial[b][2] = partial[b][3] = 0;
            if (active && j >= 0) {
                const real4 g = geometry[b];
                const real inv = 1 / (g.w + (real) MLFF_NORMAL_EPSILON);
                const real n[3] = {g.x * inv, g.y * inv, g.z * inv};
                if (layer > 0) {
                    *gsIn += gradInS[(size_t) j * MLFF_H + c] * ws[b];
                    for (int a = 0; a < 3; a++)
                        gvIn[a] += gradInV[((size_t) j * 3 + a) * MLFF_H + c] * wv1[b];
                }
                gws = gsI * mlffBlockInputS(params, mlZ, stateS, layer, j, c);
#pragma unroll
                for (int a = 0; a < 3; a++) {
                    gwv1 += gvI[a] * mlffBlockInputV(stateV, layer, j, a, c);
                    gwv2 += gvI[a] * n[a];
                    partial[b][1 + a] = gvI[a] * wv2[b];
                }
            }
#ifdef MLFF_TABULATED
            // Filter backward from the table: dE/dd = sum over thread c's outputs of dE/dw dw/dd.
            partial[b][0] = gws * dws[b] + gwv1 * dwv1[b] + gwv2 * dwv2[b];
#else
            gradWs[b] = gws;
            gradWv1[b] = gwv1;
            gradWv2[b] = gwv2;
#endif
        }
#ifndef MLFF_TABULATED
        if (active) {
            mlffStoreEdgeRow(scratch->gradW[c], gradWs);
            mlffStoreEdgeRow(scratch->gradW[MLFF_H + c], gradWv1);
            mlffStoreEdgeRow(scratch->gradW[2 * MLFF_H + c], gradWv2);
        }
        __syncthreads();

        // Filter backward: dE/dhidden = (W2^T dE/dw) SiLU'(hidden); dE/dd = sum_c dE/dhidden_c (W0 de/dd)_c.
        if (active) {
            const real* w2 = block + MLFF_B_FILTER_W2_BY_FOURS; // (3H, H)
            real ga[MLFF_EDGE_BATCH];
#pragma unroll
            for (int b = 0; b < MLFF_EDGE_BATCH; b++)
                ga[b] = 0;
#pragma unroll 8
            for (int o4 = 0; o4 < 3 * MLFF_H; o4 += 4) {
                const MlffRealVector<4> w = mlffWeightsByFours<MLFF_H>(w2, o4, c);
#pragma unroll
                for (int q = 0; q < 4 && (3 * MLFF_H % 4 == 0 || o4 + q < 3 * MLFF_H); q++) {
                    real g[MLFF_EDGE_BATCH];
                    mlffLoadEdgeRow(scratch->gradW[o4 + q], g);
#pragma unroll
                    for (int b = 0; b < MLFF_EDGE_BATCH; b++)
                        ga[b] += w.v[q] * g[b];
                }
            }
#pragma unroll
            for (int b = 0; b < MLFF_EDGE_BATCH; b++)
                partial[b][0] = mlffFilterDistanceGradient(block, c, ga[b], hidden[b], scratch->dedd[b]);
        }
#endif
        mlffBlockSum4(partial, scratch->warpTotals, scratch->edgeGrad);

        if (c < MLFF_EDGE_BATCH && edgeAtom[c] >= 0) {
            const real* grad = scratch->edgeGrad[c];
            mlffAddEdgeForces(geometry[c], grad[0], grad[1], grad[2], grad[3], forceScale, sortedI,
                              sortedIndexOfParticle[mlParticle[edgeAtom[c]]], forceBuffer);
        }
        __syncthreads(); // the next batch reuses the shared arrays
        if (!mlffMoreEdges(&scratch->cursor, batch + 1, num))
            break;
    }
}

/**
 * A filter row's dE/dn of block `layer` into its edgeGradN (xyz), summed over the blocks: the
 * backward pass's first block (the last layer) writes it, and w = 0, where mlffAddPairGradient
 * then starts the pair's dE/dd; the other blocks add to xyz and keep w.
 */
DEVICE inline void mlffAddGradN(int layer, real4* gradN, real x, real y, real z) {
    real4 gn = make_real4(x, y, z, 0);
    if (layer < MLFF_L - 1) {
        const real4 before = *gradN;
        gn = make_real4(before.x + x, before.y + y, before.z + z, before.w);
    }
    *gradN = gn;
}

KERNEL void mlffStudentBackward(int layer, const real* RESTRICT params, const real* RESTRICT filterTable,
        const real4* RESTRICT pos,
        const int* RESTRICT mlZ, const int* RESTRICT mlReplica, const int* RESTRICT replicaStart,
        const int* RESTRICT neighborCount, const int* RESTRICT neighborList, int neighborCapacity,
        real4 boxA, real4 boxB, real4 boxC, real4 invBoxSize,
        const real* RESTRICT stateS, const real* RESTRICT stateV, const real* RESTRICT midS, const real* RESTRICT midV,
        const real* RESTRICT gradInS, const real* RESTRICT gradInV, real* RESTRICT gradOutS, real* RESTRICT gradOutV,
        const double* RESTRICT replicaScale, double lambdaForceScale, const int* RESTRICT mlParticle,
        const int* RESTRICT sortedIndexOfParticle, unsigned long long* RESTRICT forceBuffer) {
    mlffStartAfterPreviousLaunch();
    __shared__ MlffMessageBackwardScratch messageScratch;
    __shared__ MlffUpdateScratch updateScratch;

    const int i = blockIdx.x;
    const int c = threadIdx.x;
    const bool active = c < MLFF_H;

    real gsI, gvI[3]; // dE/d(s'_i, v'_i) of this block
    mlffLoadAtomGradient(gradInS, gradInV, i, &gsI, gvI);
    real gsIn, gvIn[3]; // dE/d(s_i, v_i) at the block's start: residual + messages
    mlffMessagesBackward(i, layer, params, filterTable, pos, mlZ, mlReplica, replicaStart, neighborCount, neighborList,
                         neighborCapacity, boxA, boxB, boxC, invBoxSize, stateS, stateV, gradInS, gradInV, gsI, gvI,
                         replicaScale, lambdaForceScale, mlParticle, sortedIndexOfParticle, forceBuffer,
                         &messageScratch, &gsIn, gvIn);
    if (layer == 0)
        return; // the embedding and v = 0 have no gradient to pass on

    // Backward of block layer-1's update, recomputed from its post-message features.
    const real* previous = params + MLFF_P_BLOCKS + (size_t) (layer - 1) * MLFF_P_BLOCK_STRIDE;
    real sMid = 0, vMid[3] = {0, 0, 0};
    if (active) {
        sMid = midS[((size_t) (layer - 1) * MLFF_NUM_ATOMS + i) * MLFF_H + c];
        for (int a = 0; a < 3; a++)
            vMid[a] = midV[(((size_t) (layer - 1) * MLFF_NUM_ATOMS + i) * 3 + a) * MLFF_H + c];
    }
    real m = 0, hidden = 0, da = 0, g1 = 0, g2 = 0;
    mlffUpdateMlp(previous, sMid, vMid, &updateScratch, &m, &hidden, &da, &g1, &g2);
    real gsMid = 0, gvMid[3] = {0, 0, 0};
    mlffUpdateBackward(previous, vMid, m, hidden, g1, g2, gsIn, gvIn, &updateScratch, &gsMid, gvMid);
    if (active)
        mlffStoreAtomGradient(gradOutS, gradOutV, i, c, gsMid, gvMid);
}
