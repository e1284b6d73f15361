#!/usr/bin/env bash
# The GPU tests (CTest label `cuda`), built on a machine without a GPU and run on one that has
# a GPU but may lack OpenMM and cannot install packages.
#
#   scripts/gpu-tests.sh prepare   here: a release build with the CUDA plugin in build-gpu/, the
#                                  seed models converted into it (needs MLFF_SHARED_DIR), and the
#                                  OpenMM libraries the tests load copied (stripped) into
#                                  .device/openmm/. Prints the `carry` list for the GPU machine.
#   scripts/gpu-tests.sh run [CTEST ARGS...]
#                                  on the GPU machine, from the repository root with build-gpu and
#                                  .device carried along: puts OpenMM and the build where the build
#                                  expects them (the paths of this machine), then runs
#                                  `ctest -L cuda` (single, mixed and double precision are test
#                                  instances of each test body).
#   scripts/gpu-tests.sh exec COMMAND [ARGS...]
#                                  on the GPU machine, the same placement, then COMMAND with
#                                  MLFF_BUILD set to the build folder (say, a profiler around
#                                  $MLFF_BUILD/benchmarks/mlff-bench; see benchmarks/write_structures.py).
#   scripts/gpu-tests.sh bench [ARGS...]
#                                  on the GPU machine, the same placement, then the plugin against
#                                  PyTorch (benchmarks/bench.py, which runs build-gpu's mlff-bench)
#                                  with ARGS (see bench.py --help).
#
# The build keeps absolute paths (CTest files, RPATHs, the OpenMM plugin folder compiled into the
# tests), so `run` recreates them: OpenMM at the prefix it was built against, the repository at the
# path it was prepared in. Both are recorded in .device/paths.
#
#   MLFF_GPU_BUILD_DIR  the build folder (default build-gpu in the repository; must be inside it)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_name=${MLFF_GPU_BUILD_DIR:-build-gpu}
device_dir=$root/.device
say() { echo "gpu-tests: $*"; }
die() { echo "gpu-tests: error: $*" >&2; exit 1; }

prepare() {
    "$root/scripts/setup.sh"
    local openmm_dir build=$root/$build_name
    openmm_dir=$("$root/scripts/setup.sh" --print-openmm-dir)
    [ -f "$openmm_dir/include/openmm/cuda/CudaContext.h" ] || die "OpenMM at $openmm_dir has no CUDA platform"
    # No Python module: the GPU machine's Python is not the one OpenMM's package was built for.
    cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DMLFF_SANITIZE=OFF \
        -DOPENMM_DIR="$openmm_dir" -DPython3_EXECUTABLE=/usr/bin/python3 -DMLFF_SHARED_DIR="${MLFF_SHARED_DIR:-}" \
        -DMLFF_BUILD_PYTHON_WRAPPERS=OFF
    cmake --build "$build" -j "${MLFF_JOBS:-2}"
    # The seed_models fixture (converted models and golden values, inside the build folder).
    ctest --test-dir "$build" -R seed_models_setup --output-on-failure

    # Only what the tests load: libOpenMM, the CUDA platform plugin (and the CPU one, for MD
    # comparisons); stripped, so that they travel within the device's size limit.
    rm -rf "$device_dir/openmm"
    mkdir -p "$device_dir/openmm/lib/plugins"
    cp -L "$openmm_dir"/lib/libOpenMM.so* "$device_dir/openmm/lib/"
    cp -L "$openmm_dir"/lib/plugins/libOpenMMCUDA.so "$openmm_dir"/lib/plugins/libOpenMMCPU.so \
        "$device_dir/openmm/lib/plugins/"
    # Debian's cJSON (the core's and the tests' JSON reader), which the GPU machine lacks.
    cp -L "$(/sbin/ldconfig -p | awk '/libcjson\.so\.1 / {print $NF; exit}')" "$device_dir/openmm/lib/"
    strip --strip-unneeded "$device_dir"/openmm/lib/*.so* "$device_dir"/openmm/lib/plugins/*.so
    printf 'openmm=%s\nroot=%s\n' "$openmm_dir" "$root" > "$device_dir/paths"
    du -sh "$device_dir" "$build"
    say "prepared; on the GPU machine run with carry [\"$build_name\", \".device\"]:"
    say "    scripts/gpu-tests.sh run"
}

# Recreates this machine's paths on the GPU machine (as root there).
place() {
    [ -f "$device_dir/paths" ] || die "no .device/paths: run 'scripts/gpu-tests.sh prepare' first and carry .device"
    [ -d "$root/$build_name" ] || die "no $build_name: carry it"
    local openmm_dir prepared_root
    openmm_dir=$(sed -n 's/^openmm=//p' "$device_dir/paths")
    prepared_root=$(sed -n 's/^root=//p' "$device_dir/paths")
    if [ ! -f "$openmm_dir/lib/libOpenMM.so" ]; then
        mkdir -p "$(dirname "$openmm_dir")"
        ln -sfn "$device_dir/openmm" "$openmm_dir"
    fi
    if [ "$prepared_root" != "$root" ] && [ ! -e "$prepared_root" ]; then
        mkdir -p "$(dirname "$prepared_root")"
        ln -sfn "$root" "$prepared_root"
    fi
    export LD_LIBRARY_PATH="$openmm_dir/lib:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    export OPENMM_PLUGIN_DIR="$openmm_dir/lib/plugins"
    prepared_build=$prepared_root/$build_name
}

case "${1:-}" in
    prepare) prepare ;;
    run)
        shift
        place
        nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
        # -FS: the seed models were converted by `prepare` (../shared does not travel).
        ctest --test-dir "$prepared_build" -L cuda -FS seed_models --output-on-failure "$@"
        ;;
    bench)
        shift
        place
        python3 "$root/benchmarks/bench.py" --bench "$prepared_build/benchmarks/mlff-bench" "$@"
        ;;
    exec)
        shift
        place
        MLFF_BUILD=$prepared_build "$@"
        ;;
    *) die "usage: $0 prepare | run [CTEST ARGS...] | bench [ARGS...] | exec COMMAND [ARGS...]" ;;
esac
