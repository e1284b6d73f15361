/*
 * KernelsOnHost.h: the plugin's kernel sources compiled for the CPU (CudaOnHost.h), with the
 * compile-time constants CudaCalcMLFFForceKernel::addKernelDefines would give a small system: H =
 * 64 (or MLFF_HOST_H, where the test defines it), L = 3, 54 atoms in 7 replicas (128 cells each for
 * cell_list.cu where not periodic, so that cells 4 apart along x or y, or 8 along z, share one), tabulated
 * filters (exact ones, as the edge filters' path has them, where the test defines
 * MLFF_HOST_EXACT_FILTERS). The parameters' offsets are far apart (MLFF_PARAMETER_SPAN), so that
 * every matrix fits whatever it holds; a test fills them at random, or as the layout
 * (StudentPainnParameters.cpp) would where kernels must agree.
 * Include once per test executable.
 */
#pragma once

#include "CudaOnHost.h"

#include <random>
#include <vector>

// The kernels' compile-time constants, as CudaCalcMLFFForceKernel::addKernelDefines gives them.
#ifndef MLFF_HOST_H
#define MLFF_HOST_H 64
#endif
#define MLFF_H MLFF_HOST_H
#define MLFF_K 12
#define MLFF_K_PADDED 32
#define MLFF_L 3
#define MLFF_Z_MAX 10
#define MLFF_CUTOFF 5
#define MLFF_CUTOFF_SQUARED 25
#define MLFF_EDGE_BATCH 4
#define MLFF_BLOCK MLFF_H
#define MLFF_NUM_ATOMS 54
#define MLFF_NUM_REPLICAS 7
#define MLFF_PADDED_NUM_ATOMS 64
#define MLFF_KJ_PER_MOL_PER_EV 96.48533212331002
#define MLFF_READOUT_ATOMS 32 // as the host sets it for H = 64 in double
#ifndef MLFF_HOST_EXACT_FILTERS
#define MLFF_TABULATED 1
#define MLFF_TABLE_NODES 1001
#define MLFF_TABLE_SPACING 0.005
#define MLFF_TABLE_INV_SPACING 200
#endif
#define MLFF_REPLICA_ATOMS 16
#ifndef MLFF_REPLICA_SPLIT
#define MLFF_REPLICA_SPLIT 2 // the replicas' backward's parts (a test may take 1)
#endif
#define MLFF_CELL_SIZE 5.0005 // the cutoff and CudaKernelConstants.h's CellMargin
#define MLFF_CELL_SLICES 2
#define MLFF_REPLICA_CELLS 128 // the host's least: blocks of 4 x 4 x 8 cells
#define MLFF_BUCKET_BITS_XY 2
#define MLFF_BUCKET_BITS_Z 3
#define MLFF_NUM_CELLS (MLFF_NUM_REPLICAS * MLFF_REPLICA_CELLS) // periodic: grids of up to 128 cells
#define MLFF_PARAMETER_SPAN (5 * MLFF_H * MLFF_H) // past the largest matrix (3H x H)
#define MLFF_P_EMBEDDING 0
#define MLFF_P_RBF_CENTERS (1 * MLFF_PARAMETER_SPAN)
#define MLFF_P_RBF_WIDTHS (2 * MLFF_PARAMETER_SPAN)
#define MLFF_P_HEAD_W0 (3 * MLFF_PARAMETER_SPAN)
#define MLFF_P_HEAD_W0T (4 * MLFF_PARAMETER_SPAN)
#define MLFF_P_HEAD_B0 (5 * MLFF_PARAMETER_SPAN)
#define MLFF_P_HEAD_W2 (6 * MLFF_PARAMETER_SPAN)
#define MLFF_P_HEAD_W2T (7 * MLFF_PARAMETER_SPAN)
#define MLFF_P_HEAD_B2 (8 * MLFF_PARAMETER_SPAN)
#define MLFF_P_HEAD_W4 (9 * MLFF_PARAMETER_SPAN)
#define MLFF_P_HEAD_B4 (10 * MLFF_PARAMETER_SPAN)
#define MLFF_P_BLOCKS (11 * MLFF_PARAMETER_SPAN)
#define MLFF_P_BLOCK_STRIDE (21 * MLFF_PARAMETER_SPAN)
#define MLFF_B_FILTER_W0T 0
#define MLFF_B_FILTER_B0 (1 * MLFF_PARAMETER_SPAN)
#define MLFF_B_FILTER_W0_PADDED (2 * MLFF_PARAMETER_SPAN)
#define MLFF_B_FILTER_W2 (3 * MLFF_PARAMETER_SPAN)
#define MLFF_B_FILTER_W2T (4 * MLFF_PARAMETER_SPAN)
#define MLFF_B_FILTER_B2 (5 * MLFF_PARAMETER_SPAN)
#define MLFF_B_UPDATE_W0T (6 * MLFF_PARAMETER_SPAN)
#define MLFF_B_UPDATE_B0 (7 * MLFF_PARAMETER_SPAN)
#define MLFF_B_UPDATE_W2 (8 * MLFF_PARAMETER_SPAN)
#define MLFF_B_UPDATE_B2 (9 * MLFF_PARAMETER_SPAN)
#define MLFF_B_MIXING (10 * MLFF_PARAMETER_SPAN)
#define MLFF_B_UPDATE_W2T_BY_CHANNEL (11 * MLFF_PARAMETER_SPAN)
#define MLFF_B_UPDATE_B2_BY_CHANNEL (12 * MLFF_PARAMETER_SPAN)
#define MLFF_B_UPDATE_W0_BY_CHANNEL (13 * MLFF_PARAMETER_SPAN)
#define MLFF_B_FILTER_W2T_BY_FOURS (14 * MLFF_PARAMETER_SPAN)
#define MLFF_B_FILTER_W2_BY_FOURS (15 * MLFF_PARAMETER_SPAN)
#define MLFF_B_UPDATE_W0T_BY_FOURS (16 * MLFF_PARAMETER_SPAN)
#define MLFF_B_UPDATE_W2T_BY_FOURS (17 * MLFF_PARAMETER_SPAN)
#define MLFF_B_UPDATE_W2_BY_FOURS (18 * MLFF_PARAMETER_SPAN)
#define MLFF_B_UPDATE_W0_BY_FOURS (19 * MLFF_PARAMETER_SPAN)
#define MLFF_B_UPDATE_W2T_SCALAR (20 * MLFF_PARAMETER_SPAN)
#define MLFF_PARAMETERS_SIZE (MLFF_P_BLOCKS + MLFF_L * MLFF_P_BLOCK_STRIDE)

// The dynamic shared memory of the replica kernels (two (A, 4, H) arrays, and one a part of the backward's block).
real mlffReplicaMemory[(2 + MLFF_REPLICA_SPLIT) * MLFF_REPLICA_ATOMS * 4 * MLFF_H];

#include "kernels_on_host.inc"

// The dynamic shared memory of the messages' backward from rows: each of a block's four warps' staged rows.
real mlffRowStages[4 * MLFF_ROW_STAGES * MLFF_STAGE_ROWS * MLFF_H];

/** n values from a normal distribution (mean 0, deviation 0.5): inputs and parameters. */
inline std::vector<real> randomReals(std::mt19937& rng, size_t n) {
    std::normal_distribution<double> normal(0, 0.5);
    std::vector<real> values(n);
    for (real& x : values)
        x = normal(rng);
    return values;
}
