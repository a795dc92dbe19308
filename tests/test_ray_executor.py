"""--executor ray on a local one-CPU Ray cluster: the local executor's records, suites, dead workers, Ctrl-C.

One CPU, so one worker process imports torch and the plugins (seconds) and units of work run one at a
time, as on a busy cluster."""
from __future__ import annotations

import contextlib
import logging
import sys

import pytest
import torch

from effrank_bench.config import load_suite
from effrank_bench.errors import ConfigError
from effrank_bench.store import RunDir
from effrank_bench.suite import run_suite
from effrank_bench.sweep import run_sweep
from effrank_bench.teacher import CachedTeacher
from effrank_bench_plugins.ray_executor import DIE_ONCE, check_reachable


@pytest.fixture(scope="module")
def cluster():
    """One Ray for the module (it takes seconds to start); the executor joins it instead of starting its own.

    Ray is imported here, not at the top: both test processes collect this module, one runs it; without
    the ray extra, the tests that need a cluster skip and the others still run. No task warms its worker
    up: the first worker dies in its first unit of work, and each worker's imports (torch, timm, the
    plugins) cost seconds of CPU that the other test process would rather have.
    """
    ray = pytest.importorskip("ray")

    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    yield
    ray.shutdown()


def outcomes(run):
    """What a sweep found, by trial: status and test accuracy (None for a failed trial)."""
    return {(r.rank, r.seed, r.status): r.test_accuracy for r in run.records()}


def losses(run):
    """Every trial's training loss, epoch by epoch, in trial order: what tells two trainings apart."""
    return [epoch.loss for r in sorted(run.records(), key=lambda r: (r.rank, r.seed)) for epoch in r.history]


def params(run):
    """Each trial's parameter count, by trial."""
    return {(r.rank, r.seed): r.cost.params for r in run.records()}


@pytest.fixture(scope="module")
def local_run(tmp_path_factory, tiny):
    """The tiny recipe with the local executor, one student per group, as the ray runs below lay them out."""
    return run_sweep(tiny.config(tmp_path_factory.mktemp("local") / "run", group=1))


def test_ray_records_what_the_local_executor_records_though_a_worker_dies(cluster, local_run, tiny, tmp_path,
                                                                          monkeypatch):
    marker = tmp_path / "died"
    monkeypatch.setenv(DIE_ONCE, str(marker))
    run = run_sweep(tiny.config(tmp_path / "run", group=1, executor="ray", max_retries=1))
    assert marker.exists()  # a worker did die: its unit was retried on another, and recorded once
    assert len(run.records_path.read_text().splitlines()) == 2
    local, remote = outcomes(local_run), outcomes(run)
    trials = sorted(local)  # units finish, and are recorded, in whatever order the cluster runs them
    assert sorted(remote) == trials == [(2, 0, "ok"), (4, 0, "ok")]
    assert [remote[t] for t in trials] == pytest.approx([local[t] for t in trials], abs=1e-4)
    assert losses(run) == pytest.approx(losses(local_run), rel=1e-4)
    assert params(run) == params(local_run)
    assert run.teacher().test_accuracy == local_run.teacher().test_accuracy  # one teacher, trained once


class SnapshotAtFirstRecord:
    """A Progress that calls ``look()`` when the first trial of a sweep has been recorded and keeps its answer."""

    def __init__(self, look):
        self.look, self.seen = look, None

    @contextlib.contextmanager
    def task(self, description, total):
        yield lambda n: None

    def note(self, message):
        if self.seen is None and " 1 of " in message:
            self.seen = self.look()


PAIR = """
name = "pair"
[[matrix]]
arch = "micro_vit"
target = "joint"
loss = "logit"
dataset = "digits"
[[matrix]]
arch = "micro_vit"
target = "joint"
loss = "kd"
dataset = "digits"
teacher_seed = 7
"""


