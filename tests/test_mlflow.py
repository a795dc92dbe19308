"""--mlflow: a run's config as params, its trials as metrics, its report as artifacts, one MLflow run per directory."""
from __future__ import annotations

import json
import os
import shutil
import sys
from types import SimpleNamespace

import pytest

from effrank_bench.config import RunConfig
from effrank_bench.records import Epoch

# Two seeds, so the report has bootstrap intervals; 50 resamples keep it quick.
POINTS = [(2, 0, 0.5), (4, 0, 0.7), (8, 0, 0.85), (2, 1, 0.55), (4, 1, 0.72), (8, 1, 0.86)]


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory):
    """A migrated, empty SQLite store, made once: a new one runs MLflow's migrations for seconds."""
    pytest.importorskip("mlflow")
    from effrank_bench.mlflow_log import connect

    folder = tmp_path_factory.mktemp("store")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)  # MLflow's default experiment points its artifacts at ./mlruns
        connect(f"sqlite:///{folder / 'mlruns.db'}")
    return folder / "mlruns.db"


@pytest.fixture
def uri(empty_store, tmp_path, monkeypatch):
    """A store of this test's own, ./mlruns.db in a working directory of its own (where artifacts go too)."""
    shutil.copy(empty_store, tmp_path / "mlruns.db")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    return f"sqlite:///{tmp_path / 'mlruns.db'}"


@pytest.fixture
def client(uri):
    from mlflow import MlflowClient

    return MlflowClient(uri)


def reported(make_run, path, points=POINTS, **config):
    """A hand-made run directory with its report written, as `run` leaves it; (run, report)."""
    from effrank_bench.report import build_report, write_report

    run = make_run(path, points, bootstrap_resamples=50, **config)
    report = build_report(run)
    write_report(run, report)
    return run, report


def history(client, run_id, key):
    return [(m.step, m.value) for m in client.get_metric_history(run_id, key)]


def test_a_latency_spread_is_logged_where_it_was_measured(make_run, tmp_path, uri, client):
    from effrank_bench.mlflow_log import log_run
    from effrank_bench.report import build_report

    run = make_run(tmp_path / "spread", POINTS)
    teacher = run.teacher()
    run.teacher_info.write_text(teacher.model_copy(update={"cost": teacher.cost.model_copy(
        update={"latency_iqr_ms": 0.25})}).model_dump_json())
    records = [json.loads(line) for line in run.records_path.read_text().splitlines()]
    for record in records:  # a spread of rank / 100 ms for each student
        record["cost"]["latency_iqr_ms"] = record["rank"] / 100
    run.records_path.write_text("".join(json.dumps(record) + "\n" for record in records))
    logged = client.get_run(log_run(run, uri, build_report(run)))
    assert logged.data.metrics["teacher/latency_iqr_ms"] == 0.25 and logged.data.metrics["teacher/latency_ms"] == 1.0
    assert history(client, logged.info.run_id, "cost/latency_iqr_ms") == [(2, 0.02), (4, 0.04), (8, 0.08)]


def test_a_run_is_logged_as_params_metrics_and_artifacts(make_run, tmp_path, uri, client):
    from effrank_bench.mlflow_log import log_run

    run, report = reported(make_run, tmp_path / "micro-run", failed=[(16, 0)])
    logged = client.get_run(log_run(run, uri, report))
    assert logged.info.run_name == "micro-run" and logged.info.status == "FINISHED"
    assert logged.data.tags["effrank.run_dir"] == str(run.path.resolve())
    assert logged.data.tags["effrank.sweep_key"] == run.config().sweep_key()
    # Params: every config field but the tracking URI, lists as the flags take them.
    params = logged.data.params
    assert set(params) == set(RunConfig.model_fields) - {"mlflow"}
    assert params["ranks"] == "2,4,8,16" and params["seeds"] == "0,1" and params["arch"] == "micro_vit"
    assert params["bootstrap_resamples"] == "50" and params["thresholds"] == "0.85,0.95"
    # One accuracy-vs-rank series per seed, as recorded; the mean over seeds at each rank.
    for seed in (0, 1):
        assert history(client, logged.info.run_id, f"test_accuracy/seed_{seed}") == [
            (rank, pytest.approx(acc)) for rank, s, acc in POINTS if s == seed]
    assert history(client, logged.info.run_id, "test_accuracy/mean") == [
        (2, pytest.approx(0.525)), (4, pytest.approx(0.71)), (8, pytest.approx(0.855))]
    # make_run's students have 1000 + 100 r parameters, MACs 100× that; its teacher 10,000 parameters.
    assert history(client, logged.info.run_id, "cost/params") == [(2, 1200), (4, 1400), (8, 1800)]
    assert history(client, logged.info.run_id, "cost/compression") == [
        (2, pytest.approx(10_000 / 1200)), (4, pytest.approx(10_000 / 1400)), (8, pytest.approx(10_000 / 1800))]
    assert history(client, logged.info.run_id, "train_loss/teacher") == [(1, 2.0), (2, 1.0)]
    # The read-off, as the report has it, at step = finished trials (6 ok, rank 16 failed).
    metrics = logged.data.metrics
    assert metrics["effective_rank/knee"] == pytest.approx(report.analysis.knee)
    assert (metrics["effective_rank/band_low"], metrics["effective_rank/band_high"]) == report.analysis.region.band
    assert metrics["effective_rank/knee_ci_low"] == pytest.approx(report.uncertainty.knee.ci_low)
    assert metrics["trials/ok"] == 6 and metrics["trials/failed"] == 1 and metrics["teacher/test_accuracy"] == 0.9
    assert history(client, logged.info.run_id, "effective_rank/knee")[0][0] == 6
    assert logged.data.tags["effrank.band"] == report.analysis.region.band_text()
    assert logged.data.tags["mlflow.note.content"].startswith("# micro_vit")
    artifacts = {a.path for a in client.list_artifacts(logged.info.run_id)}
    assert {"summary.json", "summary.csv", "summary.md", "region.csv", "curve.png", "config.json",
            "trials.jsonl"} <= artifacts


