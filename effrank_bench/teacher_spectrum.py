"""A trained teacher's spectra: weight ranks of its targeted layers, feature ranks of its branch outputs; measured
once per teacher and target, and cached beside the teachers."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from rich.markup import escape

from effrank_bench.atomic import atomic_write_text
from effrank_bench.config import digest, file_sha256
from effrank_bench.errors import ConfigError
from effrank_bench.factorize import resolve_sites
from effrank_bench.paths import CACHE_HINT, cache_dir, make_folder
from effrank_bench.progress import NullProgress, Progress
from effrank_bench.records import SpectralEstimates
from effrank_bench.spectrum import (DEFAULT_ENERGY, FeatureMeasures, FeatureSpectrum, LayerSummary, WeightMeasures,
                                    summarize_layers, weight_matrices, weight_measures)
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

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpectrum:
        """The spectrum :meth:`to_dict` wrote."""
        def named(entry: dict[str, Any], measures: Any) -> tuple[str, Any]:
            fields = dict(entry)
            return fields.pop("name"), measures.from_dict(fields)

        summary = data["summary"]
        return cls(
            arch=data["arch"], target=data["target"], dataset=data["dataset"], key=data["estimates"]["key"],
            samples=data["estimates"]["samples"],
            weights=tuple(NamedWeight(*named(w, WeightMeasures)) for w in data["weights"]),
            features=tuple(NamedFeature(*named(f, FeatureMeasures)) for f in data["features"]),
            weight_summary=LayerSummary.from_dict(summary["weights"]),
            feature_summary=LayerSummary.from_dict(summary["features"]) if summary["features"] else None)


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


def _check_samples(setup: RunSetup, samples: int) -> None:
    if samples < 1:
        raise ConfigError(f"--samples must be at least 1, got {samples}")
    if len(setup.splits.test) == 0:
        raise ConfigError(f"the {setup.config.dataset} test split is empty: no inputs to measure features on")


def model_spectrum(setup: RunSetup, teacher: Teacher, samples: int) -> ModelSpectrum:
    """The spectra of ``teacher`` (on the setup's device): its weights, and its features on ``samples`` test inputs."""
    _check_samples(setup, samples)
    weights = weight_spectra(setup, teacher.model)
    features = feature_spectra(setup, teacher.model, samples)
    c = setup.config
    return ModelSpectrum(
        arch=c.arch, target=c.target, dataset=c.dataset, key=teacher.record.key,
        samples=features[0].measures.inputs if features else min(samples, len(setup.splits.test)),
        weights=tuple(weights), features=tuple(features),
        weight_summary=summarize_layers([w.measures for w in weights]),
        feature_summary=summarize_layers([f.measures for f in features]) if features else None)


#: The layout of a cached spectrum and the code that measures it: a change to either changes this, and every
#: entry is measured again.
_CACHE_FORMAT = 1


@dataclass(frozen=True)
class CachedSpectrum:
    """A teacher's spectrum in the shared cache, beside the teachers, under what determines it: the teacher's
    weights (their file's digest: a teacher trained again, or another machine's from a copied run directory,
    is measured anew), the target's layers and how a fused projection is split, the test inputs measured (how
    many, in batches of how many), the device that measured them, and the measures read off."""

    path: Path

    @classmethod
    def of(cls, setup: RunSetup, teacher: Teacher, samples: int) -> CachedSpectrum:
        c = setup.config
        key = digest({"format": _CACHE_FORMAT, "teacher": teacher.record.key, "weights": file_sha256(teacher.weights),
                      "target": c.target, "qkv": c.qkv, "inputs": min(samples, len(setup.splits.test)),
                      "batch_size": c.batch_size, "device": setup.device.type, "feature_q": FEATURE_Q,
                      "energy": DEFAULT_ENERGY})
        return cls(cache_dir() / "spectra" / f"{key}.json")

    def load(self) -> ModelSpectrum | None:
        """The cached spectrum; None where there is none, or where it cannot be read (it is measured again and
        written over)."""
        try:
            return ModelSpectrum.from_dict(json.loads(self.path.read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None

    def save(self, spectrum: ModelSpectrum) -> None:
        """Written whole or not at all; a cache that cannot be written is a ConfigError naming it."""
        make_folder(self.path.parent, CACHE_HINT)
        try:
            atomic_write_text(self.path, json.dumps(spectrum.to_dict(), indent=2))
        except OSError as err:
            raise ConfigError(f"cannot write {self.path}: {err.strerror or err}{CACHE_HINT}") from None


def obtain_spectrum(setup: RunSetup, teacher: Teacher, samples: int,
                    progress: Progress = NullProgress()) -> ModelSpectrum:
    """:func:`model_spectrum`, from the shared cache where this teacher's was measured before for this target
    (by any sweep: another loss, rank grid or run directory), else measured and cached."""
    _check_samples(setup, samples)
    cached = CachedSpectrum.of(setup, teacher, samples)
    if (spectrum := cached.load()) is not None:
        progress.note(f"the teacher's spectrum: from the cache ({cached.path}; delete it to measure it again)")
        return spectrum
    # Its SVDs and two passes take a while on a large model or a busy machine: said before, not after.
    progress.note(f"the teacher's spectrum: its weights, and its features on {min(samples, len(setup.splits.test))} "
                  "test inputs")
    spectrum = model_spectrum(setup, teacher, samples)
    try:
        cached.save(spectrum)
    except ConfigError as err:  # measured all the same: a later sweep measures it again
        progress.note(f"[yellow]the teacher's spectrum is not cached: {escape(str(err))}")
    return spectrum
