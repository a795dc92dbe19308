"""Spectral estimates beside distilled ranks for every micro preset on the embedded data.

Not a test: trains each preset's teacher (or takes it from the teacher cache), measures its spectrum
(weights and branch outputs; every run stores it as spectrum.json) and runs the default distilled
sweep, then writes one comparison (table with weight r95 and feature r99 beside band and knee; the
accuracy curves; the spectral estimates against the distilled r95 with their Spearman correlation).
Usage:
    python benchmarks/spectra.py [--out DIR] [--quick] [--device cpu]
``--quick`` trains tiny budgets (a check that everything runs, not numbers to quote).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from effrank_bench.compare import compare_runs, render_comparison, write_comparison
from effrank_bench.config import load_config
from effrank_bench.registry import default_registry
from effrank_bench.report import build_report, write_report
from effrank_bench.sweep import run_sweep

#: Every micro preset and the embedded data set it reads.
PRESETS = (("micro_vit", "digits"), ("micro_convnet", "digits"), ("micro_mixer", "digits"),
           ("micro_bert", "digits_tokens"))
# Budgets that only check the pipeline (teachers near chance): as the tests' tiny recipe, 153 training
# inputs (val_fraction 0.9), one batch per epoch.
QUICK = {"ranks": (2, 4, 8), "epochs": 1, "teacher_epochs": 2, "batch_size": 128, "val_fraction": 0.9,
         "latency_repeats": 1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/spectra"), help="folder of the runs and comparison")
    parser.add_argument("--quick", action="store_true", help="tiny budgets: checks the pipeline in minutes")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    args = parser.parse_args()
    options = QUICK if args.quick else {}
    runs = []
    for arch, dataset in PRESETS:
        start = time.perf_counter()
        # Each preset's own recipe where it has one (micro_vit's one student epoch), as `run --arch` takes it.
        config = load_config(overrides={"arch": arch, "dataset": dataset, "device": args.device,
                                        "out": args.out / f"{arch}-{dataset}", **options},
                             recipes=default_registry().recipe)
        run = run_sweep(config)
        write_report(run, build_report(run))
        runs.append(run.path)
        print(f"{arch} on {dataset}: {time.perf_counter() - start:.1f} s ({run.path})", flush=True)
    comparison = compare_runs(runs)
    write_comparison(comparison, args.out)
    from rich.console import Console

    console = Console(width=160)
    console.print(render_comparison(comparison))
    for line in [c.text() for c in comparison.correlations()] + [f"note: {n}" for n in comparison.notes]:
        console.print(line, markup=False, highlight=False)
    print(f"comparison written to {args.out}")


if __name__ == "__main__":
    main()
