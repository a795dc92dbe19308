"""Teacher training, the teacher pass, the student distillation step, and evaluation."""
from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from effrank_bench.data import Batches
from effrank_bench.errors import ConfigError, TrialFailed
from effrank_bench.progress import NullProgress, Progress
from effrank_bench.specs import Branch, LossOptions, LossSpec, Outputs
from effrank_bench.taps import BranchTap


Schedule = Literal["cosine", "constant"]
Select = Literal["best", "last"]


@dataclass(frozen=True)
class Recipe:
    """How long and how fast to train: AdamW (or SGD) with a linear warm-up, then a cosine schedule.

    ``schedule="constant"`` keeps the learning rate at ``lr`` throughout, with no warm-up (the reference
    paper's). ``select`` is which weights the fit ends with: ``best``, the epoch with the best validation
    accuracy, or ``last``, those after the last epoch (the paper's; the only choice without a validation
    split). ``label_smoothing`` applies to the teacher's cross-entropy; ``amp`` is bf16 autocast on CUDA.
    """

    epochs: int
    lr: float
    weight_decay: float = 0.01
    warmup_fraction: float = 0.05
    optimizer: Literal["adamw", "sgd"] = "adamw"
    label_smoothing: float = 0.0
    amp: bool = True
    schedule: Schedule = "cosine"
    select: Select = "best"


@dataclass
class FitResult:
    """The selected model's validation accuracy (None without a validation split), and the per-epoch
    curve that led there.

    ``seconds`` is the whole fit; ``step_seconds`` only its training steps (no validation), the
    time that throughput is measured against.
    """

    val_accuracy: float | None
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    step_seconds: float = 0.0


