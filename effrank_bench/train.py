"""Teacher training, the teacher pass, the student distillation step, and evaluation."""
from __future__ import annotations

import contextlib
import copy
import functools
import itertools
import math
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Literal, TypeVar

import torch
import torch.nn.functional as F
from rich.markup import escape
from torch import nn

from effrank_bench.calibration import Calibration, CalibrationMeter
from effrank_bench.checkpoint import CheckpointNotWritten, Checkpoints, FitState, ModelState
from effrank_bench.data import Batches
from effrank_bench.errors import CheckpointError, ConfigError, EffrankError, TrialFailed, one_line
from effrank_bench.progress import NullProgress, Progress
from effrank_bench.specs import Branch, LossOptions, LossSpec, Outputs
from effrank_bench.taps import BranchTap


T = TypeVar("T")
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
    # kernel is the same idea, unmeasured here. On CPU torch would step one tensor at a time: the multi-tensor
    # (foreach) kernels give the same numbers bit for bit, 2.3× faster (CPU's fused AdamW differs in the last bits).
    kernels = {"fused": True} if device.type == "cuda" else {"foreach": True}
    if recipe.optimizer == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=0.9, nesterov=True,
                                    weight_decay=recipe.weight_decay, **kernels)
    else:
        optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay,
                                      **kernels)
    warmup = max(1, int(recipe.warmup_fraction * total_steps))

    def factor(step: int) -> float:
        if recipe.schedule == "constant":
            return 1.0
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def evaluate(model: nn.Module, batches: Batches, amp: bool = True) -> float | None:
    """Top-1 accuracy in [0, 1]; None for an empty split (a run without validation data)."""
    return evaluate_many([model], batches, amp)[0]


def evaluate_many(models: list[nn.Module], batches: Batches, amp: bool = True, threads: int = 1) -> list[float | None]:
    """:func:`evaluate` of several models over one pass of ``batches`` (``threads``: as :func:`evaluate_calibrated`)."""
    return [None if result is None else result.accuracy
            for result in evaluate_calibrated(models, batches, amp, threads)]


@torch.no_grad()
def evaluate_calibrated(models: list[nn.Module], batches: Batches, amp: bool = True,
                        threads: int = 1) -> list[Calibration | None]:
    """Accuracy, expected calibration error (15 bins) and NLL of several models over one pass of ``batches``;
    None for an empty split.

    With ``threads`` above 1 on CPU (a group's :func:`student_threads`), the models evaluate side by side, each
    in a thread of one core, through spans of batches read ahead (as much as :data:`AHEAD_BYTES` holds): a
    model's numbers are those of evaluating it alone on one core. Else one model after another on each batch.
    """
    modes = [model.training for model in models]
    meters = [CalibrationMeter() for _ in models]

    @torch.no_grad()  # in each thread: grad mode is a thread's own
    def through(j: int, span: list[tuple[torch.Tensor, torch.Tensor]], stop: threading.Event) -> None:
        for x, y in span:
            if stop.is_set():  # another model's error, or an interrupt: this one stops at its next batch
                return
            with autocast(x.device, amp):
                logits = models[j](x)
            meters[j].update(logits, y)  # outside autocast: the meter's softmax runs in float64

    workers = min(threads, len(models)) if batches.device.type == "cpu" and len(batches) else 1
    total = 0
    try:
        for model in models:
            model.eval()
        with student_pool(workers, lambda: False) as pool:
            data = iter(batches)
            for x, y in data:
                if pool is None:
                    for j in range(len(models)):
                        through(j, [(x, y)], _NEVER)
                    total += y.numel()
                    continue
                span = [(x, y), *itertools.islice(data, batches_ahead((x, y), len(batches)) - 1)]
                in_threads(pool, [functools.partial(through, j, span) for j in range(len(models))])
                total += sum(labels.numel() for _, labels in span)
    finally:
        for model, mode in zip(models, modes):
            model.train(mode)
    return [meter.result() if total else None for meter in meters]


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
        out = _forward(teacher, tap, x)
    if isinstance(teacher, Compiled) and teacher.graphed:
        # CUDA-graph outputs live in the graphs' memory pool, which each student's graph starts a new
        # iteration of (and overwrites): the students need a copy of their own.
        out = Outputs(logits=out.logits.clone(), features=tuple(f.clone() for f in out.features))
    return out


