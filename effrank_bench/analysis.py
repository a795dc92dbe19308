"""Reads the effective-rank region and knee off an accuracy-vs-rank curve, with a bootstrap over seeds."""
from __future__ import annotations

import csv
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TextIO

import numpy as np
from numpy.typing import ArrayLike
from scipy.interpolate import PchipInterpolator
from scipy.optimize import brentq, minimize_scalar

from effrank_bench.errors import AnalysisError

KNEE_AXES = ("linear", "log2")

# Dense enough that the bounded refinement only has to polish, never to search.
_KNEE_GRID_POINTS = 4097
# A curve whose largest deviation from its secant is below this fraction of its rise is
# treated as straight: what is left is round-off, and its argmax would be noise.
_STRAIGHT_RTOL = 1e-9
# Solver round-off must not push a crossing at an integer rank to the next band slot.
_CEIL_TOL = 1e-9

CONFIDENCE = 0.95
ONE_SEED_NOTE = "one seed per rank: nothing to resample, no confidence interval"
_PERCENTILES = (100 * (1 - CONFIDENCE) / 2, 100 * (1 + CONFIDENCE) / 2)  # 2.5 and 97.5
# Bisection halves a crossing's bracket per step; 64 steps reach the float resolution of any rank.
_BISECT_STEPS = 64
# Golden section shrinks the knee's bracket (two grid cells) by 0.618 per step: 60 steps, about 1e-12.
_GOLDEN_STEPS = 60
# Resampled curves are fitted and read off this many at a time: bounds memory, not the result.
_CHUNK = 250
# Points of the band of fits on each of a linear and a log2 grid (merged with the measured ranks).
_BAND_POINTS = 128


@dataclass(frozen=True)
class Region:
    """Where the fitted curve first reaches each of two thresholds (ranks on the real axis).

    ``low``/``high`` are None when the curve never reaches ``thresholds[0]``/``thresholds[1]``;
    ``band`` is ``(ceil(low), ceil(high))``, the smallest integer ranks that reach them, or None
    when either crossing is missing.
    """

    low: float | None
    high: float | None
    band: tuple[int, int] | None
    thresholds: tuple[float, float]


@dataclass(frozen=True)
class CurveAnalysis:
    """An analysed accuracy-vs-rank curve.

    ``normalized`` is accuracy / teacher accuracy as measured (duplicates of a rank averaged);
    ``monotone`` is its running max, which is what the PCHIP fit goes through.
    """

    ranks: tuple[float, ...]
    normalized: tuple[float, ...]
    monotone: tuple[float, ...]
    teacher_accuracy: float
    region: Region
    knee: float
    knee_axis: str

    def fit(self, ranks: ArrayLike) -> np.ndarray:
        """Evaluate the PCHIP fit (linear rank axis) at ``ranks``; NaN outside the measured range.

        No extrapolation: beyond the measured ranks a cubic says nothing trustworthy.
        """
        return _pchip(self.ranks, self.monotone)(np.asarray(ranks, dtype=float))

    def to_dict(self) -> dict:
        """A JSON-ready summary: teacher accuracy, region, knee and the measured points."""
        region = self.region
        return {
            "teacher_accuracy": self.teacher_accuracy,
            "region": {
                "low": region.low,
                "high": region.high,
                "band": list(region.band) if region.band is not None else None,
                "thresholds": list(region.thresholds),
            },
            "knee": self.knee,
            "knee_axis": self.knee_axis,
            "points": [
                {"rank": rank, "normalized": value}
                for rank, value in zip(self.ranks, self.normalized)
            ],
        }


