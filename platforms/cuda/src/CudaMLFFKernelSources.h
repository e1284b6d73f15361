#ifndef MLFF_CUDA_KERNEL_SOURCES_H_
#define MLFF_CUDA_KERNEL_SOURCES_H_

#include <string>

namespace MLFFPlugin {

/**
 * The kernel sources of platforms/cuda/kernels/ (every .cu file), embedded by CMake (EmbedKernelSources.cmake)
 * into CudaMLFFKernelSources.cpp; the member names are the files' paths with '/' as '_'.
 */
class CudaMLFFKernelSources {
public:
    static const std::string async_copy;
    static const std::string cell_list;
    static const std::string dependent_launch;
    static const std::string geometry;
    static const std::string matmul;
    static const std::string warpgroup_matmul;
    static const std::string neighbors;
    static const std::string scan;
    static const std::string student_painn_layers;
    static const std::string student_painn_forward;
    static const std::string student_painn_backward;
    static const std::string student_painn_cluster;
    static const std::string student_painn_tiled;
    static const std::string student_painn_edge_filters;
    static const std::string student_painn_table_rows;
    static const std::string student_painn_row_messages;
    static const std::string student_painn_replica_messages;
};

} // namespace MLFFPlugin

#endif // MLFF_CUDA_KERNEL_SOURCES_H_