def test_a_crossing_below_the_first_rank_is_tagged_as_the_bound_it_is(make_run, tmp_path, uri, client):
    from effrank_bench.mlflow_log import log_run

    # The teacher's accuracy from rank 2 on, the first measured: both crossings are only known to be at most 2.
    run, report = reported(make_run, tmp_path / "early", [(2, 0, 0.9), (4, 0, 0.9), (8, 0, 0.9)])
    logged = client.get_run(log_run(run, uri, report))
    assert logged.data.metrics["effective_rank/high"] == 2.0
    for name in ("low", "high"):
        assert logged.data.tags[f"effrank.{name}"] == (f"≤2: at or below the first rank measured (the metric "
                                                       f"effective_rank/{name} holds the bound)")
    measured, its_report = reported(make_run, tmp_path / "run")  # crossings between measured ranks
    assert "effrank.high" not in client.get_run(log_run(measured, uri, its_report)).data.tags


def test_a_trials_loss_curve_is_a_metric_over_epochs(make_run, tmp_path, uri, client):
    from effrank_bench.mlflow_log import log_run

    run = make_run(tmp_path / "run", POINTS)
    first = run.records()[0]
    run.append(first.model_copy(update={"rank": 16, "history": [
        Epoch(epoch=1, loss=1.5, val_accuracy=0.4), Epoch(epoch=2, loss=0.75, val_accuracy=0.6)]}))
    run_id = log_run(run, uri)
    assert history(client, run_id, "train_loss/r16_s0") == [(1, 1.5), (2, 0.75)]
    assert history(client, run_id, "epoch_val_accuracy/r16_s0") == [(1, 0.4), (2, 0.6)]


def test_logging_a_resumed_run_again_updates_the_same_mlflow_run(make_run, tmp_path, uri, client):
    from effrank_bench.mlflow_log import log_run

    run, report = reported(make_run, tmp_path / "run", points=POINTS[:2])
    run_id = log_run(run, uri, report)
    assert log_run(run, uri) == run_id  # nothing new: same run, no metric twice
    # The sweep is extended by rank 8, as `run --ranks 2,4,8` on the same --out does.
    extended = run.open(run.path, run.config().model_copy(update={"ranks": (2, 4, 8)}))
    extended.append(run.records()[0].model_copy(update={"rank": 8, "test_accuracy": 0.85}))
    assert log_run(extended, uri) == run_id
    assert len(client.search_runs([client.get_experiment_by_name("effrank-bench").experiment_id])) == 1
    assert history(client, run_id, "test_accuracy/seed_0") == [(2, 0.5), (4, 0.7), (8, 0.85)]
    logged = client.get_run(run_id)
    # MLflow never changes a param: the first value stays, the current one is a tag.
    assert logged.data.params["ranks"] == "2,4" and logged.data.tags["config.ranks"] == "2,4,8"
    assert logged.data.metrics["trials/ok"] == 3


