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

    @property
    def label(self) -> str:
        return f"rank {self.rank}"


def plan_trials(config: RunConfig, done: set[tuple[str, str, int, int]]) -> list[Trial]:
    """Every rank of the config, smallest first, skipping keys already recorded."""
    trials = [Trial(config.target, config.loss, rank, config.seed) for rank in config.ranks]
    return [t for t in trials if t.key not in done]