def analyze_curve(
    ranks: ArrayLike,
    accuracies: ArrayLike,
    teacher_accuracy: float,
    thresholds: Sequence[float] = (0.85, 0.95),
    knee_axis: str = "linear",
) -> CurveAnalysis:
    """Fit a monotone curve to accuracy-vs-rank points and read the region and knee off it.

    Accuracies are divided by ``teacher_accuracy`` (any units, as long as both agree), points
    sharing a rank are averaged, and the result is made non-decreasing with a running max: a
    student that once reached an accuracy at some rank shows that accuracy is reachable at every
    larger rank, so a dip is fitted as if measured at the running max and an early spike counts
    from its rank on.
    The running max is fitted with PCHIP on the linear rank axis, which stays monotone.

    Crossings are where the fit first reaches each threshold, solved exactly inside the first
    data interval that reaches it; a threshold reached by the first point crosses at the first
    rank (no extrapolation below it).

    The knee is the rank maximizing the distance between the fit and its secant through the
    two end points, with rank or ``log2(rank)`` as horizontal coordinate (``knee_axis``). When
    the points carry no bend (fewer than three distinct ranks, or a fit that coincides with its
    secant), the knee is the first rank where the fit reaches its maximum: the last rank for a
    rising straight line (it never stopped paying off), the first rank for a flat one.
    """
    teacher = _positive_number(teacher_accuracy, "teacher accuracy")
    rank_values, normalized = _normalized_points(ranks, accuracies, teacher)
    threshold_pair = _validate_thresholds(thresholds)
    if knee_axis not in KNEE_AXES:
        raise AnalysisError(f"knee axis must be one of {', '.join(KNEE_AXES)}, got {knee_axis!r}")

    monotone = np.maximum.accumulate(normalized)
    fit = _pchip(rank_values, monotone)
    low, high = (_crossing(rank_values, monotone, fit, t) for t in threshold_pair)
    band = (_ceil_rank(low), _ceil_rank(high)) if low is not None and high is not None else None
    return CurveAnalysis(
        ranks=tuple(rank_values.tolist()),
        normalized=tuple(normalized.tolist()),
        monotone=tuple(monotone.tolist()),
        teacher_accuracy=teacher,
        region=Region(low=low, high=high, band=band, thresholds=threshold_pair),
        knee=_knee(rank_values, monotone, fit, knee_axis),
        knee_axis=knee_axis,
    )


