"""Tests of filter_rank.py: its dw/dd against differences of its w, and its fits on filters whose
rank is known by construction."""

import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tools", "torch_painn"))

from filter_rank import block_filters, low_rank_errors, main  # noqa: E402
from model_file import write_model_file  # noqa: E402

H, K, CUTOFF = 8, 6, 5.0


def random_filters(rng, output_rank=None):
    """One block's filter tensors at H = 8, K = 6; W2 of rank output_rank when given."""
    w2 = rng.normal(size=(3 * H, H))
    if output_rank is not None:
        w2 = rng.normal(size=(3 * H, output_rank)) @ rng.normal(size=(output_rank, H))
    return {
        "rbf.centers": np.linspace(0.0, CUTOFF, K),
        "rbf.widths": np.full(K, 0.8),
        "interactions.0.message.rbf_to_scalar.0.weight": rng.normal(size=(H, K)),
        "interactions.0.message.rbf_to_scalar.0.bias": rng.normal(size=H),
        "interactions.0.message.rbf_to_scalar.2.weight": w2,
        "interactions.0.message.rbf_to_scalar.2.bias": rng.normal(size=3 * H),
    }


def test_dw_dd_matches_central_differences_of_w():
    tensors = random_filters(np.random.default_rng(1))
    d = np.linspace(0.3, 4.9, 47)
    step = 1e-6
    _, dw = block_filters(tensors, 0, d, CUTOFF)
    plus, _ = block_filters(tensors, 0, d + step, CUTOFF)
    minus, _ = block_filters(tensors, 0, d - step, CUTOFF)
    assert np.abs(dw - (plus - minus) / (2 * step)).max() < 1e-6 * max(1.0, np.abs(dw).max())


def test_filters_at_and_past_the_cutoff_are_those_of_a_zero_basis():
    tensors = random_filters(np.random.default_rng(2))
    w, dw = block_filters(tensors, 0, np.array([CUTOFF, 6.0]), CUTOFF)
    # From r_c on the basis is 0, and the filter that of e = 0, not 0 (the model's quirk).
    hidden = tensors["interactions.0.message.rbf_to_scalar.0.bias"]
    expected = ((hidden / (1 + np.exp(-hidden))) @ tensors["interactions.0.message.rbf_to_scalar.2.weight"].T +
                tensors["interactions.0.message.rbf_to_scalar.2.bias"])
    assert np.allclose(w, expected[None, :], rtol=0, atol=1e-12)
    assert np.abs(dw[1]).max() == 0


def test_filters_of_rank_r_fit_exactly_with_r_functions_and_not_with_fewer():
    rank = 3
    tensors = random_filters(np.random.default_rng(3), output_rank=rank)
    w, dw = block_filters(tensors, 0, np.linspace(0.0, CUTOFF, 2001), CUTOFF)
    errors = {m: (w_error, dw_error) for m, w_error, dw_error in low_rank_errors(w, dw, [rank - 1, rank, rank + 2])}
    scale = np.abs(w).max()
    assert errors[rank][0] < 1e-10 * scale and errors[rank][1] < 1e-10 * np.abs(dw).max()
    assert errors[rank + 2][0] < 1e-10 * scale
    assert errors[rank - 1][0] > 1e-3 * scale


def test_main_prints_each_block_and_each_m(tmp_path, capsys):
    rng = np.random.default_rng(4)
    tensors = random_filters(rng)
    second = random_filters(rng)
    for name, value in second.items():
        if name.startswith("interactions.0."):
            tensors[name.replace("interactions.0.", "interactions.1.")] = value
    path = tmp_path / "filters.mlff.safetensors"
    write_model_file(str(path), tensors, CUTOFF)
    main([str(path), "--samples", "501", "--modes", "2,4"])
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines if line.startswith("block")] == ["block 0", "block 1"]
    assert sum("M =   2" in line for line in lines) == 2 and sum("M =   4" in line for line in lines) == 2
