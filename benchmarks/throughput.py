"""Student-samples per second of the paper-style loop against the engine as the CLI runs it, in one process.

Not a test. Both train the same students on the same batches from the same teacher:
  - paper-style: one student per teacher pass, forward hooks, plain (unfused) AdamW, loss.item()
    every step, eager;
  - engine: the whole group per batch (one teacher pass for all), fused AdamW on CUDA, forwards and loss
    compiled where the run would compile (CUDA by default; --compile/--no-compile to force), one sync per epoch;
    on CPU eager, the teacher's passes computed ahead and the students stepped through them by threads of one
    core each, as a run steps them.
Usage:
    python benchmarks/throughput.py                      # CPU default: micro_vit, ranks 1-32, batch 64
    python benchmarks/throughput.py --arch vit_b32 --ranks 32,32,32,32 --batch-size 256   # CUDA default
    python benchmarks/throughput.py --profile 3         # then where 3 engine steps spend their time
On CUDA it also prints the achieved TFLOP/s (3 × forward MACs × 2 per student-sample, plus the
teacher's forward) and the fraction of the device's bf16 peak (--peak-tflops, default 989 for an H100 SXM).
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import itertools
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from effrank_bench.config import load_config
from effrank_bench.data import example_input
from effrank_bench.factorize import factorize
from effrank_bench.measure import count_macs
from effrank_bench.setup import prepare
from effrank_bench.teacher import obtain_teacher
from effrank_bench.train import (Compilation, Recipe, allow_recompiles, autocast, draws_random_numbers, make_optimizer,
                                 read_ahead, side_by_side, student_pool, student_step, student_threads, tapped,
                                 teacher_outputs)


def _students(setup, teacher, ranks):
    students = []
    for i, rank in enumerate(ranks):
        torch.manual_seed(i)
        student = copy.deepcopy(teacher.model)
        factorize(student, setup.sites, rank, init=setup.config.init, qkv=setup.config.qkv)
        students.append(setup.to_device(student).train().requires_grad_(True))
    return students


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def paper_style(setup, teacher, ranks, batches, steps) -> float:
    """Seconds for ``steps`` batches of every student, one student after another, each with its own teacher pass."""
    config, branches, loss = setup.config, setup.parts.arch.branches, setup.parts.loss
    needs = loss.uses_features
    seconds = 0.0
    for student in _students(setup, teacher, ranks):
        optimizer = torch.optim.AdamW(student.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        with tapped(branches(teacher.model) if needs else None) as t_tap, \
                tapped(branches(student) if needs else None) as s_tap:
            for i, (x, y) in enumerate(itertools.islice(itertools.cycle(batches), steps + 3)):
                if i == 3:  # warm-up done
                    _sync(x.device)
                    start = time.perf_counter()
                with torch.no_grad(), autocast(x.device, config.amp):
                    target = t_tap.forward(teacher.model, x) if t_tap else _logits(teacher.model, x)
                with autocast(x.device, config.amp):
                    out = s_tap.forward(student, x) if s_tap else _logits(student, x)
                    value = loss.compute(target, out, y, config.loss_options)
                optimizer.zero_grad()
                value.backward()
                optimizer.step()
                value.item()  # the paper's loop logs every step: a sync per step
            _sync(x.device)
            seconds += time.perf_counter() - start
    return seconds


def _logits(model, x):
    from effrank_bench.specs import Outputs

    return Outputs(logits=model(x))


def engine(setup, teacher, ranks, batches, steps, compile_, profile=0, threads=True) -> tuple[float, int]:
    """Seconds for ``steps`` batches of the group as a run steps it, after 3 warm-up ones: one teacher pass per
    batch, then :func:`student_step` for each student; with ``compile_``, the teacher's and each student's
    forward and the loss through one :class:`Compilation`. With ``profile``, that many more batches then run
    under torch.profiler, and its table is printed."""
    config, branches, loss = setup.config, setup.parts.arch.branches, setup.parts.loss
    students = _students(setup, teacher, ranks)
    recipe = Recipe(1, config.lr, config.weight_decay, amp=config.amp)
    fitted = [make_optimizer(s, recipe, setup.device, steps + 3 + profile) for s in students]
    compilation = Compilation(setup.device, _Quiet()) if compile_ else None
    if compilation:
        allow_recompiles(len(students))  # as a run does
    forward = compilation.forward if compilation else (lambda model: model)
    compute = compilation.loss(loss.compute) if compilation else loss.compute
    t_forward, forwards = forward(teacher.model), [forward(s) for s in students]
    with contextlib.ExitStack() as stack:
        t_tap = stack.enter_context(tapped(branches(teacher.model) if loss.uses_features else None))
        taps = [stack.enter_context(tapped(branches(s) if loss.uses_features else None)) for s in students]
        total = torch.zeros((), device=setup.device)
        workers = student_threads(len(students), setup.device, compilation is not None) if threads else 1
        x0, y0 = batches[0]
        target0 = teacher_outputs(t_forward, t_tap, x0, config.amp)
        pool = stack.enter_context(student_pool(workers, lambda: draws_random_numbers(
            students[0], lambda: loss.compute(target0, taps[0].forward(students[0], x0) if taps[0] else
                                              _logits(students[0], x0), y0, config.loss_options))))

        def one_on(i, x, y, target):
            return student_step(forwards[i], taps[i], x, y, target, compute, config.loss_options, *fitted[i],
                                config.amp)

        def teacher_pass(x):
            return teacher_outputs(t_forward, t_tap, x, config.amp)

        def step(x, y):  # one batch: the teacher's pass, then each student in turn
            nonlocal total
            target = teacher_pass(x)
            for i in range(len(students)):
                total += one_on(i, x, y, target)

        members = [_Member(student, i) for i, student in enumerate(students)]
        totals = [torch.zeros((), device=setup.device) for _ in members]

        def run(some):
            """``some`` batches as a run steps them: on CPU with threads, the teacher's passes ahead, then the
            students through them in the pool's threads; else batch by batch."""
            if pool is None:
                for x, y in some:
                    step(x, y)
                return
            rest = iter(some)
            for x, y in rest:  # spans of at most an epoch's batches (the distinct ones here), as a run reads them
                span = read_ahead(x, y, teacher_pass(x), rest, teacher_pass, len(batches))
                side_by_side(pool, workers, span, members, totals, lambda m, x, y, t: one_on(m.index, x, y, t),
                             lambda n: None)

        timed = list(itertools.islice(itertools.cycle(batches), steps + 3))
        run(timed[:3])
        _sync(setup.device)
        start = time.perf_counter()
        run(timed[3:])
        (total + sum(totals)).item()  # one sync, as the engine does once per epoch
        seconds = time.perf_counter() - start
        if profile:
            _profiled(run, batches[:profile], setup.device)
    for note in compilation.progress.notes if compilation else ():
        print(note)  # a fallback to eager: the figure is not the compiled engine's
    return seconds, workers if pool else 1