#: ``compute(teacher, student, labels, options) -> scalar``: a loss's function (LossSpec.compute), or it compiled.
LossFn = Callable[[Outputs, Outputs, torch.Tensor, LossOptions], torch.Tensor]


def checked_loss(loss: LossSpec, compute: LossFn | None = None) -> LossFn:
    """``compute`` (the loss's own function, or it compiled), each value it returns checked by ``loss.checked``."""
    compute = compute or loss.compute
    return lambda *args: loss.checked(compute(*args))


def student_step(student: nn.Module, tap: BranchTap | None, x: torch.Tensor, y: torch.Tensor,
                 teacher: Outputs, loss: LossFn, options: LossOptions, optimizer, scheduler,
                 amp: bool = True) -> torch.Tensor:
    """One distillation step; returns the loss, detached and still on the device (no sync)."""
    with autocast(x.device, amp):
        value = loss(teacher, _forward(student, tap, x), y, options)
    optimizer.zero_grad(set_to_none=True)
    value.backward()
    optimizer.step()
    scheduler.step()
    return value.detach()


class _Selection:
    """The weights a fit ends with: the best epoch on validation (a copy kept), or the last one."""

    def __init__(self, select: Select) -> None:
        self.select, self.accuracy, self.state = select, None, None

    def offer(self, model: nn.Module, accuracy: float | None) -> None:
        if self.select == "last":
            self.accuracy = accuracy
        elif self.accuracy is None or accuracy > self.accuracy:
            # A copy of each tensor: a fifth of deepcopy's time for the same state (5 -> 1 ms on micro_vit);
            # a module's extra state (get_extra_state) may be any object.
            self.accuracy = accuracy
            self.state = {k: v.detach().clone() if isinstance(v, torch.Tensor) else copy.deepcopy(v)
                          for k, v in model.state_dict().items()}

    def restore(self, model: nn.Module) -> None:
        if self.state is not None:
            model.load_state_dict(self.state)


