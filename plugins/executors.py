"""The local executor: a run's trials in this process, in groups that share one data stream and teacher pass."""
from __future__ import annotations

from typing import TYPE_CHECKING

from effrank_bench import hookimpl
from effrank_bench.checkpoint import Checkpoints, saved_groups
from effrank_bench.grouping import group_size
from effrank_bench.records import Trial
from effrank_bench.specs import ExecutorSpec
from effrank_bench.trial import run_group

if TYPE_CHECKING:  # the sweep imports the rank search and scipy, which a cluster's workers never use
    from effrank_bench.sweep import Execution


def layout(trials: tuple[Trial, ...], saved: list[tuple[Trial, ...]], size: int) -> list[tuple[Trial, ...]]:
    """Groups of up to ``size`` trials of one seed, in plan order; a group with a checkpoint is kept whole,
    first, to resume it.

    A group's students see one data order (each batch feeds them all). Seeds differ by theirs: two seeds
    of one rank in one group would train to the same student (the SVD init draws nothing), and an
    interval over seeds would be zero wide.
    """
    pending = set(trials)
    groups = [group for group in saved if pending & set(group)]
    taken = {trial for group in groups for trial in group}
    by_seed: dict[int, list[Trial]] = {}
    for trial in trials:
        if trial not in taken:
            by_seed.setdefault(trial.seed, []).append(trial)
    return groups + [tuple(same[i:i + size]) for same in by_seed.values() for i in range(0, len(same), size)]


def regrouped(execution: Execution, groups: list[tuple[Trial, ...]], saved: list[tuple[Trial, ...]],
              size: int) -> None:
    """Say which of ``groups`` resume whole from their checkpoint though larger than ``size``, the group size
    asked for now (their students' weights and data order are the group's), and how to regroup them."""
    folder = execution.setup.run.checkpoints_path
    for group in groups:
        if group in saved and len(group) > size:
            name = Checkpoints.name(group)  # a save killed between its renames left only name.old
            kept = next((folder / n for n in (name, f"{name}.old") if (folder / n).is_dir()), folder / name)
            execution.progress.note(f"{len(group)} students resume as the group their checkpoint holds (groups of "
                                    f"{size} are laid out for the trials not started; delete {kept} to train "
                                    "these again in groups of that size)")


def run_locally(execution: Execution) -> None:
    setup = execution.setup
    saved = saved_groups(setup.run.checkpoints_path)
    size = group_size(setup, execution.teacher, len(execution.trials), max(t.rank for t in execution.trials))
    groups = layout(execution.trials, saved, size)
    regrouped(execution, groups, saved, size)
    for group in groups:
        run_group(setup, execution.teacher, group, execution.record, execution.progress)


@hookimpl
def register_executors(register):
    register(ExecutorSpec(name="local", execute=run_locally,
                          description="this process; students of a group share each batch and teacher pass"))
