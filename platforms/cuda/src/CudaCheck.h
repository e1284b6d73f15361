#ifndef MLFF_CUDA_CHECK_H_
#define MLFF_CUDA_CHECK_H_

#include "openmm/OpenMMException.h"
#include "openmm/cuda/CudaContext.h"

#include <cuda.h>

#include <string>

namespace MLFFPlugin {

/**
 * A driver call's result: throws an OpenMMException naming `what` and the driver's error, unless
 * result is CUDA_SUCCESS.
 */
inline void check(CUresult result, const char* what) {
    if (result != CUDA_SUCCESS)
        throw OpenMM::OpenMMException(std::string("MLFFForce (CUDA): ") + what + ": " +
                                      OpenMM::CudaContext::getErrorString(result) + " (" +
                                      std::to_string(result) + ")");
}

} // namespace MLFFPlugin

#endif // MLFF_CUDA_CHECK_H_
