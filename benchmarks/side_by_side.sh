#!/usr/bin/env bash
# Times builds of the CUDA plugin side by side, on the same GPU within one run: each LIBRARY (a
# copy of build-gpu/platforms/cuda/libOpenMMMLFFCUDA.so from a build of some commit) is swapped in
# for the build's own, in turn, round after round, so that drifts of the machine fall on all
# variants alike. On the GPU machine, with the libraries carried along (say in .device/):
#
#   scripts/gpu-tests.sh exec bash benchmarks/side_by_side.sh [OPTIONS] LIBRARY...
#
# A LIBRARY may carry environment settings for its runs after commas, so that one build's
# switches go side by side as builds do: .device/main.so,MLFF_CUDA_PRODUCTS=mma
#
#   --rows R            benchmarks/write_structures.py's rows (default benzene)
#   --structures S,...  which of the structures written to time (default benzene_x1024,benzene_x256);
#                       S_shuffled is S with its atoms in a random order, S_jittered (structures of
#                       several replicas) S with its atoms moved at random (write_structures.py)
#   --exact             exact filters (default: tabulated)
#   --rounds N          rounds (default 2)
#   --md-steps N, --repeats N   mlff-bench's (default 500 and 3)
#   --timing S          first, the libraries' MLFF_CUDA_TIMING tables on S as one (µs a launch kind,
#                       a column a library)
#   --timeline S        the same with MLFF_CUDA_TIMING=timeline: each launch's share of the
#                       evaluation as the launches overlap untimed (CudaLaunchTimer.h)
#   --json FILE         also everything below as one JSON file (this command line, the date and
#                       device, each run's line with mlff-bench's own JSON and the clocks, the
#                       medians, the timing table): a copy for benchmarks/results/
#
# Prints one line per round, library and structure: step_us, force_us, the energy (which
# variants that compute the same sums in the same order must print alike) and the median SM clock
# over the run with the reasons that held it down, if any (gpu_clocks.py); then each library's
# median step_us over the rounds, structure by structure, and its difference from the first's
# (side_by_side_report.py prints and keeps them).
set -euo pipefail

command_line="benchmarks/side_by_side.sh $*"
rows=benzene structures=benzene_x1024,benzene_x256 tabulated=--tabulated rounds=2 steps=500 repeats=3 timing= timing_setting=1 json=
libraries=()
while [ $# -gt 0 ]; do
    case $1 in
        --rows) rows=$2; shift 2 ;;
        --structures) structures=$2; shift 2 ;;
        --exact) tabulated=; shift ;;
        --rounds) rounds=$2; shift 2 ;;
        --md-steps) steps=$2; shift 2 ;;
        --repeats) repeats=$2; shift 2 ;;
        --timing) timing=$2; timing_setting=1; shift 2 ;;
        --timeline) timing=$2; timing_setting=timeline; shift 2 ;;
        --json) json=$2; shift 2 ;;
        -*) echo "side_by_side: unknown option $1" >&2; exit 2 ;;
        *) libraries+=("$1"); shift ;;
    esac
done
[ ${#libraries[@]} -gt 0 ] || { echo "side_by_side: no LIBRARY given" >&2; exit 2; }
[ -n "${MLFF_BUILD:-}" ] || { echo "side_by_side: run through scripts/gpu-tests.sh exec (MLFF_BUILD unset)" >&2; exit 2; }

plugin=$MLFF_BUILD/platforms/cuda/libOpenMMMLFFCUDA.so
folder=$(mktemp -d)
cp "$plugin" "$folder/own.so"
trap 'cp "$folder/own.so" "$plugin"; rm -rf "$folder"' EXIT
here=$(cd "$(dirname "$0")" && pwd)
python3 "$here/write_structures.py" "$folder" --rows "$rows" --shuffled --jittered > /dev/null

library_path() { realpath "${1%%,*}"; }
library_settings() { [[ $1 == *,* ]] && tr , '\n' <<< "${1#*,}" || true; } # one VAR=VALUE a line
library_name() { basename "$1"; }

bench() { # LIBRARY STRUCTURE [mlff-bench options]: the library must be in place
    local library=$1 structure=$2; shift 2
    local settings
    mapfile -t settings < <(library_settings "$library")
    python3 "$here/gpu_clocks.py" --summary "$folder/clocks.json" -- \
        env "${settings[@]}" "$MLFF_BUILD/benchmarks/mlff-bench" "$folder/model.mlff.safetensors" \
        "$folder/$structure.txt" $tabulated "$@"
}

if [ -n "$timing" ]; then
    tables=()
    for library in "${libraries[@]}"; do
        cp "$(library_path "$library")" "$plugin"
        tables+=("$folder/timing.$((${#tables[@]} + 1)).txt")
        # the table is on stderr; anything else there (an error) is shown whole by the merge below
        MLFF_CUDA_TIMING=$timing_setting bench "$library" "$timing" --md-steps 100 --repeats 2 2> "${tables[-1]}" > /dev/null || true
    done
    pairs=()
    for k in "${!libraries[@]}"; do pairs+=("$(library_name "${libraries[$k]}")" "${tables[$k]}"); done
    python3 "$here/side_by_side_report.py" timing "$folder" "$timing" "${pairs[@]}"
fi
python3 "$here/side_by_side_report.py" header
for round in $(seq "$rounds"); do
    for library in "${libraries[@]}"; do
        cp "$(library_path "$library")" "$plugin"
        for structure in ${structures//,/ }; do
            bench "$library" "$structure" --md-steps "$steps" --repeats "$repeats" > "$folder/run.json"
            python3 "$here/side_by_side_report.py" line "$folder" "$round" "$(library_name "$library")" "$structure"
        done
    done
done

# Each library's median step over the rounds, and how far from the first library's.
python3 "$here/side_by_side_report.py" summary "$folder"
if [ -n "$json" ]; then
    python3 "$here/side_by_side_report.py" json "$folder" "$json" "$command_line"
    echo "side_by_side: wrote $json"
fi
