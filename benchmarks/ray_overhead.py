"""Measures what ``--executor ray`` costs over the local executor on the embedded default: startup and per trial.

Not a test: prints wall times measured in this run. Usage:
    python benchmarks/ray_overhead.py [--epochs N]
Every sweep is `effrank-bench run` in a fresh process, so the Ray side pays what a user pays: starting
Ray, its workers loading torch and the plugins, the teacher fetched in a task. A first, untimed sweep
fills a private teacher cache, so that no timed sweep trains the teacher.

Startup and per-trial cost come from a sweep of the default's first rank and one of all its ranks:
per trial = (T_all - T_1) / (ranks - 1), startup = T_1 - per trial. Both executors lay the trials out
alike for that: --group 1, and Ray's units take every CPU of this machine (--cpus-per-trial), so that
one unit runs at a time, on all cores, as the local executor runs its groups one after another.
Last, both as a user runs them (--group auto: local trains all students as one group, Ray spreads
them over the CPUs), end to end.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from effrank_bench.config import RunConfig

_CLI = "import sys; from effrank_bench.cli import main; sys.exit(main(sys.argv[1:]))"


def sweep(out: Path, *flags: str) -> float:
    """Seconds of one `effrank-bench run` in a new process."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", _CLI, "run", "--out", str(out), *flags], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", default=None, help="student epochs (default: the embedded default's)")
    args = parser.parse_args()
    ranks = RunConfig().ranks
    common = ["--epochs", args.epochs] if args.epochs else []
    executors = {"local": ["--group", "1"],
                 "ray": ["--group", "1", "--executor", "ray", "--cpus-per-trial", str(os.cpu_count())]}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["EFFRANK_BENCH_CACHE"] = str(Path(tmp) / "cache")
        sweep(Path(tmp) / "teacher", *common, "--ranks", str(ranks[0]))
        cost = {}
        for name, flags in executors.items():
            one = sweep(Path(tmp) / f"{name}-1", *common, *flags, "--ranks", str(ranks[0]))
            every = sweep(Path(tmp) / f"{name}-all", *common, *flags)
            per_trial = (every - one) / (len(ranks) - 1)
            cost[name] = (one - per_trial, per_trial)
            print(f"{name}: 1 rank {one:.1f} s, {len(ranks)} ranks {every:.1f} s -> startup {one - per_trial:.1f} s, "
                  f"{per_trial:.2f} s per trial")
        (local_start, local_trial), (ray_start, ray_trial) = cost["local"], cost["ray"]
        print(f"ray over local: startup +{ray_start - local_start:.1f} s, per trial +{ray_trial - local_trial:.2f} s "
              f"({ray_trial / local_trial:.2f}x)")
        local = sweep(Path(tmp) / "local-auto", *common)
        ray = sweep(Path(tmp) / "ray-auto", *common, "--executor", "ray")
        print(f"as a user runs them (--group auto), {len(ranks)} ranks end to end: local {local:.1f} s, "
              f"ray {ray:.1f} s ({ray / local:.2f}x)")


if __name__ == "__main__":
    main()
