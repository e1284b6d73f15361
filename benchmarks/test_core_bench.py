"""mlff-core-bench: one JSON line with the evaluation's timing and energy, the same energy on two
threads as on one (the core's promise, to the last digit printed), the tabulated filters' energy
near the exact one, the pairs counted as numpy counts them, and bad input named (the structure
file and its line, the model file, the options). The trained water model on a periodic box of 64
waters. Needs the binary: $MLFF_BUILD_DIR/benchmarks/mlff-core-bench (skipped without it)."""

import json
import os
import subprocess

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WATER_MODEL = os.path.join(ROOT, "models", "water.mlff.safetensors")
BOX = 12.4  # Å: 4 x 4 x 4 waters 3.1 Å apart
CUTOFF = 5.0  # Å, the water model's


@pytest.fixture(scope="module")
def core_bench():
    build = os.environ.get("MLFF_BUILD_DIR")
    path = build and os.path.join(build, "benchmarks", "mlff-core-bench")
    if not path or not os.path.exists(path):
        pytest.skip("no mlff-core-bench binary: set MLFF_BUILD_DIR")
    return path


def water_box():
    rng = np.random.default_rng(5)
    z, positions = [], []
    for index in np.ndindex(4, 4, 4):
        oxygen = 3.1 * np.array(index) + rng.uniform(-0.2, 0.2, 3)
        z += [8, 1, 1]
        positions += [oxygen, oxygen + [0.96, 0, 0], oxygen + [-0.24, 0.93, 0]]
    return z, np.array(positions)


def write_structure(path, z, positions):
    """bench.py's format: "N" and the box's 9 components, then "Z x y z replica" a line."""
    with open(path, "w") as f:
        f.write(f"{len(z)} {BOX} 0 0 0 {BOX} 0 0 0 {BOX}\n")
        for zi, r in zip(z, positions):
            f.write(f"{zi} {r[0]:.10f} {r[1]:.10f} {r[2]:.10f} 0\n")


def pairs_within_cutoff(positions):
    d = positions[None, :, :] - positions[:, None, :]
    d -= BOX * np.round(d / BOX)
    r2 = (d ** 2).sum(-1)
    return int(np.triu(r2 < CUTOFF ** 2, k=1).sum())


def run(core_bench, structure, *options, model=WATER_MODEL):
    return subprocess.run([core_bench, model, str(structure), *options], capture_output=True, text=True)


@pytest.fixture
def structure(tmp_path):
    z, positions = water_box()
    path = tmp_path / "water_box.txt"
    write_structure(path, z, positions)
    return path, positions


def test_prints_the_timing_and_the_same_energy_on_any_number_of_threads(core_bench, structure):
    path, positions = structure
    rows = {}
    for options in (("--threads", "1"), ("--threads", "2"), ("--table", "0", "--threads", "1")):
        result = run(core_bench, path, *options, "--repeats", "2")
        assert result.returncode == 0, result.stderr
        rows[options] = json.loads(result.stdout)
    one, two, tabulated = rows.values()
    assert one["atoms"] == 192 and one["pairs"] == pairs_within_cutoff(positions) > 0
    assert one["repeats"] == 2 and 0 < one["min_ms"] <= one["median_ms"]
    assert (one["threads"], two["threads"], one["tabulated"], tabulated["tabulated"]) == (1, 2, False, True)
    assert two["energy"] == one["energy"]
    assert tabulated["energy"] == pytest.approx(one["energy"], rel=1e-6)


def test_a_bad_structure_line_is_named(core_bench, tmp_path, structure):
    path, _ = structure
    lines = path.read_text().splitlines()
    lines[5] = "8 1.0 2.0"  # atom 4: too few columns
    bad = tmp_path / "bad.txt"
    bad.write_text("\n".join(lines) + "\n")
    result = run(core_bench, bad)
    assert result.returncode != 0
    assert f"{bad}:6:" in result.stderr and "atom 4" in result.stderr


def test_missing_files_are_named(core_bench, tmp_path, structure):
    path, _ = structure
    result = run(core_bench, tmp_path / "nowhere.txt")
    assert result.returncode != 0 and "nowhere.txt" in result.stderr
    result = run(core_bench, path, model=str(tmp_path / "no_model.safetensors"))
    assert result.returncode != 0 and "no_model.safetensors" in result.stderr


@pytest.mark.parametrize("options", [("--repeats", "0"), ("--threads",), ("--frobnicate", "1")])
def test_bad_options_print_the_usage(core_bench, structure, options):
    path, _ = structure
    result = run(core_bench, path, *options)
    assert result.returncode == 2 and "usage: mlff-core-bench" in result.stderr
