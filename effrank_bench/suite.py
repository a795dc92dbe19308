"""A suite: every run of a matrix, in one process, sharing data and teachers, then one comparison."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from effrank_bench.compare import Comparison, compare_runs, write_comparison
from effrank_bench.config import SuiteConfig
from effrank_bench.progress import NullProgress, Progress
from effrank_bench.registry import Registry, default_registry
from effrank_bench.report import build_report, write_report
from effrank_bench.store import RunDir
from effrank_bench.sweep import Components, DataCache, Sweep, build_checked, data_request


@dataclass(frozen=True)
class SuiteResult:
    out: Path
    runs: list[Path]
    comparison: Comparison


def check_suite(suite: SuiteConfig, registry: Registry) -> list[Components]:
    """Every name and target of every run, and that each existing run directory may be resumed.

    All before any time goes into training: a clash found after hours of earlier runs helps no one.
    Returns each run's components, in the suite's order.
    """
    parts = [Components.of(config, registry) for config in suite.runs]
    for config in suite.runs:
        RunDir(config.out).check_resumable(config)
    return parts


def run_suite(suite: SuiteConfig, registry: Registry | None = None, progress: Progress = NullProgress()) -> SuiteResult:
    """Run (or resume) every run of ``suite`` and write its summary: a comparison of all of them.

    Teachers are shared through the teacher cache (runs with the same architecture, data set,
    seed and teacher recipe train one teacher), data sets through one in-memory cache; each
    run resumes from its own directory, so an interrupted suite loses no finished trial.
    """
    registry = registry or default_registry()
    data = DataCache()
    # Every data set is loaded and every model built untrained first: a missing data set or a rank
    # beyond a model fails now, not hours into the suite.
    for config, parts in zip(suite.runs, check_suite(suite, registry)):
        splits = data.load(parts.dataset, data_request(config, parts.arch))
        build_checked(config, parts.arch, splits.model_request(parts.arch))
    suite.out.mkdir(parents=True, exist_ok=True)
    (suite.out / "suite.json").write_text(json.dumps(suite.model_dump(mode="json"), indent=2))
    paths = []
    with progress.task("suite", total=len(suite.runs)) as advance:
        for config in suite.runs:
            progress.note(f"[bold]{config.out.name}")
            run = Sweep(config, registry, progress, data).execute()
            write_report(run, build_report(run))
            paths.append(run.path)
            advance(1)
    comparison = compare_runs(paths)
    write_comparison(comparison, suite.out)
    return SuiteResult(out=suite.out, runs=paths, comparison=comparison)
