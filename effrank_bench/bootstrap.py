"""Percentile-bootstrap intervals over seeds of the read-offs of a curve, censored at the measured ranks."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from effrank_bench.analysis import CurveAnalysis, finite_vector, make_monotone, read_off
from effrank_bench.errors import AnalysisError

CONFIDENCE = 0.95
ONE_SEED_NOTE = "one seed per rank: nothing to resample, no confidence interval"
# Percentile intervals of a mean of few draws are too narrow (the resamples cannot spread as far
# as the seeds could); below this many seeds per rank the report says so.
FEW_SEEDS = 5
_TAIL = round((1 - CONFIDENCE) / 2, 12)  # 0.025, without the round-off of 1 - 0.95
_PERCENTILES = (100 * _TAIL, 100 * (1 - _TAIL))  # 2.5 and 97.5
# Resampled curves are fitted and read off this many at a time: bounds memory, not the result.
_CHUNK = 250
# Points of the band of fits on each of a linear and a log2 grid (merged with the measured ranks).
_BAND_POINTS = 128


@dataclass(frozen=True)
class Estimate:
    """One read-off quantity: its value on the point curve and a percentile-bootstrap interval.

    ``mean`` is the read-off of the point analysis (None: that curve never reaches the threshold).
    ``ci_low``/``ci_high`` are the 2.5/97.5 percentiles over every resample. A resample whose curve
    never reaches a threshold lies beyond the last measured rank, one that already reaches it at
    the first rank lies at or below the first rank: when more than 2.5% of the resamples lie beyond
    an end (enough for the percentile to touch one), that bound is censored and is that end
    (``ci_high_censored``: "> ci_high", the last rank; ``ci_low_censored``: "≤ ci_low", the first
    rank). ``unreached``/``met_at_first`` are the fractions of resamples beyond the last/first end
    (None for the knee, which always exists).
    """

    mean: float | None
    ci_low: float | None
    ci_high: float | None
    unreached: float | None = None
    ci_low_censored: bool = False
    ci_high_censored: bool = False
    met_at_first: float | None = None

    def to_dict(self) -> dict:
        return {"mean": self.mean, "ci_low": self.ci_low, "ci_high": self.ci_high, "unreached": self.unreached,
                "ci_low_censored": self.ci_low_censored, "ci_high_censored": self.ci_high_censored,
                "met_at_first": self.met_at_first}


@dataclass(frozen=True)
class Band:
    """Pointwise 2.5/97.5 percentile envelope of the resampled fitted curves (normalized accuracy)."""

    ranks: tuple[float, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]

    def to_dict(self) -> dict:
        return {"ranks": list(self.ranks), "low": list(self.low), "high": list(self.high)}


@dataclass(frozen=True)
class Uncertainty:
    """Region and knee of a multi-seed sweep with 95% percentile-bootstrap intervals.

    ``resamples`` is 0 (and every interval and the band None, ``note`` saying why) when no rank has
    more than one seed: there is nothing to resample. With resamples but fewer than
    :data:`FEW_SEEDS` seeds at some rank, ``note`` says the intervals under-cover.
    """

    low: Estimate
    high: Estimate
    knee: Estimate
    thresholds: tuple[float, float]
    knee_axis: str
    resamples: int
    seeds: tuple[int, ...]
    ranks: tuple[float, ...]
    seeds_per_rank: tuple[int, ...]
    rng_seed: int
    band: Band | None
    note: str | None = None
    confidence: float = CONFIDENCE
    monotone: str = "running-max"

    def to_dict(self, band: bool = False) -> dict:
        """JSON-ready; the band of fits (a few hundred points) only when asked for."""
        data = {
            "method": "percentile bootstrap over seeds, resampled independently at every rank",
            "confidence": self.confidence,
            "resamples": self.resamples,
            "rng_seed": self.rng_seed,
            "seeds": list(self.seeds),
            "seeds_per_rank": {f"{rank:g}": n for rank, n in zip(self.ranks, self.seeds_per_rank)},
            "thresholds": list(self.thresholds),
            "knee_axis": self.knee_axis,
            "monotone": self.monotone,
            "low": self.low.to_dict(),
            "high": self.high.to_dict(),
            "knee": self.knee.to_dict(),
            "note": self.note,
        }
        if band:
            data["band"] = self.band.to_dict() if self.band is not None else None
        return data


def bootstrap_curve(
    point: CurveAnalysis,
    ranks: ArrayLike,
    accuracies: ArrayLike,
    seeds: ArrayLike,
    resamples: int = 1000,
    rng_seed: int = 0,
) -> Uncertainty:
    """Percentile-bootstrap intervals of the crossings and the knee of ``point`` over the seeds of each rank.

    ``point`` is :func:`~effrank_bench.analysis.analyze_curve` of the same points: its read-offs
    are the estimates, and its teacher accuracy, thresholds, knee axis and monotone mode are used
    for every resample. Each resample draws, independently at every rank, that rank's seeds with
    replacement (points of one rank and seed are averaged first), averages them, and is made
    monotone, fitted and read off exactly as ``point`` was. Ranks may hold different numbers of
    seeds; a rank with one seed adds no spread. Deterministic given ``rng_seed``. With one seed at
    every rank there is nothing to resample: every interval is None and ``note`` says so.

    No resample is dropped: one that never reaches a threshold counts as beyond the last rank, one
    that reaches it at the first rank as at or below it, and the interval's bound on that side is
    censored once more than 2.5% of resamples lie there (see :class:`Estimate`). The band is the
    pointwise 2.5/97.5 percentile of the resampled fits on a dense grid of ranks.
    """
    if isinstance(resamples, bool) or not isinstance(resamples, int | np.integer) or resamples < 1:
        raise AnalysisError(f"bootstrap resamples must be a positive integer, got {resamples!r}")
    unique_ranks, per_seed, seed_values = _per_seed_means(ranks, accuracies, seeds)
    if unique_ranks.tolist() != list(point.ranks):
        raise AnalysisError("the bootstrap's points are not those of the point analysis: their ranks differ")

    counts = np.array([values.size for values in per_seed])
    thresholds, region = point.region.thresholds, point.region
    common = dict(thresholds=thresholds, knee_axis=point.knee_axis, monotone=point.monotone_mode, seeds=seed_values,
                  ranks=point.ranks, seeds_per_rank=tuple(counts.tolist()), rng_seed=int(rng_seed))
    if counts.max() < 2:
        return Uncertainty(
            low=Estimate(region.low, None, None), high=Estimate(region.high, None, None),
            knee=Estimate(point.knee, None, None), resamples=0, band=None, note=ONE_SEED_NOTE, **common,
        )

    curves = make_monotone(_resampled_means(per_seed, counts, resamples, rng_seed).T / point.teacher_accuracy,
                           counts, point.monotone_mode)  # (ranks, resamples)
    dense = _band_grid(unique_ranks)
    crossings, knees, fits = [], [], []
    for start in range(0, resamples, _CHUNK):
        read = read_off(unique_ranks, curves[:, start:start + _CHUNK], thresholds, point.knee_axis)
        crossings.append(read.crossings)
        knees.append(read.knee)
        fits.append(read.fit(dense))
    (low_ranks, low_sides), (high_ranks, high_sides) = (
        (np.concatenate([c[i][0] for c in crossings]), np.concatenate([c[i][1] for c in crossings])) for i in (0, 1)
    )
    band_low, band_high = np.percentile(np.concatenate(fits, axis=1), _PERCENTILES, axis=1)
    knee_low, knee_high = (float(v) for v in np.percentile(np.concatenate(knees), _PERCENTILES))
    few = int(counts.min())
    note = None if few >= FEW_SEEDS else (
        f"{few} seed(s) at some rank: percentile-bootstrap intervals under-cover with fewer than {FEW_SEEDS} "
        "seeds per rank (too narrow); read them as a lower bound on the uncertainty")
    return Uncertainty(
        low=_crossing_estimate(region.low, low_ranks, low_sides, unique_ranks),
        high=_crossing_estimate(region.high, high_ranks, high_sides, unique_ranks),
        knee=Estimate(point.knee, knee_low, knee_high),
        resamples=int(resamples),
        band=Band(tuple(dense.tolist()), tuple(band_low.tolist()), tuple(band_high.tolist())),
        note=note,
        **common,
    )


def _per_seed_means(
    ranks: ArrayLike, accuracies: ArrayLike, seeds: ArrayLike
) -> tuple[np.ndarray, list[np.ndarray], tuple[int, ...]]:
    """Sorted unique ranks, each rank's per-seed mean accuracies (seed order), and the distinct seeds."""
    rank_array = finite_vector(ranks, "ranks")
    accuracy_array = finite_vector(accuracies, "accuracies")
    seed_array = finite_vector(seeds, "seeds")
    if not rank_array.shape == accuracy_array.shape == seed_array.shape:
        raise AnalysisError(
            f"got {rank_array.size} ranks, {accuracy_array.size} accuracies and {seed_array.size} seeds; "
            "they must pair up"
        )
    if np.any(seed_array != np.round(seed_array)):
        raise AnalysisError("seeds must be integers")
    unique_ranks = np.unique(rank_array)
    per_seed = []
    for rank in unique_ranks:
        at_rank = rank_array == rank
        _, slot = np.unique(seed_array[at_rank], return_inverse=True)
        per_seed.append(np.bincount(slot, weights=accuracy_array[at_rank]) / np.bincount(slot))
    return unique_ranks, per_seed, tuple(int(s) for s in np.unique(seed_array))


