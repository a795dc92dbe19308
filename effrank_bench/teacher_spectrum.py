"""A trained teacher's spectra: weight ranks of its targeted layers, feature ranks of its branch outputs."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from effrank_bench.errors import ConfigError
from effrank_bench.factorize import resolve_sites
from effrank_bench.records import SpectralEstimates
from effrank_bench.spectrum import (FeatureMeasures, FeatureSpectrum, LayerSummary, WeightMeasures, summarize_layers,
                                    weight_matrices, weight_measures)
from effrank_bench.taps import BranchTap

if TYPE_CHECKING:
    from effrank_bench.setup import RunSetup
    from effrank_bench.teacher import Teacher

#: The energy fraction of feature ranks (per input and pooled).
FEATURE_Q = 0.99
#: The weight measure and the feature measure that stand for a model: medians over its layers.
WEIGHT_ESTIMATE, FEATURE_ESTIMATE = "energy_rank_0.95", "pooled_rank"
# The chunks of a fused projection split in three are its query, key and value maps.
_QKV_NAMES = ("q", "k", "v")


@dataclass(frozen=True)
class NamedWeight:
    """One weight matrix by the path of its layer (``.q``/``.k``/``.v`` or ``[i]`` for a chunk)."""

    name: str
    measures: WeightMeasures


@dataclass(frozen=True)
class NamedFeature:
    """One branch output by the path of the module producing it."""

    name: str
    measures: FeatureMeasures


@dataclass(frozen=True)
class ModelSpectrum:
    """Weight measures of every targeted matrix and feature measures of every branch output, in model order."""

    arch: str
    target: str
    dataset: str
    key: str
    samples: int
    weights: tuple[NamedWeight, ...]
    features: tuple[NamedFeature, ...]
    weight_summary: LayerSummary
    feature_summary: LayerSummary | None  # None: the architecture declares no branches

    @property
    def estimates(self) -> SpectralEstimates:
        feature = self.feature_summary.median[FEATURE_ESTIMATE] if self.feature_summary else None
        return SpectralEstimates(key=self.key, samples=self.samples,
                                 weight_r95=self.weight_summary.median[WEIGHT_ESTIMATE], feature_r99=feature)

    def to_dict(self) -> dict[str, Any]:
        return {
            "estimates": self.estimates.model_dump(),
            "arch": self.arch, "target": self.target, "dataset": self.dataset, "feature_q": FEATURE_Q,
            "weights": [{"name": w.name, **w.measures.to_dict()} for w in self.weights],
            "features": [{"name": f.name, **f.measures.to_dict()} for f in self.features],
            "summary": {"weights": self.weight_summary.to_dict(),
                        "features": self.feature_summary.to_dict() if self.feature_summary else None},
        }


def weight_spectra(setup: RunSetup, model: torch.nn.Module) -> list[NamedWeight]:
    """Every targeted layer's matrices, the chunks of a split projection one by one."""
    named = []
    for site, layer in resolve_sites(model, setup.sites, setup.config.qkv):
        matrices = weight_matrices(layer, site.chunks)
        for i, w in enumerate(matrices):
            suffix = "" if len(matrices) == 1 else f".{_QKV_NAMES[i]}" if len(matrices) == 3 else f"[{i}]"
            named.append(NamedWeight(site.path + suffix, weight_measures(w)))
    return named


@torch.no_grad()
def feature_spectra(setup: RunSetup, model: torch.nn.Module, samples: int) -> list[NamedFeature]:
    """Every branch output's measures on the first ``samples`` test inputs, in batches, in full precision.

    FeatureSpectrum compares each input with the pooled basis of all of them, so the inputs go through
    the model twice rather than having their features kept.
    """
    branches = setup.parts.arch.branches(model)
    if not branches:
        return []
    paths = {id(module): name for name, module in model.named_modules()}
    spectra = [FeatureSpectrum(FEATURE_Q) for _ in branches]
    test = setup.batches(setup.splits.test)
    mode, tap = model.training, BranchTap(branches)
    model.eval()
    try:
        for rotation in (False, True):
            left = samples
            for x, _ in test:
                if left <= 0:
                    break
                outputs = tap.forward(model, x[:left]).features
                left -= min(left, x.shape[0])
                for spectrum, features in zip(spectra, outputs):
                    features = features.flatten(1, -2) if features.dim() > 2 else features[:, None]
                    (spectrum.update_rotation if rotation else spectrum.update)(features)
    finally:
        tap.close()
        model.train(mode)
    return [NamedFeature(paths.get(id(b.module), f"branch {i}"), s.result())
            for i, (b, s) in enumerate(zip(branches, spectra))]


def model_spectrum(setup: RunSetup, teacher: Teacher, samples: int) -> ModelSpectrum:
    """The spectra of ``teacher`` (on the setup's device): its weights, and its features on ``samples`` test inputs."""
    if samples < 1:
        raise ConfigError(f"--samples must be at least 1, got {samples}")
    if len(setup.splits.test) == 0:
        raise ConfigError(f"the {setup.config.dataset} test split is empty: no inputs to measure features on")
    weights = weight_spectra(setup, teacher.model)
    features = feature_spectra(setup, teacher.model, samples)
    c = setup.config
    return ModelSpectrum(
        arch=c.arch, target=c.target, dataset=c.dataset, key=teacher.record.key,
        samples=features[0].measures.inputs if features else min(samples, len(setup.splits.test)),
        weights=tuple(weights), features=tuple(features),
        weight_summary=summarize_layers([w.measures for w in weights]),
        feature_summary=summarize_layers([f.measures for f in features]) if features else None)
