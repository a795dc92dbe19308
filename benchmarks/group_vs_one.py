"""The embedded default's sweep grouped (as `run` trains it) against `--group 1`, teacher cached, alternated.

Not a test: times `sweep.execute` alone (imports, data loading and the report left out, which both pay alike)
in pairs, one of each per pair (each first in every other pair), and prints each pair's ratio and the median,
of the whole and of its trials alone (the local executor's groups: building, training, evaluating and measuring
the students; the rest is the teacher's, loaded from the cache, timed, and its spectrum read from the cache as a
run's first sweep of a teacher and target leaves it: the same in both). With --breakdown, each timing also says
where its time went: the students' fit, their test evaluation, the latency and MAC measurements, the teacher's
spectrum measured (none: cached), the rest. Usage:
    python benchmarks/group_vs_one.py [--pairs 4] [--breakdown]
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import effrank_bench_plugins.executors as executors
from effrank_bench import measure, sweep, teacher_spectrum, trial
from effrank_bench.config import load_config
from effrank_bench.registry import default_registry
from effrank_bench.setup import prepare
from effrank_bench.teacher import obtain_teacher
from effrank_bench.teacher_spectrum import obtain_spectrum


#: The phases --breakdown times: (module, function) pairs, each wrapped with a clock for the timing's length.
PHASES = {"fit": (trial, "distill"), "test evaluation": (trial, "evaluate_calibrated"),
          "latency": (measure, "forward_times_ms"), "MACs": (measure, "count_macs"),
          "spectrum": (teacher_spectrum, "model_spectrum")}
#: The trials: each group the local executor runs.
TRIALS = {"trials": (executors, "run_group")}


@contextlib.contextmanager
def clocked(phases: dict) -> Iterator[dict[str, float]]:
    """Seconds spent in each of ``phases`` while the context runs (the functions put back after)."""
    spent = dict.fromkeys(phases, 0.0)

    def clock(name, function):
        @functools.wraps(function)
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                spent[name] += time.perf_counter() - start
        return timed

    originals = {name: getattr(module, attr) for name, (module, attr) in phases.items()}
    for name, (module, attr) in phases.items():
        setattr(module, attr, clock(name, originals[name]))
    try:
        yield spent
    finally:
        for name, (module, attr) in phases.items():
            setattr(module, attr, originals[name])


def timed(group: str, out: Path, breakdown: bool = False) -> tuple[float, float, str]:
    """Seconds of the whole ``sweep.execute``, of its trials, and where the time went (with ``breakdown``)."""
    config = load_config(overrides={"out": out, "group": group}, recipes=default_registry().recipe)
    setup = prepare(config)
    with clocked(TRIALS) as trials, clocked(PHASES) if breakdown else contextlib.nullcontext({}) as spent:
        start = time.perf_counter()
        sweep.execute(setup)
        seconds = time.perf_counter() - start
    parts = [f"{name} {spent[name]:.2f}" for name in PHASES if name in spent]
    rest = f", rest {seconds - sum(spent.values()):.2f}" if spent else ""
    return seconds, trials["trials"], f"; {', '.join(parts)}{rest}" if spent else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--breakdown", action="store_true", help="say where each timing's seconds went")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("EFFRANK_BENCH_CACHE", str(Path(tmp) / "cache"))
        config = load_config(overrides={"out": Path(tmp) / "teacher"}, recipes=default_registry().recipe)
        setup = prepare(config)  # the teacher, and its spectrum, cached before the first timing
        obtain_spectrum(setup, obtain_teacher(setup), config.spectrum_samples)
        ratios, trial_ratios = [], []
        for i in range(args.pairs):
            # Each goes first in every other pair: whatever the first timing of a pair pays, both pay alike.
            order = ("auto", "1") if i % 2 == 0 else ("1", "auto")
            times = {group: timed(group, Path(tmp) / f"group{group}-{i}", args.breakdown) for group in order}
            (grouped, g_trials, g_parts), (alone, a_trials, a_parts) = times["auto"], times["1"]
            ratios.append(alone / grouped)
            trial_ratios.append(a_trials / g_trials)
            print(f"pair {i + 1}: grouped {grouped:.2f} s (trials {g_trials:.2f}{g_parts}), --group 1 {alone:.2f} s "
                  f"(trials {a_trials:.2f}{a_parts}), {ratios[-1]:.2f}x (trials {trial_ratios[-1]:.2f}x)", flush=True)
        print(f"median --group 1 / grouped: {statistics.median(ratios):.2f}x, trials alone "
              f"{statistics.median(trial_ratios):.2f}x, over {args.pairs} pairs")

if __name__ == "__main__":
    main()
