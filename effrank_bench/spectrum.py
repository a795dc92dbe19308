"""Spectra of a model without training: weight and feature ranks."""
from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from effrank_bench.errors import ConfigError
from effrank_bench.factorize import Factorizable

#: Energy fractions at which weight energy ranks are read off.
DEFAULT_ENERGY = (0.90, 0.95, 0.99)
# A spectrum whose tail holds less than this fraction of the energy has reached q: the tail of an
# exactly rank-k matrix stored in float32 holds about 1e-13 of it, which must not count as rank k+1.
_ENERGY_RTOL = 1e-10
# Measures that do not grow with a layer's width: summaries do not divide them by it.
_SCALE_FREE = frozenset({"rotation_deg"})


def _check_fraction(q: float) -> None:
    if not 0 < q <= 1:
        raise ConfigError(f"energy fraction {q} is not in (0, 1]")


def energy_rank(energies: Tensor, q: float) -> Tensor:
    """Smallest k with e_1 + … + e_k ≥ q·Σe, per row of ``energies`` (…, D), sorted descending, ≥ 0.

    Energies are squared singular values or covariance eigenvalues; a row of zeros has rank 0.
    """
    _check_fraction(q)
    cumulative = energies.double().cumsum(-1)
    total = cumulative[..., -1:]
    short = (cumulative < (q - _ENERGY_RTOL) * total).sum(-1)
    return torch.where(total[..., 0] > 0, short + 1, 0)


def effective_rank(s: Tensor) -> Tensor:
    """Roy–Vetterli effective rank exp(H(p)), p = s / Σs, per row of singular values (…, D); 0 for zeros.

    H is the Shannon entropy in nats with 0·log 0 = 0, so k equal singular values give exactly k.
    """
    s = s.double()
    total = s.sum(-1, keepdim=True)
    p = torch.where(total > 0, s / total, 0.0)
    entropy = -torch.xlogy(p, p).sum(-1)
    return torch.where(total[..., 0] > 0, entropy.exp(), 0.0)


def stable_rank(s: Tensor) -> Tensor:
    """‖W‖_F² / ‖W‖₂² = Σs² / max(s)², per row of singular values (…, D); 0 for zeros."""
    s = s.double()
    top = s.amax(-1)
    return torch.where(top > 0, s.square().sum(-1) / top.square(), 0.0)


def principal_angles(a: Tensor, b: Tensor) -> Tensor:
    """Principal angles in radians, ascending, between the column spans of ``a`` (…, C, k₁) and ``b`` (C, k₂).

    Both must have orthonormal columns; the cosines are the singular values of aᵀb, clipped to [0, 1]
    because round-off can push a cosine of two equal subspaces just above 1. arccos near 1 turns a
    float64 round-off of 1e-16 into an angle of about 1e-8 rad: small angles are good to that much.
    """
    cosines = torch.linalg.svdvals(a.double().mT @ b.double())
    return cosines.clamp(0.0, 1.0).arccos()


def weight_matrices(layer: Factorizable, chunks: int = 1) -> list[Tensor]:
    """The 2-D matrices whose spectra describe ``layer``: a Linear's weight split into ``chunks`` equal row
    blocks (3 for a fused qkv), or a Conv2d's kernel reshaped to out × in·k·k."""
    weight = layer.weight.detach()
    if isinstance(layer, nn.Conv2d):
        if chunks != 1:
            raise ConfigError(f"a Conv2d kernel is one matrix; cannot split it into {chunks} chunks")
        return [weight.flatten(1)]
    if chunks < 1 or layer.out_features % chunks:
        raise ConfigError(f"out_features {layer.out_features} is not divisible into {chunks} chunks")
    return list(weight.chunk(chunks))


