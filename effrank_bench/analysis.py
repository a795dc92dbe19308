"""Reads the effective-rank region and knee off an accuracy-vs-rank curve."""
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
