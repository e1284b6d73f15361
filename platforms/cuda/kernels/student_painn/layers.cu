/*
 * student_painn/layers.cu: the layers of the student PaiNN (docs of ../shared: student-painn.md)
 * as device functions for one atom per thread block, thread c owning channel c (c < MLFF_H;
 * threads c >= MLFF_H only join the barriers). Every function that contains __syncthreads() must
 * be called by all threads of the block.
 *
 * Compile-time constants: MLFF_H, MLFF_K, MLFF_L, MLFF_BLOCK (threads, >= H and K, a multiple of 32),
 * MLFF_EDGE_BATCH (edges filtered together, sharing each weight load), MLFF_CUTOFF (Å), and the
 * parameter offsets MLFF_P_* (model-wide) and MLFF_B_* (within a block; block l starts at
 * MLFF_P_BLOCKS + l * MLFF_P_BLOCK_STRIDE). See src/student_painn/StudentPainnParameters.cpp.
 */

#define MLFF_NORMAL_EPSILON 1e-8
#define MLFF_PI 3.14159265358979323846

DEVICE inline real mlffSilu(real x) {
    return x / (1 + exp(-x));
}

DEVICE inline real mlffSiluGrad(real x) {
    const real sigmoid = 1 / (1 + exp(-x));
    return sigmoid * (1 + x * (1 - sigmoid));
}

/** Radial basis e_k(d) with the cosine cutoff, and optionally its derivative de_k/dd. */
DEVICE inline void mlffRadialBasis(const real* RESTRICT params, real d, int k, real* e, real* dedd) {
    const real width = params[MLFF_P_RBF_WIDTHS + k];
    const real x = (d - params[MLFF_P_RBF_CENTERS + k]) / width;
    const real gauss = exp(-x * x);
    real fc = 0, dfc = 0;
    if (d < (real) MLFF_CUTOFF) {
        fc = (real) 0.5 * (cos((real) MLFF_PI * d / (real) MLFF_CUTOFF) + 1);
        dfc = -(real) 0.5 * (real) MLFF_PI / (real) MLFF_CUTOFF * sin((real) MLFF_PI * d / (real) MLFF_CUTOFF);
    }
    *e = gauss * fc;
    if (dedd != 0)
        *dedd = gauss * (dfc - 2 * x / width * fc);
}

/**
 * Geometry of a batch of MLFF_EDGE_BATCH candidate edges of atom i (threads b < batch):
 * edgeAtom[b] = j, or -1 where there is no edge; geometry[b] = (u, d) with u = r_j - r_i.
 * Rows without an edge get d = cutoff so that everything computed from them stays finite.
 */
DEVICE inline void mlffLoadEdgeBatch(int i, int first, int num, bool overflowed, int replicaStart,
        const int* RESTRICT neighborList, int neighborCapacity, const real4* RESTRICT pos, real4 ri,
        real4 boxA, real4 boxB, real4 boxC, real4 invBoxSize, int* edgeAtom, real4* geometry) {
    const int b = threadIdx.x;
    if (b < MLFF_EDGE_BATCH) {
        const int t = first + b;
        int j = -1;
        real ux = 0, uy = 0, uz = 0, d = (real) MLFF_CUTOFF;
        if (t < num) {
            j = mlffNeighborCandidate(i, t, overflowed, replicaStart, neighborList, neighborCapacity);
            if (j == i)
                j = -1;
            else {
                mlffPairDelta(ri, pos[j], boxA, boxB, boxC, invBoxSize, &ux, &uy, &uz);
                if (mlffIsEdge(ux, uy, uz))
                    d = sqrt(ux * ux + uy * uy + uz * uz);
                else {
                    j = -1;
                    ux = uy = uz = 0;
                }
            }
        }
        edgeAtom[b] = j;
        geometry[b].x = ux;
        geometry[b].y = uy;
        geometry[b].z = uz;
        geometry[b].w = d;
    }
}

/**
 * The filter network of a batch of edges, after mlffLoadEdgeBatch (and a barrier):
 * e (shared, [batch][K]) and, if dedd is not null, de/dd; activation (shared, [batch][H]) =
 * SiLU(W0 e + b0), hidden (registers of thread c) = W0 e + b0; w (registers) = W2 act + b2 split
 * into ws, wv1, wv2. Ends with the outputs in registers; the caller adds a barrier before
 * reusing the shared arrays.
 */
