"""A suite: every run of a matrix, in one process, sharing data and teachers, then one comparison."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from effrank_bench.atomic import atomic_write_text
from effrank_bench.compare import Comparison, compare_runs, write_comparison
from effrank_bench.config import SuiteConfig
from effrank_bench.errors import ConfigError, shown
from effrank_bench.paths import make_folder
from effrank_bench.progress import NullProgress, Progress
from effrank_bench.registry import Registry, default_registry
from effrank_bench.report import build_report, write_report
from effrank_bench.setup import RunSetup, SuiteCache, prepare, resolve_components
from effrank_bench.store import RunDir, check_out_dir
from effrank_bench.sweep import execute, finished_teacher, obtain_teachers


@dataclass(frozen=True)
class SuiteResult:
    out: Path
    runs: list[Path]
    comparison: Comparison


def check_suite(suite: SuiteConfig, registry: Registry) -> None:
    """The cheap checks of every run: names, targets, modalities, resumable run directories, and a folder the
    suite may write (new, empty, or its own: a suite.json or a run directory of the suite's)."""
    if not any((suite.out / name).is_dir() for name in suite.run_names()):
        if RunDir(suite.out).config_path.is_file():
            raise ConfigError(f"--out {shown(str(suite.out))} is a run directory, not a suite directory: give the "
                              "suite a folder of its own")
        check_out_dir(suite.out, "suite.json", "suite directory")
    for config in suite.runs:
        resolve_components(config, registry)
        RunDir(config.out).check_resumable(config)


def prepare_suite(suite: SuiteConfig, registry: Registry) -> list[RunSetup]:
    """Every run of ``suite`` resolved and checked, in the suite's order, before any training.

    The cheap checks of every run first, then data and models: a clash found after hours of
    earlier runs helps no one. Data sets are loaded, and models measured, once for all runs.
    """
    check_suite(suite, registry)
    shared = SuiteCache()
    return [prepare(config, registry, shared) for config in suite.runs]


def run_suite(suite: SuiteConfig, registry: Registry | None = None, progress: Progress = NullProgress()) -> SuiteResult:
    """Run (or resume) every run of ``suite`` and write its summary: a comparison of all of them.

    Teachers are shared through the teacher cache (runs with the same architecture, data set,
    seed and teacher recipe train one teacher), data sets through one in-memory cache; each
    run resumes from its own directory, so an interrupted suite loses no finished trial.
    An executor that obtains teachers itself (a cluster) gets every run's first, to train them side
    by side; the local executor's are obtained run by run, so that one teacher at a time is in memory.
    """
    setups = prepare_suite(suite, registry or default_registry())
    make_folder(suite.out)
    atomic_write_text(suite.out / "suite.json", json.dumps(suite.model_dump(mode="json"), indent=2))
    finished = [finished_teacher(setup) for setup in setups]
    for setup, record in zip(setups, finished):
        if record is not None:
            setup.keep_teacher_cost(record)  # before any run measures it: one latency per teacher
    first = [i for i, setup in enumerate(setups) if setup.parts.executor.obtain_teachers is not None and
             finished[i] is None]
    teachers = dict(zip(first, obtain_teachers([setups[i] for i in first], progress)))
    paths = []
    with progress.task("suite", total=len(setups)) as advance:
        for i, setup in enumerate(setups):
            progress.note(f"[bold]{setup.run.path.name}")
            run = execute(setup, progress, teachers.pop(i, None))
            write_report(run, build_report(run), setup.config.plot)
            paths.append(run.path)
            advance(1)
    comparison = compare_runs(paths)
    write_comparison(comparison, suite.out, plot=any(config.plot for config in suite.runs))  # --no-plot: tables only
    return SuiteResult(out=suite.out, runs=paths, comparison=comparison)