def test_a_relative_store_is_the_file_in_the_working_directory_of_each_call(make_run, tmp_path, uri):
    from mlflow import MlflowClient

    from effrank_bench.mlflow_log import connect, log_run

    first, second = tmp_path / "first", tmp_path / "second"
    for folder in (first, second):
        folder.mkdir()
        shutil.copy(tmp_path / "mlruns.db", folder / "mlruns.db")
    os.chdir(first)  # the uri fixture's monkeypatch restores the working directory
    connect("sqlite:///mlruns.db")
    os.chdir(second)
    run_id = log_run(make_run(tmp_path / "run", POINTS[:3]), "sqlite:///mlruns.db")
    assert MlflowClient(f"sqlite:///{second / 'mlruns.db'}").get_run(run_id).info.run_id == run_id
    assert MlflowClient(f"sqlite:///{first / 'mlruns.db'}").search_experiments(filter_string="name = 'effrank-bench'") == []


def test_the_same_sweep_in_another_directory_is_another_mlflow_run(make_run, tmp_path, uri):
    from effrank_bench.mlflow_log import log_run
    from effrank_bench.store import RunDir

    one = make_run(tmp_path / "one", POINTS[:3])
    two = RunDir(shutil.copytree(one.path, tmp_path / "two"))
    assert log_run(one, uri) != log_run(two, uri)


def test_a_suite_nests_its_runs_under_one_parent_run(make_run, tmp_path, uri, client):
    from effrank_bench.mlflow_log import log_suite

    runs = [make_run(tmp_path / "suite" / name, POINTS[:3], loss=loss)
            for name, loss in (("a", "geometric"), ("b", "kd"))]
    (tmp_path / "suite" / "comparison.md").write_text("# comparison\n")
    parent = log_suite("losses", tmp_path / "suite", runs, uri)
    assert log_suite("losses", tmp_path / "suite", runs, uri) == parent
    children = client.search_runs([client.get_run(parent).info.experiment_id],
                                  f"tags.`mlflow.parentRunId` = '{parent}'")
    assert sorted(c.info.run_name for c in children) == ["a", "b"]
    assert client.get_run(parent).info.run_name == "losses"
    assert [a.path for a in client.list_artifacts(parent)] == ["comparison.md"]


def test_a_suite_opens_its_store_once_for_all_its_runs(make_run, tmp_path, uri, monkeypatch):
    import effrank_bench.mlflow_log as mlflow_log

    opened = []
    connect = mlflow_log.connect
    monkeypatch.setattr(mlflow_log, "connect", lambda u: opened.append(u) or connect(u))
    runs = [make_run(tmp_path / "suite" / name, POINTS[:3], loss=loss) for name, loss in (("a", "kd"), ("b", "logit"))]
    mlflow_log.log_suite("losses", tmp_path / "suite", runs, uri)
    assert opened == [uri]  # one client (and, for a server, one reachability check), not one per run


# --- through the command line, with the sweep itself replaced by a hand-made run directory ------------


@pytest.fixture
def fake_sweep(monkeypatch, make_run):
    """`run` without training: its sweep writes make_run's directory; interrupt=True makes it stop after."""
    import effrank_bench.setup
    import effrank_bench.sweep

    state = SimpleNamespace(interrupt=False, prepared=0)

    def prepare(config):
        state.prepared += 1
        return SimpleNamespace(config=config, run=SimpleNamespace(path=config.out))

    def execute(setup, progress):
        run = make_run(setup.run.path, POINTS[:3])
        setup.run = run
        if state.interrupt:
            raise KeyboardInterrupt
        return run

    monkeypatch.setattr(effrank_bench.setup, "prepare", prepare)
    monkeypatch.setattr(effrank_bench.sweep, "execute", execute)
    return state


def test_the_flag_alone_logs_to_mlruns_db_here(fake_sweep, tmp_path, uri, client, run_cli):
    code, out, err = run_cli("run", "--out", tmp_path / "run", "--mlflow")  # uri is ./mlruns.db
    assert code == 0 and err == ""
    assert "logged to MLflow at sqlite:///mlruns.db" in out and "mlflow ui --backend-store-uri" in out
    (logged,) = client.search_runs([client.get_experiment_by_name("effrank-bench").experiment_id])
    assert logged.data.tags["effrank.run_dir"] == str((tmp_path / "run").resolve())
    assert logged.data.metrics["trials/ok"] == 3


def test_a_store_that_fails_warns_in_one_line_and_keeps_the_run(fake_sweep, tmp_path, uri, run_cli, monkeypatch):
    from mlflow import MlflowClient

    def down(*args, **kwargs):
        raise ConnectionError("tracking server went away")

    monkeypatch.setattr(MlflowClient, "log_batch", down)
    code, out, err = run_cli("run", "--out", tmp_path / "run", "--mlflow", uri)
    assert code == 0
    (line,) = err.splitlines()
    assert line.startswith("warning: logging to MLflow") and "tracking server went away" in line
    assert "run the same command again" in line
    records = (tmp_path / "run" / "trials.jsonl").read_text().splitlines()
    assert len(records) == 3 and (tmp_path / "run" / "summary.json").is_file()