DEVICE inline void mlffFilterForward(const real* RESTRICT params, const real* RESTRICT block, const real4* geometry,
        real (*e)[MLFF_K], real (*dedd)[MLFF_K], real (*activation)[MLFF_H], real* hidden, real* ws, real* wv1, real* wv2) {
    const int c = threadIdx.x;
    for (int index = c; index < MLFF_EDGE_BATCH * MLFF_K; index += MLFF_BLOCK) {
        const int b = index / MLFF_K, k = index % MLFF_K;
        mlffRadialBasis(params, geometry[b].w, k, &e[b][k], dedd == 0 ? (real*) 0 : &dedd[b][k]);
    }
    __syncthreads();
    if (c < MLFF_H) {
        const real* w0t = block + MLFF_B_FILTER_W0T; // (K, H)
#pragma unroll
        for (int b = 0; b < MLFF_EDGE_BATCH; b++)
            hidden[b] = block[MLFF_B_FILTER_B0 + c];
        for (int k = 0; k < MLFF_K; k++) {
            const real w = w0t[k * MLFF_H + c];
#pragma unroll
            for (int b = 0; b < MLFF_EDGE_BATCH; b++)
                hidden[b] += w * e[b][k];
        }
#pragma unroll
        for (int b = 0; b < MLFF_EDGE_BATCH; b++)
            activation[b][c] = mlffSilu(hidden[b]);
    }
    __syncthreads();
    if (c < MLFF_H) {
        const real* w2t = block + MLFF_B_FILTER_W2T; // (H, 3H)
#pragma unroll
        for (int b = 0; b < MLFF_EDGE_BATCH; b++) {
            ws[b] = block[MLFF_B_FILTER_B2 + c];
            wv1[b] = block[MLFF_B_FILTER_B2 + MLFF_H + c];
            wv2[b] = block[MLFF_B_FILTER_B2 + 2 * MLFF_H + c];
        }
        for (int c2 = 0; c2 < MLFF_H; c2++) {
            const real w0 = w2t[c2 * 3 * MLFF_H + c];
            const real w1 = w2t[c2 * 3 * MLFF_H + MLFF_H + c];
            const real w2 = w2t[c2 * 3 * MLFF_H + 2 * MLFF_H + c];
#pragma unroll
            for (int b = 0; b < MLFF_EDGE_BATCH; b++) {
                const real a = activation[b][c2];
                ws[b] += w0 * a;
                wv1[b] += w1 * a;
                wv2[b] += w2 * a;
            }
        }
    }
}

/** Shared scratch of the update's forward and backward. */
struct MlffUpdateScratch {
    real input[2 * MLFF_H];    // concat(s_mid, |v_mid|)
    real activation[MLFF_H];
    real gradOutput[3 * MLFF_H];
    real gradHidden[MLFF_H];
};

/**
 * The update MLP of atom (block) for thread c's channel: from s_mid, v_mid (registers),
 * m = |v_mid| (no epsilon), hidden = U0 [s_mid, m] + b0 and (a, g1, g2) = U2 SiLU(hidden) + b2.
 */
DEVICE inline void mlffUpdateMlp(const real* RESTRICT block, real sMid, const real* vMid, MlffUpdateScratch* scratch,
        real* m, real* hidden, real* a, real* g1, real* g2) {
    const int c = threadIdx.x;
    if (c < MLFF_H) {
        *m = sqrt(vMid[0] * vMid[0] + vMid[1] * vMid[1] + vMid[2] * vMid[2]);
        scratch->input[c] = sMid;
        scratch->input[MLFF_H + c] = *m;
    }
    __syncthreads();
    if (c < MLFF_H) {
        const real* u0t = block + MLFF_B_UPDATE_W0T; // (2H, H)
        real h = block[MLFF_B_UPDATE_B0 + c];
        for (int x = 0; x < 2 * MLFF_H; x++)
            h += u0t[x * MLFF_H + c] * scratch->input[x];
        *hidden = h;
        scratch->activation[c] = mlffSilu(h);
    }
    __syncthreads();
    if (c < MLFF_H) {
        const real* u2t = block + MLFF_B_UPDATE_W2T; // (H, 3H)
        real y0 = block[MLFF_B_UPDATE_B2 + c];
        real y1 = block[MLFF_B_UPDATE_B2 + MLFF_H + c];
        real y2 = block[MLFF_B_UPDATE_B2 + 2 * MLFF_H + c];
        for (int c2 = 0; c2 < MLFF_H; c2++) {
            const real act = scratch->activation[c2];
            y0 += u2t[c2 * 3 * MLFF_H + c] * act;
            y1 += u2t[c2 * 3 * MLFF_H + MLFF_H + c] * act;
            y2 += u2t[c2 * 3 * MLFF_H + 2 * MLFF_H + c] * act;
        }
        *a = y0;
        *g1 = y1;
        *g2 = y2;
    }
    __syncthreads(); // scratch is free again
}

/** v_out = v_mid * g1 + (M v_mid) * g2 for thread c's channel. */
DEVICE inline void mlffUpdateVector(const real* RESTRICT block, const real* vMid, real g1, real g2, real* vOut) {
    const real* mix = block + MLFF_B_MIXING;
#pragma unroll
    for (int a = 0; a < 3; a++)
        vOut[a] = vMid[a] * g1 + (mix[3 * a] * vMid[0] + mix[3 * a + 1] * vMid[1] + mix[3 * a + 2] * vMid[2]) * g2;
}

/**
 * Backward of the update (residual included) for thread c's channel: from the gradients of its
 * outputs gsOut, gvOut and the forward's m, hidden, g1, g2, the gradients gsMid, gvMid of its inputs.
 * The norm's gradient v/m is taken as 0 where m = 0.
 */
