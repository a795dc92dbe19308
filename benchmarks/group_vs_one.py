"""The embedded default's sweep grouped (as `run` trains it) against `--group 1`, teacher cached, alternated.

Not a test: times `sweep.execute` alone (the trials, their evaluation and costs; imports, data loading and
the report left out, which both pay alike) in pairs, one of each per pair, and prints each pair's ratio
and the median. Usage:
    python benchmarks/group_vs_one.py [--pairs 4]
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from effrank_bench.config import load_config
from effrank_bench.registry import default_registry
from effrank_bench.setup import prepare
from effrank_bench.sweep import execute
from effrank_bench.teacher import obtain_teacher


def timed(group: str, out: Path) -> float:
    config = load_config(overrides={"out": out, "group": group}, recipes=default_registry().recipe)
    setup = prepare(config)
    start = time.perf_counter()
    execute(setup)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("EFFRANK_BENCH_CACHE", str(Path(tmp) / "cache"))
        config = load_config(overrides={"out": Path(tmp) / "teacher"}, recipes=default_registry().recipe)
        obtain_teacher(prepare(config))  # cached before the first timing
        ratios = []
        for i in range(args.pairs):
            grouped, alone = timed("auto", Path(tmp) / f"grouped{i}"), timed("1", Path(tmp) / f"alone{i}")
            ratios.append(alone / grouped)
            print(f"pair {i + 1}: grouped {grouped:.2f} s, --group 1 {alone:.2f} s, {ratios[-1]:.2f}x", flush=True)
        print(f"median --group 1 / grouped: {statistics.median(ratios):.2f}x over {args.pairs} pairs")


if __name__ == "__main__":
    main()
