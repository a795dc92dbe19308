"""Which ranks to train: the full grid, or an adaptive search that brackets the crossings and the knee."""
from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from effrank_bench.analysis import CurveAnalysis, analyze_curve
from effrank_bench.errors import AnalysisError, ConfigError

SEARCHES = ("grid", "adaptive")
# Five log-spaced ranks span 2..256 at ratio ~3.4: enough for a first fit to place the crossings and
# the knee near enough that each needs one or two more ranks.
COARSE_POINTS = 5
# A safety net, not the usual stop: a smooth curve is bracketed in two or three refinement rounds.
MAX_ROUNDS = 8
# The knee's golden-section polish leaves round-off on a knee that falls on a measured rank.
_ON_RANK = 1e-9


class RankSearch(Protocol):
    """The sweep asks ``next_ranks`` for the ranks to train this round, trains them, asks again.

    ``measured`` maps each finished rank to its normalized accuracy (student / teacher, mean over
    seeds); ``failed`` names ranks that were tried and gave no accuracy, never proposed again. An
    empty list means the search is done.
    """

    def next_ranks(self, measured: Mapping[int, float], failed: Collection[int] = ()) -> list[int]: ...

    def can_ask(self, rank: int) -> bool:
        """Whether this search may ask for ``rank`` at all (the grid's ranks, an adaptive search's range)."""
        ...


@dataclass(frozen=True)
class Tolerance:
    """How close the measured ranks around a crossing or the knee must be: at most
    ``max(ranks, fraction * rank)`` apart. The default, 10% and at least 1 rank, asks for adjacent
    ranks below 20 (ranks are integers), and above that for finer than the paper's grid anywhere
    (its gaps are 12.5% to 50% of the rank).

    ``on_grid`` (``--tolerance grid``): only ranks of the grid are trained, and a target is bracketed
    once no rank of the grid lies between its measured neighbours: about the grid's read-off (within a
    rank on smooth curves: the interpolation has other neighbours), from a subset of its ranks."""

    ranks: float = 1.0
    fraction: float = 0.10
    on_grid: bool = False

    def width(self, rank: float) -> float:
        return max(self.ranks, self.fraction * rank)

    def __str__(self) -> str:
        if self.on_grid:
            return "adjacent ranks of the grid"
        if self.fraction == 0:
            return f"{self.ranks:g} rank{'' if self.ranks == 1 else 's'}"
        return f"{self.fraction * 100:g}% of the rank, at least {self.ranks:g}"


#: ``--tolerance grid``: every target bracketed between adjacent ranks of the grid, nothing off it trained.
ON_GRID = Tolerance(ranks=0.0, fraction=0.0, on_grid=True)


def parse_tolerance(value: str | float | None) -> Tolerance:
    """``"10%"``: 10% of the rank, at least 1 rank; ``"4"`` (or 4): 4 ranks everywhere; ``"grid"``: adjacent
    ranks of the grid (:data:`ON_GRID`); None: the default."""
    if value is None:
        return Tolerance()
    text = str(value).strip()
    if text.lower() == "grid":
        return ON_GRID
    relative = text.endswith("%")
    try:
        number = float(text.removesuffix("%"))
    except ValueError:
        raise ConfigError(f"tolerance must be a number of ranks like 4, a percentage like 10% or grid, "
                          f"got {value!r}") from None
    if not (math.isfinite(number) and number > 0):
        raise ConfigError(f"tolerance must be a positive, finite number, got {value!r}")
    return Tolerance(ranks=1.0, fraction=number / 100) if relative else Tolerance(ranks=number, fraction=0.0)


@dataclass(frozen=True)
class GridSearch:
    """Every rank of the grid not yet measured, in one round."""

    ranks: tuple[int, ...]

    def next_ranks(self, measured: Mapping[int, float], failed: Collection[int] = ()) -> list[int]:
        return sorted({int(r) for r in self.ranks} - set(measured) - set(failed))

    def can_ask(self, rank: int) -> bool:
        return rank in self.ranks


