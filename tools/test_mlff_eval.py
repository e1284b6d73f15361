"""mlff-eval --threads: the same energy and forces, to the last digit printed, on three threads as on
one (the trained water model on a periodic box of 64 waters, some 4,000 pairs, enough rows for the
core's threads to share); a thread count that is not a positive number is named. Needs the
mlff-eval binary: $MLFF_EVAL, else $MLFF_BUILD_DIR/tools/mlff-eval (skipped without it)."""

import json
import os
import subprocess

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WATER_MODEL = os.path.join(ROOT, "models", "water.mlff.safetensors")
BOX = 12.4  # Å: 4 x 4 x 4 waters 3.1 Å apart


@pytest.fixture(scope="module")
def mlff_eval():
    build = os.environ.get("MLFF_BUILD_DIR")
    path = os.environ.get("MLFF_EVAL") or (build and os.path.join(build, "tools", "mlff-eval"))
    if not path or not os.path.exists(path):
        pytest.skip("no mlff-eval binary: set MLFF_EVAL or MLFF_BUILD_DIR")
    return path


def write_water_box(path):
    rng = np.random.default_rng(5)
    lines = []
    for index in np.ndindex(4, 4, 4):
        oxygen = 3.1 * np.array(index) + rng.uniform(-0.2, 0.2, 3)
        lines += [("O", oxygen), ("H", oxygen + [0.96, 0, 0]), ("H", oxygen + [-0.24, 0.93, 0])]
    with open(path, "w") as f:
        f.write(f"{len(lines)}\n64 waters\n")
        for symbol, r in lines:
            f.write(f"{symbol} {r[0]:.6f} {r[1]:.6f} {r[2]:.6f}\n")


def run(mlff_eval, xyz, *options):
    return subprocess.run([mlff_eval, WATER_MODEL, str(xyz), "--box", str(BOX), str(BOX), str(BOX), "--json",
                           *options], capture_output=True, text=True)


def test_three_threads_print_what_one_prints(mlff_eval, tmp_path):
    xyz = tmp_path / "water.xyz"
    write_water_box(xyz)
    one, three = run(mlff_eval, xyz, "--threads", "1"), run(mlff_eval, xyz, "--threads", "3")
    assert one.returncode == 0, one.stderr
    assert three.returncode == 0, three.stderr
    assert three.stdout == one.stdout
    forces = np.array(json.loads(one.stdout)["forces"])
    assert forces.shape == (192, 3) and np.abs(forces).max() > 0


@pytest.mark.parametrize("count", ["0", "-1", "two", ""])
def test_a_bad_thread_count_is_named(mlff_eval, tmp_path, count):
    xyz = tmp_path / "water.xyz"
    write_water_box(xyz)
    result = run(mlff_eval, xyz, "--threads", count)
    assert result.returncode == 2
    assert "--threads takes a number of threads" in result.stderr
