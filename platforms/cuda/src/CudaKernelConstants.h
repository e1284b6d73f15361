#ifndef MLFF_CUDA_KERNEL_CONSTANTS_H_
#define MLFF_CUDA_KERNEL_CONSTANTS_H_

/*
 * CudaCalcMLFFForceKernel's constants, each with the measurement that chose it where one did: the
 * sizes at which it changes path, the blocks of its launches, and the sizes it shares with the
 * kernels as defines. (The matrix products' shapes are ProductShapes.h's.)
 */

#include <cstddef>

namespace MLFFPlugin {
namespace KernelConstants {

// Edges filtered together in one pass over the filter weights: more amortises each weight load,
// fewer keeps shared memory (which scales with it) within the static 48 KB in double precision.
// 16 rather than 8 in float: one benzene 316 -> 219 us a force evaluation, a 12,000-atom droplet
// the same (H200, H=128).
constexpr int EdgeBatchSingle = 16;
constexpr int EdgeBatchDouble = 4;
// Tabulated filters load no weights, so a batch shares only barriers: with many atoms, small
// batches need fewer registers and leave room for more blocks (4 rather than 16: 1,024 benzenes
// 3.3 -> 2.8 ms, a 12,000-atom droplet 6.3 -> 5.1 ms, 768 atoms 430 -> 360 us); with few, the
// fewer rounds of a large batch win (one benzene 140 us with 16, 200 with 4). H200, H=128.
constexpr int EdgeBatchTabulatedSmall = 16;
constexpr int EdgeBatchTabulatedLarge = 4;
constexpr int TabulatedLargeAtoms = 256;
constexpr int NeighborThreads = 128; // 4 warps, one atom each
// The energy reduction (neighbors.cu): with many replicas a warp per replica across the GPU
// (mlffReplicaEnergies), then a block sums the replicas; with few, the block sums each replica in
// turn. Its reductions are warp shuffles and two barriers, whatever its size, so it takes the
// largest: 256 threads took 17 us for the 12,000-atom droplet's atoms, each loading 47; 1,024 take 10.
constexpr int ReduceByWarpMinReplicas = 32;
constexpr int ReduceThreads = 1024;
constexpr int DefaultNeighborCapacity = 64;
// The tiled path's readout (tiled.cu): each weight load serves up to this many atoms, as many as
// its static shared memory (A x 2.5H reals) allows. H200, H = 128, float, 1,024 benzenes, the
// readout's us an evaluation: 8 atoms 71, 16 atoms 48, 32 atoms 35.
constexpr int ReadoutMaxAtomsPerBlock = 32;
// The warp-group readout (H = 64 or 128): warp groups a block, each 64 atoms a tile; its weights,
// 160 KB at H = 128, allow one block an SM.
constexpr int ReadoutWarpgroups = 2;
constexpr size_t StaticSharedBytes = 48 * 1024;
constexpr int CellListMinAtoms = 256;  // replicas this large use the cell list (cell_list.cu)
// The cell list's cells along c (z) are a cutoff over this wide, so that the atoms numbered by cell
// lie in slabs half a cutoff thick (cell_list.cu). H200, step us, the tabulated 12,000-atom droplet
// and 24,000-atom box as written (a lattice of molecules): 3,708 and 7,925 with 2, 3,771 and
// 8,157 with cubic cells (1), 3,695 and 7,912 in the System's own order (docs/performance.md,
// "Every row: the order of the atoms").
constexpr int CellSlices = 2;
// Systems with this many ML atoms use the tiled path (tiled.cu), whose matrix products read each
// weight once per 128 rows; below it the fused path's fewer launches win. Measured (H200, H=128,
// step us, commit c6e76d8): with tabulated filters the fused path is faster at 768 atoms (64
// benzenes 282 against 367, a droplet 577 against 659), the tiled one at 3,072 (589 against 985).
// With exact filters the tiled path runs them as products over pairs (edge_filters.cu), faster
// from 768 atoms (64 benzenes 612 against 682, a droplet 1,037 against 1,745) but not at 192
// (265 against 533) or a 96-atom droplet (446 against 616). Since tabulated filters also take the
// edge rows (table_rows.cu), a 768-atom droplet is faster tiled than fused (541 against 581, H200);
// 64 benzenes were not measured again, so the threshold stays.
constexpr int TiledMinAtoms = 1024;
constexpr int EdgeFiltersMinAtoms = 768;
// Replicas this small, on the tiled path with tabulated filters or edge filters, take a thread
// block each for their messages (replica_messages.cu), so that each pair's table reads or filter
// row serve both its edges. Bounded by the pair list's static shared memory, and by the features'
// dynamic shared memory (three (A, 4, H) arrays in the backward pass) so that two blocks fit an
// SM's 228 KB. Only with at least a replica per SM (unless MLFF_CUDA_KERNELS=tiled, tabulated, or
// edges, exact), since each block walks its pairs in turn: H200, H=128, tabulated, step us against
// a block per atom: 1,024 benzenes 1,245 against 1,539, 256 benzenes 542 against 579, but 64
// benzenes 426 against 342 (with 16 pairs a batch forward; between 64 and 256 not measured).
constexpr int ReplicaMessagesMaxAtoms = 32;
constexpr size_t ReplicaMessagesMaxSharedBytes = 112 * 1024;
// Their backward's block walks the pairs in this many parts of threadsPerAtom threads, each with
// its own (A, 4, H) array of gathered gradients, where those fit the same bound and the block 256
// threads: more warps an SM, for the backward waits on its loads with 3 blocks of 4 warps an SM
// (H = 128, 12 atoms).
constexpr int ReplicaBackwardSplit = 2;
constexpr int PairFinderReplicas = 4; // mlffFindReplicaPairs' warps (replicas) a block, MLFF_PAIR_FINDERS
constexpr int EdgeThreads = 128; // edge_filters.cu's and row_messages.cu's warp-per-atom and thread-per-pair kernels
// Edges whose rows each warp of the messages' backward from rows stages in shared memory at once
// (MLFF_ROW_STAGES, row_messages.cu): the one it works on and those whose copies are in flight.
constexpr int RowStages = 2;
// The rows of H reals each of those edges stages, MLFF_STAGE_ROWS (the kernel checks it): its filter
// row (3), j's gradients (4) and inputs (4).
constexpr int RowStageRows = 11;
// Blocks per atom on the fused path with clusters (cluster.cu): the portable limit of a cluster.
// Clusters pay while every atom's blocks run at once, about two blocks an SM: measured (H100,
// H=128, exact filters, step us, fused against clusters) faster for 12 and 24 atoms (200 against
// 115, 201 against 132), even at 48 (205 against 204; tabulated 123 against 104), slower from 96
// (208 against 312; 192 atoms 268 against 624).
constexpr int MaxClusterSize = 8;
constexpr int ClusterMaxBlocksPerSM = 2;
// The matrix products' blocks, grids and shared memory are ProductShapes.h's. The filters'
// backward warp-group product's columns a block (MLFF_WARPGROUP_BACKWARD_COLUMNS): 64, so that its 3H
// inputs' tile and the side product's (K) fit a block's shared memory at H = 128 (208 KB).
constexpr int WarpgroupBackwardColumns = 64;
// The update's products' columns a block (MLFF_WARPGROUP_UPDATE_COLUMNS): 64, so that its widest
// input (3H) fits at H = 128 (192 KB), and so that its few rows spread over more SMs.
constexpr int WarpgroupUpdateColumns = 64;
// The update's products over atoms are warp-group products only from this many atoms: below, they
// lose (presumably since each block loads its whole column tile of weights, up to 192 KB, for a
// few row tiles). Measured (H200, H = 128, step us, the update's products on wgmma
// against mma.sync, every other product alike): 64 benzenes (768 atoms) exact 443 against 415;
// 256 benzenes (3,072) exact 618 against 654, tabulated 367 against 368; a 3,000-atom droplet,
// exact, 1,894 and 1,967 against 1,894 and 1,909. Between 768 and 3,000 atoms not measured.
constexpr int WarpgroupUpdateMinAtoms = 2048;
constexpr int TableRowThreads = 256; // table_rows.cu's blocks: a warp a filter row
constexpr int ScanThreads = 1024;      // MLFF_SCAN_THREADS in scan.cu
// Cells are this much wider than the cutoff, so that rounding in a cell's bounds can never put
// the two atoms of an edge two cells apart.
constexpr double CellMargin = 1.0001;

} // namespace KernelConstants
} // namespace MLFFPlugin

#endif // MLFF_CUDA_KERNEL_CONSTANTS_H_
