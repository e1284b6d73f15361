"""The PyTorch student-painn (tools/torch_painn) against the C core and the golden values.

The C core is reached through the mlff-eval CLI (--json), so this runs wherever torch is,
with or without OpenMM. Needs torch (skipped without it) and, for the C side, the mlff-eval
binary: $MLFF_EVAL, else $MLFF_BUILD_DIR/tools/mlff-eval. Seed models: the converted
student_{original,tiny}.mlff.safetensors in $MLFF_SEED_MODELS_DIR or $MLFF_BUILD_DIR/models (the
seed_models fixture), else converted here from $MLFF_SHARED_DIR with tools/mlff-convert.
Golden values: $MLFF_GOLDEN, else $MLFF_SHARED_DIR/testdata/seed_models_golden.npz.
The trained defaults (models/*.mlff.safetensors, committed) are checked the same way, on the
golden geometries, periodic water boxes and a 22-atom cloud, wherever their files exist.
Set TORCH_DEVICE=cuda to run the torch side on a GPU (float64 everywhere)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the torch cross-check needs PyTorch (apt-get install python3-torch)")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools"))

from torch_painn import ModelFileError, StudentPaiNN, find_edges, read_model_file  # noqa: E402
from torch_painn.neighbors import _brute_force  # noqa: E402

DEVICE = os.environ.get("TORCH_DEVICE", "cpu")
SYMBOLS = {1: "H", 6: "C", 7: "N", 8: "O"}
SEED_MODELS = ["original", "tiny"]
DEFAULT_MODELS = ["alanine-dipeptide", "water"]


def build_dir():
    return os.environ.get("MLFF_BUILD_DIR", "")


def shared_dir():
    return os.environ.get("MLFF_SHARED_DIR", "")


@pytest.fixture(scope="module")
def mlff_eval():
    path = os.environ.get("MLFF_EVAL") or (build_dir() and os.path.join(build_dir(), "tools", "mlff-eval"))
    if not path or not os.access(path, os.X_OK):
        pytest.skip("no mlff-eval binary: set MLFF_EVAL or MLFF_BUILD_DIR (the C side of the cross-check)")
    return path


@pytest.fixture(scope="module")
def golden():
    path = os.environ.get("MLFF_GOLDEN") or (shared_dir() and os.path.join(shared_dir(), "testdata", "seed_models_golden.npz"))
    if not path or not os.path.isfile(path):
        pytest.skip("no golden values: set MLFF_GOLDEN or MLFF_SHARED_DIR")
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


@pytest.fixture(scope="module")
def seed_model_paths(tmp_path_factory):
    paths = {}
    for name in SEED_MODELS:
        for folder in (os.environ.get("MLFF_SEED_MODELS_DIR", ""), build_dir() and os.path.join(build_dir(), "models")):
            candidate = folder and os.path.join(folder, f"student_{name}.mlff.safetensors")
            if candidate and os.path.isfile(candidate):
                paths[name] = candidate
                break
        else:
            onnx = shared_dir() and os.path.join(shared_dir(), "models", "mlff-distiller", f"student_{name}.onnx")
            if not onnx or not os.path.isfile(onnx):
                pytest.skip("no seed models: set MLFF_SEED_MODELS_DIR, MLFF_BUILD_DIR (seed_models fixture) or MLFF_SHARED_DIR")
            out = str(tmp_path_factory.mktemp("seed") / f"student_{name}.mlff.safetensors")
            subprocess.run([sys.executable, os.path.join(ROOT, "tools", "mlff-convert"), onnx, out], check=True,
                           capture_output=True)
            paths[name] = out
    return paths


def run_core(mlff_eval, model_path, z, pos, tmp_path, box=None):
    """Energy and forces from the C core via mlff-eval --json."""
    xyz = tmp_path / "structure.xyz"
    lines = [str(len(z)), "cross-check structure"]
    lines += [f"{SYMBOLS[int(a)]} {x!r} {y!r} {w!r}" for a, (x, y, w) in zip(z, pos.tolist())]
    xyz.write_text("\n".join(lines) + "\n")
    command = [mlff_eval, model_path, str(xyz), "--json"]
    if box is not None:
        command += ["--box"] + [repr(float(x)) for x in np.asarray(box).reshape(-1)]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, f"mlff-eval failed: {result.stderr}"
    out = json.loads(result.stdout)
    return out["energy"], np.asarray(out["forces"], dtype=np.float64)


def run_torch(model, z, pos, box=None):
    z_t = torch.as_tensor(np.asarray(z), dtype=torch.long, device=DEVICE)
    pos_t = torch.as_tensor(np.asarray(pos), dtype=torch.float64, device=DEVICE)
    box_t = None if box is None else torch.as_tensor(np.asarray(box), dtype=torch.float64, device=DEVICE)
    energy, forces = model.energy_and_forces(z_t, pos_t, boxes=box_t)
    return float(energy[0]), forces.cpu().numpy()


def load_model(path):
    return StudentPaiNN.load(path, dtype=torch.float64).to(DEVICE)


def water_box(waters_per_edge, spacing, seed, skew=False):
    """Flexible-looking water molecules on a jittered lattice with random orientations, and
    the box (rows, OpenMM reduced form), Å."""
    rng = np.random.default_rng(seed)
    edge = waters_per_edge * spacing
    box = np.diag([edge, edge, edge])
    if skew:
        box[1, 0], box[2, 0], box[2, 1] = 0.3 * edge, -0.2 * edge, 0.25 * edge
    z, pos = [], []
    for i in range(waters_per_edge):
        for j in range(waters_per_edge):
            for k in range(waters_per_edge):
                center = (np.array([i, j, k]) + 0.5 + rng.uniform(-0.15, 0.15, 3)) / waters_per_edge @ box
                rotation, _ = np.linalg.qr(rng.normal(size=(3, 3)))
                angle = np.radians(104.5 + rng.uniform(-5, 5))
                local = np.array([[0, 0, 0], [0.9572, 0, 0], [0.9572 * np.cos(angle), 0.9572 * np.sin(angle), 0]])
                for atomic_number, r in zip((8, 1, 1), local @ rotation.T):
                    z.append(atomic_number)
                    pos.append(center + r)
    return np.array(z), np.array(pos), box


def assert_same(energy, forces, energy_ref, forces_ref, what, tolerance=1e-9):
    scale = max(1.0, abs(energy_ref))
    assert abs(energy - energy_ref) <= tolerance * scale, f"{what}: energy {energy!r} vs {energy_ref!r}"
    force_scale = max(1.0, float(np.abs(forces_ref).max()))
    error = float(np.abs(forces - forces_ref).max())
    assert error <= tolerance * force_scale, f"{what}: max |dF| {error:.3e} eV/Å"


@pytest.mark.parametrize("name", SEED_MODELS)
def test_torch_reproduces_golden_values(name, seed_model_paths, golden):
    model = load_model(seed_model_paths[name])
    geometries = sorted({key.split("/")[1] for key in golden if key.startswith(name + "/")})
    assert geometries, f"no golden geometries for '{name}'"
    for geometry in geometries:
        key = f"{name}/{geometry}"
        energy, forces = run_torch(model, golden[key + "/z"], golden[key + "/pos"])
        assert_same(energy, forces, float(golden[key + "/energy"]), golden[key + "/forces"], key, 1e-10)


@pytest.mark.parametrize("name", SEED_MODELS)
def test_torch_matches_core_on_golden_structures(name, seed_model_paths, golden, mlff_eval, tmp_path):
    model = load_model(seed_model_paths[name])
    for geometry in sorted({key.split("/")[1] for key in golden if key.startswith(name + "/")}):
        key = f"{name}/{geometry}"
        z, pos = golden[key + "/z"], golden[key + "/pos"]
        core = run_core(mlff_eval, seed_model_paths[name], z, pos, tmp_path)
        assert_same(*run_torch(model, z, pos), *core, f"{key} torch vs core")


@pytest.mark.parametrize("skew", [False, True], ids=["rectangular", "triclinic"])
def test_torch_matches_core_on_periodic_water(skew, seed_model_paths, mlff_eval, tmp_path):
    # 4^3 waters: brute force in torch. 7^3 waters (1029 atoms): torch's cell list.
    model = load_model(seed_model_paths["tiny"])
    for per_edge in (4, 7):
        z, pos, box = water_box(per_edge, 3.1, seed=per_edge, skew=skew)
        core = run_core(mlff_eval, seed_model_paths["tiny"], z, pos, tmp_path, box)
        assert_same(*run_torch(model, z, pos, box), *core, f"{per_edge ** 3} waters, skew={skew}, torch vs core")


@pytest.fixture(scope="module", params=DEFAULT_MODELS)
def default_model(request):
    """(name, path) of a trained default model committed in models/."""
    path = os.path.join(ROOT, "models", f"{request.param}.mlff.safetensors")
    if not os.path.isfile(path):
        pytest.skip(f"{path} is not there")
    return request.param, path


def test_default_matches_core_on_golden_structures(default_model, golden, mlff_eval, tmp_path):
    """The trained defaults, torch vs core, on the golden geometries (benzene, water, ethanol,
    the water droplet)."""
    name, path = default_model
    model = load_model(path)
    geometries = sorted({key.split("/")[1] for key in golden if key.startswith("tiny/")})
    assert geometries
    for geometry in geometries:
        z, pos = golden[f"tiny/{geometry}/z"], golden[f"tiny/{geometry}/pos"]
        core = run_core(mlff_eval, path, z, pos, tmp_path)
        assert_same(*run_torch(model, z, pos), *core, f"{name} on {geometry}, torch vs core")


@pytest.mark.parametrize("skew", [False, True], ids=["rectangular", "triclinic"])
def test_default_matches_core_on_periodic_water(default_model, skew, mlff_eval, tmp_path):
    """The trained defaults, torch vs core, on periodic water boxes: 64 waters (brute force in
    torch) and 343 waters (torch's cell list)."""
    name, path = default_model
    model = load_model(path)
    for per_edge in (4, 7):
        z, pos, box = water_box(per_edge, 3.1, seed=10 + per_edge, skew=skew)
        core = run_core(mlff_eval, path, z, pos, tmp_path, box)
        assert_same(*run_torch(model, z, pos, box), *core, f"{name}: {per_edge ** 3} waters, skew={skew}, torch vs core")


def test_default_matches_core_on_a_dipeptide_like_cloud(default_model, mlff_eval, tmp_path):
    """The trained defaults, torch vs core, on 22 atoms of alanine dipeptide's composition at
    random positions (no two closer than 0.9 Å), open boundaries."""
    name, path = default_model
    model = load_model(path)
    rng = np.random.default_rng(5)
    z = np.array([1, 6, 1, 1, 6, 8, 7, 1, 6, 1, 6, 1, 1, 1, 6, 8, 7, 1, 6, 1, 1, 1])
    pos = []
    while len(pos) < len(z):
        candidate = rng.uniform(0.0, 6.0, 3)
        if all(np.linalg.norm(candidate - p) > 0.9 for p in pos):
            pos.append(candidate)
    pos = np.array(pos)
    core = run_core(mlff_eval, path, z, pos, tmp_path)
    assert_same(*run_torch(model, z, pos), *core, f"{name} on a 22-atom cloud, torch vs core")


def test_batched_structures_equal_separate_ones(seed_model_paths):
    """Replicas in one batch do not interact: each energy equals the structure alone."""
    model = load_model(seed_model_paths["tiny"])
    rng = np.random.default_rng(11)
    z, pos, box = water_box(4, 3.1, seed=1)
    shifted = [pos + rng.normal(scale=0.05, size=pos.shape) for _ in range(3)]
    z_t = torch.as_tensor(np.tile(z, 3), device=DEVICE)
    pos_t = torch.as_tensor(np.concatenate(shifted), dtype=torch.float64, device=DEVICE)
    structure = torch.arange(3, device=DEVICE).repeat_interleave(len(z))
    box_t = torch.as_tensor(box, dtype=torch.float64, device=DEVICE).expand(3, 3, 3)
    energies, forces = model.energy_and_forces(z_t, pos_t, structure, 3, box_t)
    for s in range(3):
        energy, force = run_torch(model, z, shifted[s], box)
        assert_same(float(energies[s]), forces[s * len(z):(s + 1) * len(z)].cpu().numpy(), energy, force, f"replica {s}", 1e-11)


def test_cell_list_finds_the_brute_force_pairs():
    rng = np.random.default_rng(2)
    pos = torch.as_tensor(rng.uniform(0, 24, (1500, 3)), dtype=torch.float64, device=DEVICE)
    box = torch.tensor([[24.0, 0, 0], [5.0, 24.0, 0], [-4.0, 6.0, 24.0]], dtype=torch.float64, device=DEVICE)
    one = torch.zeros(1500, dtype=torch.long, device=DEVICE)
    for boxes in (None, box[None]):
        cell = find_edges(pos, one, 1, 5.0, boxes)  # 1500 atoms > BRUTE_FORCE_MAX_ATOMS: the cell list
        brute = _brute_force(pos, one, torch.tensor([1500], device=DEVICE), 5.0, boxes)
        key = lambda e: sorted(zip(e[0].tolist(), e[1].tolist()))  # noqa: E731
        assert len(cell[0]) > 1500, "the test structure should have many pairs"
        assert key(cell) == key(brute)


def test_cutoff_beyond_half_the_box_is_an_error(seed_model_paths):
    model = load_model(seed_model_paths["tiny"])
    z, pos, _ = water_box(3, 3.1, seed=0)  # 9.3 Å box < 2 x 5 Å
    with pytest.raises(ValueError, match="half the smallest box height"):
        run_torch(model, z, pos, np.diag([9.3, 9.3, 9.3]))


def test_bad_model_file_is_a_clear_error(tmp_path):
    path = tmp_path / "bad.mlff.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\": 1}")
    with pytest.raises(ModelFileError, match="runs past the end"):
        read_model_file(str(path))