@dataclass
class AdaptiveSearch:
    """Integer ranks in ``[min(ranks), max(ranks)]``, chosen where the read-off is still uncertain.

    Round 1 trains a coarse grid: the two bounds and log-spaced ranks between (``COARSE_POINTS`` in
    all). Each later round fits the measured points (``analyze_curve``) and, for each of the two
    crossings and the knee whose measured neighbours are more than ``tolerance`` apart, trains the
    untried integer between them nearest its fitted location: where the fit is good, one more rank
    on the other side closes the bracket. A crossing met at the lower bound or never met counts as
    bracketed (the boundary is all there is to know). The search stops when all three are bracketed,
    when no untried integer lies between the neighbours, or after ``max_rounds`` rounds.

    By default the search is not restricted to the ``ranks`` grid: its point is to sample finer than
    a grid where the curve needs it, so only the grid's ends matter (the paper's: 2 and 256). With
    an ``on_grid`` tolerance it trains ranks of the grid only (the coarse round snapped to the grid's
    ranks nearest on a log scale) and refines until each target lies between adjacent grid ranks.
    Measured ranks outside the bounds are ignored. Which ranks come next depends only on ``measured``
    and ``failed``, so the search is deterministic; only the round budget counts this searcher's
    calls, from ``rounds`` (those a resumed sweep already trained).
    """

    ranks: Sequence[int]
    thresholds: tuple[float, float] = (0.85, 0.95)
    knee_axis: str = "linear"
    tolerance: Tolerance = field(default_factory=Tolerance)
    monotone: str = "running-max"
    max_rounds: int = MAX_ROUNDS
    rounds: int = 0
    low: int = field(init=False)
    high: int = field(init=False)

    def __post_init__(self) -> None:
        if not self.ranks or min(self.ranks) <= 0:
            raise ConfigError("an adaptive search needs positive ranks to take its bounds from")
        self.low, self.high = int(min(self.ranks)), int(max(self.ranks))

    def coarse(self) -> list[int]:
        """The first round: the bounds and log-spaced integer ranks between them (on the grid: the grid's
        ranks nearest them on a log scale, the smaller of two as near)."""
        points = np.geomspace(self.low, self.high, COARSE_POINTS)
        if self.tolerance.on_grid:
            grid = sorted({int(r) for r in self.ranks})
            return sorted({min(grid, key=lambda r: (abs(math.log(r / p)), r)) for p in points})
        return sorted({int(round(p)) for p in points} | {self.low, self.high})

    def can_ask(self, rank: int) -> bool:
        return rank in self.ranks if self.tolerance.on_grid else self.low <= rank <= self.high

    def next_ranks(self, measured: Mapping[int, float], failed: Collection[int] = ()) -> list[int]:
        if self.rounds >= self.max_rounds:
            return []
        measured, tried = self._known(measured, failed)
        ranks = [r for r in self.coarse() if r not in tried] or sorted(
            {rank for *_, rank in self._unbracketed(measured, tried)})
        if ranks:
            self.rounds += 1
        return ranks

    def left_open(self, measured: Mapping[int, float], failed: Collection[int] = ()) -> list[str]:
        """The targets the round budget stopped the search short of bracketing, in words ("the 95% crossing
        (69.4) between ranks 69 and 77"); none where the search stopped of itself."""
        if self.rounds < self.max_rounds:
            return []
        return [f"the {name} ({at:.1f}) between ranks {lo} and {hi}"
                for name, lo, hi, at, _ in self._unbracketed(*self._known(measured, failed))]

    def _known(self, measured: Mapping[int, float], failed: Collection[int]) -> tuple[dict[int, float], set[int]]:
        """The measured ranks within the bounds, and every rank tried (measured or failed)."""
        inside = {int(r): float(v) for r, v in measured.items() if self.low <= r <= self.high}
        return inside, set(inside) | {int(r) for r in failed}

    def _unbracketed(self, measured: dict[int, float], tried: set[int]) -> list[tuple[str, int, int, float, int]]:
        """``(target, lower neighbour, upper neighbour, fitted location, the rank to train next)`` of each target
        not yet bracketed within the tolerance that an untried rank can still close in on."""
        if len(measured) < 2:
            return []
        return [(name, lo, hi, at, rank) for name, lo, hi, at in self.brackets(self.fit(measured))
                if (rank := self._candidate(lo, hi, at, tried)) is not None]

    def fit(self, measured: Mapping[int, float]) -> CurveAnalysis:
        """The read-off of the measured points (normalized accuracies: teacher accuracy 1)."""
        ranks = sorted(measured)
        return analyze_curve(ranks, [measured[r] for r in ranks], 1.0, thresholds=self.thresholds,
                             knee_axis=self.knee_axis, monotone=self.monotone)

    def brackets(self, analysis: CurveAnalysis) -> list[tuple[str, int, int, float]]:
        """``(target, lower neighbour, upper neighbour, fitted location)`` of each target whose neighbours are
        more than the tolerance apart (on the grid: any two apart; :meth:`_candidate` then finds no rank
        between adjacent ones)."""
        ranks = [int(r) for r in analysis.ranks]
        wide = []
        region = analysis.region
        for threshold, at in zip(region.thresholds, (region.low, region.high)):
            # The crossing lies in the data interval where the monotone curve first reaches the
            # threshold; met at the first rank or never met, it is bracketed by the boundary.
            first = next((i for i, v in enumerate(analysis.monotone) if v >= threshold), None)
            if first is not None and first > 0:
                wide.append((f"{threshold:.0%} crossing", ranks[first - 1], ranks[first], at))
        # A knee on a measured rank is where the fit has no bend to find (a straight or flat curve's
        # fallback): lo == hi, bracketed.
        knee = analysis.knee
        wide.append(("knee", max(r for r in ranks if r <= knee + _ON_RANK),
                     min(r for r in ranks if r >= knee - _ON_RANK), knee))
        return [(name, lo, hi, at) for name, lo, hi, at in wide if hi - lo > self.tolerance.width(at)]

    def _candidate(self, lo: int, hi: int, at: float, tried: set[int]) -> int | None:
        """The untried rank strictly between ``lo`` and ``hi`` that this search may ask for (:meth:`can_ask`)
        nearest the fitted location ``at`` (the smaller of two as near); None when there is none left."""
        free = [r for r in range(lo + 1, hi) if r not in tried and self.can_ask(r)]
        return min(free, key=lambda r: (abs(r - at), r)) if free else None