@dataclass
class _Fitting:
    """One model being fitted: its optimizer, schedule, selected weights, curve and running loss."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    selection: _Selection
    history: list[dict] = field(default_factory=list)

    def state(self) -> ModelState:
        return ModelState(self.model.state_dict(), self.optimizer.state_dict(), self.scheduler.state_dict(),
                          list(self.history), self.selection.accuracy, self.selection.state)

    def restore(self, state: ModelState) -> None:
        self.model.load_state_dict(state.weights)
        self.optimizer.load_state_dict(state.optimizer)
        self.scheduler.load_state_dict(state.scheduler)
        self.history = list(state.history)
        self.selection.accuracy, self.selection.state = state.best_accuracy, state.best_weights


#: ``step(x, y, fittings) -> losses``: one training step of every model still in the fit, on one batch.
Step = Callable[[torch.Tensor, torch.Tensor, list[_Fitting]], list[torch.Tensor]]
#: ``epoch(train, fittings, advance) -> losses``: one pass over ``train`` training every model still in the fit,
#: each one's summed loss (on the device, not synced); ``advance(n)`` as n more batches are done.
TrainEpoch = Callable[[Batches, list[_Fitting], Callable[[int], None]], list[torch.Tensor]]


def per_batch(step: Step) -> TrainEpoch:
    """The epoch that takes ``step`` on each batch in turn."""

    def epoch(train: Batches, fittings: list[_Fitting], advance: Callable[[int], None]) -> list[torch.Tensor]:
        totals = [torch.zeros((), device=train.device) for _ in fittings]
        for x, y in train:
            for total, value in zip(totals, step(x, y, fittings)):
                total += value
            advance(1)
        return totals

    return epoch


def _random_state(train: Batches) -> dict[str, torch.Tensor]:
    state = {"torch": torch.get_rng_state(), "data": train.generator.get_state()}
    if train.device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(train.device)
    return state


def _set_random_state(train: Batches, state: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(state["torch"])
    train.generator.set_state(state["data"])
    if "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], train.device)


def fit(models: list[nn.Module], train: Batches, val: Batches, recipe: Recipe, epoch_of: TrainEpoch, label: str,
        progress: Progress = NullProgress(), checkpoints: Checkpoints | None = None,
        on_failure: Callable[[int, TrialFailed], None] = lambda i, err: None,
        threads: int = 1) -> list[FitResult | TrialFailed]:
    """The one training loop, for a teacher and for a group of students fed the same batches.

    Epochs of ``epoch_of`` over ``train``; after each, a NaN check (one sync per epoch per model) and,
    with a validation split, evaluation (on ``threads``, as :func:`evaluate_calibrated`); the weights kept
    are those ``recipe.select`` picks. A model whose loss is not finite leaves the fit (``on_failure``
    hears of it at once) and the others go on. With ``checkpoints``, the fit resumes from the saved state
    and saves its own as it goes, the models that failed included.
    Returns, per model, its FitResult or the TrialFailed that ended it.
    """
    if recipe.select == "best" and len(val) == 0:
        raise ConfigError("keeping the best epoch on validation needs a validation split, and it is empty; "
                          "keep the last epoch's weights instead (--select last)")
    start = time.perf_counter()
    fittings = [_Fitting(model, *make_optimizer(model, recipe, train.device, recipe.epochs * len(train)),
                         _Selection(recipe.select)) for model in models]
    results: list[FitResult | TrialFailed | None] = [None] * len(models)
    active, first_epoch, step_seconds = list(range(len(models))), 1, 0.0
    saved = checkpoints.load() if checkpoints is not None else None
    if saved is not None:
        if saved.batches not in (None, len(train)):
            # Its schedules were laid out over the other count: resumed, they would end off their course.
            raise CheckpointError(f"the checkpoint {checkpoints.folder} was saved with {saved.batches} training batches "
                                  f"per epoch, this run has {len(train)} (a compiled CUDA run drops the last partial "
                                  "batch, and since 2026-11-27 every run leaves out a last batch of one sample): "
                                  "resume with the --compile and --device it was saved with, or delete that folder "
                                  "to train its trials again from the start")
        active = [i for i in active if i in saved.models]
        for i in active:
            fittings[i].restore(saved.models[i])
        for i, reason in saved.failed.items():
            results[i] = TrialFailed(reason)
        first_epoch, step_seconds = saved.epoch + 1, saved.step_seconds
        start -= saved.seconds  # the record's train_seconds counts the fit's earlier processes too
        _set_random_state(train, saved.rng)
        progress.note(f"{label}: resumed from its checkpoint after epoch {saved.epoch} of {recipe.epochs}")
    for fitting in fittings:
        fitting.model.train()
    with progress.task(label, total=recipe.epochs * len(train)) as advance:
        advance((first_epoch - 1) * len(train))
        for epoch in range(first_epoch, recipe.epochs + 1):
            epoch_start = time.perf_counter()
            totals = epoch_of(train, [fittings[i] for i in active], advance)
            # One sync per epoch: checking every step would stall a GPU pipeline.
            mean_losses = {i: total.item() / len(train) for i, total in zip(active, totals)}
            step_seconds += time.perf_counter() - epoch_start
            for i, mean_loss in mean_losses.items():
                if not math.isfinite(mean_loss):
                    results[i] = TrialFailed(f"loss became {mean_loss} in epoch {epoch}")
                    active.remove(i)
                    on_failure(i, results[i])
            accuracies = evaluate_many([fittings[i].model for i in active], val, recipe.amp, threads)
            for i, accuracy in zip(active, accuracies):
                fittings[i].history.append({"epoch": epoch, "loss": mean_losses[i], "val_accuracy": accuracy})
                fittings[i].selection.offer(fittings[i].model, accuracy)
            if not active:
                break
            if checkpoints is not None and checkpoints.due(epoch, recipe.epochs):
                try:
                    checkpoints.save(FitState(epoch, step_seconds, _random_state(train),
                                              {i: fittings[i].state() for i in active},
                                              seconds=time.perf_counter() - start, batches=len(train),
                                              failed={i: str(result) for i, result in enumerate(results)
                                                      if isinstance(result, TrialFailed)}))
                except CheckpointNotWritten as err:  # hours of training are not given up for a full disk
                    progress.note(f"[yellow]{label}: {escape(str(err))}")
    seconds = time.perf_counter() - start
    for i in active:
        fittings[i].selection.restore(fittings[i].model)
        fittings[i].model.eval()
        results[i] = FitResult(val_accuracy=fittings[i].selection.accuracy, history=fittings[i].history,
                               seconds=seconds, step_seconds=step_seconds)
    return results


def train_teacher(model: nn.Module, train: Batches, val: Batches, recipe: Recipe,
                  progress: Progress = NullProgress()) -> FitResult:
    """Supervised training (or fine-tuning) of the full-rank teacher with cross-entropy."""

    def step(x, y, fittings):
        (f,) = fittings
        with autocast(x.device, recipe.amp):
            loss = F.cross_entropy(f.model(x), y, label_smoothing=recipe.label_smoothing)
        f.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        f.optimizer.step()
        f.scheduler.step()
        return [loss.detach()]

    (result,) = fit([model], train, val, recipe, per_batch(step), "teacher", progress)
    if isinstance(result, TrialFailed):
        raise TrialFailed(f"the teacher's {result}; lower --teacher-lr")
    return result


class Compilation:
    """The compiled functions of one fit: the first failure of any sends all of them back to eager, for good.

    A model's forward compiles in ``reduce-overhead`` mode on CUDA (CUDA graphs: the launch-bound student step
    was measured 2.7× faster than eager on an H100 in the project's design notes), which needs batches of one
    shape; on CPU in the default mode. The loss compiles in the default mode everywhere: fused, its
    element-wise work over every branch output (a dozen float32 kernels per map, forward and backward, when
    eager) made the compiled CUDA step 1.7× faster (benchmarks/throughput.py, H200). Its inputs are the
    forwards' graph outputs, which CUDA graphs of its own would only copy.
    """

    def __init__(self, device: torch.device, progress: Progress):
        self.progress, self.cuda, self.active = progress, device.type == "cuda", True

    def forward(self, model: nn.Module) -> Compiled:
        return Compiled(model, self, graphs=self.cuda)

    def loss(self, compute: LossFn) -> Compiled:
        return Compiled(compute, self, graphs=False)

    def eager(self) -> None:
        """Run every function eagerly from now on."""
        self.active = False

    def guarded(self, compiled: Callable[[], T], eager: Callable[[], T]) -> T:
        """``compiled()``; where the compiler fails it, every function of the fit goes eager and ``eager()``
        answers instead. The warning comes once eager has run (an error eager makes too is not the compiler's:
        it propagates without one), and only for the failure that ended compilation (a second in the same
        step says nothing new). The project's own errors and out-of-memory propagate at once."""
        try:
            return compiled()
        except (EffrankError, torch.cuda.OutOfMemoryError):
            raise  # not the compiler's: eager would fail the same way
        except Exception as err:  # noqa: BLE001 - any compiler failure: eager still trains correctly
            first = self.active
            self.eager()
            out = eager()
            if first:
                self.progress.note(f"[yellow]torch.compile failed, training on in eager mode: {one_line(err)}")
            return out


