"""Shared pieces of the openmmmlff tests: where the build is, the module from it, structures, and
the C core's answer through the mlff-eval CLI.

The tests need a build (MLFF_BUILD_DIR, as scripts/test.sh sets it): the module
(MLFF_BUILD_DIR/python, unless openmmmlff is importable already), the plugin's kernels
(MLFF_BUILD_DIR/plugins, unless OPENMM_MLFF_PLUGIN_DIR says otherwise), mlff-eval and the random
model the build writes. Without it they fail: a missing build is not a reason to pass.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KJ_PER_MOL_PER_EV = 96.48533212331002  # openmmapi/include/internal/MLFFUnits.h (exact, SI)
ANGSTROM_PER_NM = 10.0
SYMBOLS = {1: "H", 6: "C", 7: "N", 8: "O"}


def build_dir():
    path = os.environ.get("MLFF_BUILD_DIR", "")
    if not path or not os.path.isdir(path):
        pytest.fail("MLFF_BUILD_DIR does not name a build folder (scripts/test.sh sets it)")
    return path


def shared_dir():
    """The shared/ folder; skips the calling test without it."""
    path = os.environ.get("MLFF_SHARED_DIR", "")
    if not path or not os.path.isdir(path):
        pytest.skip("needs the shared seed models: set MLFF_SHARED_DIR")
    return path


def import_openmmmlff():
    """The module, from the build unless importable already, with the build's kernels loaded."""
    build = build_dir()
    os.environ.setdefault("OPENMM_MLFF_PLUGIN_DIR", os.path.join(build, "plugins"))
    module_dir = os.path.join(build, "python")
    if module_dir not in sys.path:
        sys.path.append(module_dir)
    import openmmmlff
    return openmmmlff


def random_model_path():
    path = os.path.join(build_dir(), "testdata", "random_h16.mlff.safetensors")
    if not os.path.isfile(path):
        pytest.fail(f"{path} is missing: build the target mlff_random_test_model")
    return path


def seed_model_path(name, tmp_path_factory):
    """A converted seed model: the build's (seed_models fixture), else converted here."""
    shared = shared_dir()
    built = os.path.join(build_dir(), "models", f"student_{name}.mlff.safetensors")
    if os.path.isfile(built):
        return built
    onnx = os.path.join(shared, "models", "mlff-distiller", f"student_{name}.onnx")
    out = str(tmp_path_factory.mktemp("seed") / f"student_{name}.mlff.safetensors")
    subprocess.run([sys.executable, os.path.join(ROOT, "tools", "mlff-convert"), onnx, out], check=True,
                   capture_output=True)
    return out


def subprocess_environment():
    """The environment for a child Python that must import openmmmlff from the build."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.path.join(build_dir(), "python"), env.get("PYTHONPATH")]))
    env.setdefault("OPENMM_MLFF_PLUGIN_DIR", os.path.join(build_dir(), "plugins"))
    return env


# Ethanol (Å), the structure most tests use.
ETHANOL_Z = np.array([6, 6, 8, 1, 1, 1, 1, 1, 1])
ETHANOL_POS = np.array([
    [1.1879, -0.3829, 0.0000], [0.0000, 0.5526, 0.0000], [-1.1867, -0.2472, 0.0000],
    [-1.9237, 0.3850, 0.0000], [2.1392, 0.1573, 0.0000], [1.1523, -1.0239, 0.8804],
    [1.1523, -1.0239, -0.8804], [0.0370, 1.2014, 0.8797], [0.0370, 1.2014, -0.8797]])
WATER_Z = np.array([8, 1, 1])
WATER_POS = np.array([[0.0, 0.0, 0.0], [0.9572, 0.0, 0.0], [-0.2399, 0.9266, 0.0]])


def distorted(positions, seed, scale=0.05):
    return positions + np.random.default_rng(seed).normal(scale=scale, size=positions.shape)


def water_box(waters_per_edge, edge, seed, skew=False):
    """Randomly oriented waters on a jittered lattice in a box of edge `edge` (Å), sheared when
    `skew`, and the box vectors as rows (OpenMM's reduced form), Å."""
    rng = np.random.default_rng(seed)
    box = np.diag([edge, edge, edge])
    if skew:
        box[1, 0], box[2, 0], box[2, 1] = 0.3 * edge, -0.2 * edge, 0.25 * edge
    z, pos = [], []
    for index in np.ndindex(waters_per_edge, waters_per_edge, waters_per_edge):
        center = ((np.array(index) + 0.5 + rng.uniform(-0.1, 0.1, 3)) / waters_per_edge) @ box
        rotation, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        z += list(WATER_Z)
        pos += list(center + WATER_POS @ rotation.T)
    return np.array(z), np.array(pos), box


def core_energy_forces(model_path, z, pos, tmp_path, box=None):
    """Energy (eV) and forces (eV/Å) of one structure from the C core, through mlff-eval --json."""
    mlff_eval = os.path.join(build_dir(), "tools", "mlff-eval")
    if not os.access(mlff_eval, os.X_OK):
        pytest.fail(f"{mlff_eval} is not built")
    xyz = tmp_path / "structure.xyz"
    lines = [str(len(z)), "openmmmlff test structure"]
    lines += [f"{int(a)} {x!r} {y!r} {w!r}" for a, (x, y, w) in zip(z, np.asarray(pos).tolist())]
    xyz.write_text("\n".join(lines) + "\n")
    command = [mlff_eval, model_path, str(xyz), "--json"]
    if box is not None:
        command += ["--box"] + [repr(float(x)) for x in np.asarray(box).reshape(-1)]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, f"mlff-eval failed: {result.stderr}"
    out = json.loads(result.stdout)
    return out["energy"], np.asarray(out["forces"], dtype=np.float64)
