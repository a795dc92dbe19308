"""Recipe switches: constant learning rate, best or last weights, the validation fraction (0: none)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from effrank_bench.config import RunConfig, load_config
from effrank_bench.data import Batches
from effrank_bench.errors import ConfigError
from effrank_bench.report import build_report
from effrank_bench.sweep import run_sweep
from effrank_bench.train import Recipe, fit, make_optimizer, per_batch
from effrank_bench_plugins.splits import held_out_val, stratified_split


def test_a_constant_schedule_keeps_the_learning_rate_from_the_first_step():
    model = nn.Linear(4, 2)
    optimizer, scheduler = make_optimizer(model, Recipe(1, 0.3, warmup_fraction=0.2, schedule="constant"),
                                          torch.device("cpu"), 10)
    lrs = []
    for _ in range(10):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs == [0.3] * 10  # no warm-up, no decay


def _batches(x, y):
    return Batches(TensorDataset(x, y), batch_size=8, modality="tokens", input_size=2, device=torch.device("cpu"))


class TaggedLinear(nn.Linear):
    """A Linear whose state also holds a non-tensor, as a module's extra state may (third-party models do)."""

    tag = "untrained"

    def get_extra_state(self):
        return {"tag": self.tag}

    def set_extra_state(self, state):
        self.tag = state["tag"]


def _two_epochs(select: str, val):
    """A fit whose epoch 1 predicts class 0 (right on val) and epoch 2 class 1 (wrong), tagged by epoch."""
    model = TaggedLinear(2, 2)
    epoch = iter([(1.0, 0.0), (0.0, 1.0)])

    def step(x, y, fittings):
        with torch.no_grad():
            bias = next(epoch)
            model.weight.zero_(), model.bias.copy_(torch.tensor(bias))
            model.tag = f"epoch {1 + int(bias[1])}"
        return [torch.zeros(())]

    train = _batches(torch.ones(4, 2), torch.zeros(4, dtype=torch.long))
    (result,) = fit([model], train, val, Recipe(2, 0.1, select=select), per_batch(step), "t")
    return model, result


VAL = (torch.ones(3, 2), torch.zeros(3, dtype=torch.long))


def test_best_keeps_the_best_epoch_and_last_the_last():
    best, fit = _two_epochs("best", _batches(*VAL))
    assert best.bias.tolist() == [1.0, 0.0] and best.tag == "epoch 1" and fit.val_accuracy == 1.0
    assert [e["val_accuracy"] for e in fit.history] == [1.0, 0.0]
    last, fit = _two_epochs("last", _batches(*VAL))
    assert last.bias.tolist() == [0.0, 1.0] and last.tag == "epoch 2" and fit.val_accuracy == 0.0


def test_without_validation_data_nothing_is_evaluated_and_best_is_refused():
    empty = _batches(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long))
    model, fit = _two_epochs("last", empty)
    assert fit.val_accuracy is None and [e["val_accuracy"] for e in fit.history] == [None, None]
    with pytest.raises(ConfigError, match="--select last"):
        _two_epochs("best", empty)


def test_val_fraction_zero_with_best_is_refused_with_the_fix():
    with pytest.raises(ConfigError, match="--select last"):
        load_config(overrides={"val_fraction": 0.0})
    assert load_config(overrides={"val_fraction": 0.0, "select": "last"}).val_fraction == 0.0


def test_recipe_switches_are_in_the_keys_that_they_change():
    base = RunConfig()
    for change in ({"schedule": "constant"}, {"select": "last"}, {"val_fraction": 0.2},
                   {"teacher_schedule": "constant"}):
        assert RunConfig(**change).sweep_key() != base.sweep_key(), change
    assert RunConfig(schedule="constant").teacher_key() == base.teacher_key()  # students only
    for change in ({"select": "last"}, {"val_fraction": 0.2}, {"teacher_schedule": "constant"}):
        assert RunConfig(**change).teacher_key() != base.teacher_key(), change
    # At their defaults the new options leave the keys of earlier runs and teachers as they were.
    assert "schedule" not in base.sweep_fields() and "val_fraction" not in base.sweep_fields()


def test_a_held_out_fraction_of_zero_keeps_every_row_for_training():
    labels = np.repeat(np.arange(4), 25)
    train, val = held_out_val(labels, 0.0)
    assert train.tolist() == list(range(100)) and len(val) == 0
    train, val = held_out_val(labels, 0.2)
    assert len(val) == 20 and np.bincount(labels[val]).tolist() == [5, 5, 5, 5]  # stratified
    assert len(held_out_val(labels)[1]) == 10  # the default 10%


def test_digits_keep_their_test_rows_whatever_the_validation_fraction():
    labels = np.repeat(np.arange(10), 30)
    train, val, test = stratified_split(labels)
    assert (len(train), len(val), len(test)) == (210, 45, 45)  # 70 / 15 / 15
    for fraction in (0.0, 0.25):
        t, v, same = stratified_split(labels, fraction)
        assert same.tolist() == test.tolist()
        assert sorted(np.concatenate([t, v]).tolist()) == sorted(np.concatenate([train, val]).tolist())
        assert len(v) == math.ceil(fraction * 255)


def test_the_papers_recipe_runs_end_to_end_without_validation(tmp_path):
    # The paper's batch 24, four batches of it per pass: what is checked is the recipe, not what it learns.
    config = RunConfig(ranks=(2, 4), epochs=1, teacher_epochs=2, batch_size=24, latency_repeats=2, device="cpu",
                       val_fraction=0.0, select="last", schedule="constant", teacher_schedule="constant",
                       init="paper-rebuild", limit_batches=4, out=tmp_path / "run")
    run = run_sweep(config)
    teacher = run.teacher()
    assert teacher.val_accuracy is None and teacher.num_classes == 10
    assert [e.val_accuracy for e in teacher.history] == [None, None]
    assert teacher.recipe["schedule"] == "constant" and teacher.recipe["select"] == "last"
    records = run.records()
    assert [(r.status, r.init, r.val_accuracy) for r in records] == [("ok", "paper-rebuild", None)] * 2
    assert build_report(run).rows[1].accuracy == records[0].test_accuracy