def test_a_suite_on_ray_has_every_teacher_before_its_first_student(cluster, tiny, tmp_path):
    (tmp_path / "pair.toml").write_text(PAIR)
    suite = load_suite(tmp_path / "pair.toml", {**tiny.options, "ranks": (2,), "executor": "ray",
                                                "out": tmp_path / "suite"})
    second = CachedTeacher.at(suite.runs[1].teacher_key())  # its own teacher seed: a teacher of its own
    progress = SnapshotAtFirstRecord(second.exists)
    result = run_suite(suite, progress=progress)
    assert progress.seen is True  # the second run's teacher was in the cache when the first run's student finished
    assert [[r.status for r in RunDir(path).records()] for path in result.runs] == [["ok"], ["ok"]]


class InterruptAfterFirst:
    """A Progress that presses Ctrl-C when the first unit of work has been recorded."""

    @contextlib.contextmanager
    def task(self, description, total):
        yield lambda n: None

    def note(self, message):
        if " 1 of " in message:
            raise KeyboardInterrupt


def test_ctrl_c_keeps_finished_trials_and_the_local_executor_resumes(cluster, local_run, tiny, tmp_path):
    config = tiny.config(tmp_path / "run", group=1, executor="ray")  # one CPU: one unit at a time
    with pytest.raises(KeyboardInterrupt):
        run_sweep(config, progress=InterruptAfterFirst())
    assert [r.rank for r in RunDir(config.out).records()] == [2]
    run = run_sweep(config.model_copy(update={"executor": "local"}))
    assert outcomes(run) == pytest.approx(outcomes(local_run), abs=1e-4)
    assert losses(run) == pytest.approx(losses(local_run), rel=1e-4)


def test_a_unit_no_node_can_hold_is_refused_instead_of_waiting_forever(cluster, run_cli, tiny, tmp_path):
    code, _, err = run_cli("run", *tiny.args(executor="ray", gpus_per_trial=1), "--out", tmp_path / "run")
    assert code == 2
    assert err.strip() == ("error: no node of the Ray cluster has 1 CPU(s) and 1 GPU(s) for one unit of work; "
                           "lower --cpus-per-trial or --gpus-per-trial")
    assert not (tmp_path / "run").exists()


def test_without_ray_the_executor_says_how_to_install_it(run_cli, tiny, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if the extra were not installed
    code, _, err = run_cli("run", *tiny.args(executor="ray"), "--out", tmp_path / "run")
    assert code == 2
    assert err.strip() == "error: --executor ray needs Ray: pip install -e '.[ray]'"
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("address, message", [
    ("127.0.0.1:1", "nothing answers there"),  # no cluster: refused in one line, not after Ray's minutes of retries
    ("ray://127.0.0.1:1", "nothing answers there"),
    ("head-node", "expected auto, HOST:PORT or ray://HOST:PORT"),
    ("head:port", "expected auto, HOST:PORT or ray://HOST:PORT"),
])
def test_an_address_nothing_answers_at_is_refused_at_once(address, message):
    with pytest.raises(ConfigError, match=message):
        check_reachable(address, timeout=1.0)
    check_reachable("auto")  # Ray's own lookup, left to Ray


@pytest.mark.parametrize("seeds, ranks, slots, size", [
    ((0,), (1, 2, 4, 8, 16, 32), 3, 2),  # one seed: its six trials over the three slots
    ((0, 1), (2, 4, 8, 16), 3, 4),  # a unit holds one seed's trials: one unit per seed, in one wave
    ((0, 1), (2, 4, 8, 16), 4, 2),  # two slots per seed
    ((0, 1, 2), (2, 4), 1, 2),  # one slot: each seed's trials in one unit
])
def test_auto_units_fill_the_slots_with_one_seed_each(seeds, ranks, slots, size, tiny, tmp_path):
    from types import SimpleNamespace

    from effrank_bench.records import Trial
    from effrank_bench_plugins.executors import layout
    from effrank_bench_plugins.ray_executor import _unit_size

    setup = SimpleNamespace(config=tiny.config(tmp_path), device=torch.device("cpu"))
    trials = tuple(Trial("joint", "geometric", rank, seed) for seed in seeds for rank in ranks)
    assert _unit_size(SimpleNamespace(setup=setup, teacher=None, trials=trials), slots, 0.0) == size
    units = layout(trials, [], size)
    assert all(len({t.seed for t in unit}) == 1 for unit in units)
    assert len(units) <= max(slots, len(seeds))  # one wave where the cluster has a slot per seed
