#!/usr/bin/env bash
# Times builds of the C core side by side on the host: each BENCH is a copy of mlff-core-bench
# (benchmarks/core_bench.c) from a build of some commit, run in turn, round after round, in the
# order A B ... then ... B A, so that drifts of the machine fall on all builds alike. The figures
# of docs/performance.md's section "The C core on the host" were taken so:
#
#   benchmarks/core_side_by_side.sh [OPTIONS] STRUCTURE BENCH... [-- mlff-core-bench options]
#
#   STRUCTURE           a structure file (benchmarks/write_structures.py FOLDER [--shuffled])
#   --model M           the model file (default: model.mlff.safetensors beside STRUCTURE)
#   --rounds N          rounds (default 4); each runs every BENCH twice
#   --pin CPU           run each BENCH on that CPU alone (taskset): on a VM whose cores differ in
#                       speed, one-thread runs otherwise compare cores, not builds
#
# Prints each run's median ms an evaluation as it comes, then each BENCH's median and least over
# the rounds, and its difference from the first's median. mlff-core-bench's options (--threads,
# --repeats, --table) follow a `--`.
set -euo pipefail

model='' rounds=4 pin=''
benches=()
while [ $# -gt 0 ]; do
    case $1 in
        --model) model=$2; shift 2 ;;
        --rounds) rounds=$2; shift 2 ;;
        --pin) pin=$2; shift 2 ;;
        --) shift; break ;;
        -*) echo "core_side_by_side: unknown option $1" >&2; exit 2 ;;
        *) benches+=("$1"); shift ;;
    esac
done
[ ${#benches[@]} -ge 2 ] || { echo "core_side_by_side: give a STRUCTURE and at least one BENCH" >&2; exit 2; }
structure=${benches[0]}
benches=("${benches[@]:1}")
model=${model:-$(dirname "$structure")/model.mlff.safetensors}
runner=()
[ -z "$pin" ] || runner=(taskset -c "$pin")

order=("${benches[@]}")
for ((k = ${#benches[@]} - 1; k >= 0; k--)); do order+=("${benches[k]}"); done
for ((round = 1; round <= rounds; round++)); do
    for bench in "${order[@]}"; do
        ms=$("${runner[@]}" "$bench" "$model" "$structure" "$@" |
             python3 -c 'import json, sys; print(json.load(sys.stdin)["median_ms"])')
        echo "round $round $bench $ms"
    done
done | tee /dev/stderr | python3 -c '
import statistics, sys
runs = {}
for line in sys.stdin:
    _, _, bench, ms = line.split()
    runs.setdefault(bench, []).append(float(ms))
first = None
for bench, values in runs.items():
    median = statistics.median(values)
    first = median if first is None else first
    print(f"{bench}: median {median:.4g} ms, least {min(values):.4g}, {len(values)} runs, "
          f"{100 * (median / first - 1):+.1f} % against the first")'