@dataclass
class _Member:
    """A student as :func:`side_by_side` hands it to the step (its ``model``, sized to order the threads' work)."""

    model: torch.nn.Module
    index: int


def _profiled(run, batches, device) -> None:
    """Where ``run(batches)``'s time goes: the busiest operators by their own device (or CPU) time, and the totals."""
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    start = time.perf_counter()
    with profile(activities=activities) as prof:
        run(batches)
        _sync(device)
    wall = time.perf_counter() - start
    events = prof.key_averages()
    key = "self_device_time_total" if cuda else "self_cpu_time_total"
    print(events.table(sort_by=key, row_limit=20, max_name_column_width=60))
    busy = sum(getattr(e, key) for e in events) / 1e6
    print(f"profiled {len(batches)} steps: {wall:.3f} s wall, {busy:.3f} s of {'device' if cuda else 'CPU'} "
          "operator time (self)")


class _Quiet:
    def __init__(self):
        self.notes = []

    def note(self, message):
        self.notes.append(message)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default=None, help="default: micro_vit on CPU, vit_b32 on CUDA")
    parser.add_argument("--target", default="joint")
    parser.add_argument("--loss", default="geometric")
    parser.add_argument("--dataset", default=None, help="default: digits on CPU, cifar100 on CUDA")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--ranks", default=None, help="one student per entry (default: 1,2,4,8,16,32 on CPU, "
                                                      "32,32,32,32 on CUDA)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 64 on CPU, 256 on CUDA")
    parser.add_argument("--steps", type=int, default=20, help="timed batches per student (after 3 warm-up)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="compile the engine's forwards and loss (default: as a run would, on CUDA only)")
    parser.add_argument("--student-threads", action=argparse.BooleanOptionalAction, default=True,
                        help="step the engine's students side by side in threads, as a CPU run does (default)")
    parser.add_argument("--profile", type=int, default=0, metavar="STEPS",
                        help="then profile this many engine steps (torch.profiler) and print where the time goes "
                             "(it records this thread's operators: on CPU, add --no-student-threads to see the "
                             "students')")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="the device's dense bf16 peak")
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    arch = args.arch or ("vit_b32" if cuda else "micro_vit")
    dataset = args.dataset or ("cifar100" if cuda else "digits")
    ranks = [int(r) for r in (args.ranks or ("32,32,32,32" if cuda else "1,2,4,8,16,32")).split(",")]
    batch_size = args.batch_size or (256 if cuda else 64)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("EFFRANK_BENCH_CACHE", str(Path(tmp) / "cache"))
        config = load_config(overrides={
            "arch": arch, "target": args.target, "loss": args.loss, "dataset": dataset, "data_root": args.data_root,
            "ranks": ",".join(map(str, sorted(set(ranks)))), "batch_size": batch_size, "teacher_epochs": 1,
            "out": Path(tmp) / "run", "compile": args.compile})
        setup = prepare(config)
        teacher = obtain_teacher(setup)
        # Full batches only: a partial one has another shape, which a compiled step would compile again.
        batches = list(itertools.islice(setup.batches(setup.splits.train, shuffle=True, drop_last=True),
                                        args.steps + 3))
        if not batches:
            raise SystemExit(f"the training split holds no full batch of {batch_size}: pass a smaller --batch-size")
        samples = len(ranks) * args.steps * batch_size
        device = torch.cuda.get_device_name() if cuda else "cpu"
        print(f"{arch} {args.target} {args.loss}, ranks {ranks}, batch {batch_size}, {args.steps} steps, on {device}")
        paper = paper_style(setup, teacher, ranks, batches, args.steps)
        print(f"paper-style loop: {samples / paper:,.0f} student-samples/s")
        fast, workers = engine(setup, teacher, ranks, batches, args.steps, setup.compile, args.profile,
                               args.student_threads)
        print(f"engine (group of {len(ranks)}, {'compiled' if setup.compile else 'eager'}"
              f"{f', {workers} student threads' if workers > 1 else ''}): "
              f"{samples / fast:,.0f} student-samples/s")
        print(f"engine / paper-style: {paper / fast:.2f}x")
        if cuda:
            example = example_input(setup.request, setup.splits.modality, 1, setup.device)
            distinct = sorted(set(ranks))  # one student built per rank, only to count its MACs
            macs = dict(zip(distinct, (count_macs(s, example) for s in _students(setup, teacher, distinct))))
            student_macs = sum(macs[r] for r in ranks) / len(ranks)
            flops = 2 * (3 * student_macs + count_macs(teacher.model, example) / len(ranks))
            achieved = samples / fast * flops / 1e12
            print(f"engine: {achieved:.1f} TFLOP/s, {achieved / args.peak_tflops:.1%} of {args.peak_tflops:g} peak")


if __name__ == "__main__":
    main()