class Compiled:
    """``fn`` through ``torch.compile`` while its :class:`Compilation` is active; ``fn`` itself after."""

    def __init__(self, fn: Callable, compilation: Compilation, graphs: bool):
        self.fn, self.compilation, self._graphs = fn, compilation, graphs
        self._compiled = torch.compile(fn, mode="reduce-overhead" if graphs else None, dynamic=False)

    @property
    def graphed(self) -> bool:
        """Whether its outputs live in a CUDA graph's memory pool: compiled with CUDA graphs, not fallen back."""
        return self._graphs and self.compilation.active

    def __call__(self, *args):
        if self.compilation.active:
            return self.compilation.guarded(lambda: self._compiled(*args), lambda: self.fn(*args))
        return self.fn(*args)


def allow_recompiles(students: int) -> None:
    """Let dynamo keep a compiled forward for the teacher and each of ``students`` at two batch shapes.

    They share their forward's code: dynamo compiles it once per rank (parameter shapes differ) and per batch
    shape (a partial last batch, where it is kept), and past its limit (8 by default) it would run the rest
    eagerly, unannounced. ``cache_size_limit`` is the name every torch this project supports knows (later ones
    alias it as ``recompile_limit``, which torch 2.6 lacks)."""
    dynamo = torch._dynamo.config
    dynamo.cache_size_limit = max(dynamo.cache_size_limit, 2 * (students + 1))


