// make_seeds DIR: writes small valid model files into DIR, the fuzzer's seed corpus.
#include <cstdio>
#include <fstream>
#include <string>

#include "test_support.h"

int main(int argc, char **argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: make_seeds DIR\n");
        return 2;
    }
    int written = 0;
    for (int variant = 0; variant < 4; ++variant) {
        mlff_test::ModelSpec spec;
        spec.hidden = 4; // small files: the fuzzer's mutations reach the header more often
        spec.blocks = 1 + variant % 2;
        spec.rbf = 2;
        spec.max_z = 2;
        spec.seed = static_cast<std::uint64_t>(variant);
        spec.dtype = variant < 2 ? mlff_test::DType::F32 : mlff_test::DType::F64;
        spec.last_mixing = variant != 1;
        const std::string path = std::string(argv[1]) + "/seed" + std::to_string(variant) + ".safetensors";
        std::ofstream out(path, std::ios::binary);
        const std::string bytes = mlff_test::random_model_bytes(spec);
        out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
        if (!out) {
            std::fprintf(stderr, "make_seeds: cannot write %s\n", path.c_str());
            return 1;
        }
        ++written;
    }
    std::printf("make_seeds: %d seed models in %s\n", written, argv[1]);
    return 0;
}
