"""Reads the effective-rank region and knee off accuracy-vs-rank curves: monotone fit, PCHIP, crossings, knee."""
from __future__ import annotations

import csv
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, TextIO

import numpy as np
from numpy.typing import ArrayLike
from scipy.interpolate import PchipInterpolator
from scipy.optimize import isotonic_regression

from effrank_bench.errors import AnalysisError, shown

KNEE_AXES = ("linear", "log2")
MONOTONE_MODES = ("running-max", "isotonic")
# "left": the threshold is already met at the first measured rank, so the crossing is at or below
# it; "right": no measured rank meets it, so the crossing is beyond the last one.
Censoring = Literal["left", "right"] | None
_SIDES: dict[int, Censoring] = {-1: "left", 0: None, 1: "right"}

# Dense enough that the golden-section refinement only has to polish, never to search.
_KNEE_GRID_POINTS = 4097
# A curve whose largest deviation from its secant is below this fraction of its rise is
# treated as straight: what is left is round-off, and its argmax would be noise.
_STRAIGHT_RTOL = 1e-9
# A monotone curve that rises less than this (normalized accuracy) from its first rank to its last is flat: means
# over seeds of equal accuracies differ by round-off at most.
_FLAT = 1e-12
# Solver round-off must not push a crossing at an integer rank to the next band slot.
_CEIL_TOL = 1e-9
# Bisection halves a crossing's bracket per step; 64 steps reach the float resolution of any rank.
_BISECT_STEPS = 64
# Golden section shrinks the knee's bracket (two grid cells) by 0.618 per step: 60 steps, about 1e-12.
_GOLDEN_STEPS = 60
_GOLDEN = (math.sqrt(5) - 1) / 2
# Where two unit systems cannot be the same: a fraction stays at or below 1, a percentage above this.
_PERCENT_ABOVE = 1.5


@dataclass(frozen=True)
class Region:
    """Where the fitted curve first reaches each of two thresholds (ranks on the real axis).

    ``low_censored``/``high_censored`` say when a crossing is only bounded. ``"left"``: the first
    measured rank already reaches the threshold, so the crossing is at or below that rank, which
    ``low``/``high`` then hold. ``"right"``: the curve never reaches it, ``low``/``high`` is None
    (the crossing is beyond the last measured rank). ``band`` is ``(ceil(low), ceil(high))``, the
    smallest integer ranks that reach them, or None when either crossing is missing.
    """

    low: float | None
    high: float | None
    band: tuple[int, int] | None
    thresholds: tuple[float, float]
    low_censored: Censoring = None
    high_censored: Censoring = None

    def band_text(self) -> str | None:
        """``[17, 19]``, with ``≤`` before an end whose crossing is left-censored (``[≤2, 4]``)."""
        if self.band is None:
            return None
        ends = [("≤" if side == "left" else "") + str(end)
                for end, side in zip(self.band, (self.low_censored, self.high_censored))]
        return f"[{ends[0]}, {ends[1]}]"

    def to_dict(self) -> dict:
        return {
            "low": self.low,
            "high": self.high,
            "band": list(self.band) if self.band is not None else None,
            "thresholds": list(self.thresholds),
            "low_censored": self.low_censored,
            "high_censored": self.high_censored,
        }