def student_threads(students: int, device: torch.device, compiled: bool) -> int:
    """Threads to step a group's students on, side by side, each computing on one core: on CPU, one per core
    of this process's torch (``torch.get_num_threads()``), at most one per student.

    The micro presets' small operators split poorly across cores: six students stepped by two threads of one
    core each ran a median 1.18x as fast as one after another on two cores (``benchmarks/throughput.py``
    against ``--no-student-threads``, eight alternated pairs, 2026-11-26). Their evaluations run on as many
    (the six evaluated on the digits validation split 1.23x as fast as in turn, median of ten alternated pairs,
    2026-11-27: a micro forward is more Python than arithmetic, and Python runs one thread at a time). Eager
    only (torch.compile is not thread-safe); on CUDA the kernels queue on one stream: 1 there, and for a lone
    student, who keeps every core (a group of one trains exactly as the paper-style engine did).
    """
    if compiled or device.type != "cpu":
        return 1
    return max(1, min(students, torch.get_num_threads()))


def draws_random_numbers(model: nn.Module, step: Callable[[], object]) -> bool:
    """Whether ``step()`` (a training forward of ``model`` and its loss) draws from torch's global generator
    (dropout, stochastic depth, a loss that samples): students stepped in threads would take their draws in
    no fixed order. Run without gradients; the generator, the model's buffers (batch-norm statistics) and
    every module's mode are left as they were."""
    buffers = [buffer.clone() for buffer in model.buffers()]
    modes = [(module, module.training) for module in model.modules()]
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            before = torch.get_rng_state()
            model.train()
            step()
            return not torch.equal(before, torch.get_rng_state())
    finally:
        for module, mode in modes:
            module.training = mode
        with torch.no_grad():
            for buffer, kept in zip(model.buffers(), buffers):
                buffer.copy_(kept)


@contextlib.contextmanager
def student_pool(workers: int, draws: Callable[[], bool]) -> Iterator[ThreadPoolExecutor | None]:
    """Threads of one core each to step students on (:func:`student_threads` of them), or None: for fewer than
    two, or where ``draws()`` says the students draw random numbers. This process's torch keeps its own
    thread count (the threads' setting of 1 would otherwise become the default of threads started later)."""
    if workers < 2 or draws():
        yield None
        return
    threads = torch.get_num_threads()
    pool = ThreadPoolExecutor(workers, initializer=torch.set_num_threads, initargs=(1,))
    try:
        yield pool
    finally:
        pool.shutdown(cancel_futures=True)
        torch.set_num_threads(threads)


#: The most bytes of teacher outputs (and their inputs) a CPU group computes ahead of its students, or of inputs
#: it reads ahead of their evaluation: all of an epoch's on the micro presets (2.2 MB a batch of teacher outputs
#: for micro_vit), one batch at a time for a ViT-B/32 at 224.
AHEAD_BYTES = 256 * 2**20


