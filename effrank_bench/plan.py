"""The trials of a sweep, minus those the run directory already holds."""
from __future__ import annotations

from collections.abc import Iterable

from effrank_bench.config import RunConfig
from effrank_bench.records import Trial


def plan_trials(config: RunConfig, done: set[Trial], ranks: Iterable[int] | None = None) -> list[Trial]:
    """Every rank (of ``ranks``, default the config's) under every seed, skipping trials already recorded.

    Seed by seed, smallest rank first: a sweep stopped early still has whole curves to analyse.
    """
    ranks = sorted(ranks) if ranks is not None else config.ranks
    trials = [Trial(config.target, config.loss, rank, seed) for seed in config.seeds for rank in ranks]
    return [t for t in trials if t not in done]
