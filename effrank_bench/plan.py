"""The trials of a sweep, minus those the run directory already holds; what a rerun would still train."""
from __future__ import annotations

from collections.abc import Iterable

from effrank_bench.config import RunConfig
from effrank_bench.records import Trial, TrialRecord
from effrank_bench.search import AdaptiveSearch, GridSearch, make_search


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


def recorded_seeds(records: list[TrialRecord]) -> dict[int, set[int]]:
    """Rank -> the seeds with a record (ok or failed) at that rank."""
    tried: dict[int, set[int]] = {}
    for r in records:
        tried.setdefault(r.rank, set()).add(r.seed)
    return tried


def failed_ranks(records: list[TrialRecord], seeds: tuple[int, ...]) -> set[int]:
    """Ranks that failed under a seed and have every other seed recorded: done, never asked for again. A rank
    with seeds still to train is not among them, so a search asks for it and its other seeds train."""
    tried = recorded_seeds(records)
    failed = {r.rank for r in records if r.status == "failed" and r.seed in seeds}
    return {rank for rank in failed if tried[rank] >= set(seeds)}


def searcher(config: RunConfig, rounds: int) -> GridSearch | AdaptiveSearch:
    """The search a sweep of ``config`` asks for ranks, ``rounds`` of its budget spent (those asked before)."""
    return make_search(config.search, config.ranks, thresholds=config.thresholds, knee_axis=config.knee_axis,
                       tolerance=config.tolerance, monotone=config.monotone, rounds=rounds)


def rounds_to_resume(asked: list[list[int]], search: GridSearch | AdaptiveSearch, records: list[TrialRecord],
                     seeds: tuple[int, ...]) -> list[list[int]]:
    """The rounds a resumed sweep finishes before it asks ``search`` for more: those ``asked`` before, less the
    ranks not recorded under every seed that ``search`` may not ask for (asked under another --ranks, --search
    or --tolerance: an off-grid rank, under --tolerance grid), and less the rounds that leaves empty."""
    tried = recorded_seeds(records)
    return [kept for round_ in asked
            if (kept := [rank for rank in round_ if tried.get(rank, set()) >= set(seeds) or search.can_ask(rank)])]


def unfinished_trials(config: RunConfig, records: list[TrialRecord], asked: list[list[int]], adaptive_rounds: int,
                      teacher_accuracy: float) -> list[Trial]:
    """The trials the same command would train next in this run directory, in its order (none: the sweep is
    finished).

    As the sweep's own loop, without training: first what the rounds it resumes (:func:`rounds_to_resume`)
    still lack, round by round; then the round its search asks for next. A grid's next round is known
    before those train (its ranks not yet measured); an adaptive search's only after (it refits on them), so
    it comes here only where they lack nothing, and more rounds may follow. ``adaptive_rounds``: the round
    budget an adaptive search spent on ``asked`` (``RunDir.search_log``).
    """
    done, search = {r.trial for r in records}, searcher(config, adaptive_rounds)
    resumed = rounds_to_resume(asked, search, records, config.seeds)
    pending = list(dict.fromkeys(trial for round_ in resumed for trial in plan_trials(config, done, round_)))
    if pending and isinstance(search, AdaptiveSearch):
        return pending
    more = search.next_ranks(measured_curve(records, config.seeds, teacher_accuracy),
                             failed_ranks(records, config.seeds))
    return pending + [trial for trial in plan_trials(config, done, more) if trial not in pending]
