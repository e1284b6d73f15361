#!/usr/bin/env bash
# Trains candidate students for the default models at once (one process each, sharing one GPU:
# these small networks leave most of it idle), each then evaluated on its held-out test frames.
# Used on the GPU machine; see docs/distillation.md.
#
#   tools/distill/train_defaults.sh DATA_DIR OUT_DIR [SECONDS] [ROUND]
#
# DATA_DIR holds alanine-dipeptide.npz and water.npz (generate_teacher_data.py); OUT_DIR gets
# NAME.mlff.safetensors, NAME.json (training report with the held-out accuracy) and NAME.log
# for each candidate NAME of the round. SECONDS: training time of each (default 300).
# ROUND 1 (default): H=32 and H=64 students of both systems from random weights.
# ROUND 2: the H=64 students continued (--init) from ROUND1_DIR (default OUT_DIR/../run1) with a
# fresh, lower learning-rate schedule; alanine dipeptide with batches of 32 and of 64 frames.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
data=$1
out=$2
seconds=${3:-300}
round=${4:-1}
python=${PYTHON:-python3}
mkdir -p "$out"

# name data batch learning-rate extra-arguments...
if [ "$round" = 1 ]; then
    candidates=(
        "alanine-dipeptide-h32 alanine-dipeptide 32 2e-3 --hidden 32 --blocks 2 --rbf 12"
        "alanine-dipeptide-h64 alanine-dipeptide 32 2e-3 --hidden 64 --blocks 2 --rbf 16"
        "water-h32 water 8 2e-3 --hidden 32 --blocks 2 --rbf 12"
        "water-h64 water 8 2e-3 --hidden 64 --blocks 2 --rbf 16"
    )
else
    first=${ROUND1_DIR:-$out/../run1}
    candidates=(
        "alanine-dipeptide-h64-r2 alanine-dipeptide 32 1e-3 --init $first/alanine-dipeptide-h64.mlff.safetensors"
        "alanine-dipeptide-h64-r2b64 alanine-dipeptide 64 1e-3 --init $first/alanine-dipeptide-h64.mlff.safetensors"
        "water-h64-r2 water 8 1e-3 --init $first/water-h64.mlff.safetensors"
    )
fi
pids=()
for candidate in "${candidates[@]}"; do
    read -r name set batch lr extra <<<"$candidate"
    # shellcheck disable=SC2086  # extra holds several arguments
    OMP_NUM_THREADS=2 PYTHONUNBUFFERED=1 "$python" "$here/train_student.py" "$data/$set.npz" \
        "$out/$name.mlff.safetensors" --batch-size "$batch" --lr "$lr" $extra \
        --time-limit "$seconds" --name "$name" --report "$out/$name.json" >"$out/$name.log" 2>&1 &
    pids+=($!)
done
status=0
for i in "${!pids[@]}"; do
    wait "${pids[$i]}" || { echo "train_defaults: ${candidates[$i]%% *} failed (see its log)"; status=1; }
done
for candidate in "${candidates[@]}"; do
    name=${candidate%% *}
    echo "== $name"
    tail -n 12 "$out/$name.log"
done
exit $status
