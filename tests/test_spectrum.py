"""Weight and feature spectra of effrank_bench.spectrum, checked on matrices with known singular values."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from effrank_bench.errors import ConfigError
from effrank_bench.spectrum import (FeatureSpectrum, principal_angles, summarize_layers, weight_matrices,
                                    weight_measures)


def orthonormal(rows: int, cols: int, generator: torch.Generator) -> torch.Tensor:
    """A rows×cols matrix with orthonormal columns."""
    q, _ = torch.linalg.qr(torch.randn(rows, cols, dtype=torch.float64, generator=generator))
    return q


def planted_rank(inputs: int, tokens: int, channels: int, rank: int, seed: int = 0) -> torch.Tensor:
    """Inputs each exactly rank ``rank`` with equal singular values: each holds 1/rank of the energy."""
    g = torch.Generator().manual_seed(seed)
    return torch.stack([orthonormal(tokens, rank, g) @ orthonormal(channels, rank, g).T for _ in range(inputs)])


def in_subspace(inputs: int, tokens: int, channels: int, dim: int, seed: int = 0) -> torch.Tensor:
    """Token vectors z·Bᵀ with z isotropic Gaussian and B (channels×dim) one fixed orthonormal basis."""
    g = torch.Generator().manual_seed(seed)
    basis = orthonormal(channels, dim, g)
    return torch.randn(inputs, tokens, dim, dtype=torch.float64, generator=g) @ basis.T


# --- weights --------------------------------------------------------------------------------


def test_planted_rank_five_matrix_has_energy_rank_five():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(64, 5, generator=g, dtype=torch.float64) @ torch.randn(5, 48, generator=g, dtype=torch.float64)
    m = weight_measures(w, energy=(0.90, 0.95, 0.99, 0.999999, 1.0))
    assert all(m.energy_ranks[q] <= 5 for q in (0.90, 0.95, 0.99))
    # the 43 round-off singular values (~1e-15 of the top one) do not make it rank 6, even at q = 1
    assert m.energy_ranks[0.999999] == 5
    assert m.energy_ranks[1.0] == 5


def test_planted_rank_survives_float32_storage():
    g = torch.Generator().manual_seed(1)
    w = (torch.randn(64, 5, generator=g) @ torch.randn(5, 48, generator=g)).float()
    assert weight_measures(w, energy=(0.999999,)).energy_ranks[0.999999] == 5


def test_identity_has_every_rank_n():
    m = weight_measures(torch.eye(10), energy=(0.9, 0.95, 0.99))
    assert m.effective_rank == pytest.approx(10, rel=1e-12)
    assert m.stable_rank == pytest.approx(10, rel=1e-12)
    # each direction holds 1/10 of the energy: 9 reach 0.9 exactly, ceil(0.95·10) = 10, ceil(0.99·10) = 10
    assert m.energy_ranks == {0.9: 9, 0.95: 10, 0.99: 10}


def test_rank_one_matrix_has_every_rank_one():
    w = torch.arange(1.0, 7.0)[:, None] * torch.tensor([1.0, -2.0, 0.5, 3.0])[None, :]
    m = weight_measures(w)
    assert m.effective_rank == pytest.approx(1, abs=1e-6)
    assert m.stable_rank == pytest.approx(1, rel=1e-12)
    assert m.energy_ranks == {0.9: 1, 0.95: 1, 0.99: 1}


def test_singular_values_three_and_four():
    m = weight_measures(torch.diag(torch.tensor([3.0, 4.0])))
    assert m.stable_rank == pytest.approx((9 + 16) / 16)  # 1.5625
    assert m.effective_rank == pytest.approx(math.exp(-(3 / 7 * math.log(3 / 7) + 4 / 7 * math.log(4 / 7))))
    # energies 16 and 9 of 25: the top one holds 0.64, below 0.9
    assert m.energy_ranks == {0.9: 2, 0.95: 2, 0.99: 2}


def test_zero_matrix_has_rank_zero():
    m = weight_measures(torch.zeros(4, 3))
    assert (m.effective_rank, m.stable_rank, set(m.energy_ranks.values())) == (0, 0, {0})


def test_fused_qkv_splits_into_three_row_blocks_and_conv_reshapes():
    linear = nn.Linear(8, 24)
    q, k, v = weight_matrices(linear, chunks=3)
    assert q.shape == (8, 8) and torch.equal(v, linear.weight[16:])
    (kernel,) = weight_matrices(nn.Conv2d(3, 16, 3))
    assert kernel.shape == (16, 27)  # out × in·k·k
    with pytest.raises(ConfigError, match="not divisible"):
        weight_matrices(linear, chunks=5)


def test_to_dict_is_json_ready():
    d = weight_measures(torch.eye(3), energy=(0.9,)).to_dict()
    assert d["shape"] == [3, 3] and d["energy_ranks"] == {"0.9": 3}


# --- features -------------------------------------------------------------------------------


def test_exactly_rank_k_inputs_have_per_input_rank_k():
    spectrum = FeatureSpectrum(q=0.99)
    spectrum.update(planted_rank(inputs=6, tokens=20, channels=16, rank=4))
    m = spectrum.result()
    assert (m.input_rank_mean, m.input_rank_std, m.input_rank_min, m.input_rank_max) == (4, 0, 4, 4)


def test_data_in_a_d_dim_subspace_has_pooled_rank_d():
    spectrum = FeatureSpectrum(q=0.99)
    spectrum.update(in_subspace(inputs=16, tokens=64, channels=24, dim=5) + 3.0)  # a mean off zero is removed
    assert spectrum.result().pooled_rank == 5


def test_principal_angle_of_planted_subspaces():
    theta = 0.3
    e1 = torch.tensor([[1.0], [0.0], [0.0]])
    tilted = torch.tensor([[math.cos(theta)], [math.sin(theta)], [0.0]])
    assert principal_angles(e1, tilted).item() == pytest.approx(theta)
    plane = torch.eye(3)[:, :2]
    assert principal_angles(plane, plane).tolist() == [0.0, 0.0]
    # span{e1, e2} and span{e1, e3} share e1 and are at 90° in the other direction
    assert principal_angles(plane, torch.eye(3)[:, [0, 2]]).tolist() == pytest.approx([0, math.pi / 2])


def test_inputs_spanning_the_pooled_subspace_are_not_rotated():
    x = in_subspace(inputs=8, tokens=64, channels=24, dim=4)
    spectrum = FeatureSpectrum(q=0.99)
    spectrum.update(x)
    spectrum.update_rotation(x)
    m = spectrum.result()
    assert m.input_rank_min == 4  # each input's own subspace is the whole 4-dim one
    assert m.rotation_deg == pytest.approx(0, abs=1e-5)


def test_rotation_of_an_input_orthogonal_to_the_top_direction():
    # Tokens ±10·e1 in one input and ±1·e2 in another: zero mean, covariance diag(100, 1, 0, …), so the
    # pooled top-1 direction is e1; with k = 1 the angles are 0° and 90°, their mean 45°.
    signs = torch.tensor([1.0, -1.0] * 4)[:, None]
    x = torch.stack([10 * signs * torch.eye(6)[0], signs * torch.eye(6)[1]])
    spectrum = FeatureSpectrum(k=1)
    spectrum.update(x)
    spectrum.update_rotation(x)
    m = spectrum.result()
    assert m.rotation_deg == pytest.approx(45)
    assert m.rotation_k == 1


def test_streaming_in_batches_of_three_equals_one_batch():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(10, 12, 4, dtype=torch.float64, generator=g) @ torch.randn(4, 9, dtype=torch.float64,
                                                                             generator=g) + 1.5
    whole, streamed = FeatureSpectrum(q=0.9), FeatureSpectrum(q=0.9)
    whole.update(x)
    whole.update_rotation(x)
    for batch in x.split(3):
        streamed.update(batch)
    for batch in x.split(3):
        streamed.update_rotation(batch)
    a, b = whole.result().to_dict(), streamed.result().to_dict()
    assert a.pop("pattern_energy") == pytest.approx(b.pop("pattern_energy"), rel=1e-12)
    # arccos near 1 amplifies float64 round-off to ~1e-8 rad (see principal_angles)
    assert a.pop("rotation_deg") == pytest.approx(b.pop("rotation_deg"), abs=1e-6)
    assert a == b


def test_rotation_pass_must_see_every_input():
    x = in_subspace(inputs=4, tokens=8, channels=6, dim=2)
    spectrum = FeatureSpectrum()
    spectrum.update(x)
    spectrum.update_rotation(x[:2])
    with pytest.raises(ConfigError, match="saw 2 inputs and the first pass 4"):
        spectrum.result()
    with pytest.raises(ConfigError, match="basis is fixed"):
        spectrum.update(x)


def test_flat_spectrum_has_energy_equal_to_bandwidth():
    spectrum = FeatureSpectrum(grid=50)
    spectrum.update(torch.eye(64)[None])  # D′ = 64 equal singular values: d of them hold d/64 of the energy
    m = spectrum.result()
    assert m.pattern_bandwidth[0] == 0.02 and m.pattern_bandwidth[-1] == 1.0
    assert m.pattern_energy == pytest.approx(m.pattern_bandwidth, rel=1e-12)


def test_rank_one_input_holds_all_energy_from_the_first_grid_point():
    spectrum = FeatureSpectrum(grid=50)
    spectrum.update(planted_rank(inputs=2, tokens=64, channels=80, rank=1))  # D′ = 64: first grid point 1/50 > 1/64
    assert spectrum.result().pattern_energy == pytest.approx([1.0] * 50, rel=1e-12)


# --- summaries over layers ------------------------------------------------------------------


def test_summary_is_the_median_and_the_median_per_width():
    layers = [weight_measures(torch.eye(n), energy=(0.99,)) for n in (4, 8, 32)]
    summary = summarize_layers(layers)
    assert summary.median["effective_rank"] == pytest.approx(8)
    assert summary.median["energy_rank_0.99"] == 8  # ceil(0.99·8) = 8
    assert summary.median_per_width["stable_rank"] == pytest.approx(1)
    # ceil(0.99·4)/4 = 1, ceil(0.99·8)/8 = 1, ceil(0.99·32)/32 = 32/32: identities are full rank at every width
    assert summary.median_per_width["energy_rank_0.99"] == 1


def test_feature_summary_does_not_divide_the_angle_by_width():
    layers = []
    for channels in (6, 12):
        x = planted_rank(inputs=3, tokens=16, channels=channels, rank=3)
        spectrum = FeatureSpectrum()
        spectrum.update(x)
        spectrum.update_rotation(x)
        layers.append(spectrum.result())
    summary = summarize_layers(layers)
    assert summary.median["input_rank_mean"] == 3
    assert summary.median_per_width["input_rank_mean"] == pytest.approx((3 / 6 + 3 / 12) / 2)
    assert "rotation_deg" in summary.median and "rotation_deg" not in summary.median_per_width


def test_weights_and_features_are_not_summarized_together():
    x = planted_rank(inputs=2, tokens=4, channels=4, rank=1)
    spectrum = FeatureSpectrum()
    spectrum.update(x)
    with pytest.raises(ConfigError, match="like with like"):
        summarize_layers([weight_measures(torch.eye(3)), spectrum.result()])
