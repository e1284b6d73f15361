#!/usr/bin/python3
"""export_golden.py SHARED_DIR BUILD_DIR: the `seed_models` test fixture's set-up.

Converts ../shared/models/mlff-distiller/student_{original,tiny,ultra_tiny}.onnx into
BUILD_DIR/models/student_NAME.mlff.safetensors with tools/mlff-convert, and writes the golden
values of ../shared/testdata/seed_models_golden.npz (keys MODEL/GEOMETRY/{z,pos,energy,forces,
energy_f32}) as JSON to BUILD_DIR/golden/seed_models_golden.json, a list of objects
{"model", "geometry", "z", "pos" (flat N*3), "energy", "forces" (flat N*3), "energy_f32"}
with every float written exactly (repr). With SHARED_DIR empty it does nothing and succeeds:
the tests that need these files skip.
"""
import json
import os
import subprocess
import sys

import numpy as np

MODELS = ["original", "tiny", "ultra_tiny"]
FIELDS = ["z", "pos", "energy", "forces", "energy_f32"]


def main():
    if len(sys.argv) != 3:
        print("usage: export_golden.py SHARED_DIR BUILD_DIR", file=sys.stderr)
        return 2
    shared, build = sys.argv[1], sys.argv[2]
    if not shared:
        print("export_golden: MLFF_SHARED_DIR is empty: nothing to prepare (seed model tests skip)")
        return 0
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    convert = os.path.join(root, "tools", "mlff-convert")

    os.makedirs(os.path.join(build, "models"), exist_ok=True)
    for name in MODELS:
        source = os.path.join(shared, "models", "mlff-distiller", f"student_{name}.onnx")
        target = os.path.join(build, "models", f"student_{name}.mlff.safetensors")
        # Regenerate when the converter or the source is newer than the converted file.
        if os.path.exists(target) and os.path.getmtime(target) >= max(os.path.getmtime(source), os.path.getmtime(convert)):
            continue
        result = subprocess.run([sys.executable, convert, source, target])
        if result.returncode != 0:
            print(f"export_golden: converting {source} failed", file=sys.stderr)
            return 1

    golden = os.path.join(shared, "testdata", "seed_models_golden.npz")
    data = np.load(golden)
    cases = {}
    for key in data.files:
        parts = key.split("/")
        if len(parts) != 3 or parts[2] not in FIELDS:
            print(f"export_golden: {golden}: unexpected key {key}", file=sys.stderr)
            return 1
        cases.setdefault((parts[0], parts[1]), {})[parts[2]] = data[key]
    out = []
    for (model, geometry), fields in cases.items():
        missing = [f for f in FIELDS if f not in fields]
        if missing:
            print(f"export_golden: {golden}: {model}/{geometry} lacks {', '.join(missing)}", file=sys.stderr)
            return 1
        out.append({"model": model, "geometry": geometry,
                    "z": [int(v) for v in fields["z"].reshape(-1)],
                    "pos": [float(v) for v in fields["pos"].astype(np.float64).reshape(-1)],
                    "energy": float(fields["energy"]),
                    "forces": [float(v) for v in fields["forces"].astype(np.float64).reshape(-1)],
                    "energy_f32": float(fields["energy_f32"])})
    os.makedirs(os.path.join(build, "golden"), exist_ok=True)
    path = os.path.join(build, "golden", "seed_models_golden.json")
    with open(path + ".tmp", "w") as f:
        json.dump(out, f)  # json writes floats with repr: exact round trip
    os.replace(path + ".tmp", path)
    print(f"export_golden: {len(MODELS)} models in {build}/models, {len(out)} golden cases in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
