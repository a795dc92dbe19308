"""MLflow logging of run directories: config as params, trials as metrics, report files as artifacts."""
from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from effrank_bench.config import flag_value
from effrank_bench.errors import ConfigError, EffrankError, one_line, shown
from effrank_bench.network import check_answers, url_port

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Run

    from effrank_bench.records import Epoch, TrialRecord
    from effrank_bench.report import Report
    from effrank_bench.store import RunDir

INSTALL = "pip install -e '.[mlflow]'"
# MLflow ends its errors with the way out (a setting to set, the schemes it takes): kept in the line. Its refusal
# of a file store (MLflow 3.x) runs to 540 characters, and 500 cut it in the middle of its way out.
MLFLOW_ERROR = 800
# One experiment for every sweep: params and tags tell arch, target, loss and data set apart in the
# UI. MLFLOW_EXPERIMENT_NAME picks another, as it does for MLflow's own API.
EXPERIMENT = "effrank-bench"
# The files of a run directory logged as artifacts, when there: the report, and what reproduces and
# re-reports it (not the teacher's weights: a cluster's store need not hold a copy of every teacher).
RUN_FILES = ("summary.md", "summary.json", "summary.csv", "region.csv", "curve.png", "config.json", "trials.jsonl",
             "teacher.json", "target.json", "spectrum.json")
SUITE_FILES = ("suite.json", "comparison.md", "comparison.json", "comparison.csv", "comparison.png",
               "comparison-spectra.png")
# The tags a directory's MLflow run is found by on the next log, so a resumed sweep updates its run.
RUN_DIR_TAG, SWEEP_KEY_TAG, SUITE_TAG, SUITE_DIR_TAG = ("effrank.run_dir", "effrank.sweep_key", "effrank.suite",
                                                        "effrank.suite_dir")
# Where a tracking URI is a server, not a local store that `mlflow ui` must be pointed at.
_SERVED = ("http://", "https://", "databricks")
# Not a param: a URI can carry a password (http://user:secret@host), and where a run was logged says nothing of it.
_NOT_PARAMS = {"mlflow"}
_MAX_TAG = 8000  # MLflow's longest tag value; a long summary.md is cut to it
_MAX_PARAM = 6000


def connect(uri: str) -> MlflowClient:
    """The tracking store at ``uri``; a missing extra or a URI MLflow cannot open is a ConfigError.

    Called at the edge, before any training, so that only a store that fails later (a server
    that went down) is left to the warning after the run: a tracking server must answer now. A SQLite
    store is created here.
    """
    try:
        from mlflow import MlflowClient
    except ImportError:
        raise ConfigError(f"--mlflow needs MLflow, which is not installed: {INSTALL}") from None
    if uri.startswith(("http://", "https://")):
        server = urlsplit(uri)
        try:
            port = url_port(server)
        except ValueError as err:  # a port that is not a number, or past 65535
            raise ConfigError(f"--mlflow {shown(uri)}: {one_line(err, MLFLOW_ERROR)}") from None
        check_answers(server.hostname or "", port, f"--mlflow {shown(uri)}",
                      "start the tracking server (`mlflow server`), or check the URI")
    with quiet():
        try:
            return MlflowClient(tracking_uri=_absolute(uri))
        except Exception as err:  # MLflow's own errors, sqlalchemy's, a bad scheme: all mean "cannot open"
            raise ConfigError(f"--mlflow {shown(uri)}: {one_line(err, MLFLOW_ERROR)}") from None


def _absolute(uri: str) -> str:
    """``uri`` with a relative SQLite path made absolute against the working directory of now.

    MLflow keeps one store per URI string for the life of the process: a relative ``sqlite:///mlruns.db``
    would go on writing to the file of the directory it was first opened in.
    """
    prefix = "sqlite:///"
    if not uri.startswith(prefix) or uri.startswith(prefix + "/") or uri == prefix + ":memory:":
        return uri
    return prefix + str(Path(uri.removeprefix(prefix)).absolute())


# A run's records are safe on disk before it logs, so logging to a tracking server that went down
# during the sweep gives up in seconds (2 retries, 1 s backoff: 4.5 s measured against a server
# answering 503), not after MLflow's own defaults (7 retries with exponential backoff: about four
# minutes). The user's own MLFLOW_HTTP_REQUEST_* settings win.
FAIL_FAST = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
             "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}


