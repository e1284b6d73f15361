// write_random_model OUT [HIDDEN] [SEED]: writes a random student-painn model file (the
// test support's builder) for tests that need one on disk (pytest, the C example).
#include "test_support.h"

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

int main(int argc, char** argv) {
    if (argc < 2 || argc > 4) {
        std::fprintf(stderr, "usage: %s OUT [HIDDEN] [SEED]\n", argv[0]);
        return 2;
    }
    mlff_test::ModelSpec spec;
    spec.hidden = argc > 2 ? std::atoi(argv[2]) : 16;
    spec.seed = argc > 3 ? std::strtoull(argv[3], nullptr, 10) : 1;
    spec.rbf = 8;
    spec.max_z = 10;
    spec.cutoff = 5.0;
    if (spec.hidden <= 0 || spec.hidden % 4 != 0) {
        std::fprintf(stderr, "%s: HIDDEN must be a positive multiple of 4, not %s\n", argv[0], argv[2]);
        return 2;
    }
    const std::string bytes = mlff_test::random_model_bytes(spec);
    std::ofstream out(argv[1], std::ios::binary);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    out.close();
    if (!out) {
        std::fprintf(stderr, "%s: cannot write %s\n", argv[0], argv[1]);
        return 1;
    }
    return 0;
}
