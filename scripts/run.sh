#!/usr/bin/env bash
# The main job: set-up, a release build, then
#   1. convert the seed models of $MLFF_SHARED_DIR/models/mlff-distiller with tools/mlff-convert,
#   2. evaluate benzene with the mlff-eval CLI for each converted model that has golden values, and
#      compare with them,
#   3. run the C example (its CTest, which knows its arguments),
#   4. molecular dynamics of alanine dipeptide with the default model models/alanine-dipeptide
#      through the plugin (tools/md/alanine_dipeptide_md.py: CUDA, else CPU, else Reference),
#      showing its progress, then the same length with the teacher (Amber14), and the populations
#      of the phi/psi basins of both.
# Steps whose pieces are not there are skipped with a message; a step that runs and fails stops
# the script with a non-zero exit.
#
#   MLFF_BUILD_DIR   build folder (default: build-run in the repository)
#   MLFF_SHARED_DIR  the shared/ folder (default: ../shared beside the repository, when it exists)
#   MLFF_JOBS        parallel build jobs (default 2)
#   MLFF_MD_STEPS    MD steps of 2 fs in step 4 (default 30000, 60 ps: about a minute on 2 CPU cores)
#   OPENMM_DIR, MLFF_OPENMM_PREFIX, MLFF_OPENMM_TARBALL: see scripts/setup.sh
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${MLFF_BUILD_DIR:-$root/build-run}
jobs=${MLFF_JOBS:-2}
python=/usr/bin/python3
if [ -z "${MLFF_SHARED_DIR:-}" ] && [ -d "$root/../shared" ]; then
    MLFF_SHARED_DIR=$(cd "$root/../shared" && pwd)
fi
shared=${MLFF_SHARED_DIR:-}
say() { echo "run: $*"; }

"$root/scripts/setup.sh"
openmm_dir=$("$root/scripts/setup.sh" --print-openmm-dir)
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DMLFF_SANITIZE=OFF \
    -DOPENMM_DIR="$openmm_dir" -DPython3_EXECUTABLE="$python" -DMLFF_SHARED_DIR="$shared"
cmake --build "$build" -j "$jobs"

# 1. The seed models.
models=$build/models
converter=$root/tools/mlff-convert
if [ -z "$shared" ]; then
    say "skip converting the seed models: no MLFF_SHARED_DIR (and no ../shared)"
elif [ ! -x "$converter" ]; then
    say "skip converting the seed models: tools/mlff-convert is not there yet"
else
    mkdir -p "$models"
    for onnx in "$shared"/models/mlff-distiller/student_*.onnx; do
        [ -f "$onnx" ] || { say "no seed models in $shared/models/mlff-distiller"; break; }
        out=$models/$(basename "$onnx" .onnx).mlff.safetensors
        "$python" "$converter" "$onnx" "$out"
    done
fi

# 2. Benzene with the CLI, against the golden energies.
eval_cli=$build/tools/mlff-eval
golden=${shared:+$shared/testdata/seed_models_golden.npz}
if [ ! -x "$eval_cli" ]; then
    say "skip evaluating benzene: the mlff-eval CLI is not built yet (tools/mlff-eval.c)"
elif [ -z "$golden" ] || [ ! -f "$golden" ]; then
    say "skip evaluating benzene: no golden values (MLFF_SHARED_DIR/testdata/seed_models_golden.npz)"
else
    for model in original tiny; do
        model_file=$models/student_$model.mlff.safetensors
        if [ ! -f "$model_file" ]; then
            say "skip benzene with '$model': $model_file was not converted"
            continue
        fi
        xyz=$models/benzene_$model.xyz
        "$python" - "$golden" "$model" "$xyz" <<'EOF'
import sys
import numpy as np
golden, model, xyz = sys.argv[1:4]
data = np.load(golden, allow_pickle=False)
z, pos = data[f"{model}/benzene/z"], data[f"{model}/benzene/pos"]
symbols = {1: "H", 6: "C", 7: "N", 8: "O"}
with open(xyz, "w") as f:
    f.write(f"{len(z)}\nbenzene (golden geometry of the {model} model)\n")
    for zi, (x, y, zc) in zip(z, pos):
        f.write(f"{symbols[int(zi)]} {x:.17g} {y:.17g} {zc:.17g}\n")
EOF
        say "mlff-eval $(basename "$model_file") benzene:"
        result=$("$eval_cli" "$model_file" "$xyz" --json)
        "$python" - "$golden" "$model" "$result" <<'EOF'
import json, sys
import numpy as np
golden, model, result = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
data = np.load(golden, allow_pickle=False)
e_ref, f_ref = float(data[f"{model}/benzene/energy"]), data[f"{model}/benzene/forces"]
forces = np.asarray(result["forces"], dtype=float)
print(f"  energy {result['energy']:.10f} eV (golden {e_ref:.10f}, |dE| = {abs(result['energy'] - e_ref):.2e} eV)")
print(f"  max |dF| against the golden forces: {np.abs(forces - f_ref).max():.2e} eV/A over {len(forces)} atoms")
EOF
    done
fi

# 3. The C example, through its CTest.
# (The Python examples run in the test command; here only the C one, briefly.)
if ctest --test-dir "$build" -N -R '^example_c_md' 2>/dev/null | grep -q 'Total Tests: [1-9]'; then
    say "the C example:"
    ctest --test-dir "$build" -R '^example_c_md' -V
else
    say "skip the C example: its CTests example_c_md* are not in the build"
fi
# 4. Molecular dynamics of alanine dipeptide with the default model, against its teacher.
md_model=$root/models/alanine-dipeptide.mlff.safetensors
if [ ! -f "$build/python/openmmmlff.py" ]; then
    say "skip the alanine dipeptide MD: the Python module openmmmlff was not built ($build/python)"
elif [ ! -f "$md_model" ]; then
    say "skip the alanine dipeptide MD: no default model $md_model"
else
    # The OpenMM Python package of a prefix (build-openmm-from-source.sh) lives beside it.
    for site in "$openmm_dir"/python/usr/local/lib/python3*/dist-packages; do
        if [ -d "$site/openmm" ]; then export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"; fi
    done
    say "molecular dynamics of alanine dipeptide with models/$(basename "$md_model"):"
    PYTHONPATH="$build/python${PYTHONPATH:+:$PYTHONPATH}" OPENMM_MLFF_PLUGIN_DIR=$build/plugins \
        "$python" "$root/tools/md/alanine_dipeptide_md.py" --model "$md_model" --steps "${MLFF_MD_STEPS:-30000}"
fi
say "done"