@contextlib.contextmanager
def fail_fast() -> Iterator[None]:
    """MLflow's HTTP requests with :data:`FAIL_FAST`'s retries and timeout, where the user set none."""
    unset = [name for name in FAIL_FAST if name not in os.environ]
    os.environ.update({name: FAIL_FAST[name] for name in unset})
    try:
        yield
    finally:
        for name in unset:
            os.environ.pop(name, None)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """MLflow without its INFO lines: a new SQLite store logs every schema migration it applies."""
    loggers = [logging.getLogger(name) for name in ("mlflow", "alembic")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def experiment_name() -> str:
    return os.environ.get("MLFLOW_EXPERIMENT_NAME") or EXPERIMENT


def browse_hint(uri: str) -> str:
    """How to look at what was logged to ``uri``."""
    if uri.startswith(_SERVED):
        return f"browse at {uri}" if uri.startswith("http") else "browse in the workspace"
    return f"browse with: mlflow ui --backend-store-uri {uri}"


def log_run(run: RunDir, uri: str, report: Report | None = None, *, interrupted: bool = False) -> str:
    """Log ``run`` to MLflow at ``uri`` and return the MLflow run's id.

    The MLflow run is the one tagged with this directory (created on the first log), so a resumed
    or extended sweep updates it: trials already logged are not repeated (their metrics carry the
    MLflow run's start time as timestamp, and the store keeps one copy of an exact duplicate).
    ``report`` is the one written to the directory; without it (an interrupted sweep) it is built
    from the records. ``interrupted`` marks the MLflow run KILLED unless the report on disk is
    newer than the last record (nothing was lost to the interrupt).

    Params: every RunConfig field but ``mlflow`` (a field changed since the first log, as ranks
    added to a sweep, keeps its first value, which MLflow cannot change, and gets a tag
    ``config.<field>`` with the current one). Metrics, step = rank: ``test_accuracy/seed_<s>``,
    ``val_accuracy/seed_<s>``, ``test_ece/seed_<s>``, ``test_nll/seed_<s>``, ``train_seconds/seed_<s>``,
    ``test_accuracy/mean``, ``normalized_accuracy/mean`` and ``cost/<params|macs|compression|
    latency_ms|latency_iqr_ms>``; step = epoch: ``train_loss/r<rank>_s<seed>`` and
    ``epoch_val_accuracy/r<rank>_s<seed>`` (the teacher's as ``.../teacher``); step = trials
    finished: ``effective_rank/<low|high|band_low|band_high|knee|knee_params|knee_macs>`` (with
    ``_ci_low``/``_ci_high`` where seeds give intervals), ``trials/ok``, ``trials/failed`` and
    ``teacher/<test_accuracy|params|macs|latency_ms|latency_iqr_ms>``. Artifacts: :data:`RUN_FILES` that exist.
    """
    client = connect(uri)
    with quiet(), fail_fast():
        return _log_run(client, _experiment_id(client), run, report, interrupted=interrupted)


def _log_run(client: MlflowClient, experiment: str, run: RunDir, report: Report | None, *, interrupted: bool,
             parent: str | None = None, suite: str | None = None) -> str:
    """:func:`log_run` through an open client, in ``experiment``; ``parent`` and ``suite`` nest it under a
    suite's MLflow run."""
    from mlflow.entities import Param, RunTag

    config = run.config()
    if report is None:
        report = _report_of(run)
    found = _find_run(client, experiment, run, config.sweep_key())
    params = {k: _text(v, _MAX_PARAM) for k, v in config.model_dump(mode="json").items() if k not in _NOT_PARAMS}
    logged = found.data.params
    changed = {f"config.{k}": v for k, v in params.items() if k in logged and logged[k] != v}
    tags = {RUN_DIR_TAG: str(run.path.resolve()), SWEEP_KEY_TAG: config.sweep_key(), **changed,
            **_report_tags(run, report)}
    if parent is not None:
        tags |= {"mlflow.parentRunId": parent, SUITE_TAG: suite or ""}
    run_id, start = found.info.run_id, found.info.start_time
    metrics = [m for record in sorted(run.records(), key=lambda r: (r.rank, r.seed))
               for m in _trial_metrics(record, start)]
    if report is not None:
        metrics += _rank_metrics(report, start)
        metrics += _summary_metrics(report, found.data.metrics, _now())
    client.log_batch(run_id, metrics=metrics,
                     params=[Param(k, v) for k, v in params.items() if k not in logged],
                     tags=[RunTag(k, v) for k, v in tags.items()])
    for path in _existing(run.path, RUN_FILES):
        client.log_artifact(run_id, str(path))
    status = "KILLED" if interrupted and not _report_is_current(run) else "FINISHED"
    client.set_terminated(run_id, status)
    return run_id


def log_suite(name: str, out: Path, runs: Iterable[RunDir], uri: str, *, interrupted: bool = False) -> str:
    """Log a suite to MLflow at ``uri``: one parent run named after it (its comparison as artifacts),
    each of ``runs`` logged with :func:`log_run` and nested under it. Returns the parent's id."""
    from mlflow.entities import RunTag

    client = connect(uri)  # one client and one experiment lookup for the suite and all its runs
    with quiet(), fail_fast():
        experiment = _experiment_id(client)
        where = str(Path(out).resolve())
        parents = [r for r in client.search_runs([experiment], f"tags.`{SUITE_TAG}` = '{name}'")
                   if r.data.tags.get(SUITE_DIR_TAG) == where and "mlflow.parentRunId" not in r.data.tags]
        parent = parents[0].info.run_id if parents else client.create_run(
            experiment, run_name=name, tags={SUITE_TAG: name, SUITE_DIR_TAG: where}).info.run_id
        for run in runs:
            _log_run(client, experiment, run, None, interrupted=interrupted, parent=parent, suite=name)
        client.log_batch(parent, tags=[RunTag(SUITE_TAG, name)])
        for path in _existing(Path(out), SUITE_FILES):
            client.log_artifact(parent, str(path))
        client.set_terminated(parent, "KILLED" if interrupted else "FINISHED")
    return parent


def _report_of(run: RunDir) -> Report | None:
    """The report of a partial run, from its records; None before its teacher was ready."""
    from effrank_bench.report import build_report

    try:
        return build_report(run)
    except EffrankError:  # no teacher.json yet: nothing was trained, config alone is logged
        return None


def _experiment_id(client: MlflowClient) -> str:
    name = experiment_name()
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return client.create_experiment(name)
    except Exception:  # created meanwhile by another process logging its run
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


def _find_run(client: MlflowClient, experiment: str, run: RunDir, sweep_key: str) -> Run:
    """The MLflow run of this directory in ``experiment``: found by its sweep key, then its path; created if none."""
    where = str(run.path.resolve())
    for candidate in client.search_runs([experiment], f"tags.`{SWEEP_KEY_TAG}` = '{sweep_key}'"):
        if candidate.data.tags.get(RUN_DIR_TAG) == where:
            return candidate
    created = client.create_run(experiment, run_name=run.path.name,
                                tags={RUN_DIR_TAG: where, SWEEP_KEY_TAG: sweep_key})
    return client.get_run(created.info.run_id)


def _metric(key: str, value: float | None, timestamp: int, step: int) -> list[Metric]:
    from mlflow.entities import Metric

    return [] if value is None else [Metric(key, float(value), timestamp, int(step))]


def _trial_metrics(record: TrialRecord, timestamp: int) -> list[Metric]:
    """One trial: its accuracies at step = its rank, one series per seed; its loss curve at step = epoch."""
    metrics = []
    if record.status == "ok":
        for name in ("test_accuracy", "val_accuracy", "test_ece", "test_nll", "train_seconds"):
            metrics += _metric(f"{name}/seed_{record.seed}", getattr(record, name), timestamp, record.rank)
    return metrics + _epoch_metrics(record.history, f"r{record.rank}_s{record.seed}", timestamp)


def _epoch_metrics(history: list[Epoch], name: str, timestamp: int) -> list[Metric]:
    metrics = []
    for epoch in history:
        metrics += _metric(f"train_loss/{name}", epoch.loss, timestamp, epoch.epoch)
        metrics += _metric(f"epoch_val_accuracy/{name}", epoch.val_accuracy, timestamp, epoch.epoch)
    return metrics


def _rank_metrics(report: Report, timestamp: int) -> list[Metric]:
    """Per rank: mean and normalized accuracy over seeds, the student's cost (the first seed's measurement)."""
    metrics = _epoch_metrics(report.teacher.history, "teacher", timestamp)
    for stat in report.per_rank:
        metrics += _metric("test_accuracy/mean", stat.accuracy, timestamp, stat.rank)
        metrics += _metric("normalized_accuracy/mean", stat.normalized, timestamp, stat.rank)
    measured: set[int] = set()
    for row in report.rows:
        if row.rank is None or row.status != "ok" or row.rank in measured:
            continue
        measured.add(row.rank)
        for name, value in (("params", row.params), ("macs", row.macs), ("compression", row.compression),
                            ("latency_ms", row.latency_ms), ("latency_iqr_ms", row.latency_iqr_ms)):
            metrics += _metric(f"cost/{name}", value, timestamp, row.rank)
    return metrics


def _summary_metrics(report: Report, latest: dict[str, float], timestamp: int) -> list[Metric]:
    """Region, knee, counts and the teacher, at step = finished trials: the chart shows how the
    read-off moved as the sweep grew. A value equal to the latest logged is not logged again."""
    ok = sum(row.status == "ok" for row in report.rows)
    failed = sum(row.status == "failed" for row in report.rows)
    values: dict[str, float | None] = {"trials/ok": ok, "trials/failed": failed}
    teacher = report.teacher
    values |= {"teacher/test_accuracy": teacher.test_accuracy, "teacher/params": teacher.cost.params,
               "teacher/macs": teacher.cost.macs, "teacher/latency_ms": teacher.cost.latency_ms,
               "teacher/latency_iqr_ms": teacher.cost.latency_iqr_ms}
    if report.analysis is not None:
        region, knee = report.analysis.region, report.analysis.knee
        band = region.band or (None, None)
        knee_params, knee_macs = report.cost_at(knee)
        values |= {"effective_rank/low": region.low, "effective_rank/high": region.high,
                   "effective_rank/band_low": band[0], "effective_rank/band_high": band[1],
                   "effective_rank/knee": knee, "effective_rank/knee_params": knee_params,
                   "effective_rank/knee_macs": knee_macs}
    if report.uncertainty is not None:
        u = report.uncertainty
        for name, estimate in (("low", u.low), ("high", u.high), ("knee", u.knee)):
            values |= {f"effective_rank/{name}_ci_low": estimate.ci_low,
                       f"effective_rank/{name}_ci_high": estimate.ci_high}
    return [m for key, value in values.items() if value is not None and latest.get(key) != float(value)
            for m in _metric(key, value, timestamp, ok)]


def _report_tags(run: RunDir, report: Report | None) -> dict[str, str]:
    """The band as the table shows it, a crossing at or below the first rank measured as the bound it is (its
    metric holds the bound as a number), and summary.md as the run's description in the UI."""
    tags = {}
    if report is not None and report.analysis is not None:
        region = report.analysis.region
        tags["effrank.band"] = region.band_text() or "not reached"
        for name, rank, censored in (("low", region.low, region.low_censored),
                                     ("high", region.high, region.high_censored)):
            if censored == "left" and rank is not None:
                tags[f"effrank.{name}"] = (f"≤{rank:g}: at or below the first rank measured (the metric "
                                           f"effective_rank/{name} holds the bound)")
    if report is not None and report.note:
        tags["effrank.note"] = _text(report.note, _MAX_TAG)
    summary = run.path / "summary.md"
    if summary.is_file():
        tags["mlflow.note.content"] = _text(summary.read_text(encoding="utf-8", errors="replace"), _MAX_TAG)
    return tags


def _report_is_current(run: RunDir) -> bool:
    """Whether summary.json was written after the last record: the sweep got as far as its report."""
    summary = run.path / "summary.json"
    if not summary.is_file():
        return False
    return not run.records_path.is_file() or summary.stat().st_mtime_ns >= run.records_path.stat().st_mtime_ns


def _existing(folder: Path, names: Iterable[str]) -> list[Path]:
    return [folder / name for name in names if (folder / name).is_file()]


def _text(value: Any, limit: int) -> str:
    """A param or tag value: a list as the flags take it ("2,4,8"), cut to what MLflow stores."""
    text = flag_value(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _now() -> int:
    return int(time.time() * 1000)