def read_curve_csv(path: str | os.PathLike[str]) -> tuple[list[float], list[float]]:
    """Read the ``rank`` and ``accuracy`` columns of a CSV file with a header row.

    Other columns are ignored, whitespace around names and values is tolerated, blank lines are
    skipped. Every problem raises AnalysisError naming the file (and the line for bad values).
    """
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            return _read_curve_rows(handle, str(path))
    except FileNotFoundError:
        raise AnalysisError(f"{path}: curve file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise AnalysisError(f"{path}: cannot read curve file ({error})") from None


def parse_thresholds(text: str) -> tuple[float, float]:
    """Parse ``"0.8,0.9"`` into ``(0.8, 0.9)``; needs two numbers with ``0 < t0 < t1``.

    No upper bound: a threshold above 1 asks for a student that beats its teacher, which can
    happen and can be asked about.
    """
    parts = [part.strip() for part in text.split(",")]
    if len(parts) != 2:
        raise AnalysisError(f"thresholds must be two comma-separated numbers like 0.85,0.95, got {text!r}")
    try:
        values = (float(parts[0]), float(parts[1]))
    except ValueError:
        raise AnalysisError(f"thresholds must be numbers like 0.85,0.95, got {text!r}") from None
    return _validate_thresholds(values)


def _read_curve_rows(handle: TextIO, path: str) -> tuple[list[float], list[float]]:
    reader = csv.reader(handle)
    header = next(reader, None)
    if header is None:
        raise AnalysisError(f"{path}: file is empty, expected a header with columns 'rank' and 'accuracy'")
    names = [name.strip() for name in header]
    columns = {}
    for wanted in ("rank", "accuracy"):
        if wanted not in names:
            raise AnalysisError(f"{path}: missing column {wanted!r} (header has: {', '.join(names)})")
        columns[wanted] = names.index(wanted)

    ranks: list[float] = []
    accuracies: list[float] = []
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue
        ranks.append(_cell_value(row, columns["rank"], "rank", path, reader.line_num))
        accuracies.append(_cell_value(row, columns["accuracy"], "accuracy", path, reader.line_num))
    if len(ranks) < 2:
        raise AnalysisError(f"{path}: has {len(ranks)} data row(s), a curve needs at least 2")
    return ranks, accuracies


def _cell_value(row: list[str], index: int, column: str, path: str, line: int) -> float:
    if index >= len(row) or not row[index].strip():
        raise AnalysisError(f"{path}, line {line}: missing {column!r} value")
    text = row[index].strip()
    try:
        value = float(text)
    except ValueError:
        raise AnalysisError(f"{path}, line {line}: {column!r} value {text!r} is not a number") from None
    if not math.isfinite(value):
        raise AnalysisError(f"{path}, line {line}: {column!r} value {text!r} is not a finite number")
    return value


def _normalized_points(
    ranks: ArrayLike, accuracies: ArrayLike, teacher: float
) -> tuple[np.ndarray, np.ndarray]:
    """Validated, sorted unique ranks and their mean accuracy / teacher accuracy."""
    rank_array = _finite_vector(ranks, "ranks")
    accuracy_array = _finite_vector(accuracies, "accuracies")
    if rank_array.shape != accuracy_array.shape:
        raise AnalysisError(
            f"got {rank_array.size} ranks but {accuracy_array.size} accuracies; they must pair up"
        )
    if np.any(rank_array <= 0):
        raise AnalysisError(f"ranks must be positive, got {rank_array[rank_array <= 0][0]:g}")
    if np.any(accuracy_array < 0):
        raise AnalysisError(f"accuracies must be >= 0, got {accuracy_array[accuracy_array < 0][0]:g}")

    unique_ranks, slot = np.unique(rank_array, return_inverse=True)
    if unique_ranks.size < 2:
        raise AnalysisError(f"a curve needs at least 2 distinct ranks, got {unique_ranks.size}")
    mean_accuracy = np.bincount(slot, weights=accuracy_array) / np.bincount(slot)
    return unique_ranks, mean_accuracy / teacher


def _positive_number(value: float, name: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise AnalysisError(f"{name} must be a positive number, got {value!r}") from None
    if not (math.isfinite(number) and number > 0):
        raise AnalysisError(f"{name} must be a positive number, got {value!r}")
    return number


def _finite_vector(values: ArrayLike, name: str) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        raise AnalysisError(f"{name} must be numbers") from None
    if array.ndim != 1:
        raise AnalysisError(f"{name} must be a flat list of numbers, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise AnalysisError(f"{name} must be finite, got {array[~np.isfinite(array)][0]}")
    return array


def _validate_thresholds(thresholds: Sequence[float]) -> tuple[float, float]:
    try:
        low, high = (float(t) for t in thresholds)
    except (TypeError, ValueError):
        raise AnalysisError(f"thresholds must be two numbers, got {thresholds!r}") from None
    if not (math.isfinite(low) and math.isfinite(high) and 0 < low < high):
        raise AnalysisError(f"thresholds must satisfy 0 < t0 < t1, got ({low:g}, {high:g})")
    return low, high


def _pchip(ranks: ArrayLike, monotone: ArrayLike) -> PchipInterpolator:
    return PchipInterpolator(
        np.asarray(ranks, dtype=float), np.asarray(monotone, dtype=float), extrapolate=False
    )


def _crossing(
    ranks: np.ndarray, monotone: np.ndarray, fit: PchipInterpolator, threshold: float
) -> float | None:
    """First rank where the fit reaches ``threshold``; None if it never does."""
    reached = np.flatnonzero(monotone >= threshold)
    if reached.size == 0:
        return None
    first = int(reached[0])
    if first == 0:
        return float(ranks[0])
    # The fit is monotone on each interval and below the threshold before this one,
    # so the root inside it is the first crossing.
    return float(brentq(lambda r: float(fit(r)) - threshold, ranks[first - 1], ranks[first], xtol=1e-12))


def _ceil_rank(rank: float) -> int:
    nearest = round(rank)
    if math.isclose(rank, nearest, rel_tol=_CEIL_TOL, abs_tol=_CEIL_TOL):
        return int(nearest)
    return math.ceil(rank)


def _knee(ranks: np.ndarray, monotone: np.ndarray, fit: PchipInterpolator, axis: str) -> float:
    """Rank of largest |fit - secant| on the chosen axis (same argmax as perpendicular distance)."""
    rise = monotone[-1] - monotone[0]
    plateau_rank = float(ranks[int(np.argmax(monotone == monotone[-1]))])
    if ranks.size < 3:
        return plateau_rank

    to_axis, to_rank = _axis_maps(axis, ranks[0], ranks[-1])
    x0, x1 = to_axis(ranks[0]), to_axis(ranks[-1])

    def deviation(x: np.ndarray | float) -> np.ndarray:
        secant = monotone[0] + rise * (np.asarray(x) - x0) / (x1 - x0)
        return np.abs(fit(to_rank(x)) - secant)

    grid = np.linspace(x0, x1, _KNEE_GRID_POINTS)
    grid_deviation = deviation(grid)
    best = int(np.argmax(grid_deviation))
    if grid_deviation[best] <= _STRAIGHT_RTOL * rise:
        return plateau_rank

    lo, hi = grid[max(best - 1, 0)], grid[min(best + 1, grid.size - 1)]
    refined = minimize_scalar(
        lambda x: -float(deviation(x)), bounds=(lo, hi), method="bounded", options={"xatol": 1e-9 * (hi - lo)}
    )
    # Bounded Brent may settle on a worse local point than the grid already had.
    x_best = refined.x if -refined.fun > grid_deviation[best] else grid[best]
    return float(to_rank(x_best))


def _axis_maps(
    axis: str, first_rank: float, last_rank: float
) -> tuple[Callable[[float], float], Callable[[np.ndarray | float], np.ndarray]]:
    """Maps rank -> horizontal coordinate and back, clipped so round-off never leaves the fit's range."""
    if axis == "log2":
        return math.log2, lambda u: np.clip(np.exp2(u), first_rank, last_rank)
    return float, lambda x: np.clip(np.asarray(x, dtype=float), first_rank, last_rank)


# --- bootstrap over seeds -------------------------------------------------------------------


@dataclass(frozen=True)
class Estimate:
    """One read-off quantity: its value on the seed-mean curve and a percentile-bootstrap interval.

    ``mean`` is read off the curve of per-rank mean accuracies (None: that curve never reaches the
    threshold). ``ci_low``/``ci_high`` are the 2.5/97.5 percentiles over the resamples; for a
    crossing they are taken over the resamples that reach the threshold, and are None when fewer
    than half of them do (an interval of a minority says little). ``unreached`` is the fraction of
    resamples that never reach the threshold (None for the knee, which always exists).
    """

    mean: float | None
    ci_low: float | None
    ci_high: float | None
    unreached: float | None = None

    def to_dict(self) -> dict:
        return {"mean": self.mean, "ci_low": self.ci_low, "ci_high": self.ci_high, "unreached": self.unreached}


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
    more than one seed: there is nothing to resample.
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
            "low": self.low.to_dict(),
            "high": self.high.to_dict(),
            "knee": self.knee.to_dict(),
            "note": self.note,
        }
        if band:
            data["band"] = self.band.to_dict() if self.band is not None else None
        return data


def bootstrap_curve(
    ranks: ArrayLike,
    accuracies: ArrayLike,
    seeds: ArrayLike,
    teacher_accuracy: float,
    thresholds: Sequence[float] = (0.85, 0.95),
    knee_axis: str = "linear",
    resamples: int = 1000,
    rng_seed: int = 0,
) -> Uncertainty:
    """Percentile-bootstrap intervals of the crossings and the knee over the seeds of each rank.

    Point estimates are read off the seed-mean curve, exactly as :func:`analyze_curve` reads them
    (points of one rank and seed are averaged first). Each resample draws, independently at every
    rank, that rank's seeds with replacement, averages them, and is fitted and read off the same
    way (running max, PCHIP, first crossing, largest distance to the secant). Ranks may hold
    different numbers of seeds; a rank with one seed adds no spread. Deterministic given
    ``rng_seed``. With one seed at every rank there is nothing to resample: every interval is None
    and ``note`` says so.

    A resample whose curve never reaches a threshold has no crossing: it is counted in
    ``unreached`` and left out of that crossing's percentiles, which are therefore conditional on
    reaching it, and None when fewer than half of the resamples reach it. The band is the
    pointwise 2.5/97.5 percentile of the resampled fits on a dense grid of ranks.
    """
    teacher = _positive_number(teacher_accuracy, "teacher accuracy")
    threshold_pair = _validate_thresholds(thresholds)
    if knee_axis not in KNEE_AXES:
        raise AnalysisError(f"knee axis must be one of {', '.join(KNEE_AXES)}, got {knee_axis!r}")
    if isinstance(resamples, bool) or not isinstance(resamples, int | np.integer) or resamples < 1:
        raise AnalysisError(f"bootstrap resamples must be a positive integer, got {resamples!r}")
    unique_ranks, per_seed, seed_values = _per_seed_means(ranks, accuracies, seeds)

    counts = np.array([len(values) for values in per_seed])
    flat_ranks = np.repeat(unique_ranks, counts)
    flat_accuracies = np.concatenate(per_seed)
    point = analyze_curve(flat_ranks, flat_accuracies, teacher, threshold_pair, knee_axis)
    common = dict(thresholds=threshold_pair, knee_axis=knee_axis, seeds=seed_values,
                  ranks=tuple(unique_ranks.tolist()), seeds_per_rank=tuple(counts.tolist()), rng_seed=int(rng_seed))
    if counts.max() < 2:
        return Uncertainty(
            low=Estimate(point.region.low, None, None), high=Estimate(point.region.high, None, None),
            knee=Estimate(point.knee, None, None), resamples=0, band=None,
            note=ONE_SEED_NOTE, **common,
        )

    # Every draw at once (a rank with fewer seeds ignores the surplus columns), so the result
    # does not depend on how the resamples are chunked below.
    padded = np.zeros((unique_ranks.size, counts.max()))
    for i, values in enumerate(per_seed):
        padded[i, : values.size] = values
    rng = np.random.default_rng(rng_seed)
    draws = np.minimum((rng.random((resamples, *padded.shape)) * counts[:, None]).astype(np.intp),
                       counts[:, None] - 1)
    used = np.arange(padded.shape[1]) < counts[:, None]
    chosen = padded[np.arange(unique_ranks.size)[:, None], draws]
    means = np.where(used, chosen, 0.0).sum(axis=2) / counts
    monotone = np.maximum.accumulate(means / teacher, axis=1).T  # (ranks, resamples)

    dense = _band_grid(unique_ranks)
    lows, highs, knees, fits = [], [], [], []
    for start in range(0, resamples, _CHUNK):
        block = monotone[:, start:start + _CHUNK]
        fit = _pchip(unique_ranks, block)
        lows.append(_crossings(unique_ranks, block, fit, threshold_pair[0]))
        highs.append(_crossings(unique_ranks, block, fit, threshold_pair[1]))
        knees.append(_knees(unique_ranks, block, fit, knee_axis))
        fits.append(fit(dense))
    band_low, band_high = np.percentile(np.concatenate(fits, axis=1), _PERCENTILES, axis=1)
    return Uncertainty(
        low=_estimate(point.region.low, np.concatenate(lows)),
        high=_estimate(point.region.high, np.concatenate(highs)),
        knee=_estimate(point.knee, np.concatenate(knees), crossing=False),
        resamples=int(resamples),
        band=Band(tuple(dense.tolist()), tuple(band_low.tolist()), tuple(band_high.tolist())),
        **common,
    )


def _per_seed_means(
    ranks: ArrayLike, accuracies: ArrayLike, seeds: ArrayLike
) -> tuple[np.ndarray, list[np.ndarray], tuple[int, ...]]:
    """Sorted unique ranks, each rank's per-seed mean accuracies (seed order), and the distinct seeds."""
    rank_array = _finite_vector(ranks, "ranks")
    accuracy_array = _finite_vector(accuracies, "accuracies")
    seed_array = _finite_vector(seeds, "seeds")
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
        rank_seeds, slot = np.unique(seed_array[at_rank], return_inverse=True)
        per_seed.append(np.bincount(slot, weights=accuracy_array[at_rank]) / np.bincount(slot))
    return unique_ranks, per_seed, tuple(int(s) for s in np.unique(seed_array))


def _estimate(point: float | None, samples: np.ndarray, crossing: bool = True) -> Estimate:
    reached = samples[~np.isnan(samples)]
    unreached = 1.0 - reached.size / samples.size
    if reached.size == 0 or reached.size < samples.size / 2:
        low = high = None
    else:
        low, high = (float(v) for v in np.percentile(reached, _PERCENTILES))
    return Estimate(point, low, high, unreached if crossing else None)


def _band_grid(ranks: np.ndarray) -> np.ndarray:
    """Dense ranks for the band: even on both the linear and the log2 axis, plus the measured ranks."""
    first, last = ranks[0], ranks[-1]
    grid = np.concatenate([np.linspace(first, last, _BAND_POINTS), np.geomspace(first, last, _BAND_POINTS), ranks])
    return np.unique(np.clip(grid, first, last))


def _evaluate_columns(fit: PchipInterpolator, x: np.ndarray) -> np.ndarray:
    """Curve j of a multi-curve fit evaluated at x[j], for every j at once."""
    breaks = fit.x
    piece = np.clip(np.searchsorted(breaks, x, side="right") - 1, 0, breaks.size - 2)
    dx = x - breaks[piece]
    c = fit.c[:, piece, np.arange(x.size)]
    return ((c[0] * dx + c[1]) * dx + c[2]) * dx + c[3]


def _crossings(ranks: np.ndarray, monotone: np.ndarray, fit: PchipInterpolator, threshold: float) -> np.ndarray:
    """:func:`_crossing` for every column of ``monotone`` (NaN where never reached), by bisection."""
    reached = monotone >= threshold
    first = np.argmax(reached, axis=0)
    result = np.where(reached.any(axis=0), ranks[first], np.nan)
    inside = reached.any(axis=0) & (first > 0)
    if not inside.any():
        return result
    columns = np.flatnonzero(inside)
    lo, hi = ranks[first[columns] - 1], ranks[first[columns]]
    coefficients = fit.c[:, first[columns] - 1, columns]
    left = lo.copy()
    # Each piece is monotone, below the threshold at its left end and at or above it at its right:
    # bisection keeps the smallest rank known to reach it.
    for _ in range(_BISECT_STEPS):
        mid = 0.5 * (lo + hi)
        dx = mid - left
        value = ((coefficients[0] * dx + coefficients[1]) * dx + coefficients[2]) * dx + coefficients[3]
        above = value >= threshold
        hi, lo = np.where(above, mid, hi), np.where(above, lo, mid)
    result[columns] = hi
    return result


def _knees(ranks: np.ndarray, monotone: np.ndarray, fit: PchipInterpolator, axis: str) -> np.ndarray:
    """:func:`_knee` for every column of ``monotone``: the same grid, then golden section for Brent."""
    rise = monotone[-1] - monotone[0]
    plateau = ranks[np.argmax(monotone == monotone[-1], axis=0)]
    if ranks.size < 3:
        return plateau

    to_axis, to_rank = _axis_maps(axis, ranks[0], ranks[-1])
    x0, x1 = to_axis(ranks[0]), to_axis(ranks[-1])
    grid = np.linspace(x0, x1, _KNEE_GRID_POINTS)
    secant = monotone[0] + rise * ((grid - x0) / (x1 - x0))[:, None]
    grid_deviation = np.abs(fit(to_rank(grid)) - secant)
    best = np.argmax(grid_deviation, axis=0)
    best_deviation = grid_deviation[best, np.arange(best.size)]

    def deviation(x: np.ndarray) -> np.ndarray:
        return np.abs(_evaluate_columns(fit, to_rank(x)) - (monotone[0] + rise * (x - x0) / (x1 - x0)))

    a, b = grid[np.maximum(best - 1, 0)], grid[np.minimum(best + 1, grid.size - 1)]
    shrink = (math.sqrt(5) - 1) / 2
    c, d = b - shrink * (b - a), a + shrink * (b - a)
    fc, fd = deviation(c), deviation(d)
    for _ in range(_GOLDEN_STEPS):
        left = fc > fd  # the maximum lies in [a, d]
        a, b = np.where(left, a, c), np.where(left, d, b)
        new = np.where(left, b - shrink * (b - a), a + shrink * (b - a))
        f_new = deviation(new)
        c, d = np.where(left, new, d), np.where(left, c, new)
        fc, fd = np.where(left, f_new, fd), np.where(left, fc, f_new)
    refined = 0.5 * (a + b)
    x_best = np.where(deviation(refined) > best_deviation, refined, grid[best])
    knees = to_rank(x_best)
    return np.where(best_deviation <= _STRAIGHT_RTOL * rise, plateau, knees)
