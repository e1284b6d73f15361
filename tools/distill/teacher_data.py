"""Teacher data sets (.npz from generate_teacher_data.py): loading, the train/validation/test
split and batching for torch.

The split is by trajectory time, per temperature: the last 10 % of each temperature's frames
are the held-out test set, the 5 % before them the validation set (model selection), the
rest training. Test frames are thus later in time than every training frame, not
interleaved with them."""

import numpy as np

TEST_FRACTION = 0.10
VALIDATION_FRACTION = 0.05


class TeacherData:
    def __init__(self, path):
        with np.load(path, allow_pickle=False) as data:
            self.path = path
            self.z = data["z"].astype(np.int64)
            self.positions = data["positions"].astype(np.float64)
            self.forces = data["forces"].astype(np.float64)
            self.energies = data["energies"].astype(np.float64)
            self.temperatures = data["temperatures"].astype(np.float64)
            self.box = data["box"].astype(np.float64) if "box" in data else None
            self.teacher = str(data["teacher"]) if "teacher" in data else "unknown"
        frames, atoms = self.positions.shape[:2]
        if self.z.shape != (atoms,) or self.forces.shape != (frames, atoms, 3) or self.energies.shape != (frames,):
            raise ValueError(f"{path}: inconsistent shapes z {self.z.shape}, positions {self.positions.shape}, "
                             f"forces {self.forces.shape}, energies {self.energies.shape}")
        self.train, self.validation, self.test = self._split()

    @property
    def num_atoms(self):
        return self.z.shape[0]

    def _split(self):
        train, validation, test = [], [], []
        for temperature in np.unique(self.temperatures):
            frames = np.flatnonzero(self.temperatures == temperature)  # in trajectory order
            n_test = max(1, int(round(TEST_FRACTION * len(frames))))
            n_validation = max(1, int(round(VALIDATION_FRACTION * len(frames))))
            if len(frames) < n_test + n_validation + 1:
                raise ValueError(f"{self.path}: only {len(frames)} frames at {temperature} K, too few to split")
            train.append(frames[:len(frames) - n_test - n_validation])
            validation.append(frames[len(frames) - n_test - n_validation:len(frames) - n_test])
            test.append(frames[len(frames) - n_test:])
        return np.concatenate(train), np.concatenate(validation), np.concatenate(test)

    def batch(self, frames, device, dtype):
        """z, positions, structure_of_atom, boxes, energies, forces of the given frames, as
        one flat batch of len(frames) structures. The whole data set is copied to the device
        once (a few MB) and batches are gathered there."""
        import torch
        device = torch.device(device)
        key = (str(device), dtype)
        if getattr(self, "_cached_key", None) != key:
            self._cached_key = key
            self._cached = {"z": torch.from_numpy(self.z).to(device),
                            "positions": torch.from_numpy(self.positions).to(device, dtype),
                            "energies": torch.from_numpy(self.energies).to(device, dtype),
                            "forces": torch.from_numpy(self.forces).to(device, dtype),
                            "box": None if self.box is None else torch.from_numpy(self.box).to(device, dtype)}
        cached = self._cached
        index = torch.as_tensor(np.asarray(frames, dtype=np.int64), device=device)
        count, n = index.shape[0], self.num_atoms
        z = cached["z"].repeat(count)
        pos = cached["positions"][index].reshape(-1, 3)
        structure_of_atom = torch.arange(count, device=device).repeat_interleave(n)
        boxes = None if cached["box"] is None else cached["box"].expand(count, 3, 3)
        return z, pos, structure_of_atom, boxes, cached["energies"][index], cached["forces"][index].reshape(-1, 3)


def errors(predicted_energies, predicted_forces, data, frames):
    """Energy and force errors against the teacher on the given frames (numpy, eV and eV/Å)."""
    de = predicted_energies - data.energies[frames]
    df = predicted_forces.reshape(len(frames), -1, 3) - data.forces[frames]
    return {"frames": int(len(frames)), "energy_rmse_eV": float(np.sqrt(np.mean(de ** 2))),
            "energy_rmse_meV_per_atom": float(1000.0 * np.sqrt(np.mean(de ** 2)) / data.num_atoms),
            "energy_mae_eV": float(np.mean(np.abs(de))),
            "force_rmse_eV_per_A": float(np.sqrt(np.mean(df ** 2))), "force_mae_eV_per_A": float(np.mean(np.abs(df))),
            "teacher_force_rms_eV_per_A": float(np.sqrt(np.mean(data.forces[frames] ** 2))),
            "teacher_energy_std_eV": float(np.std(data.energies[frames]))}
