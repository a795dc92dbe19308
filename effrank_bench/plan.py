"""The trials of a sweep, minus those the run directory already holds."""
from __future__ import annotations

from dataclasses import dataclass

from effrank_bench.config import RunConfig


@dataclass(frozen=True, order=True)
class Trial:
    """One student: a rank of a target under a loss and a seed."""

    target: str
    loss: str
    rank: int
    seed: int

    @property
    def key(self) -> tuple[str, str, int, int]:
        return (self.target, self.loss, self.rank, self.seed)

    def label(self, seeds: int = 1) -> str:
        return f"rank {self.rank}" if seeds == 1 else f"rank {self.rank} seed {self.seed}"


def plan_trials(config: RunConfig, done: set[tuple[str, str, int, int]]) -> list[Trial]:
    """Every rank of the config under every seed, skipping keys already recorded.

    Seed by seed, smallest rank first: a sweep stopped early still has whole curves to analyse.
    """
    trials = [Trial(config.target, config.loss, rank, seed) for seed in config.seeds for rank in config.ranks]
    return [t for t in trials if t.key not in done]
