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
#                       S_shuffled is S with its atoms in a random order (write_structures.py --shuffled)
#   --exact             exact filters (default: tabulated)
#   --rounds N          rounds (default 2)
#   --md-steps N, --repeats N   mlff-bench's (default 500 and 3)
#   --timing S          first, the libraries' MLFF_CUDA_TIMING tables on S as one (µs a launch kind,
#                       a column a library)
#
# Prints one line per round, library and structure: step_us, force_us, the energy (which
# variants that compute the same sums in the same order must print alike) and the median SM clock
# over the run with the reasons that held it down, if any (gpu_clocks.py); then each library's
# median step_us over the rounds, structure by structure, and its difference from the first's.
set -euo pipefail

rows=benzene structures=benzene_x1024,benzene_x256 tabulated=--tabulated rounds=2 steps=500 repeats=3 timing=
libraries=()
while [ $# -gt 0 ]; do
    case $1 in
        --rows) rows=$2; shift 2 ;;
        --structures) structures=$2; shift 2 ;;
        --exact) tabulated=; shift ;;
        --rounds) rounds=$2; shift 2 ;;
        --md-steps) steps=$2; shift 2 ;;
        --repeats) repeats=$2; shift 2 ;;
        --timing) timing=$2; shift 2 ;;
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
python3 "$here/write_structures.py" "$folder" --rows "$rows" --shuffled > /dev/null

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
        MLFF_CUDA_TIMING=1 bench "$library" "$timing" --md-steps 100 --repeats 2 2> "${tables[-1]}" > /dev/null || true
    done
    names=()
    for library in "${libraries[@]}"; do names+=("$(library_name "$library")"); done
    # One table: a row per launch kind (in the order they first appear), a column per library.
    python3 - "$timing" "${#libraries[@]}" "${names[@]}" "${tables[@]}" <<'MERGE'
import re, sys
structure, count = sys.argv[1], int(sys.argv[2])
names, files = sys.argv[3:3 + count], sys.argv[3 + count:]
row = re.compile(r"^\s*([0-9.]+)\s+(.*?)(?: \(\d+ evaluations\))?$")
columns, order = [], []
for name, path in zip(names, files):
    text = open(path).read()
    times = {m.group(2): float(m.group(1)) for m in map(row.match, text.splitlines()) if m}
    if not times:
        print(f"== {name}: no MLFF_CUDA_TIMING table; it printed:\n{text}")
    columns.append(times)
    order += [launch for launch in times if launch not in order and launch != "sum of the medians"]
order.append("sum of the medians")
width, cells = max(len(launch) for launch in order), [max(10, len(name)) for name in names]
print(f"== per launch on {structure}, µs an evaluation (MLFF_CUDA_TIMING; the events break overlaps)")
print(" " * width + "".join(f"  {name:>{cell}s}" for name, cell in zip(names, cells)))
for launch in order:
    print(launch.ljust(width) + "".join(f"  {times[launch]:{cell}.1f}" if launch in times else f"  {'-':>{cell}s}"
                                        for times, cell in zip(columns, cells)))
MERGE
fi
printf '%-6s %-36s %-28s %10s %10s %16s  %s\n' round library structure step_us force_us energy_kj_mol 'SM MHz'
for round in $(seq "$rounds"); do
    for library in "${libraries[@]}"; do
        cp "$(library_path "$library")" "$plugin"
        for structure in ${structures//,/ }; do
            bench "$library" "$structure" --md-steps "$steps" --repeats "$repeats" > "$folder/run.json"
            python3 - "$here" "$folder" "$round" "$(library_name "$library")" "$structure" <<'LINE'
import json, sys
here, folder, round_, library, structure = sys.argv[1:]
sys.path.insert(0, here)
from gpu_clocks import describe
r = json.load(open(folder + "/run.json"))
clocks = describe(json.load(open(folder + "/clocks.json")))
print("%-6s %-36s %-28s %10.1f %10.1f %16.4f  %s" % (round_, library, structure, r["step_us"], r["force_us"],
                                                     r["energy_kj_mol"], clocks))
LINE
        done
    done
done | tee "$folder/rounds.txt"

# Each library's median step over the rounds, and how far from the first library's.
python3 - "$folder/rounds.txt" <<'SUMMARY'
import statistics, sys
steps = {}  # (structure, library) -> step_us of each round, libraries in the order given
for line in open(sys.argv[1]).read().splitlines():
    _, library, structure, step_us = line.split()[:4]
    steps.setdefault((structure, library), []).append(float(step_us))
print("\nmedian step_us over the rounds, and against the first library:")
structures = list(dict.fromkeys(structure for structure, _ in steps))
for structure in structures:
    medians = [(library, statistics.median(values)) for (s, library), values in steps.items() if s == structure]
    for library, median in medians:
        print("%-28s %-36s %10.1f %+7.1f %%" % (structure, library, median, 100 * (median / medians[0][1] - 1)))
SUMMARY