def make_search(search: str, ranks: Sequence[int], *, thresholds: Sequence[float] = (0.85, 0.95),
                knee_axis: str = "linear", tolerance: str | float | Tolerance | None = None,
                monotone: str = "running-max", rounds: int = 0) -> GridSearch | AdaptiveSearch:
    """The searcher a run asks for: ``"grid"`` or ``"adaptive"``; ConfigError for anything else.

    ``rounds``: how many rounds a resumed sweep already trained (they count against the adaptive budget)."""
    if search == "grid":
        return GridSearch(tuple(int(r) for r in ranks))
    if search == "adaptive":
        tol = tolerance if isinstance(tolerance, Tolerance) else parse_tolerance(tolerance)
        return AdaptiveSearch(tuple(int(r) for r in ranks), thresholds=(float(thresholds[0]), float(thresholds[1])),
                              knee_axis=knee_axis, tolerance=tol, monotone=monotone, rounds=rounds)
    raise ConfigError(f"search must be one of {', '.join(SEARCHES)}, got {search!r}")


@dataclass(frozen=True)
class Replay:
    """A search replayed against a measured curve: the ranks it trained, round by round, and the
    read-offs of the full grid and of the searched points (both on the curve's fit)."""

    search: str
    tolerance: Tolerance | None
    rounds: tuple[tuple[int, ...], ...]
    grid: CurveAnalysis
    searched: CurveAnalysis
    left_open: tuple[str, ...] = ()  # what the round budget stopped the search short of (AdaptiveSearch.left_open)

    @property
    def trials(self) -> int:
        return sum(len(ranks) for ranks in self.rounds)

    def to_dict(self) -> dict:
        return {
            "search": self.search,
            "tolerance": None if self.tolerance is None else _tolerance_dict(self.tolerance),
            "rounds": [list(ranks) for ranks in self.rounds],
            "trials": self.trials,
            "grid_trials": len(self.grid.ranks),
            "grid": self.grid.to_dict(),
            "searched": self.searched.to_dict(),
            "left_open": list(self.left_open),
        }


def _tolerance_dict(tolerance: Tolerance) -> dict:
    """As JSON: ranks and fraction, or on the grid neither (there they mean nothing)."""
    if tolerance.on_grid:
        return {"ranks": None, "fraction": None, "grid": True}
    return {"ranks": tolerance.ranks, "fraction": tolerance.fraction, "grid": False}


def replay(curve: CurveAnalysis, search: str, grid: Sequence[float] | None = None,
           tolerance: str | float | Tolerance | None = None) -> Replay:
    """Run ``search`` against ``curve``: each rank it asks for is answered by the curve's PCHIP fit.

    ``grid`` (default: the curve's own ranks) is the full grid to compare with and gives the
    search its bounds; it must be integer ranks inside the measured range (the fit does not
    extrapolate). Both read-offs use the curve's thresholds, knee axis and monotone mode.
    """
    low, high = curve.ranks[0], curve.ranks[-1]
    grid = curve.ranks if grid is None else grid
    if any(float(r) != int(r) for r in grid):
        raise AnalysisError(f"a search trains integer ranks; the grid has {next(r for r in grid if r != int(r)):g} "
                            f"(give integer ranks with --ranks)")
    ranks = sorted({int(r) for r in grid})
    if ranks[0] < low or ranks[-1] > high:
        raise AnalysisError(f"the curve is measured from rank {low:g} to {high:g}; it cannot answer for rank "
                            f"{ranks[0] if ranks[0] < low else ranks[-1]} of the grid")
    searcher = make_search(search, ranks, thresholds=curve.region.thresholds, knee_axis=curve.knee_axis,
                           tolerance=tolerance, monotone=curve.monotone_mode)
    measured: dict[int, float] = {}
    rounds = []
    while asked := searcher.next_ranks(measured):
        rounds.append(tuple(asked))
        measured.update(zip(asked, curve.fit(asked).tolist()))

    def read(points: Sequence[int]) -> CurveAnalysis:
        return analyze_curve(points, curve.fit(points) * curve.teacher_accuracy, curve.teacher_accuracy,
                             thresholds=curve.region.thresholds, knee_axis=curve.knee_axis,
                             monotone=curve.monotone_mode)

    left = tuple(searcher.left_open(measured)) if isinstance(searcher, AdaptiveSearch) else ()
    return Replay(search=search, tolerance=getattr(searcher, "tolerance", None), rounds=tuple(rounds),
                  grid=read(ranks), searched=read(sorted(measured)), left_open=left)
