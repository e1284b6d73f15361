#!/usr/bin/env bash
# Runs every test that needs no GPU: set-up (scripts/setup.sh), configure with the sanitizers on,
# build, ctest without the `cuda` label, then pytest over tests/python, tools and benchmarks.
# Exits non-zero if any step or test fails.
#
#   MLFF_BUILD_DIR   build folder (default: build-test in the repository)
#   MLFF_SHARED_DIR  the shared/ folder (seed models, golden values); tests needing it skip without
#   MLFF_JOBS        parallel build and test jobs (default 2)
#   OPENMM_DIR, MLFF_OPENMM_PREFIX, MLFF_OPENMM_TARBALL: see scripts/setup.sh
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${MLFF_BUILD_DIR:-$root/build-test}
jobs=${MLFF_JOBS:-2}
python=/usr/bin/python3   # Debian's, for which the OpenMM Python package is installed

"$root/scripts/setup.sh"
openmm_dir=$("$root/scripts/setup.sh" --print-openmm-dir)

configure=(-G Ninja -DMLFF_SANITIZE=ON -DOPENMM_DIR="$openmm_dir" -DPython3_EXECUTABLE="$python")
if [ -n "${MLFF_SHARED_DIR:-}" ]; then
    configure+=(-DMLFF_SHARED_DIR="$MLFF_SHARED_DIR")
    export MLFF_SHARED_DIR
else
    echo "test: MLFF_SHARED_DIR is not set: tests needing the shared seed models and golden values skip"
fi
cmake -S "$root" -B "$build" "${configure[@]}"
cmake --build "$build" -j "$jobs"

failed=()
# --no-tests=error: a test command that found nothing to run has not passed.
ctest --test-dir "$build" -LE cuda --output-on-failure --no-tests=error -j "$jobs" || failed+=("ctest")

# A Python package of OpenMM built into a prefix (build-openmm-from-source.sh) lives beside it.
for site in "$openmm_dir"/python/usr/local/lib/python3*/dist-packages; do
    if [ -d "$site/openmm" ]; then export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"; fi
done
export MLFF_BUILD_DIR=$build
# The Python module and the plugin's kernels from this build (an installed plugin would be found by
# `import openmm` itself). No ASan runtime is preloaded into python: under MLFF_SANITIZE only the
# core's test copy (mlffcore_sanitized) and the test programs are instrumented, while
# libOpenMMMLFF, its kernels and _openmmmlff always link the plain core (OpenMM must dlopen
# them), so python loads nothing that needs ASan. The shared code paths run under ASan in ctest.
export PYTHONPATH="$build/python${PYTHONPATH:+:$PYTHONPATH}"
export OPENMM_MLFF_PLUGIN_DIR=$build/plugins
for dir in tests/python tools benchmarks; do
    if [ -z "$(find "$root/$dir" -name 'test_*.py' -o -name '*_test.py' 2>/dev/null)" ]; then
        echo "test: no Python tests in $dir yet"
        continue
    fi
    # Exit 5 (no tests collected) is a failure here: the folder has test files.
    (cd "$root" && "$python" -m pytest -p no:cacheprovider "$dir") || failed+=("pytest $dir")
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "test: FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "test: all tests passed"
