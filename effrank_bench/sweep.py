"""A sweep: a prepared run's teacher, the trials it still lacks, and those trials through the chosen executor."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from rich.markup import escape

from effrank_bench.config import RunConfig
from effrank_bench.plan import plan_trials
from effrank_bench.progress import NullProgress, Progress
from effrank_bench.records import Trial, TrialRecord
from effrank_bench.registry import Registry
from effrank_bench.setup import RunSetup, prepare
from effrank_bench.store import RunDir
from effrank_bench.teacher import Teacher, obtain_teacher


@dataclass(frozen=True)
class Execution:
    """What an executor is handed: the prepared run, its teacher, the trials left, where records go."""

    setup: RunSetup
    teacher: Teacher
    trials: tuple[Trial, ...]
    record: Callable[[TrialRecord], None]
    progress: Progress


def execute(setup: RunSetup, progress: Progress = NullProgress()) -> RunDir:
    """Run every trial of ``setup`` not yet recorded; each record is appended the moment it arrives.

    This process is the only writer of the run directory, whichever executor runs the trials.
    """
    config = setup.config
    run = RunDir.open(setup.run.path, config)
    run.store_target(setup.target_info())
    teacher = obtain_teacher(setup, progress)
    run.store_teacher(teacher.weights, teacher.record)
    progress.note(f"teacher: test accuracy {teacher.record.test_accuracy:.4f} ({teacher.record.source})")
    done = {record.trial for record in run.records()}
    trials = plan_trials(config, done)
    if done:
        progress.note(f"resuming {run.path}: {len(done)} trial(s) already recorded")
    with progress.task("sweep", total=len(trials)) as advance:
        def record(result: TrialRecord) -> None:
            run.append(result)
            if result.status == "failed":
                label = result.trial.label(len(config.seeds))
                progress.note(f"[red]{label} failed: {escape(result.error or '')}")
            advance(1)

        setup.parts.executor.execute(Execution(setup, teacher, tuple(trials), record, progress))
    return run


def run_sweep(config: RunConfig, registry: Registry | None = None, progress: Progress = NullProgress()) -> RunDir:
    """Prepare ``config`` and execute it: the library's one call for a whole sweep."""
    return execute(prepare(config, registry), progress)