class _Unavailable(str):
    """An http:// tracking URI, and the requests its server has answered."""

    hits: list[str]


@pytest.fixture
def unavailable_server():
    """An http:// tracking URI whose server answers every request with 503 Service Unavailable."""
    pytest.importorskip("mlflow")
    import http.server
    import threading

    hits = []

    class Unavailable(http.server.BaseHTTPRequestHandler):
        def answer(self):
            hits.append(self.path)
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_POST = answer

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Unavailable)
    # Polled every 50 ms for shutdown, not every 500 (a test's teardown waited that long).
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    uri = _Unavailable(f"http://127.0.0.1:{server.server_address[1]}")
    uri.hits = hits
    yield uri
    server.shutdown()


def test_logging_to_a_server_that_went_down_gives_up_in_seconds(make_run, tmp_path, unavailable_server, monkeypatch):
    from mlflow.utils import rest_utils

    from effrank_bench.mlflow_log import FAIL_FAST, log_run

    seen = []

    def down(*args, **kwargs):
        seen.append({name: os.environ.get(name) for name in FAIL_FAST})
        raise ConnectionError("tracking server went away")

    monkeypatch.setattr(rest_utils, "http_request", down)
    for name in FAIL_FAST:
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConnectionError):
        log_run(make_run(tmp_path / "run", POINTS[:3]), unavailable_server)
    assert seen == [FAIL_FAST]  # 2 retries, 1 s backoff: seconds, where MLflow's defaults take minutes
    assert not any(name in os.environ for name in FAIL_FAST)  # set only while logging


def test_the_users_own_retry_settings_win(make_run, tmp_path, unavailable_server, monkeypatch):
    from effrank_bench.mlflow_log import log_run

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with pytest.raises(Exception, match="503"):
        log_run(make_run(tmp_path / "run", POINTS[:3]), unavailable_server)
    assert len(unavailable_server.hits) == 1  # no retry at all: the user's 0, not our 2
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "0"


def test_an_interrupted_run_logs_what_it_finished_as_killed(fake_sweep, tmp_path, uri, client, run_cli):
    fake_sweep.interrupt = True
    code, _, err = run_cli("run", "--out", tmp_path / "run", "--mlflow", uri)
    assert code == 130 and "interrupted: 3 finished trial(s)" in err
    (logged,) = client.search_runs([client.get_experiment_by_name("effrank-bench").experiment_id])
    assert logged.info.status == "KILLED"
    assert history(client, logged.info.run_id, "test_accuracy/seed_0") == [(2, 0.5), (4, 0.7), (8, 0.85)]


def test_without_mlflow_the_flag_exits_2_in_one_line_before_training(fake_sweep, tmp_path, run_cli, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # what `import mlflow` meets when it is not installed
    code, _, err = run_cli("run", "--out", tmp_path / "run", "--mlflow")
    assert code == 2 and fake_sweep.prepared == 0
    (line,) = err.splitlines()
    assert "pip install -e '.[mlflow]'" in line


def test_a_uri_mlflow_cannot_open_exits_2_before_training(fake_sweep, tmp_path, uri, run_cli):
    code, _, err = run_cli("run", "--out", tmp_path / "run", "--mlflow", "nosuchscheme://host")
    assert code == 2 and fake_sweep.prepared == 0
    (line,) = err.splitlines()
    assert line.startswith("error: --mlflow nosuchscheme://host:")
    assert "Supported URI schemes are: [" in line and "sqlite" in line  # MLflow's way out, not cut off at 200


def test_a_file_store_mlflow_refuses_is_refused_with_its_whole_way_out(fake_sweep, tmp_path, uri, run_cli):
    import mlflow

    code, _, err = run_cli("run", "--out", tmp_path / "run", "--mlflow", f"file:{tmp_path / 'mlruns'}")
    if code == 0:
        pytest.skip(f"MLflow {mlflow.__version__} still writes file stores")
    (line,) = err.splitlines()
    assert code == 2 and fake_sweep.prepared == 0
    assert "MLFLOW_ALLOW_FILE_STORE=true" in line and not line.endswith("…")  # its message whole: 540 characters


@pytest.mark.parametrize("server", ["http://127.0.0.1:1", "https://127.0.0.1:1/mlflow", "http://host:99999"])
def test_a_tracking_server_that_does_not_answer_exits_2_before_training(fake_sweep, tmp_path, run_cli, server):
    # MLflow's client would retry for minutes after the sweep; the server is asked once, now.
    pytest.importorskip("mlflow")
    code, _, err = run_cli("run", "--out", tmp_path / "run", "--mlflow", server)
    assert code == 2 and fake_sweep.prepared == 0
    (line,) = err.splitlines()
    assert line.startswith(f"error: --mlflow {server}:")
