#ifndef MLFF_CUDA_STUDENT_PAINN_PARAMETERS_H_
#define MLFF_CUDA_STUDENT_PAINN_PARAMETERS_H_

// The student PaiNN's parameters as the CUDA kernels read them: one flat array, with each
// matrix stored in the orientation(s) that let thread c read consecutive addresses (so some are
// stored more than once: transposed, or channel-major for the tiled path), and the offsets as
// compile-time constants (MLFF_P_*, MLFF_B_*).

extern "C" {
#include "mlff/student_painn.h"
}

#include <map>
#include <string>
#include <vector>

namespace MLFFPlugin {

struct StudentPainnLayout {
    std::vector<double> values;                 // the flat array, in double (converted to `real` on upload)
    std::map<std::string, std::string> defines; // MLFF_H, MLFF_K, MLFF_L, MLFF_Z_MAX, MLFF_CUTOFF, offsets
};

/** Lays out `model`'s parameters for kernels/student_painn/. */
StudentPainnLayout layoutStudentPainn(const mlff_student_painn& model);

} // namespace MLFFPlugin

#endif // MLFF_CUDA_STUDENT_PAINN_PARAMETERS_H_
