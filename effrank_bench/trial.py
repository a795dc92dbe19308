"""Trials: factorize copies of the teacher, distill them together on one data stream, evaluate, measure."""
from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
from rich.markup import escape

from effrank_bench.checkpoint import Checkpoints
from effrank_bench.environment import environment
from effrank_bench.errors import ConfigError, RegistrationError, TrialFailed, one_line
from effrank_bench.factorize import factorize
from effrank_bench.progress import NullProgress, Progress
from effrank_bench.records import Trial, TrialRecord
from effrank_bench.setup import RunSetup
from effrank_bench.teacher import Teacher
from effrank_bench.train import Recipe, distill, evaluate_calibrated, student_threads


def trial_seed(trial: Trial) -> int:
    """The seed of a student's init and data order: one per (seed, rank), the same in every executor."""
    return trial.seed * 100_003 + trial.rank


def group_label(trials: Sequence[Trial], seeds: int) -> str:
    return trials[0].label(seeds) if len(trials) == 1 else f"{len(trials)} students ({trials[0].label(seeds)}, …)"


def run_group(setup: RunSetup, teacher: Teacher, trials: Sequence[Trial], record: Callable[[TrialRecord], None],
              progress: Progress = NullProgress()) -> None:
    """Train the students of ``trials`` together and hand each one's record to ``record`` when it exists.

    Every batch is loaded once and goes through the teacher once for the whole group (the data
    order is that of the group's first trial, so a group of one trains exactly as a lone trial).
    A student whose loss turns NaN leaves the group at once (said in the log) and is recorded as
    failed with the group's other records. With the run's checkpoints, an interrupted group resumes
    from its last checkpoint (which keeps its failures), deleted once its records are written.
    """
    config, trials = setup.config, tuple(trials)
    if len(seeds := sorted({trial.seed for trial in trials})) > 1:
        raise RegistrationError(
            f"executor '{config.executor}' handed one group the trials of seeds {seeds}: a group's students share "
            "one data order, so a group holds one seed's trials (the local executor's layout splits them by seed); "
            f"a checkpoint saved before 2026-11-26 under {setup.run.checkpoints_path} may hold such a group: "
            "delete its folder to train its trials again")
    members = [(t.rank, t.seed) for t in trials] if len(trials) > 1 else []
    env = environment(str(setup.device))

    def common(trial: Trial) -> dict:
        return dict(arch=config.arch, target=trial.target, loss=trial.loss, dataset=config.dataset,
                    rank=trial.rank, seed=trial.seed, init=config.init, group=members, environment=env)

    if config.init == "svd":  # once per process: ViT-B/32's joint target is 72 SVDs, a minute on 2 CPU cores
        rank = max(trial.rank for trial in trials)
        pending = teacher.svd.pending(teacher.model, setup.sites, rank, config.qkv)
        if pending:
            with progress.task(f"SVD of the teacher's {len(pending)} targeted layer{'s' if len(pending) > 1 else ''}",
                               total=len(pending)) as advance:
                teacher.svd.fill(pending, rank, advance)
    students, replaced = [], []
    for trial in trials:
        torch.manual_seed(trial_seed(trial))
        student = copy.deepcopy(teacher.model)
        replaced.append(factorize(student, setup.sites, trial.rank, init=config.init, qkv=config.qkv,
                                  svd=teacher.svd))
        students.append(setup.to_device(student))
    # CUDA graphs replay one batch shape: a compiled CUDA step drops the last partial batch.
    train = setup.training_batches(seed=trial_seed(trials[0]), drop_last=setup.compile and setup.device.type == "cuda")
    checkpoints = Checkpoints(setup.run.checkpoints_path / Checkpoints.name(trials), trials,
                              config.checkpoint_every)

    def failed(i: int, err: TrialFailed) -> None:
        if len(trials) > 1:  # a lone student's record follows at once
            progress.note(f"[red]{escape(trials[i].label(len(config.seeds)))}: {escape(str(err))}; it leaves its "
                          "group, and is recorded as failed with the group's records")

    try:
        results = distill(teacher.model, students, setup.parts.arch.branches, train, setup.batches(setup.splits.val),
                          setup.parts.loss, config.loss_options,
                          Recipe(config.epochs, config.lr, config.weight_decay, amp=config.amp,
                                 schedule=config.schedule, select=config.select),
                          label=group_label(trials, len(config.seeds)), progress=progress, checkpoints=checkpoints,
                          on_failure=failed, compile=setup.compile)
        done = [i for i, result in enumerate(results) if not isinstance(result, TrialFailed) and result is not None]
        tests = evaluate_calibrated([students[i] for i in done], setup.batches(setup.splits.test), config.amp,
                                    threads=student_threads(len(done), setup.device, setup.compile))
    except torch.cuda.OutOfMemoryError as err:
        raise ConfigError(out_of_memory(setup, trials, checkpoints, err)) from None
    # Every record built (each student's cost measured) before the first is handed over, those of students that
    # failed too: an interrupt before then leaves the group unrecorded, and its rerun trains it whole (from its
    # last checkpoint, which keeps its failures), in the same data order, to the same records. Recorded one by
    # one, the students left over would have trained as a group of their own, in the order of its first trial,
    # to other numbers.
    built = {i: TrialRecord(status="failed", error=str(result), **common(trials[i]))
             for i, result in enumerate(results) if isinstance(result, TrialFailed)}
    built |= {i: TrialRecord(
        status="ok", val_accuracy=results[i].val_accuracy, test_accuracy=test and test.accuracy,
        test_ece=test and test.ece, test_nll=test and test.nll, history=results[i].history,
        train_seconds=results[i].seconds,
        samples_per_second=config.epochs * train.samples / results[i].step_seconds,
        cost=setup.student_cost(students[i], trials[i].rank, replaced[i]), **common(trials[i]),
    ) for i, test in zip(done, tests)}
    for i in sorted(built):  # in the group's order
        record(built[i])
    checkpoints.clear()


def out_of_memory(setup: RunSetup, trials: Sequence[Trial], checkpoints: Checkpoints, err: Exception) -> str:
    """What to do when a group ran out of GPU memory: a smaller group, or for a lone student a smaller batch."""
    config = setup.config
    if len(trials) == 1:
        way = ("lower --batch-size" + ("" if config.amp else " or train in bf16 (--amp)") +
               ": another sweep, in a run directory of its own, its teacher trained again")
    else:
        way = f"run again with --group {len(trials) // 2}"
        if config.group == "auto":
            way += f" or a lower --memory-fraction than {config.memory_fraction:g}"
        if checkpoints.folder.exists():
            way += (f"; the checkpoint {checkpoints.folder} resumes its group whole: delete it to regroup "
                    "(its students start again)")
    return f"out of GPU memory training {group_label(trials, len(config.seeds))} ({one_line(err, typed=False)}): {way}"


def run_trial(setup: RunSetup, teacher: Teacher, trial: Trial, progress: Progress = NullProgress()) -> TrialRecord:
    """Train and measure one student (a group of one); a NaN loss gives a failed record, not an exception."""
    records: list[TrialRecord] = []
    run_group(setup, teacher, [trial], records.append, progress)
    return records[0]