def batches_ahead(batch: tuple[torch.Tensor, ...], most: int) -> int:
    """How many batches the size of ``batch`` (an input, and the teacher's outputs or labels) a CPU group
    holds at once, its teacher's passes computed ahead of its students' steps or its inputs read ahead of their
    evaluation: as many as :data:`AHEAD_BYTES` holds, between 1 and ``most``."""
    size = sum(t.numel() * t.element_size() for t in batch)
    return max(1, min(most, AHEAD_BYTES // size))


def read_ahead(x: torch.Tensor, y: torch.Tensor, target: Outputs, batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
               teacher_pass: Callable[[torch.Tensor], Outputs], most: int) -> list[tuple[torch.Tensor, torch.Tensor, Outputs]]:
    """A span for :func:`side_by_side`: this batch (``x``, ``y``, the teacher's ``target``) and as many more of
    ``batches`` as :func:`batches_ahead` allows (``most``: the epoch's batches), each with its teacher pass."""
    more = itertools.islice(batches, batches_ahead((x, target.logits, *target.features), most) - 1)
    return [(x, y, target)] + [(x, y, teacher_pass(x)) for x, y in more]


def side_by_side(pool: ThreadPoolExecutor, threads: int, batches: list[tuple[torch.Tensor, torch.Tensor, Outputs]],
                 fittings: list[_Fitting], totals: list[torch.Tensor],
                 step: Callable[[_Fitting, torch.Tensor, torch.Tensor, Outputs], torch.Tensor],
                 advance: Callable[[int], None]) -> None:
    """Each student takes ``step`` on every batch of ``batches`` (input, labels, teacher outputs), in order, in
    ``threads`` threads of ``pool``, without waiting for the others between batches; its losses are added to its
    ``totals``.

    A barrier after every batch left a core idle while the last student of the batch stepped, and a student's
    whole span per thread left one thread stepping its last student alone at the end (0.1-0.3 s of the default
    sweep's 2.6 s of steps, a thread holding the GIL more often than the other): here each thread takes, one step
    at a time, a student no other is stepping, the one with the most batches left (the largest of those first),
    so that the threads finish within a step of each other. Each student's numbers are those of stepping in turn
    (one thread each, the same batches in the same order). ``advance`` is called from this thread, with the
    batches' worth of steps done; where it raises (an interrupt) or a student's step does, the other students
    stop at their next batch before it propagates.
    """
    done = [0] * len(fittings)
    held: set[int] = set()
    lock = threading.Lock()
    sizes = [sum(p.numel() for p in f.model.parameters()) for f in fittings]

    def take() -> int | None:
        with lock:
            free = [j for j in range(len(fittings)) if j not in held and done[j] < len(batches)]
            if not free:  # every student left is being stepped: no thread could help with it
                return None
            j = max(free, key=lambda j: (len(batches) - done[j], sizes[j]))
            held.add(j)
            return j

    def work(stop: threading.Event) -> None:
        while not stop.is_set() and (j := take()) is not None:
            x, y, target = batches[done[j]]
            totals[j] += step(fittings[j], x, y, target)
            done[j] += 1
            with lock:  # a student whose step raised stays held: no other thread steps it again
                held.discard(j)

    reported = 0

    def report() -> None:
        nonlocal reported
        if (now := sum(done) // len(fittings)) > reported:
            advance(now - reported)
            reported = now

    in_threads(pool, [work] * threads, report)
    if reported < len(batches):
        advance(len(batches) - reported)


#: A stop that is never set: work run in this thread, where nothing else can stop it.
_NEVER = threading.Event()


def in_threads(pool: ThreadPoolExecutor, work: list[Callable[[threading.Event], None]],
               poll: Callable[[], None] = lambda: None) -> None:
    """Run each of ``work`` in a thread of ``pool``, in order, each handed the event that asks it to stop at its
    next batch; return when all are done. This thread wakes every 0.25 s to ``poll`` (progress) and so sees an
    interrupt while they work; where one of them raises, or ``poll`` does (an interrupt, while submitting
    too), the others are asked to stop, and once they have, the error propagates."""
    stop = threading.Event()
    futures: list[Future] = []
    try:
        for task in work:
            futures.append(pool.submit(task, stop))
        running = set(futures)
        while running:
            finished, running = wait(running, timeout=0.25, return_when=FIRST_EXCEPTION)
            if any(future.exception() is not None for future in finished):
                break
            poll()
    finally:
        stop.set()
        wait(futures)
    for future in futures:
        future.result()


def distill(teacher: nn.Module, students: list[nn.Module], branches: Callable[[nn.Module], list[Branch]],
            train: Batches, val: Batches, loss: LossSpec, options: LossOptions, recipe: Recipe,
            label: str = "student", progress: Progress = NullProgress(), checkpoints: Checkpoints | None = None,
            on_failure: Callable[[int, TrialFailed], None] = lambda i, err: None,
            compile: bool = False) -> list[FitResult | TrialFailed]:
    """Distill ``teacher`` (frozen, eval mode) into every one of ``students`` with ``loss``, one teacher
    pass per batch feeding them all; every student parameter trains. ``compile`` runs the teacher's
    and the students' forward passes (hooks included) and the loss through one :class:`Compilation`.

    A student is usually a copy of its teacher, so it would inherit the freeze: it is lifted here.
    """
    teacher.eval().requires_grad_(False)
    for student in students:
        student.requires_grad_(True)
    needs = loss.uses_features
    compilation = Compilation(train.device, progress) if compile else None

    if compile:
        allow_recompiles(len(students))

    with contextlib.ExitStack() as stack:
        t_tap = stack.enter_context(tapped(branches(teacher) if needs else None))
        taps = {id(s): stack.enter_context(tapped(branches(s) if needs else None)) for s in students}
        if compilation is None:
            t_forward, forwards, compute = teacher, {id(s): s for s in students}, checked_loss(loss)
        else:
            # The plugin's own function compiled (a dynamo cache of its own), its value checked eagerly.
            t_forward, compute = compilation.forward(teacher), checked_loss(loss, compilation.loss(loss.compute))
            forwards = {id(s): compilation.forward(s) for s in students}

        # A student's compiled step compiles its backward at its first backward pass, and again for each new
        # batch shape (a partial last batch, where it is kept): its first step of each shape is watched.
        tried: set[tuple[int, tuple[int, ...]]] = set()
        threads = student_threads(len(students), train.device, compilation is not None)
        workers = threads  # the steps' (1 where the students draw random numbers; the evaluations keep threads)
        pool: ThreadPoolExecutor | None = None

        def teacher_pass(x: torch.Tensor) -> Outputs:
            return teacher_outputs(t_forward, t_tap, x, recipe.amp)

        def one(f: _Fitting, x: torch.Tensor, y: torch.Tensor, target: Outputs) -> torch.Tensor:
            return student_step(forwards[id(f.model)], taps[id(f.model)], x, y, target, compute, options,
                                f.optimizer, f.scheduler, recipe.amp)

        def in_turn(x: torch.Tensor, y: torch.Tensor, target: Outputs, fittings: list[_Fitting]) -> list[torch.Tensor]:
            def again_eagerly(f: _Fitting) -> torch.Tensor:
                # The backward compiles lazily, and CUDA-graph outputs are checked where they are read: such
                # a failure comes before this student's optimizer stepped, so its step is taken again, and the
                # whole group trains on eagerly from the teacher's pass on.
                nonlocal target
                target = teacher_pass(x)
                return one(f, x, y, target)

            values = []
            for f in fittings:
                key = (id(f.model), tuple(x.shape))
                if compilation is None or not compilation.active or key in tried:
                    values.append(one(f, x, y, target))
                else:
                    tried.add(key)
                    values.append(compilation.guarded(lambda: one(f, x, y, target), lambda: again_eagerly(f)))
            return values

        def epoch(data: Batches, fittings: list[_Fitting], advance: Callable[[int], None]) -> list[torch.Tensor]:
            nonlocal pool, workers
            totals = [torch.zeros((), device=data.device) for _ in fittings]
            batches = iter(data)
            for x, y in batches:
                target = teacher_pass(x)
                if workers > 1 and pool is None:  # decided at the fit's first step, the same after a resume
                    f = fittings[0]
                    pool = stack.enter_context(student_pool(workers, lambda: draws_random_numbers(
                        f.model, lambda: loss.compute(target, _forward(f.model, taps[id(f.model)], x), y, options))))
                    workers = 1 if pool is None else workers
                if pool is None:
                    for total, value in zip(totals, in_turn(x, y, target, fittings)):
                        total += value
                    advance(1)
                else:  # the teacher runs ahead, then the pool's threads step the students through those batches
                    # (the span is passed, not named: freed before the teacher runs ahead again)
                    side_by_side(pool, workers, read_ahead(x, y, target, batches, teacher_pass, len(data)), fittings,
                                 totals, one, advance)
            return totals

        return fit(students, train, val, recipe, epoch, label, progress, checkpoints, on_failure, threads=threads)
