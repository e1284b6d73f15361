"""Neighbour search in torch: every ordered pair (i, j), i != j, of the same structure with
|r_j - r_i| <= cutoff, by minimum image in OpenMM's reduced-form boxes when periodic.

Small structures (the usual training batch, or many replicas of a molecule) are searched by
brute force, all of them at once in a padded (structures, atoms, atoms) block; big ones
(thousands of atoms) with a cell list, one structure at a time. Positions are used
detached: the search returns indices and the periodic image shifts, and the caller builds
differentiable displacements u = r_j - r_i - shift from them.
"""

import itertools

import torch

BRUTE_FORCE_MAX_ATOMS = 512   # per structure; bigger structures use the cell list
PAIR_BLOCK = 1 << 22          # candidate pairs per padded block (memory bound)


def minimum_image_shift(u, box):
    """The lattice vector to subtract from u (..., 3) for its minimum image, the way the C
    core does it: c * round(u_z / c_z), then b, then a. box: (..., 3, 3) rows a, b, c."""
    shift = torch.zeros_like(u)
    w = u.clone()
    for k in (2, 1, 0):
        n = torch.round(w[..., k:k + 1] / box[..., k, k:k + 1])
        step = n * box[..., k, :]
        w = w - step
        shift = shift + step
    return shift