DEVICE inline void mlffUpdateBackward(const real* RESTRICT block, const real* vMid, real m, real hidden, real g1, real g2,
        real gsOut, const real* gvOut, MlffUpdateScratch* scratch, real* gsMid, real* gvMid) {
    const int c = threadIdx.x;
    const real* mix = block + MLFF_B_MIXING;
    if (c < MLFF_H) {
        real gradG1 = 0, gradG2 = 0;
#pragma unroll
        for (int a = 0; a < 3; a++) {
            const real mixed_a = mix[3 * a] * vMid[0] + mix[3 * a + 1] * vMid[1] + mix[3 * a + 2] * vMid[2];
            gradG1 += gvOut[a] * vMid[a];
            gradG2 += gvOut[a] * mixed_a;
        }
#pragma unroll
        for (int b = 0; b < 3; b++)
            gvMid[b] = gvOut[b] * g1 + (mix[b] * gvOut[0] + mix[3 + b] * gvOut[1] + mix[6 + b] * gvOut[2]) * g2;
        scratch->gradOutput[c] = gsOut;
        scratch->gradOutput[MLFF_H + c] = gradG1;
        scratch->gradOutput[2 * MLFF_H + c] = gradG2;
    }
    __syncthreads();
    if (c < MLFF_H) {
        const real* u2 = block + MLFF_B_UPDATE_W2; // (3H, H)
        real ga = 0;
        for (int o = 0; o < 3 * MLFF_H; o++)
            ga += u2[o * MLFF_H + c] * scratch->gradOutput[o];
        scratch->gradHidden[c] = ga * mlffSiluGrad(hidden);
    }
    __syncthreads();
    if (c < MLFF_H) {
        const real* u0 = block + MLFF_B_UPDATE_W0; // (H, 2H)
        real gs = 0, gm = 0;
        for (int c2 = 0; c2 < MLFF_H; c2++) {
            const real gh = scratch->gradHidden[c2];
            gs += u0[c2 * 2 * MLFF_H + c] * gh;
            gm += u0[c2 * 2 * MLFF_H + MLFF_H + c] * gh;
        }
        *gsMid = gsOut + gs;
        if (m > 0) {
#pragma unroll
            for (int a = 0; a < 3; a++)
                gvMid[a] += gm * vMid[a] / m;
        }
    }
    __syncthreads(); // scratch is free again
}

/** Shared scratch of the readout. */
struct MlffReadoutScratch {
    real s[MLFF_H];
    real act0[MLFF_H / 2];
    real grad0[MLFF_H / 2];
    real act1[MLFF_H / 4];
    real grad1[MLFF_H / 4];
};

/**
 * Per-atom energy eps = head4(SiLU(head2(SiLU(head0(s))))) and its gradient gs = d eps / d s
 * for thread c's channel; eps is valid in thread 0.
 */
DEVICE inline void mlffReadout(const real* RESTRICT params, real s, MlffReadoutScratch* scratch, real* eps, real* gs) {
    const int c = threadIdx.x;
    if (c < MLFF_H)
        scratch->s[c] = s;
    __syncthreads();
    real hidden0 = 0;
    if (c < MLFF_H / 2) {
        const real* w0t = params + MLFF_P_HEAD_W0T; // (H, H/2)
        hidden0 = params[MLFF_P_HEAD_B0 + c];
        for (int c2 = 0; c2 < MLFF_H; c2++)
            hidden0 += w0t[c2 * (MLFF_H / 2) + c] * scratch->s[c2];
        scratch->act0[c] = mlffSilu(hidden0);
    }
    __syncthreads();
    if (c < MLFF_H / 4) {
        const real* w2t = params + MLFF_P_HEAD_W2T; // (H/2, H/4)
        real hidden1 = params[MLFF_P_HEAD_B2 + c];
        for (int p = 0; p < MLFF_H / 2; p++)
            hidden1 += w2t[p * (MLFF_H / 4) + c] * scratch->act0[p];
        scratch->act1[c] = mlffSilu(hidden1);
        scratch->grad1[c] = params[MLFF_P_HEAD_W4 + c] * mlffSiluGrad(hidden1);
    }
    __syncthreads();
    if (c == 0) {
        real sum = params[MLFF_P_HEAD_B4];
        for (int q = 0; q < MLFF_H / 4; q++)
            sum += params[MLFF_P_HEAD_W4 + q] * scratch->act1[q];
        *eps = sum;
    }
    if (c < MLFF_H / 2) {
        const real* w2 = params + MLFF_P_HEAD_W2; // (H/4, H/2)
        real ga = 0;
        for (int q = 0; q < MLFF_H / 4; q++)
            ga += w2[q * (MLFF_H / 2) + c] * scratch->grad1[q];
        scratch->grad0[c] = ga * mlffSiluGrad(hidden0);
    }
    __syncthreads();
    if (c < MLFF_H) {
        const real* w0 = params + MLFF_P_HEAD_W0; // (H/2, H)
        real g = 0;
        for (int p = 0; p < MLFF_H / 2; p++)
            g += w0[p * MLFF_H + c] * scratch->grad0[p];
        *gs = g;
    }
    __syncthreads();
}
