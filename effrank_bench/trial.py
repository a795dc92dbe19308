"""One trial: factorize a copy of the teacher at a rank, distill it, evaluate it, measure it."""
from __future__ import annotations

import copy

import torch

from effrank_bench.environment import environment
from effrank_bench.errors import TrialFailed
from effrank_bench.factorize import factorize
from effrank_bench.progress import NullProgress, Progress
from effrank_bench.records import Trial, TrialRecord
from effrank_bench.setup import RunSetup
from effrank_bench.teacher import Teacher
from effrank_bench.train import Recipe, distill, evaluate


def trial_seed(trial: Trial) -> int:
    """The seed of a student's init and data order: one per (seed, rank), the same in every executor."""
    return trial.seed * 100_003 + trial.rank


def run_trial(setup: RunSetup, teacher: Teacher, trial: Trial, progress: Progress = NullProgress()) -> TrialRecord:
    """Train and measure one student; a loss that turns NaN gives a failed record, not an exception."""
    config = setup.config
    common = dict(arch=config.arch, target=trial.target, loss=trial.loss, dataset=config.dataset, rank=trial.rank,
                  seed=trial.seed, init=config.init, environment=environment(str(setup.device)))
    torch.manual_seed(trial_seed(trial))
    student = copy.deepcopy(teacher.model)
    replaced = factorize(student, setup.sites, trial.rank, init=config.init, qkv=config.qkv)
    setup.to_device(student)
    train = setup.batches(setup.splits.train, shuffle=True, seed=trial_seed(trial))
    try:
        fit = distill(teacher.model, student, setup.parts.arch.branches, train, setup.batches(setup.splits.val),
                      setup.parts.loss, config.loss_options,
                      Recipe(config.epochs, config.lr, config.weight_decay, amp=config.amp),
                      label=trial.label(len(config.seeds)), progress=progress)
    except TrialFailed as err:
        return TrialRecord(status="failed", error=str(err), **common)
    return TrialRecord(
        status="ok", val_accuracy=fit.val_accuracy,
        test_accuracy=evaluate(student, setup.batches(setup.splits.test), config.amp),
        history=fit.history, train_seconds=fit.seconds,
        samples_per_second=config.epochs * len(setup.splits.train) / fit.step_seconds,
        cost=setup.cost(student, replaced.values()), **common,
    )
