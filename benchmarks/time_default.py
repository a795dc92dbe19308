"""Times the embedded default end to end (`effrank-bench run` with no options) and per trial.

Not a test: prints wall times measured in this run. Usage:
    python benchmarks/time_default.py [--ranks 1,2,4,8,16,32]
It uses a fresh teacher cache, so the teacher's training is included, then runs the
same sweep again on a warm cache to show what a second target or loss costs.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from effrank_bench.config import load_config
from effrank_bench.registry import default_registry
from effrank_bench.report import build_report, write_report
from effrank_bench.sweep import run_sweep


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ranks", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["EFFRANK_BENCH_CACHE"] = str(Path(tmp) / "cache")
        for label in ("cold teacher cache", "warm teacher cache"):
            config = load_config(overrides={"ranks": args.ranks, "out": Path(tmp) / label.replace(" ", "_")},
                                 recipes=default_registry().recipe)  # micro_vit's own recipe, as `run` takes it
            start = time.perf_counter()
            run = run_sweep(config)
            write_report(run, build_report(run))
            total = time.perf_counter() - start
            records = run.records()
            per_trial = [r.train_seconds for r in records]
            print(f"{label}: {total:.1f} s end to end, {len(records)} trials, "
                  f"distillation {sum(per_trial) / len(per_trial):.2f} s per trial "
                  f"(min {min(per_trial):.2f}, max {max(per_trial):.2f})")


if __name__ == "__main__":
    main()