@dataclass(frozen=True)
class CurveAnalysis:
    """An analysed accuracy-vs-rank curve.

    ``normalized`` is accuracy / teacher accuracy as measured (duplicates of a rank averaged);
    ``monotone`` is its non-decreasing version (``monotone_mode``), which the PCHIP fit goes through.
    ``no_bend``: the curve rises but its points carry no bend (fewer than three ranks, or a fit on its secant),
    so its knee is where it reaches its top by the fallback of :func:`analyze_curve` (the last rank of a
    straight line), not a place where more rank stops paying off.
    """

    ranks: tuple[float, ...]
    normalized: tuple[float, ...]
    monotone: tuple[float, ...]
    teacher_accuracy: float
    region: Region
    knee: float
    knee_axis: str
    no_bend: bool
    monotone_mode: str = "running-max"

    def fit(self, ranks: ArrayLike) -> np.ndarray:
        """Evaluate the PCHIP fit (linear rank axis) at ``ranks``; NaN outside the measured range.

        No extrapolation: beyond the measured ranks a cubic says nothing trustworthy.
        """
        return fit_curves(np.asarray(self.ranks), np.asarray(self.monotone))(np.asarray(ranks, dtype=float))

    @property
    def knee_bends_up(self) -> bool:
        """Whether the fit lies below its secant at the knee: the curve bends upward there (one cut off before
        it levels, or the lower bend of an S), so its knee marks where more rank starts to pay off, not where
        it stops paying off."""
        ranks, values = self.ranks, self.monotone
        rise = values[-1] - values[0]
        to_axis, _ = _axis_maps(self.knee_axis, ranks[0], ranks[-1])
        x0, x1 = to_axis(ranks[0]), to_axis(ranks[-1])
        if x1 == x0 or self.flat:
            return False
        secant = values[0] + rise * (to_axis(self.knee) - x0) / (x1 - x0)
        return bool(self.fit(self.knee) < secant - _STRAIGHT_RTOL * abs(rise))

    @property
    def flat(self) -> bool:
        """Whether the monotone curve holds one value at every rank: it has no bend, so its knee is its first
        rank by the fallback of :func:`analyze_curve`, not a place where more rank stops paying off."""
        return self.monotone[-1] - self.monotone[0] <= _FLAT

    def to_dict(self) -> dict:
        """A JSON-ready summary: teacher accuracy, region, knee and the measured points."""
        return {
            "teacher_accuracy": self.teacher_accuracy,
            "region": self.region.to_dict(),
            "knee": self.knee,
            "knee_axis": self.knee_axis,
            "knee_bends_up": self.knee_bends_up,
            "flat": self.flat,
            "no_bend": self.no_bend,
            "monotone": self.monotone_mode,
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
    monotone: str = "running-max",
) -> CurveAnalysis:
    """Fit a monotone curve to accuracy-vs-rank points and read the region and knee off it.

    Accuracies are divided by ``teacher_accuracy`` (any units, as long as both agree) and points
    sharing a rank are averaged. The result is made non-decreasing (``monotone``):

    - ``"running-max"`` (the paper's): a student that once reached an accuracy at some rank shows
      that accuracy is reachable at every larger rank, so a dip is fitted as if measured at the
      running max and an early spike counts from its rank on;
    - ``"isotonic"``: the least-squares non-decreasing curve (weighted by the points per rank),
      which pools a dip with the values before it instead of trusting the highest one.

    The monotone values are fitted with PCHIP on the linear rank axis, which stays monotone.
    Crossings are where the fit first reaches each threshold, solved inside the first data interval
    that reaches it; a threshold met by the first point is left-censored (at or below the first
    rank: no extrapolation below it), one never met is right-censored.

    The knee is the rank maximizing the distance between the fit and its secant through the
    two end points, with rank or ``log2(rank)`` as horizontal coordinate (``knee_axis``). When
    the points carry no bend (fewer than three distinct ranks, or a fit that coincides with its
    secant), the knee is the first rank where the fit reaches its maximum: the last rank for a
    rising straight line (it never stopped paying off), the first rank for a flat one.
    """
    teacher = _positive_number(teacher_accuracy, "teacher accuracy")
    rank_values, normalized, counts = _normalized_points(ranks, accuracies, teacher)
    threshold_pair = _validate_thresholds(thresholds)
    _check_choice("knee axis", knee_axis, KNEE_AXES)
    _check_choice("monotone", monotone, MONOTONE_MODES)

    curve = make_monotone(normalized[:, None], counts, monotone)
    read = read_off(rank_values, curve, threshold_pair, knee_axis)
    (low, low_side), (high, high_side) = (
        (None if side[0] == 1 else float(rank[0]), _SIDES[int(side[0])]) for rank, side in read.crossings
    )
    band = (_ceil_rank(low), _ceil_rank(high)) if low is not None and high is not None else None
    return CurveAnalysis(
        ranks=tuple(rank_values.tolist()),
        normalized=tuple(normalized.tolist()),
        monotone=tuple(curve[:, 0].tolist()),
        teacher_accuracy=teacher,
        region=Region(low=low, high=high, band=band, thresholds=threshold_pair,
                      low_censored=low_side, high_censored=high_side),
        knee=float(read.knee[0]),
        knee_axis=knee_axis,
        monotone_mode=monotone,
        no_bend=bool(read.no_bend[0]),
    )


def check_same_units(teacher_accuracy: float, accuracies: ArrayLike) -> None:
    """Refuse a teacher accuracy and a curve in different units: one a fraction, the other in percent."""
    teacher, top = float(teacher_accuracy), float(np.max(accuracies))
    if teacher > _PERCENT_ABOVE and top <= 1:
        raise AnalysisError(f"teacher accuracy {teacher:g} looks like a percentage but every accuracy of the "
                            f"curve is at most 1 (a fraction); give both in the same units")
    if teacher <= 1 and top > _PERCENT_ABOVE:
        raise AnalysisError(f"teacher accuracy {teacher:g} looks like a fraction but the curve reaches {top:g} "
                            f"(a percentage); give both in the same units")


