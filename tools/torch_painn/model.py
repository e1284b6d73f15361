"""The student PaiNN network in PyTorch, written from docs/student-painn.md of the shared
material: the same parameters (state_dict names), the same forward pass, quirks included.
Energies in eV, positions in Å; forces by autograd."""

import math

import numpy as np
import torch
from torch import nn

from .model_file import read_model_file, write_model_file
from .neighbors import find_edges

NORM_EPSILON = 1e-8  # in n = u / (d + 1e-8), as in the original


class RadialBasis(nn.Module):
    def __init__(self, num_rbf, cutoff):
        super().__init__()
        spacing = cutoff / num_rbf
        self.centers = nn.Parameter(torch.linspace(0.0, cutoff, num_rbf))
        self.widths = nn.Parameter(torch.full((num_rbf,), spacing * math.sqrt(2.0)))
        self.cutoff = cutoff

    def forward(self, d):
        envelope = torch.where(d < self.cutoff, 0.5 * (torch.cos(math.pi * d / self.cutoff) + 1.0), torch.zeros_like(d))
        return torch.exp(-((d[:, None] - self.centers) ** 2) / self.widths ** 2) * envelope[:, None]


class Message(nn.Module):
    def __init__(self, hidden, num_rbf):
        super().__init__()
        self.rbf_to_scalar = nn.Sequential(nn.Linear(num_rbf, hidden), nn.SiLU(), nn.Linear(hidden, 3 * hidden))

    def forward(self, s, v, rbf, direction, receivers, senders):
        w_s, w_v1, w_v2 = torch.chunk(self.rbf_to_scalar(rbf), 3, dim=1)
        ds = s[senders] * w_s
        dv = v[senders] * w_v1[:, None, :] + direction[:, :, None] * w_v2[:, None, :]
        return s.index_add(0, receivers, ds), v.index_add(0, receivers, dv)


class Update(nn.Module):
    def __init__(self, hidden):
        super().__init__()
        self.update_mlp = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.SiLU(), nn.Linear(hidden, 3 * hidden))
        self.mixing_matrix = nn.Parameter(torch.eye(3))

    def forward(self, s, v):
        norms = torch.linalg.vector_norm(v, dim=1)  # no epsilon; its gradient is 0 at v = 0
        a, g1, g2 = torch.chunk(self.update_mlp(torch.cat([s, norms], dim=1)), 3, dim=1)
        mixed = torch.einsum("ab,nbc->nac", self.mixing_matrix, v)
        return s + a, v * g1[:, None, :] + mixed * g2[:, None, :]


class Interaction(nn.Module):
    def __init__(self, hidden, num_rbf):
        super().__init__()
        self.message = Message(hidden, num_rbf)
        self.update = Update(hidden)


class StudentPaiNN(nn.Module):
    def __init__(self, hidden_channels=64, num_blocks=2, num_rbf=12, cutoff=5.0, max_atomic_number=100):
        super().__init__()
        if hidden_channels < 4 or hidden_channels % 4:
            raise ValueError(f"hidden_channels must be a positive multiple of 4, got {hidden_channels}")
        if num_blocks < 1 or num_rbf < 1 or not cutoff > 0:
            raise ValueError("num_blocks and num_rbf must be >= 1 and cutoff > 0")
        H = hidden_channels
        self.cutoff = float(cutoff)
        self.embedding = nn.Embedding(max_atomic_number + 1, H)
        self.rbf = RadialBasis(num_rbf, self.cutoff)
        self.interactions = nn.ModuleList(Interaction(H, num_rbf) for _ in range(num_blocks))
        self.energy_head = nn.Sequential(nn.Linear(H, H // 2), nn.SiLU(), nn.Linear(H // 2, H // 4), nn.SiLU(),
                                         nn.Linear(H // 4, 1))

    @property
    def hyperparameters(self):
        return {"hidden_channels": self.embedding.embedding_dim, "num_blocks": len(self.interactions),
                "num_rbf": self.rbf.centers.shape[0], "cutoff": self.cutoff,
                "max_atomic_number": self.embedding.num_embeddings - 1}

    def atom_energies(self, z, pos, edges):
        """Per-atom energies eps_i; edges = (receivers, senders, shifts) from find_edges."""
        receivers, senders, shifts = edges
        u = pos[senders] - pos[receivers] - shifts
        d = torch.linalg.vector_norm(u, dim=1)
        direction = u / (d[:, None] + NORM_EPSILON)
        rbf = self.rbf(d)
        s = self.embedding(z)
        v = torch.zeros(s.shape[0], 3, s.shape[1], dtype=s.dtype, device=s.device)
        for block in self.interactions:
            s, v = block.message(s, v, rbf, direction, receivers, senders)
            s, v = block.update(s, v)
        return self.energy_head(s)[:, 0]

    def forward(self, z, pos, structure_of_atom=None, num_structures=None, boxes=None, edges=None):
        """Energy of each structure (num_structures). structure_of_atom: sorted structure index
        of each atom (None: one structure); boxes: (num_structures, 3, 3) or (3, 3) Å, or None."""
        if structure_of_atom is None:
            structure_of_atom = torch.zeros(z.shape[0], dtype=torch.long, device=z.device)
            num_structures = 1
        elif num_structures is None:
            num_structures = int(structure_of_atom.max()) + 1 if z.shape[0] else 0
        if boxes is not None and boxes.dim() == 2:
            boxes = boxes.expand(num_structures, 3, 3)
        if edges is None:
            edges = find_edges(pos, structure_of_atom, num_structures, self.cutoff, boxes)
        eps = self.atom_energies(z, pos, edges)
        return torch.zeros(num_structures, dtype=eps.dtype, device=eps.device).index_add(0, structure_of_atom, eps)

    def energy_and_forces(self, z, pos, structure_of_atom=None, num_structures=None, boxes=None, create_graph=False):
        """(energies (num_structures), forces (atoms, 3)) with forces = -dE/dr by autograd."""
        pos = pos.detach().requires_grad_(True)
        energies = self(z, pos, structure_of_atom, num_structures, boxes)
        (gradient,) = torch.autograd.grad(energies.sum(), pos, create_graph=create_graph)
        return energies, -gradient

    # ---- the project's model file

    @classmethod
    def load(cls, path, dtype=torch.float64):
        tensors, metadata = read_model_file(path)
        embedding = tensors["embedding.weight"]
        num_blocks = 0
        while f"interactions.{num_blocks}.message.rbf_to_scalar.0.weight" in tensors:
            num_blocks += 1
        model = cls(hidden_channels=embedding.shape[1], num_blocks=num_blocks, num_rbf=tensors["rbf.centers"].shape[0],
                    cutoff=float(metadata["cutoff"]), max_atomic_number=embedding.shape[0] - 1)
        state = model.state_dict()
        for name in state:
            if name not in tensors:
                if name == f"interactions.{num_blocks - 1}.update.mixing_matrix":
                    continue  # dead in the last block; exports may leave it out
                raise KeyError(f"model file '{path}' has no tensor '{name}'")
            if tuple(tensors[name].shape) != tuple(state[name].shape):
                raise ValueError(f"model file '{path}': tensor '{name}' has shape {list(tensors[name].shape)}, "
                                 f"expected {list(state[name].shape)}")
            state[name] = torch.from_numpy(np.array(tensors[name], dtype=np.float64))
        model.load_state_dict(state)
        return model.to(dtype)

    def save(self, path, dtype=np.float32, extra_metadata=None):
        tensors = {name: value.detach().cpu().double().numpy() for name, value in self.state_dict().items()}
        write_model_file(path, tensors, self.cutoff, dtype, extra_metadata)