@dataclass(frozen=True)
class WeightMeasures:
    """Rank measures of one weight matrix; a zero matrix has every rank 0."""

    shape: tuple[int, int]
    effective_rank: float
    stable_rank: float
    energy_ranks: dict[float, int]  # energy fraction q -> smallest k holding q of Σs²

    @property
    def width(self) -> int:
        """The largest rank the matrix can have, min(out, in)."""
        return min(self.shape)

    def values(self) -> dict[str, float]:
        """Every scalar measure by name, as summarized over layers."""
        ranks = {f"energy_rank_{q:g}": float(k) for q, k in self.energy_ranks.items()}
        return {"effective_rank": self.effective_rank, "stable_rank": self.stable_rank, **ranks}

    def to_dict(self) -> dict[str, Any]:
        return {"shape": list(self.shape), "effective_rank": self.effective_rank, "stable_rank": self.stable_rank,
                "energy_ranks": {f"{q:g}": k for q, k in self.energy_ranks.items()}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WeightMeasures:
        """The measures :meth:`to_dict` wrote."""
        return cls(shape=tuple(data["shape"]), effective_rank=data["effective_rank"],
                   stable_rank=data["stable_rank"], energy_ranks={float(q): k for q, k in data["energy_ranks"].items()})


def weight_measures(w: Tensor, energy: Sequence[float] = DEFAULT_ENERGY) -> WeightMeasures:
    """Effective, stable and energy ranks of the 2-D ``w`` from its singular values in float64."""
    if w.dim() != 2:
        raise ConfigError(f"weight measures need a 2-D matrix, got shape {tuple(w.shape)}; "
                          "use weight_matrices() for a conv kernel or a fused projection")
    s = torch.linalg.svdvals(w.detach().double())
    energies = s.square()
    return WeightMeasures(shape=(w.shape[0], w.shape[1]), effective_rank=effective_rank(s).item(),
                          stable_rank=stable_rank(s).item(),
                          energy_ranks={q: int(energy_rank(energies, q)) for q in energy})


@dataclass(frozen=True)
class FeatureMeasures:
    """Rank measures of one layer's features over a data set of ``inputs`` T×C matrices.

    ``input_rank_*``: each input's rank at energy ``q`` (singular values of the uncentered matrix;
    std over inputs with ddof 0). ``pooled_rank``: rank at ``q`` of the PCA (centered covariance) of all
    token vectors. ``rotation_deg``: mean over inputs of the mean principal angle, in degrees, between
    an input's top-k right-singular subspace and the pooled top-k PCA subspace, k being ``rotation_k``
    or, when that is None, the input's own rank at ``q``; None without a rotation pass. The energy
    pattern: mean cumulative energy fraction of an input's singular values against bandwidth d/D′,
    D′ = min(T, C), linearly interpolated at d/D′ = 1/grid, 2/grid, …, 1. All-zero inputs are left out
    of the pattern and the rotation (zeros and None when every input is zero).
    """

    inputs: int
    channels: int
    q: float
    input_rank_mean: float
    input_rank_std: float
    input_rank_min: int
    input_rank_max: int
    pooled_rank: int
    rotation_deg: float | None
    rotation_k: int | None
    pattern_bandwidth: tuple[float, ...]
    pattern_energy: tuple[float, ...]

    @property
    def width(self) -> int:
        """The channel count C, the largest rank a token vector set can have."""
        return self.channels

    def values(self) -> dict[str, float]:
        """Every scalar measure by name, as summarized over layers (no rotation without a rotation pass)."""
        values = {"input_rank_mean": self.input_rank_mean, "input_rank_std": self.input_rank_std,
                  "input_rank_min": float(self.input_rank_min), "input_rank_max": float(self.input_rank_max),
                  "pooled_rank": float(self.pooled_rank)}
        if self.rotation_deg is not None:
            values["rotation_deg"] = self.rotation_deg
        return values

    def to_dict(self) -> dict[str, Any]:
        return {"inputs": self.inputs, "channels": self.channels, "q": self.q,
                "input_rank_mean": self.input_rank_mean, "input_rank_std": self.input_rank_std,
                "input_rank_min": self.input_rank_min, "input_rank_max": self.input_rank_max,
                "pooled_rank": self.pooled_rank, "rotation_deg": self.rotation_deg, "rotation_k": self.rotation_k,
                "pattern_bandwidth": list(self.pattern_bandwidth), "pattern_energy": list(self.pattern_energy)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureMeasures:
        """The measures :meth:`to_dict` wrote."""
        return cls(**{**data, "pattern_bandwidth": tuple(data["pattern_bandwidth"]),
                      "pattern_energy": tuple(data["pattern_energy"])})


class FeatureSpectrum:
    """Feature measures of one layer, fed in batches of (B inputs, T tokens, C channels); C fixed, T may vary.

    Two passes over the same inputs, so no input is kept after its batch:

    1. ``update(x)`` for every batch: each input's rank at ``q`` and energy pattern, and the running
       mean and scatter matrix (C×C, float64, merged batch by batch as Chan et al. do) of the token vectors.
    2. Optionally ``update_rotation(x)`` for every batch again: the pooled PCA basis is fixed at the first
       call, and each input's top-k right-singular subspace is compared with its top-k columns.

    ``result()`` then gives :class:`FeatureMeasures`, with ``rotation_deg`` None when pass 2 did not run.
    An all-zero input counts with rank 0 but is left out of the energy pattern and the rotation, where
    its fractions and subspace are undefined. Work runs on the batches' device, in float64.
    """

    def __init__(self, q: float = 0.99, *, grid: int = 50, k: int | None = None):
        _check_fraction(q)
        if grid < 1:
            raise ConfigError(f"the energy pattern needs at least one grid point, got {grid}")
        if k is not None and k < 1:
            raise ConfigError(f"the rotation's fixed k must be positive, got {k}")
        self.q, self.grid, self.k = q, grid, k
        self._channels: int | None = None
        self._ranks: list[int] = []
        self._pattern_sum: Tensor | None = None
        self._pattern_inputs = 0
        self._tokens = 0
        self._mean: Tensor | None = None
        self._scatter: Tensor | None = None
        self._basis: Tensor | None = None
        self._rotation_seen = 0
        self._rotation_inputs = 0
        self._rotation_sum = 0.0

    def _batch(self, x: Tensor) -> Tensor:
        if x.dim() != 3 or 0 in x.shape:
            raise ConfigError(f"features must be a non-empty (inputs, tokens, channels) tensor, got {tuple(x.shape)}")
        if self._channels is None:
            self._channels = x.shape[-1]
        elif x.shape[-1] != self._channels:
            raise ConfigError(f"features have {x.shape[-1]} channels; earlier batches had {self._channels}")
        return x.detach().double()

    def update(self, x: Tensor) -> None:
        """Pass 1: add a batch of B inputs, each a T×C feature matrix."""
        if self._basis is not None:
            raise ConfigError("update() after update_rotation(): the pooled basis is fixed once the rotation "
                              "pass starts")
        x = self._batch(x)
        energies = torch.linalg.svdvals(x).square()
        self._ranks += energy_rank(energies, self.q).tolist()
        self._add_pattern(energies)
        self._add_tokens(x.flatten(0, 1))

    def _add_pattern(self, energies: Tensor) -> None:
        total = energies.sum(-1, keepdim=True)
        kept = total[:, 0] > 0
        # Cumulative fraction at d = 0, 1, …, D′ components, i.e. at bandwidth d/D′ on a uniform grid.
        cumulative = torch.cat([torch.zeros_like(total), energies.cumsum(-1)], -1)[kept] / total[kept]
        components = energies.shape[-1]
        at = torch.arange(1, self.grid + 1, dtype=torch.float64, device=energies.device) * (components / self.grid)
        left = at.floor().long().clamp(max=components - 1)
        step = at - left
        curves = cumulative[:, left] * (1 - step) + cumulative[:, left + 1] * step
        self._pattern_sum = curves.sum(0) if self._pattern_sum is None else self._pattern_sum + curves.sum(0)
        self._pattern_inputs += int(kept.sum())

    def _add_tokens(self, tokens: Tensor) -> None:
        if self._mean is None:
            self._mean = tokens.new_zeros(tokens.shape[-1])
            self._scatter = tokens.new_zeros(tokens.shape[-1], tokens.shape[-1])
        count = tokens.shape[0]
        mean = tokens.mean(0)
        centered = tokens - mean
        # Merging centered scatters keeps the precision a raw Σxxᵀ − nμμᵀ loses when the mean is large.
        delta = mean - self._mean
        merged = self._tokens + count
        self._mean = self._mean + delta * (count / merged)
        self._scatter = self._scatter + centered.mT @ centered + delta.outer(delta) * (self._tokens * count / merged)
        self._tokens = merged

    def update_rotation(self, x: Tensor) -> None:
        """Pass 2: compare each input of a batch with the pooled PCA subspace of pass 1."""
        if not self._ranks:
            raise ConfigError("update_rotation() before update(): the pooled basis comes from the first pass")
        x = self._batch(x)
        if self._basis is None:
            self._basis = torch.linalg.eigh(self._scatter).eigenvectors.flip(-1)
        _, s, vh = torch.linalg.svd(x, full_matrices=False)
        if self.k is None:
            ks = energy_rank(s.square(), self.q)
        else:
            ks = torch.where(s[:, 0] > 0, min(self.k, s.shape[-1]), 0)
        self._rotation_seen += x.shape[0]
        for k in ks.unique().tolist():
            if k == 0:
                continue
            rows = ks == k
            angles = principal_angles(vh[rows, :k].mT, self._basis[:, :k])
            self._rotation_sum += angles.mean(-1).sum().item()
            self._rotation_inputs += int(rows.sum())

    def result(self) -> FeatureMeasures:
        """The measures of every input fed so far."""
        if not self._ranks:
            raise ConfigError("no features to measure: call update() with at least one batch")
        if self._rotation_seen and self._rotation_seen != len(self._ranks):
            raise ConfigError(f"the rotation pass saw {self._rotation_seen} inputs and the first pass "
                              f"{len(self._ranks)}: feed both passes the same inputs")
        ranks = torch.tensor(self._ranks, dtype=torch.float64)
        variances = torch.linalg.eigvalsh(self._scatter).flip(-1).clamp_min(0)
        pattern = self._pattern_sum / max(self._pattern_inputs, 1)
        rotation = (math.degrees(self._rotation_sum / self._rotation_inputs) if self._rotation_inputs else None)
        return FeatureMeasures(
            inputs=len(self._ranks), channels=self._channels, q=self.q,
            input_rank_mean=ranks.mean().item(), input_rank_std=ranks.std(correction=0).item(),
            input_rank_min=min(self._ranks), input_rank_max=max(self._ranks),
            pooled_rank=int(energy_rank(variances, self.q)), rotation_deg=rotation, rotation_k=self.k,
            pattern_bandwidth=tuple(i / self.grid for i in range(1, self.grid + 1)),
            pattern_energy=tuple(pattern.tolist()))


@dataclass(frozen=True)
class LayerSummary:
    """Medians over layers of each measure, and of each rank measure divided by its layer's width."""

    layers: int
    median: dict[str, float]
    median_per_width: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {"layers": self.layers, "median": dict(self.median), "median_per_width": dict(self.median_per_width)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LayerSummary:
        """The summary :meth:`to_dict` wrote."""
        return cls(layers=data["layers"], median=dict(data["median"]), median_per_width=dict(data["median_per_width"]))


def summarize_layers(layers: Sequence[WeightMeasures] | Sequence[FeatureMeasures]) -> LayerSummary:
    """Summarize like with like: every layer must report the same measures (weights or features, not both).

    Dividing by the width (min(out, in) for a weight, C for features) lets models of different widths be
    compared; an angle does not grow with width and is not divided.
    """
    if not layers:
        raise ConfigError("no layers to summarize")
    values = [layer.values() for layer in layers]
    names = list(values[0])
    if any(list(v) != names for v in values):
        raise ConfigError("layers report different measures (weights mixed with features, or a rotation pass "
                          "missing for some): summarize like with like")
    return LayerSummary(
        layers=len(layers),
        median={name: float(statistics.median(v[name] for v in values)) for name in names},
        median_per_width={name: float(statistics.median(v[name] / layer.width for v, layer in zip(values, layers)))
                          for name in names if name not in _SCALE_FREE})
