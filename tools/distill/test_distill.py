"""Tests of the distillation tools on small synthetic data sets: the split, batching, and a few
training steps end to end with the export's energy rescaling checked against the network
(the last two need torch and skip without it). No OpenMM needed."""

import os
import subprocess
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

from teacher_data import TeacherData, errors  # noqa: E402


def synthetic_data(path, frames_per_temperature=40, periodic=False, seed=0):
    """Water-like molecules with pair-potential energies and exact forces (eV, eV/Å)."""
    rng = np.random.default_rng(seed)
    z = np.array([8, 1, 1] * 4)
    temperatures = [300.0, 400.0]
    base = rng.uniform(0.0, 10.0 if periodic else 6.0, (len(z), 3))
    positions, energies, forces, temps = [], [], [], []
    for t in temperatures:
        for _ in range(frames_per_temperature):
            pos = base + rng.normal(scale=0.1 * t / 300.0, size=base.shape)
            u = pos[None, :, :] - pos[:, None, :]
            d2 = (u ** 2).sum(-1) + np.eye(len(z))
            pair = np.exp(-d2 / 4.0) * (1 - np.eye(len(z)))
            energies.append(0.5 * pair.sum() - 3.0 * len(z))
            forces.append(-(pair[:, :, None] * u / 2.0).sum(1))
            positions.append(pos)
            temps.append(t)
    data = {"z": z.astype(np.int32), "positions": np.array(positions, np.float32), "forces": np.array(forces, np.float32),
            "energies": np.array(energies), "temperatures": np.array(temps), "teacher": np.array("synthetic")}
    if periodic:
        data["box"] = np.diag([10.5, 10.5, 10.5])
    np.savez_compressed(path, **data)
    return path


def test_split_is_by_time_per_temperature(tmp_path):
    data = TeacherData(synthetic_data(tmp_path / "d.npz"))
    assert len(data.train) + len(data.validation) + len(data.test) == 80
    assert not set(data.train) & set(data.test) and not set(data.validation) & set(data.test)
    for t in (300.0, 400.0):
        train = data.train[data.temperatures[data.train] == t]
        test = data.test[data.temperatures[data.test] == t]
        validation = data.validation[data.temperatures[data.validation] == t]
        assert len(test) == 4 and len(validation) == 2
        assert train.max() < validation.min() < test.min(), "held-out frames come after the training frames"


def test_errors_of_the_teacher_itself_are_zero(tmp_path):
    data = TeacherData(synthetic_data(tmp_path / "d.npz"))
    report = errors(data.energies[data.test], data.forces[data.test], data, data.test)
    assert report["energy_rmse_eV"] == 0.0 and report["force_rmse_eV_per_A"] == 0.0
    assert report["frames"] == len(data.test)


def test_inconsistent_shapes_are_an_error(tmp_path):
    path = synthetic_data(tmp_path / "d.npz")
    with np.load(path) as d:
        broken = {k: d[k] for k in d.files}
    broken["energies"] = broken["energies"][:-1]
    np.savez(tmp_path / "broken.npz", **broken)
    with pytest.raises(ValueError, match="inconsistent shapes"):
        TeacherData(str(tmp_path / "broken.npz"))


@pytest.mark.parametrize("periodic", [False, True], ids=["open", "periodic"])
def test_batch_gathers_the_frames(tmp_path, periodic):
    torch = pytest.importorskip("torch", reason="batching for training needs PyTorch")
    data = TeacherData(synthetic_data(tmp_path / "d.npz", periodic=periodic))
    frames = data.train[[3, 0, 7]]
    z, pos, structure, boxes, energies, forces = data.batch(frames, "cpu", torch.float64)
    n = data.num_atoms
    assert z.shape == (3 * n,) and pos.shape == (3 * n, 3) and structure.tolist() == [0] * n + [1] * n + [2] * n
    assert np.allclose(pos[n:2 * n].numpy(), data.positions[frames[1]])
    assert np.allclose(forces[2 * n:].numpy(), data.forces[frames[2]])
    assert np.allclose(energies.numpy(), data.energies[frames])
    assert (boxes is None) == (not periodic)