def autocast(device: torch.device, enabled: bool = True) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (no loss scaling needed); full precision on CPU, where bf16 is slow."""
    if device.type == "cuda" and enabled:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def make_optimizer(model: nn.Module, recipe: Recipe, device: torch.device, total_steps: int):
    # Fused AdamW was measured 1.3–1.5× faster per step on an H100 (the project's design notes); SGD's fused
    # kernel is the same idea, unmeasured here. CPU has none.
    fused = device.type == "cuda"
    if recipe.optimizer == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=0.9, nesterov=True,
                                    weight_decay=recipe.weight_decay, fused=fused)
    else:
        optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay,
                                      fused=fused)
    warmup = max(1, int(recipe.warmup_fraction * total_steps))

    def factor(step: int) -> float:
        if recipe.schedule == "constant":
            return 1.0
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@torch.no_grad()
def evaluate(model: nn.Module, batches: Batches, amp: bool = True) -> float | None:
    """Top-1 accuracy in [0, 1]; None for an empty split (a run without validation data)."""
    was_training = model.training
    model.eval()
    correct = total = 0
    for x, y in batches:
        with autocast(x.device, amp):
            logits = model(x)
        correct += (logits.argmax(-1) == y).sum().item()
        total += y.numel()
    model.train(was_training)
    return correct / total if total else None


@contextlib.contextmanager
def tapped(branches: list[Branch] | None) -> Iterator[BranchTap | None]:
    tap = BranchTap(branches) if branches is not None else None
    try:
        yield tap
    finally:
        if tap is not None:
            tap.close()


def _forward(model: nn.Module, tap: BranchTap | None, x: torch.Tensor) -> Outputs:
    return tap.forward(model, x) if tap is not None else Outputs(logits=model(x))


@torch.no_grad()
def teacher_outputs(teacher: nn.Module, tap: BranchTap | None, x: torch.Tensor, amp: bool = True) -> Outputs:
    """One frozen teacher pass; kept apart from the student step so one pass can feed several students."""
    with autocast(x.device, amp):
        return _forward(teacher, tap, x)


def student_step(student: nn.Module, tap: BranchTap | None, x: torch.Tensor, y: torch.Tensor,
                 teacher: Outputs, loss: LossSpec, options: LossOptions, optimizer, scheduler,
                 amp: bool = True) -> torch.Tensor:
    """One distillation step; returns the loss, detached and still on the device (no sync)."""
    with autocast(x.device, amp):
        value = loss.compute(teacher, _forward(student, tap, x), y, options)
    optimizer.zero_grad(set_to_none=True)
    value.backward()
    optimizer.step()
    scheduler.step()
    return value.detach()


class _BestOnValidation:
    """Keeps a copy of the weights of the epoch with the best validation accuracy."""

    def __init__(self) -> None:
        self.accuracy, self.state = -1.0, None

    def offer(self, model: nn.Module, accuracy: float) -> None:
        if accuracy > self.accuracy:
            self.accuracy, self.state = accuracy, copy.deepcopy(model.state_dict())

    def restore(self, model: nn.Module) -> None:
        model.load_state_dict(self.state)


class _Last:
    """Keeps the weights after the last epoch, as they are: nothing to copy."""

    def __init__(self) -> None:
        self.accuracy: float | None = None

    def offer(self, model: nn.Module, accuracy: float | None) -> None:
        self.accuracy = accuracy

    def restore(self, model: nn.Module) -> None:
        pass


def _fit(model: nn.Module, train: Batches, val: Batches, recipe: Recipe, step: Callable, label: str,
         progress: Progress) -> FitResult:
    """The loop shared by teacher training and distillation: epochs, NaN check, weights selected by
    ``recipe.select``. An empty ``val`` is not evaluated (its accuracies are None)."""
    if recipe.select == "best" and len(val) == 0:
        raise ConfigError("keeping the best epoch on validation needs a validation split, and it is empty; "
                          "keep the last epoch's weights instead (--select last)")
    start = time.perf_counter()
    optimizer, scheduler = make_optimizer(model, recipe, train.device, recipe.epochs * len(train))
    best = _BestOnValidation() if recipe.select == "best" else _Last()
    history, step_seconds = [], 0.0
    model.train()
    with progress.task(label, total=recipe.epochs * len(train)) as advance:
        for epoch in range(1, recipe.epochs + 1):
            epoch_start = time.perf_counter()
            total = torch.zeros((), device=train.device)
            for x, y in train:
                total += step(x, y, optimizer, scheduler)
                advance(1)
            # One sync per epoch: checking every step would stall a GPU pipeline.
            mean_loss = total.item() / len(train)
            step_seconds += time.perf_counter() - epoch_start
            if not math.isfinite(mean_loss):
                raise TrialFailed(f"loss became {mean_loss} in epoch {epoch}")
            val_accuracy = evaluate(model, val, recipe.amp)
            history.append({"epoch": epoch, "loss": mean_loss, "val_accuracy": val_accuracy})
            best.offer(model, val_accuracy)
    best.restore(model)
    model.eval()
    return FitResult(val_accuracy=best.accuracy, history=history, seconds=time.perf_counter() - start,
                     step_seconds=step_seconds)


def train_teacher(model: nn.Module, train: Batches, val: Batches, recipe: Recipe,
                  progress: Progress = NullProgress()) -> FitResult:
    """Supervised training (or fine-tuning) of the full-rank teacher with cross-entropy."""

    def step(x, y, optimizer, scheduler):
        with autocast(x.device, recipe.amp):
            loss = F.cross_entropy(model(x), y, label_smoothing=recipe.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        return loss.detach()

    return _fit(model, train, val, recipe, step, "teacher", progress)


def distill(teacher: nn.Module, student: nn.Module, branches: Callable[[nn.Module], list[Branch]],
            train: Batches, val: Batches, loss: LossSpec, options: LossOptions, recipe: Recipe,
            label: str = "student", progress: Progress = NullProgress()) -> FitResult:
    """Distill ``teacher`` (frozen, eval mode) into ``student`` with ``loss``; every student parameter trains.

    A student is usually a copy of its teacher, so it would inherit the freeze: it is lifted here.
    """
    teacher.eval().requires_grad_(False)
    student.requires_grad_(True)
    needs = loss.uses_features
    with tapped(branches(teacher) if needs else None) as t_tap, tapped(branches(student) if needs else None) as s_tap:
        def step(x, y, optimizer, scheduler):
            return student_step(student, s_tap, x, y, teacher_outputs(teacher, t_tap, x, recipe.amp),
                                loss, options, optimizer, scheduler, recipe.amp)

        return _fit(student, train, val, recipe, step, label, progress)
