#!/usr/bin/env bash
# Profiles the CUDA plugin's kernels with Nsight Compute (ncu) on one of benchmarks/
# write_structures.py's structures: occupancy, throughput against the GPU's peaks, and why the
# warps stall (cycles a warp waits per instruction issued, by reason). On the GPU machine:
#
#   scripts/gpu-tests.sh exec bash benchmarks/profile_kernels.sh [OPTIONS]
#
#   --rows R          write_structures.py's rows (default benzene)
#   --structure S     the structure to run (default benzene_x1024)
#   --exact           exact filters (default: tabulated)
#   --kernels REGEX   the kernels to profile, by name (default: the replica messages' two)
#   --skip N          launches of those kernels to pass over first, past the warm-up (default 30)
#   --count N         launches to profile (default 2)
#   --out FILE        ncu's whole report as text (default: a temporary file)
#
# Prints each profiled launch's headline figures. ncu runs with --clock-control none (the GPU at
# its own clocks) and --cache-control none (the caches as the launches before left them, not
# flushed before each of ncu's passes), as the launches run in a simulation.
set -euo pipefail

rows=benzene structure=benzene_x1024 tabulated=--tabulated skip=30 count=2 out=
kernels='mlffMessages(Forward|Backward)Replicas'
while [ $# -gt 0 ]; do
    case $1 in
        --rows) rows=$2; shift 2 ;;
        --structure) structure=$2; shift 2 ;;
        --exact) tabulated=; shift ;;
        --kernels) kernels=$2; shift 2 ;;
        --skip) skip=$2; shift 2 ;;
        --count) count=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        *) echo "profile_kernels: unknown argument $1" >&2; exit 2 ;;
    esac
done
[ -n "${MLFF_BUILD:-}" ] || { echo "profile_kernels: run through scripts/gpu-tests.sh exec (MLFF_BUILD unset)" >&2; exit 2; }
ncu=$(command -v ncu || ls /usr/local/cuda/bin/ncu 2>/dev/null || true)
[ -n "$ncu" ] || { echo "profile_kernels: no ncu (Nsight Compute) on this machine" >&2; exit 1; }

folder=$(mktemp -d)
trap 'rm -rf "$folder"' EXIT
python3 "$(dirname "$0")/write_structures.py" "$folder" --rows "$rows" > /dev/null
report=${out:-$folder/report.txt}
"$ncu" --clock-control none --cache-control none -k "regex:$kernels" -s "$skip" -c "$count" \
    --section SpeedOfLight --section Occupancy --section LaunchStats --section SchedulerStats \
    --section WarpStateStats --section MemoryWorkloadAnalysis \
    --metrics 'regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio',smsp__inst_executed.sum \
    "$MLFF_BUILD/benchmarks/mlff-bench" "$folder/model.mlff.safetensors" "$folder/$structure.txt" $tabulated \
    --md-steps 20 --repeats 1 > "$report" 2>&1
# Each launch's name line, then its headline figures; stall reasons under 0.05 cycles left out.
grep -E '^  [A-Za-z_0-9]+ \(|Duration|Registers Per Thread|Dynamic Shared Memory Per Block|Achieved Active Warps|Theoretical Active Warps|Issued Warp Per Scheduler|Throughput +%|Hit Rate|inst_executed|stalled_' "$report" |
    sed -e 's/smsp__average_warps_issue_stalled_\(.*\)_per_issue_active.ratio *inst/stall \1:/' |
    awk '!/stall / || $NF + 0 >= 0.05'