def _resampled_means(per_seed: list[np.ndarray], counts: np.ndarray, resamples: int, rng_seed: int) -> np.ndarray:
    """(resamples, ranks): each rank's mean over its seeds drawn with replacement."""
    # Every draw at once (a rank with fewer seeds ignores the surplus columns), so the result
    # does not depend on how the resamples are chunked.
    padded = np.zeros((counts.size, counts.max()))
    for i, values in enumerate(per_seed):
        padded[i, : values.size] = values
    rng = np.random.default_rng(rng_seed)
    draws = np.minimum((rng.random((resamples, *padded.shape)) * counts[:, None]).astype(np.intp),
                       counts[:, None] - 1)
    used = np.arange(padded.shape[1]) < counts[:, None]
    chosen = padded[np.arange(counts.size)[:, None], draws]
    return np.where(used, chosen, 0.0).sum(axis=2) / counts


def _crossing_estimate(point: float | None, ranks: np.ndarray, sides: np.ndarray, measured: np.ndarray) -> Estimate:
    """Percentiles over every resample, a censored one sitting at the measured end it lies beyond.

    A bound is censored, and is that end, as soon as its (linearly interpolated) percentile would
    touch a censored resample: when more than 2.5% of n - 1 of the n resamples lie beyond that end.
    Otherwise the percentile is of crossings alone.
    """
    left, right = int(np.sum(sides < 0)), int(np.sum(sides > 0))
    low, high = (float(v) for v in np.percentile(ranks, _PERCENTILES))
    low_censored, high_censored = (count > _TAIL * (sides.size - 1) for count in (left, right))
    return Estimate(
        mean=point,
        ci_low=float(measured[0]) if low_censored else low,
        ci_high=float(measured[-1]) if high_censored else high,
        unreached=right / sides.size,
        ci_low_censored=low_censored,
        ci_high_censored=high_censored,
        met_at_first=left / sides.size,
    )


def _band_grid(ranks: np.ndarray) -> np.ndarray:
    """Dense ranks for the band: even on both the linear and the log2 axis, plus the measured ranks."""
    first, last = ranks[0], ranks[-1]
    grid = np.concatenate([np.linspace(first, last, _BAND_POINTS), np.geomspace(first, last, _BAND_POINTS), ranks])
    return np.unique(np.clip(grid, first, last))