def _brute_force(pos, structure_of_atom, counts, cutoff, boxes):
    """Pairs in many small structures at once. boxes: (structures, 3, 3) or None."""
    num_structures = counts.shape[0]
    nmax = int(counts.max())
    starts = torch.cumsum(counts, 0) - counts
    local = torch.arange(pos.shape[0], device=pos.device) - starts[structure_of_atom]
    table = torch.full((num_structures, nmax), -1, dtype=torch.long, device=pos.device)
    table[structure_of_atom, local] = torch.arange(pos.shape[0], device=pos.device)
    per_block = max(1, PAIR_BLOCK // (nmax * nmax))
    receivers, senders, shifts = [], [], []
    not_self = ~torch.eye(nmax, dtype=torch.bool, device=pos.device)
    for first in range(0, num_structures, per_block):
        atoms = table[first:first + per_block]
        valid = atoms >= 0
        p = pos[atoms.clamp(min=0)]
        u = p[:, None, :, :] - p[:, :, None, :]  # u[s, i, j] = r_j - r_i
        shift = None
        if boxes is not None:
            shift = minimum_image_shift(u, boxes[first:first + per_block, None, None])
            u = u - shift
        mask = (valid[:, :, None] & valid[:, None, :] & not_self) & ((u * u).sum(-1) <= cutoff * cutoff)
        s, i, j = mask.nonzero(as_tuple=True)
        receivers.append(atoms[s, i])
        senders.append(atoms[s, j])
        shifts.append(shift[s, i, j] if shift is not None else torch.zeros(s.shape[0], 3, dtype=pos.dtype, device=pos.device))
    return torch.cat(receivers), torch.cat(senders), torch.cat(shifts)


def _fractional(pos, box):
    s2 = pos[:, 2] / box[2, 2]
    s1 = (pos[:, 1] - s2 * box[2, 1]) / box[1, 1]
    s0 = (pos[:, 0] - s1 * box[1, 0] - s2 * box[2, 0]) / box[0, 0]
    return torch.stack([s0, s1, s2], dim=1)


def _box_heights(box):
    a, b, c = box[0], box[1], box[2]
    volume = torch.abs(torch.dot(a, torch.cross(b, c, dim=0)))
    return torch.stack([volume / torch.linalg.norm(torch.cross(b, c, dim=0)),
                        volume / torch.linalg.norm(torch.cross(c, a, dim=0)), volume / torch.linalg.norm(torch.cross(a, b, dim=0))])


def _cell_list(pos, cutoff, box):
    """Pairs in one big structure (indices local to pos). A pair within the cutoff differs by
    at most one cell along each (fractional) axis, since a cell is at least a cutoff thick."""
    device, n = pos.device, pos.shape[0]
    if box is not None:
        cells = torch.floor(_box_heights(box) / (cutoff * (1.0 + 1e-9))).long()
        if bool((cells < 3).any()):  # neighbour cells would repeat: brute force instead
            counts = torch.tensor([n], device=device)
            return _brute_force(pos, torch.zeros(n, dtype=torch.long, device=device), counts, cutoff, box[None])
        s = _fractional(pos, box)
        index = torch.floor((s - torch.floor(s)) * cells).long()
        index = torch.minimum(index, cells - 1)  # s - floor(s) may round to 1
    else:
        low, high = pos.min(0).values, pos.max(0).values
        edge = cutoff * (1.0 + 1e-9)
        span = (high - low).clamp(min=edge)
        edge = max(edge, float((span.prod() / n) ** (1.0 / 3.0)))  # sparse systems: fewer, bigger cells
        cells = torch.floor(span / edge).long() + 1
        index = torch.floor((pos - low) / edge).long().clamp(min=0)
        index = torch.minimum(index, cells - 1)
    nx, ny, nz = (int(x) for x in cells)
    flat = (index[:, 0] * ny + index[:, 1]) * nz + index[:, 2]
    num_cells = nx * ny * nz
    order = torch.argsort(flat)
    flat_sorted = flat[order]
    per_cell = torch.bincount(flat_sorted, minlength=num_cells)
    cell_start = torch.cumsum(per_cell, 0) - per_cell
    width = int(per_cell.max())
    table = torch.full((num_cells, width), -1, dtype=torch.long, device=device)
    table[flat_sorted, torch.arange(n, device=device) - cell_start[flat_sorted]] = order
    cell_xyz = torch.stack(torch.meshgrid(torch.arange(nx, device=device), torch.arange(ny, device=device),
                                          torch.arange(nz, device=device), indexing="ij"), dim=-1).reshape(-1, 3)
    occupied = per_cell > 0
    home_cells, home = cell_xyz[occupied], table[occupied]
    receivers, senders, shifts = [], [], []
    for offset in itertools.product((-1, 0, 1), repeat=3):
        other = home_cells + torch.tensor(offset, device=device)
        if box is not None:
            other = other % cells
            keep = torch.ones(other.shape[0], dtype=torch.bool, device=device)
        else:
            keep = ((other >= 0) & (other < cells)).all(1)
        other_flat = (other[:, 0] * ny + other[:, 1]) * nz + other[:, 2]
        i_atoms = home[keep][:, :, None].expand(-1, width, width)
        j_atoms = table[other_flat[keep]][:, None, :].expand(-1, width, width)
        valid = (i_atoms >= 0) & (j_atoms >= 0) & (i_atoms != j_atoms)
        i_atoms, j_atoms = i_atoms[valid], j_atoms[valid]
        u = pos[j_atoms] - pos[i_atoms]
        shift = minimum_image_shift(u, box) if box is not None else torch.zeros_like(u)
        u = u - shift
        close = (u * u).sum(-1) <= cutoff * cutoff
        receivers.append(i_atoms[close])
        senders.append(j_atoms[close])
        shifts.append(shift[close])
    return torch.cat(receivers), torch.cat(senders), torch.cat(shifts)


def find_edges(pos, structure_of_atom, num_structures, cutoff, boxes=None):
    """(receivers i, senders j, shifts) of every edge; u_ij = pos[j] - pos[i] - shift.

    pos (atoms, 3); structure_of_atom (atoms) sorted, in [0, num_structures); boxes
    (num_structures, 3, 3) reduced-form rows, or None."""
    pos = pos.detach()
    if pos.shape[0] == 0:
        empty = torch.zeros(0, dtype=torch.long, device=pos.device)
        return empty, empty, torch.zeros(0, 3, dtype=pos.dtype, device=pos.device)
    if boxes is not None:
        boxes = boxes.detach().to(pos.dtype)
        heights = torch.stack([_box_heights(b) for b in boxes]) if num_structures <= 64 else None
        if heights is not None and bool((heights < 2.0 * cutoff * (1.0 - 1e-12)).any()):
            raise ValueError(f"the cutoff {cutoff} Å exceeds half the smallest box height "
                             f"({float(heights.min()) / 2:.4g} Å): minimum image would miss pairs")
    counts = torch.bincount(structure_of_atom, minlength=num_structures)
    if bool((structure_of_atom[1:] < structure_of_atom[:-1]).any()):
        raise ValueError("atoms must be ordered by structure (structure_of_atom sorted)")
    big = counts > BRUTE_FORCE_MAX_ATOMS
    if not bool(big.any()):
        return _brute_force(pos, structure_of_atom, counts, cutoff, boxes)
    receivers, senders, shifts = [], [], []
    starts = (torch.cumsum(counts, 0) - counts).tolist()
    for s, (start, count) in enumerate(zip(starts, counts.tolist())):
        if count == 0:
            continue
        i, j, shift = _cell_list(pos[start:start + count], cutoff, boxes[s] if boxes is not None else None)
        receivers.append(i + start)
        senders.append(j + start)
        shifts.append(shift)
    return torch.cat(receivers), torch.cat(senders), torch.cat(shifts)