def test_a_few_training_steps_export_a_consistent_model(tmp_path):
    """train_student.py end to end on CPU: the exported file (mu, sigma folded into the last
    layer) gives the teacher's units, so its held-out RMSE is that of the report."""
    torch = pytest.importorskip("torch", reason="training needs PyTorch")
    import json
    data_path = synthetic_data(tmp_path / "d.npz", periodic=True)
    out = tmp_path / "student.mlff.safetensors"
    report = tmp_path / "report.json"
    result = subprocess.run([sys.executable, os.path.join(HERE, "train_student.py"), str(data_path), str(out),
                             "--hidden", "8", "--blocks", "1", "--rbf", "4", "--max-steps", "6", "--time-limit", "0",
                             "--eval-every", "3", "--batch-size", "4", "--device", "cpu", "--report", str(report)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    facts = json.loads(report.read_text())
    assert facts["steps"] == 6 and facts["hyperparameters"]["hidden_channels"] == 8
    # The exported model in eV against the teacher, recomputed independently here.
    from torch_painn import StudentPaiNN
    from evaluate_student import predict
    model = StudentPaiNN.load(str(out), dtype=torch.float64)
    data = TeacherData(str(data_path))
    energies, forces = predict(model, data, data.test, "cpu")
    mine = errors(energies, forces, data, data.test)
    assert abs(mine["energy_rmse_eV"] - facts["test"]["energy_rmse_eV"]) < 1e-9
    assert abs(mine["force_rmse_eV_per_A"] - facts["test"]["force_rmse_eV_per_A"]) < 1e-9
    # mu is folded in: the mean energy error is far below the energies' own scale.
    assert mine["energy_mae_eV"] < 0.5 * abs(np.mean(data.energies))


def test_init_continues_from_an_exported_model(tmp_path):
    """--init unfolds the exported last layer: with a zero learning rate the re-exported model
    computes what the first one did (up to the refitted energy offset and float32 storage)."""
    torch = pytest.importorskip("torch", reason="training needs PyTorch")
    data_path = synthetic_data(tmp_path / "d.npz")
    first, second = tmp_path / "first.mlff.safetensors", tmp_path / "second.mlff.safetensors"
    common = ["--max-steps", "2", "--time-limit", "0", "--eval-every", "1", "--batch-size", "4", "--device", "cpu"]
    script = os.path.join(HERE, "train_student.py")
    for command in ([str(data_path), str(first), "--hidden", "8", "--blocks", "1", "--rbf", "4"],
                    [str(data_path), str(second), "--init", str(first), "--lr", "0"]):
        result = subprocess.run([sys.executable, script] + command + common, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr
    from torch_painn import StudentPaiNN
    from evaluate_student import predict
    data = TeacherData(str(data_path))
    e1, f1 = predict(StudentPaiNN.load(str(first)), data, data.test, "cpu")
    e2, f2 = predict(StudentPaiNN.load(str(second)), data, data.test, "cpu")
    assert np.abs(f1 - f2).max() < 1e-5 * max(1.0, np.abs(f1).max())
    assert np.ptp(e1 - e2) < 1e-4 * max(1.0, np.abs(e1).max())  # a constant shift at most


SYMBOLS = {1: "H", 6: "C", 7: "N", 8: "O"}
# Per held-out frame of testdata/heldout_frames.npz: the largest |dE| (eV) and force RMSE (eV/Å)
# the committed defaults may show against their teacher (docs/distillation.md: held-out RMSEs of
# 0.022/0.028 at 300 K, 0.034/0.042 at 500 K, 0.13/0.16 at 800 K; water 0.04/0.017), with margin.
DEFAULT_LIMITS = {"alanine-dipeptide": {300.0: (0.1, 0.06), 500.0: (0.2, 0.13), 800.0: (0.5, 0.35)},
                  "water": {300.0: (0.15, 0.035), 350.0: (0.15, 0.035), 400.0: (0.15, 0.035)}}


def mlff_eval_path():
    path = os.environ.get("MLFF_EVAL") or (os.environ.get("MLFF_BUILD_DIR") and
                                           os.path.join(os.environ["MLFF_BUILD_DIR"], "tools", "mlff-eval"))
    if not path or not os.access(path, os.X_OK):
        pytest.skip("no mlff-eval binary: set MLFF_EVAL or MLFF_BUILD_DIR")
    return path


@pytest.mark.parametrize("name", sorted(DEFAULT_LIMITS))
def test_default_model_against_its_teacher_through_the_core(name, tmp_path):
    """The committed default, evaluated by the C core (mlff-eval), on held-out teacher frames
    kept in testdata/: its errors stay within the documented accuracy. Needs no torch."""
    import json
    model = os.path.join(os.path.dirname(os.path.dirname(HERE)), "models", f"{name}.mlff.safetensors")
    if not os.path.isfile(model):
        pytest.skip(f"{model} is not there")
    mlff_eval = mlff_eval_path()
    with np.load(os.path.join(HERE, "testdata", "heldout_frames.npz")) as frames:
        z, positions = frames[f"{name}/z"], frames[f"{name}/positions"]
        energies, forces, temperatures = (frames[f"{name}/{k}"] for k in ("energies", "forces", "temperatures"))
        box = frames[f"{name}/box"] if f"{name}/box" in frames.files else None
    for pos, energy, force, temperature in zip(positions, energies, forces, temperatures):
        xyz = tmp_path / "frame.xyz"
        xyz.write_text(f"{len(z)}\nheld-out frame\n" + "".join(
            f"{SYMBOLS[int(a)]} {x!r} {y!r} {w!r}\n" for a, (x, y, w) in zip(z, pos.tolist())))
        command = [mlff_eval, model, str(xyz), "--json"]
        if box is not None:
            command += ["--box"] + [repr(float(v)) for v in box.reshape(-1)]
        result = subprocess.run(command, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        out = json.loads(result.stdout)
        de = abs(out["energy"] - float(energy))
        rmse = float(np.sqrt(np.mean((np.asarray(out["forces"]) - force) ** 2)))
        max_de, max_rmse = DEFAULT_LIMITS[name][float(temperature)]
        assert de <= max_de and rmse <= max_rmse, \
            f"{name} at {temperature:g} K: |dE| {de:.4f} eV (limit {max_de}), force RMSE {rmse:.4f} eV/Å (limit {max_rmse})"
