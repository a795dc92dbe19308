"""The trials of a sweep, minus those the run directory already holds; what a rerun would still train."""
from __future__ import annotations

from collections.abc import Iterable

from effrank_bench.config import RunConfig
from effrank_bench.records import Trial, TrialRecord
from effrank_bench.search import make_search, parse_tolerance


def plan_trials(config: RunConfig, done: set[Trial], ranks: Iterable[int] | None = None) -> list[Trial]:
    """Every rank (of ``ranks``, default the config's) under every seed, skipping trials already recorded.

    Seed by seed, smallest rank first: a sweep stopped early still has whole curves to analyse.
    """
    ranks = sorted(ranks) if ranks is not None else config.ranks
    trials = [Trial(config.target, config.loss, rank, seed) for seed in config.seeds for rank in ranks]
    return [t for t in trials if t not in done]


def measured_curve(records: list[TrialRecord], seeds: tuple[int, ...], teacher_accuracy: float) -> dict[int, float]:
    """Rank -> mean normalized test accuracy, for the ranks where every seed finished (none for a teacher at 0)."""
    if teacher_accuracy <= 0:
        return {}
    ok: dict[int, list[float]] = {}
    for r in records:
        if r.status == "ok" and r.seed in seeds:
            ok.setdefault(r.rank, []).append(r.test_accuracy)
    return {rank: sum(accs) / len(accs) / teacher_accuracy for rank, accs in ok.items() if len(accs) == len(seeds)}


def failed_ranks(records: list[TrialRecord], seeds: tuple[int, ...]) -> set[int]:
    """Ranks that failed under a seed and have every other seed recorded: done, never asked for again. A rank
    with seeds still to train is not among them, so a search asks for it and its other seeds train."""
    tried: dict[int, set[int]] = {}
    for r in records:
        tried.setdefault(r.rank, set()).add(r.seed)
    failed = {r.rank for r in records if r.status == "failed" and r.seed in seeds}
    return {rank for rank in failed if tried[rank] >= set(seeds)}


def search_settings(config: RunConfig) -> str:
    """What a sweep's choice of ranks depends on besides what it measured: ``"grid"``, or ``"adaptive,
    tolerance ..."`` (its tolerance as parsed, so that ``10%`` and the default are the same)."""
    return "grid" if config.search == "grid" else f"adaptive, tolerance {parse_tolerance(config.tolerance)}"


def rounds_to_resume(asked: list[list[int]], asked_with: str | None, config: RunConfig,
                     records: list[TrialRecord]) -> list[list[int]]:
    """The rounds a resumed sweep finishes before it asks its search for more: all of ``asked`` where they were
    asked with ``config``'s search settings (or by a version that did not keep them); asked with others
    (another --search or --tolerance), only their ranks with a record: the others were another search's
    choices (an off-grid rank, under --tolerance grid), and this search asks for what it needs itself."""
    if asked_with is None or asked_with == search_settings(config):
        return asked
    recorded = {r.rank for r in records}
    return [kept for round_ in asked if (kept := [rank for rank in round_ if rank in recorded])]


def unfinished_trials(config: RunConfig, records: list[TrialRecord], asked: list[list[int]], asked_with: str | None,
                      teacher_accuracy: float) -> list[Trial]:
    """The trials the same command would still train in this run directory (none: the sweep is finished).

    Those of the rounds its search asked for (``search.json``, as :func:`rounds_to_resume` keeps them) and of
    the round it would ask for next, given what is recorded, minus what is recorded: the sweep's own loop,
    without training.
    """
    asked = rounds_to_resume(asked, asked_with, config, records)
    search = make_search(config.search, config.ranks, thresholds=config.thresholds, knee_axis=config.knee_axis,
                         tolerance=config.tolerance, monotone=config.monotone, rounds=len(asked))
    more = search.next_ranks(measured_curve(records, config.seeds, teacher_accuracy),
                             failed_ranks(records, config.seeds))
    ranks = {rank for round_ in asked for rank in round_} | set(more)
    return plan_trials(config, {r.trial for r in records}, ranks)
