"""The trials of a sweep, minus those the run directory already holds."""
from __future__ import annotations

from effrank_bench.config import RunConfig
from effrank_bench.records import Trial


def plan_trials(config: RunConfig, done: set[Trial]) -> list[Trial]:
    """Every rank of the config under every seed, skipping trials already recorded.

    Seed by seed, smallest rank first: a sweep stopped early still has whole curves to analyse.
    """
    trials = [Trial(config.target, config.loss, rank, seed) for seed in config.seeds for rank in config.ranks]
    return [t for t in trials if t not in done]