def read_curve_csv(path: str | os.PathLike[str]) -> tuple[list[float], list[float], float | None]:
    """Read the ``rank`` and ``accuracy`` columns of a CSV file with a header row, and the teacher's accuracy
    where the file has one (None where not).

    Other columns are ignored, whitespace around names and values is tolerated, blank lines are
    skipped. A ``status`` column (a run's ``summary.csv``) marks the teacher's row ("teacher", whose
    accuracy is returned) and failed students' ("failed", skipped). Every problem raises AnalysisError
    naming the file (and the line for bad values).
    """
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            return _read_curve_rows(handle, str(path))
    except FileNotFoundError:
        raise AnalysisError(f"{path}: curve file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise AnalysisError(f"{path}: cannot read curve file ({error})") from None
    except csv.Error as error:  # e.g. a field over the csv module's size limit
        raise AnalysisError(f"{path}: not a readable CSV file ({error})") from None


def parse_thresholds(text: str) -> tuple[float, float]:
    """Parse ``"0.8,0.9"`` into ``(0.8, 0.9)``; needs two numbers with ``0 < t0 < t1``.

    No upper bound: a threshold above 1 asks for a student that beats its teacher, which can
    happen and can be asked about.
    """
    parts = [part.strip() for part in text.split(",")]
    if len(parts) != 2:
        raise AnalysisError(f"thresholds must be two comma-separated numbers like 0.85,0.95, got {shown(text)!r}")
    try:
        values = (float(parts[0]), float(parts[1]))
    except ValueError:
        raise AnalysisError(f"thresholds must be numbers like 0.85,0.95, got {shown(text)!r}") from None
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
            raise AnalysisError(f"{path}: missing column {wanted!r} (header has: {shown(', '.join(names))})")
        columns[wanted] = names.index(wanted)

    status = names.index("status") if "status" in names else None
    ranks: list[float] = []
    accuracies: list[float] = []
    teacher, teacher_line = None, None
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue
        kind = row[status].strip() if status is not None and status < len(row) else None
        if kind == "failed":
            continue
        accuracy = _cell_value(row, columns["accuracy"], "accuracy", path, reader.line_num)
        if kind == "teacher":
            if teacher_line is not None:  # two curves' rows, or a teacher measured twice: which one is meant?
                raise AnalysisError(f"{path}, line {reader.line_num}: a second teacher row (the first is on line "
                                    f"{teacher_line}): keep one")
            teacher, teacher_line = accuracy, reader.line_num
            continue
        ranks.append(_cell_value(row, columns["rank"], "rank", path, reader.line_num))
        accuracies.append(accuracy)
    if len(ranks) < 2:
        raise AnalysisError(f"{path}: has {len(ranks)} data row(s), a curve needs at least 2")
    return ranks, accuracies, teacher


def _cell_value(row: list[str], index: int, column: str, path: str, line: int) -> float:
    if index >= len(row) or not row[index].strip():
        raise AnalysisError(f"{path}, line {line}: missing {column!r} value")
    text = row[index].strip()
    try:
        value = float(text)
    except ValueError:
        raise AnalysisError(f"{path}, line {line}: {column!r} value {shown(text)!r} is not a number") from None
    if not math.isfinite(value):
        raise AnalysisError(f"{path}, line {line}: {column!r} value {shown(text)!r} is not a finite number")
    return value


# Bounds of what the fit can take without overflowing (PCHIP divides by rank gaps and multiplies slopes):
# far beyond any network's rank, or any student's accuracy relative to its teacher.
MIN_RANK, MAX_RANK = 1e-6, 1e12
MAX_NORMALIZED = 1e6


def _normalized_points(
    ranks: ArrayLike, accuracies: ArrayLike, teacher: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validated, sorted unique ranks, their mean accuracy / teacher accuracy and their number of points."""
    rank_array = finite_vector(ranks, "ranks")
    accuracy_array = finite_vector(accuracies, "accuracies")
    if rank_array.shape != accuracy_array.shape:
        raise AnalysisError(
            f"got {rank_array.size} ranks but {accuracy_array.size} accuracies; they must pair up"
        )
    if np.any(rank_array <= 0):
        raise AnalysisError(f"ranks must be positive, got {rank_array[rank_array <= 0][0]:g}")
    out_of_range = (rank_array < MIN_RANK) | (rank_array > MAX_RANK)
    if np.any(out_of_range):
        raise AnalysisError(f"ranks must be between {MIN_RANK:g} and {MAX_RANK:g}, got {rank_array[out_of_range][0]:g}")
    if np.any(accuracy_array < 0):
        raise AnalysisError(f"accuracies must be >= 0, got {accuracy_array[accuracy_array < 0][0]:g}")

    unique_ranks, slot = np.unique(rank_array, return_inverse=True)
    if unique_ranks.size < 2:
        raise AnalysisError(f"a curve needs at least 2 distinct ranks, got {unique_ranks.size}")
    counts = np.bincount(slot)
    with np.errstate(over="ignore"):
        normalized = np.bincount(slot, weights=accuracy_array) / counts / teacher
    if not np.all(normalized <= MAX_NORMALIZED):
        raise AnalysisError(f"accuracies reach {np.max(accuracy_array):g}, more than {MAX_NORMALIZED:g} times the "
                            f"teacher's {teacher:g}: give both in the same units")
    return unique_ranks, normalized, counts


def _positive_number(value: float, name: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise AnalysisError(f"{name} must be a positive number, got {value!r}") from None
    if not (math.isfinite(number) and number > 0):
        raise AnalysisError(f"{name} must be a positive number, got {value!r}")
    return number


def finite_vector(values: ArrayLike, name: str) -> np.ndarray:
    """``values`` as a flat float array; AnalysisError naming ``name`` if they are not finite numbers."""
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


def _check_choice(name: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise AnalysisError(f"{name} must be one of {', '.join(choices)}, got {value!r}")


# --- read-offs of many curves at once (columns); one curve is one column -----------------------


@dataclass(frozen=True)
class ReadOff:
    """The read-offs of curves given as columns: per threshold, the crossings' ranks and censoring
    (-1: met at the first rank, which the rank then holds; 1: never met, the rank holds the last
    rank; 0: crossed), the knees, whether each rising column had no bend to put its knee at (the knee is then
    where it reaches its top), and the PCHIP fit of every column."""

    crossings: tuple[tuple[np.ndarray, np.ndarray], ...]
    knee: np.ndarray
    no_bend: np.ndarray
    fit: PchipInterpolator


def make_monotone(curves: np.ndarray, weights: np.ndarray, mode: str) -> np.ndarray:
    """Each column of ``curves`` (rows: increasing ranks) made non-decreasing, as ``mode`` says;
    ``weights`` (one per rank) weigh the isotonic least squares."""
    if mode == "running-max":
        return np.maximum.accumulate(curves, axis=0)
    weights = np.asarray(weights, dtype=float)
    return np.stack([isotonic_regression(column, weights=weights, increasing=True).x for column in curves.T],
                    axis=1)


def fit_curves(ranks: np.ndarray, curves: np.ndarray) -> PchipInterpolator:
    """PCHIP through each column of ``curves`` (or through one curve), no extrapolation."""
    return PchipInterpolator(np.asarray(ranks, dtype=float), np.asarray(curves, dtype=float), extrapolate=False)


def read_off(ranks: np.ndarray, curves: np.ndarray, thresholds: Sequence[float], knee_axis: str) -> ReadOff:
    """Fit every column of the non-decreasing ``curves`` and read its crossings and knee off."""
    fit = fit_curves(ranks, curves)
    crossings = tuple(_crossings(ranks, curves, fit, t) for t in thresholds)
    knees, no_bend = _knees(ranks, curves, fit, knee_axis)
    return ReadOff(crossings=crossings, knee=knees, no_bend=no_bend, fit=fit)


@dataclass(frozen=True)
class _Pieces:
    """A multi-curve fit's breakpoints and cubic coefficients, read from scipy once: its ``x`` and ``c``
    properties convert on every access, which cost more than the evaluation in the read-off's loops."""

    x: np.ndarray
    c: np.ndarray

    @classmethod
    def of(cls, fit: PchipInterpolator) -> _Pieces:
        return cls(np.asarray(fit.x), np.asarray(fit.c))

    def at(self, x: np.ndarray, columns: np.ndarray) -> np.ndarray:
        """Curve ``columns[k]`` at ``x[k]``, for every k at once."""
        piece = np.minimum(np.maximum(self.x.searchsorted(x, side="right") - 1, 0), self.x.size - 2)
        dx = x - self.x[piece]
        c = self.c[:, piece, columns]
        return ((c[0] * dx + c[1]) * dx + c[2]) * dx + c[3]


def _crossings(
    ranks: np.ndarray, curves: np.ndarray, fit: PchipInterpolator, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """First rank where each column's fit reaches ``threshold``, and its censoring (see ReadOff)."""
    reached = curves >= threshold
    first = np.argmax(reached, axis=0)
    side = np.where(~reached.any(axis=0), 1, np.where(first == 0, -1, 0))
    rank = np.where(side == 1, ranks[-1], ranks[first])
    # A piece is monotone and below the threshold at its left end: if its right end equals the
    # threshold, that end is the crossing, exactly (bisection would stop an ulp of fit short of it).
    columns = np.flatnonzero((side == 0) & (curves[first, np.arange(first.size)] > threshold))
    lo, hi = ranks[first[columns] - 1], rank[columns]
    pieces = _Pieces.of(fit)
    # Bisection keeps the smallest rank known to reach the threshold.
    for _ in range(_BISECT_STEPS):
        mid = 0.5 * (lo + hi)
        above = pieces.at(mid, columns) >= threshold
        lo, hi = np.where(above, lo, mid), np.where(above, mid, hi)
    rank[columns] = hi
    return rank, side


def _ceil_rank(rank: float) -> int:
    nearest = round(rank)
    if math.isclose(rank, nearest, rel_tol=_CEIL_TOL, abs_tol=_CEIL_TOL):
        return int(nearest)
    return math.ceil(rank)


def _knees(ranks: np.ndarray, curves: np.ndarray, fit: PchipInterpolator, axis: str) -> tuple[np.ndarray, np.ndarray]:
    """Rank of largest |fit - secant| of each column on the chosen axis (the argmax of the
    perpendicular distance too): the best point of a dense grid, polished by golden section; and whether a
    rising column had no such bend (the knee is then where it reaches its top)."""
    rise = curves[-1] - curves[0]
    # Flat (CurveAnalysis.flat): the first rank, whatever round-off a mean over seeds left to find a bend in.
    plateau = np.where(rise <= _FLAT, ranks[0], ranks[np.argmax(curves == curves[-1], axis=0)])
    if ranks.size < 3:
        return plateau, rise > _FLAT

    to_axis, to_rank = _axis_maps(axis, ranks[0], ranks[-1])
    x0, x1 = to_axis(ranks[0]), to_axis(ranks[-1])
    columns = np.arange(curves.shape[1])
    pieces = _Pieces.of(fit)

    def deviation(x: np.ndarray) -> np.ndarray:
        return np.abs(pieces.at(to_rank(x), columns) - (curves[0] + rise * (x - x0) / (x1 - x0)))

    grid = np.linspace(x0, x1, _KNEE_GRID_POINTS)
    secant = curves[0] + rise * ((grid - x0) / (x1 - x0))[:, None]
    grid_deviation = np.abs(fit(to_rank(grid)) - secant)
    best = np.argmax(grid_deviation, axis=0)
    best_deviation = grid_deviation[best, columns]

    a, b = grid[np.maximum(best - 1, 0)], grid[np.minimum(best + 1, grid.size - 1)]
    c, d = b - _GOLDEN * (b - a), a + _GOLDEN * (b - a)
    fc, fd = deviation(c), deviation(d)
    for _ in range(_GOLDEN_STEPS):
        left = fc > fd  # the maximum lies in [a, d]
        a, b = np.where(left, a, c), np.where(left, d, b)
        new = np.where(left, b - _GOLDEN * (b - a), a + _GOLDEN * (b - a))
        f_new = deviation(new)
        c, d = np.where(left, new, d), np.where(left, c, new)
        fc, fd = np.where(left, f_new, fd), np.where(left, fc, f_new)
    refined = 0.5 * (a + b)
    # The polish may settle on a worse local point than the grid already had.
    knees = to_rank(np.where(deviation(refined) > best_deviation, refined, grid[best]))
    straight = best_deviation <= _STRAIGHT_RTOL * rise
    return np.where(straight | (rise <= _FLAT), plateau, knees), straight & (rise > _FLAT)


def _axis_maps(
    axis: str, first_rank: float, last_rank: float
) -> tuple[Callable[[float], float], Callable[[np.ndarray | float], np.ndarray]]:
    """Maps rank -> horizontal coordinate and back, clipped so round-off never leaves the fit's range."""
    # np.minimum/np.maximum, not np.clip: the same numbers without clip's wrapper, in the knee's loop.
    if axis == "log2":
        return math.log2, lambda u: np.minimum(np.maximum(np.exp2(u), first_rank), last_rank)
    return float, lambda x: np.minimum(np.maximum(np.asarray(x, dtype=float), first_rank), last_rank)
