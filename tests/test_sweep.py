"""End-to-end sweeps on the embedded digits data with tiny budgets: records, resume, cache, failures."""
from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
from pydantic import ValidationError

from effrank_bench import hookimpl
from effrank_bench.analysis import analyze_curve
from effrank_bench.config import RunConfig
from effrank_bench.errors import RegistrationError, UnknownNameError, UnsupportedTargetError
from effrank_bench.registry import Registry, default_registry
from effrank_bench.report import build_report, write_report
from effrank_bench.records import SCHEMA_VERSION, TrialRecord
from effrank_bench.specs import ArchitectureSpec, ExecutorSpec, LossSpec
from effrank_bench.setup import prepare
from effrank_bench.store import RunDir
from effrank_bench import sweep, teacher_spectrum
from effrank_bench.paths import cache_dir
from effrank_bench.sweep import execute, run_sweep
from effrank_bench.teacher import obtain_teacher


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny):
    """A finished sweep of the tiny recipe, students trained 2 epochs; tests that add to a run copy it first."""
    config = tiny.config(tmp_path_factory.mktemp("tiny") / "run", epochs=2)
    return config, run_sweep(config)


def test_a_sweep_writes_a_complete_run_directory(tiny_run):
    config, run = tiny_run
    records = run.records()
    assert [(r.rank, r.status) for r in records] == [(2, "ok"), (4, "ok")]
    # micro_vit joint at rank 2: per block qkv 3·(2·64+64·2)+192, proj 2·64+64·2+64, fc1 2·64+128·2+128,
    # fc2 2·128+64·2+64 = 2,240, ×4 blocks = 8,960, plus 3,274 unfactorized parameters.
    assert records[0].cost.params == 12_234
    assert records[0].cost.factorized_params == 8_960
    assert records[0].cost.macs < records[1].cost.macs
    assert all(r.init == "svd" for r in records)
    assert all(len(r.history) == config.epochs for r in records)

    report = build_report(run)
    paths = write_report(run, report)
    assert {p.name for p in paths} == {"summary.json", "summary.csv", "summary.md", "region.csv", "curve.png"}
    summary = json.loads((run.path / "summary.json").read_text())
    assert summary["schema_version"] == SCHEMA_VERSION
    assert {"python", "torch", "timm", "transformers", "device"} <= set(summary["environment"])
    teacher_acc = summary["teacher"]["test_accuracy"]
    expected = analyze_curve([2, 4], [r.test_accuracy for r in records], teacher_acc)
    assert summary["analysis"]["region"] == expected.to_dict()["region"]
    assert summary["analysis"]["knee"] == pytest.approx(expected.knee)
    assert (run.path / "teacher.safetensors").stat().st_size > 100_000
    assert json.loads((run.path / "config.json").read_text())["ranks"] == [2, 4]


def test_rerunning_resumes_and_only_trains_missing_ranks(tiny_run, tmp_path, progress_stub):
    config, finished = tiny_run
    shutil.copytree(finished.path, tmp_path / "run")
    before = (tmp_path / "run" / "trials.jsonl").read_text().splitlines()
    notes = progress_stub()
    run = run_sweep(config.model_copy(update={"ranks": (2, 4, 8), "out": tmp_path / "run"}), progress=notes)
    after = run.records_path.read_text().splitlines()
    assert after[:2] == before
    assert [json.loads(line)["rank"] for line in after] == [2, 4, 8]
    assert any("2 trial(s) already recorded" in n for n in notes.notes)


def test_a_finished_sweep_run_again_only_reports_with_its_teacher_record_untouched(tiny_run, tmp_path,
                                                                                    progress_stub, monkeypatch):
    config, finished = tiny_run
    shutil.copytree(finished.path, tmp_path / "run")
    kept = {name: (tmp_path / "run" / name).read_bytes() for name in ("teacher.json", "trials.jsonl")}

    def obtain(*args):
        raise AssertionError("a finished sweep loaded its teacher (and measured its latency) again")

    monkeypatch.setattr(sweep, "obtain_teachers", obtain)
    notes = progress_stub()
    # Other timing options: the directory keeps its own (its recorded latencies were timed so), and says so.
    run = run_sweep(config.model_copy(update={"out": tmp_path / "run", "latency_repeats": 7}), progress=notes)
    assert {name: (run.path / name).read_bytes() for name in kept} == kept
    assert f"{run.path}: every trial of this sweep is recorded, nothing to train" in notes.notes
    assert (f"[yellow]{run.path} times its students as it timed the ones it holds (--latency-repeats "
            f"{config.latency_repeats}), so its cost table holds one kind of latency: --latency-repeats 7 applies to "
            "another --out") in notes.notes
    assert run.config().latency_repeats == config.latency_repeats
    teacher = run.teacher()
    # "trained from scratch" where its weights began, not in this command (it was loaded: it is recorded)
    assert f"teacher, trained from scratch: test accuracy {teacher.test_accuracy:.4f}" in notes.notes
    assert [teacher.model_copy(update={"source": source}).origin for source in ("pretrained", "checkpoint t.pt")] == [
        "from pretrained weights", "from checkpoint t.pt"]


def test_a_finished_sweep_still_lacking_its_spectrum_obtains_its_teacher_for_it(tiny_run, tmp_path, progress_stub,
                                                                               monkeypatch):
    config, finished = tiny_run
    shutil.copytree(finished.path, tmp_path / "run")
    assert not (tmp_path / "run" / "spectrum.json").exists()  # the tiny recipe measures no spectrum
    config = config.model_copy(update={"out": tmp_path / "run", "spectrum_samples": 16})
    assert sweep.finished_teacher(prepare(config)) is None
    shutil.rmtree(cache_dir() / "spectra", ignore_errors=True)  # measured here, not read from the cache
    notes, said = progress_stub(), []
    measured = teacher_spectrum.model_spectrum
    monkeypatch.setattr(teacher_spectrum, "model_spectrum", lambda *args: said.extend(notes.notes) or measured(*args))
    run = run_sweep(config, progress=notes)
    assert run.spectrum().key == run.teacher().key
    assert any("loaded from the run directory" in n for n in notes.notes)  # its own, trained before
    assert said[-1] == "the teacher's spectrum: its weights, and its features on 16 test inputs"  # said before
    assert sweep.finished_teacher(prepare(config)) == run.teacher()
    # Another run directory of this teacher and target (another loss, say) reads the spectrum from the cache.
    def measured_again(*args):
        raise AssertionError("the cached spectrum of this teacher and target was measured again")

    monkeypatch.setattr(teacher_spectrum, "model_spectrum", measured_again)
    shutil.copytree(finished.path, tmp_path / "other")
    other = run_sweep(config.model_copy(update={"out": tmp_path / "other"}))
    assert (other.path / "spectrum.json").read_text() == (run.path / "spectrum.json").read_text()


def test_an_interrupted_sweep_keeps_finished_trials_and_resumes(tiny, tmp_path, progress_stub):
    config = tiny.config(tmp_path / "run", group=1)  # one student per data pass: rank 2 finishes first
    with pytest.raises(KeyboardInterrupt):
        run_sweep(config, progress=progress_stub(interrupt_at="rank 4"))
    setup = prepare(config)
    assert [r.rank for r in setup.run.records()] == [2]
    execute(setup)
    assert [r.rank for r in setup.run.records()] == [2, 4]


def test_the_teacher_is_cached_and_shared_across_targets_and_losses(tiny_run, tmp_path, progress_stub):
    config, run = tiny_run
    notes = progress_stub()
    other = run_sweep(config.model_copy(update={"target": "mlp", "loss": "logit", "out": tmp_path / "other"}),
                      progress=notes)
    assert any("loaded from cache" in n for n in notes.notes)
    first, second = run.teacher(), other.teacher()
    assert first.key == second.key
    assert first.test_accuracy == second.test_accuracy


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_a_teacher_checkpoint_is_loaded_as_is(tiny_run, tmp_path, suffix):
    from safetensors.torch import save_file

    config, run = tiny_run
    source = obtain_teacher(prepare(config))
    state = {k: v.contiguous() for k, v in source.model.state_dict().items()}
    path = tmp_path / f"teacher{suffix}"
    torch.save(state, path) if suffix == ".pt" else save_file(state, path)
    loaded = obtain_teacher(prepare(config.model_copy(update={"teacher_checkpoint": path, "teacher_epochs": 0,
                                                              "out": tmp_path / "from_ckpt"})))
    assert loaded.record.source == f"checkpoint {path}"
    assert loaded.record.test_accuracy == run.teacher().test_accuracy


class _NanLoss:
    @hookimpl
    def register_losses(self, register):
        register(LossSpec(name="nan_loss", description="always NaN",
                          compute=lambda t, s, y, o: (s.logits * float("nan")).sum()))


def test_a_nan_loss_fails_its_trial_and_the_sweep_goes_on(tiny, tmp_path):
    registry = Registry(plugins=[("nan", _NanLoss())])
    config = tiny.config(tmp_path / "run", loss="nan_loss")
    run = run_sweep(config, registry=registry)
    records = run.records()
    assert [(r.rank, r.status) for r in records] == [(2, "failed"), (4, "failed")]
    assert all("loss became nan in epoch 1" == r.error for r in records)
    report = build_report(run)
    assert report.analysis is None and "0 finished rank(s)" in report.note
    assert [row.status for row in report.rows] == ["teacher", "failed", "failed"]


class _AttentionOnly:
    @hookimpl
    def register_architectures(self, register):
        micro = default_registry().architecture("micro_vit")
        register(micro.model_copy(update={"name": "attn_only_vit", "targets": {"attention": micro.targets["attention"]}}))


def test_a_target_the_architecture_lacks_is_refused_naming_its_targets(tmp_path):
    registry = Registry(plugins=[("attn", _AttentionOnly())])
    with pytest.raises(UnsupportedTargetError, match="attn_only_vit does not support target 'mlp'; its targets are: attention"):
        prepare(RunConfig(arch="attn_only_vit", target="mlp", out=tmp_path / "r"), registry=registry)
    assert isinstance(registry.architecture("attn_only_vit"), ArchitectureSpec)


def test_more_seeds_extend_a_run_under_the_same_teacher(tiny_run, tmp_path, progress_stub):
    config, finished = tiny_run
    shutil.copytree(finished.path, tmp_path / "run")
    notes = progress_stub()
    run = run_sweep(config.model_copy(update={"seeds": (0, 1), "out": tmp_path / "run"}), progress=notes)
    assert [(r.seed, r.rank) for r in run.records()] == [(0, 2), (0, 4), (1, 2), (1, 4)]
    assert any("loaded from the run directory" in n for n in notes.notes)  # seed 0's teacher, not a new one
    assert run.teacher().key == finished.teacher().key
    assert run.config().seeds == (0, 1) and run.config().teacher_seed == 0


def test_a_run_records_its_targets_width_and_teacher_recipe(tiny_run):
    config, run = tiny_run
    # micro_vit, joint: q, k, v, proj, fc1 (64→128) and fc2 (128→64) all have full rank 64.
    assert run.target_info().model_dump() == {"target": "joint", "qkv": "split", "layers": 16, "max_rank": 64}
    teacher = run.teacher()
    assert teacher.recipe == {"epochs": 2, "lr": config.teacher_lr, "weight_decay": 0.01,
                                 "warmup_fraction": 0.05, "optimizer": "adamw", "label_smoothing": 0.0,
                                 "amp": True, "schedule": "cosine", "select": "best"}
    assert len(teacher.history) == 2 and teacher.samples_per_second > 0  # the tiny recipe's 2 teacher epochs
    assert all(r.samples_per_second > 0 for r in run.records())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_cuda_sweep_trains_in_bf16_channels_last_and_records_throughput(tiny, tmp_path):
    config = tiny.config(tmp_path / "run", device="cuda", arch="micro_convnet")
    setup = prepare(config)
    assert setup.channels_last and setup.workers == 0  # digits are in-memory tensors: no workers
    run = execute(setup)
    records = run.records()
    assert [r.status for r in records] == ["ok", "ok"]
    assert all(r.environment["device"] == "cuda" and r.samples_per_second > 0 for r in records)
    assert run.teacher().recipe["amp"] and run.teacher().cost.peak_memory_mb > 0
    assert next(obtain_teacher(setup).model.parameters()).device.type == "cuda"


def _untrained(config, trial, **fields):
    """A record of ``trial`` that no training made: what an executor plugin in these tests hands over."""
    return TrialRecord(arch=config.arch, target=trial.target, loss=trial.loss, dataset=config.dataset, rank=trial.rank,
                       seed=trial.seed, init=config.init, environment={"device": "cpu"}, **fields)


class _Backwards:
    """An executor plugin that 'runs' the trials last to first, recording each as failed without training."""

    @hookimpl
    def register_executors(self, register):
        def execute(execution):
            for trial in reversed(execution.trials):
                execution.record(_untrained(execution.setup.config, trial, status="failed", error="not trained"))

        register(ExecutorSpec(name="backwards", description="last trial first", execute=execute))


def test_an_executor_plugin_takes_over_the_loop_and_the_core_writes_what_it_records(tiny_run, tmp_path, progress_stub):
    config, _ = tiny_run
    notes = progress_stub()
    run = run_sweep(config.model_copy(update={"executor": "backwards", "ranks": (2, 4, 8), "out": tmp_path / "r"}),
                    registry=Registry(plugins=[("backwards", _Backwards())]), progress=notes)
    assert [(r.rank, r.status, r.error) for r in run.records()] == [(8, "failed", "not trained"),
                                                                    (4, "failed", "not trained"),
                                                                    (2, "failed", "not trained")]
    assert sum("failed: not trained" in n for n in notes.notes) == 3


class _Idle:
    @hookimpl
    def register_executors(self, register):
        register(ExecutorSpec(name="idle", description="records nothing", execute=lambda execution: None))


def test_an_executor_that_records_nothing_is_an_error_not_an_endless_sweep(tiny_run, tmp_path):
    config = tiny_run[0].model_copy(update={"executor": "idle", "out": tmp_path / "r"})
    with pytest.raises(RegistrationError, match=r"^executor 'idle' returned without recording any of the 2 "
                                                r"trial\(s\) it was handed$"):
        run_sweep(config, registry=Registry(plugins=[("idle", _Idle())]))


def test_an_unknown_executor_is_refused_before_anything_loads(tiny, tmp_path):
    with pytest.raises(UnknownNameError, match="unknown executor 'lokal'; did you mean 'local'"):
        prepare(tiny.config(tmp_path / "r", executor="lokal"))
    assert not (tmp_path / "r").exists()


# --- resuming a search ---------------------------------------------------------------------------------


def _logistic(rank):
    """Normalized accuracy rising through 85% at rank 21.4 and 95% at 37.4 (logistic in log2 rank)."""
    slope = (math.log(0.95 / 0.05) - math.log(0.85 / 0.15)) / math.log2(37.4 / 21.4)
    return 1 / (1 + math.exp(-slope * (math.log2(rank) - math.log2(21.4)) - math.log(0.85 / 0.15)))


class _Curve:
    """An executor that answers each trial from ``_logistic`` without training, in the order given: it fails
    the trials in ``fail`` and presses Ctrl-C once ``stop_after`` records of this process are in."""

    def __init__(self, fail=(), stop_after=None):
        self.fail, self.stop_after, self.recorded = set(fail), stop_after, 0

    @hookimpl
    def register_executors(self, register):
        def execute(execution):
            config, teacher = execution.setup.config, execution.teacher.record.test_accuracy
            for trial in execution.trials:
                if self.recorded == self.stop_after:
                    raise KeyboardInterrupt
                if (trial.rank, trial.seed) in self.fail:
                    execution.record(_untrained(config, trial, status="failed", error="loss became nan in epoch 1"))
                else:
                    execution.record(_untrained(config, trial, status="ok",
                                                test_accuracy=_logistic(trial.rank) * teacher))
                self.recorded += 1

        register(ExecutorSpec(name="curve", description="answers from a logistic curve", execute=execute))


def _swept(config, **curve):
    return run_sweep(config, registry=Registry(plugins=[("curve", _Curve(**curve))]))


def test_qkv_fused_for_a_target_without_a_fused_projection_says_it_changes_nothing(tiny_run, tmp_path,
                                                                                     progress_stub):
    notes = progress_stub()
    config = tiny_run[0].model_copy(update={"executor": "curve", "target": "mlp", "qkv": "fused",
                                            "out": tmp_path / "mlp"})
    run_sweep(config, registry=Registry(plugins=[("curve", _Curve())]), progress=notes)
    assert ("[yellow]--qkv fused: the mlp target of micro_vit has no fused projection, so its students are those "
            "of --qkv split") in notes.notes
    joint = progress_stub()  # micro_vit's attention has its fused qkv: nothing to say
    run_sweep(config.model_copy(update={"target": "joint", "out": tmp_path / "joint"}),
              registry=Registry(plugins=[("curve", _Curve())]), progress=joint)
    assert not any("--qkv fused" in note for note in joint.notes)


def test_a_resumed_adaptive_search_finishes_its_round_then_asks_what_it_would_have(tiny_run, tmp_path):
    config = tiny_run[0].model_copy(update={"executor": "curve", "search": "adaptive", "ranks": (2, 64)})
    whole = _swept(config.model_copy(update={"out": tmp_path / "whole"}))
    rounds = whole.search_log()[0]
    assert rounds == [[2, 5, 11, 27, 64], [22, 40], [21, 37]]
    cut = config.model_copy(update={"out": tmp_path / "cut"})
    with pytest.raises(KeyboardInterrupt):
        _swept(cut, stop_after=len(rounds[0]) + 1)  # rank 22 of the second round: refitted, 21 and 40 would come next
    assert len(RunDir(cut.out).records()) == len(rounds[0]) + 1
    resumed = _swept(cut)
    assert resumed.search_log()[0] == rounds
    assert [r.rank for r in resumed.records()] == [r.rank for r in whole.records()]


def test_an_adaptive_search_on_the_grid_trains_only_ranks_of_the_grid(tiny_run, tmp_path):
    grid = (2, 4, 8, 12, 16, 20, 24, 28, 32, 40, 48, 56, 64)  # micro_vit's layers have rank 64 at most
    config = tiny_run[0].model_copy(update={"executor": "curve", "search": "adaptive", "tolerance": "grid",
                                            "ranks": grid, "out": tmp_path / "run"})
    run = _swept(config)
    # 85% at 21.4, 95% at 37.4, the knee near 30: each between adjacent ranks of the grid.
    assert run.search_log()[0] == [[2, 4, 12, 28, 64], [20, 24, 40], [32]]
    assert sorted(r.rank for r in run.records()) == [2, 4, 12, 20, 24, 28, 32, 40, 64]


_GRID = (2, 4, 8, 12, 16, 20, 24, 28, 32, 40, 48, 56, 64)


def _unfinished(report):
    return [w for w in report.warnings if w.startswith("the sweep is not finished")]


def test_a_sweep_rerun_with_fewer_ranks_finishes_the_ranks_its_directory_holds(tiny_run, tmp_path, progress_stub):
    config = tiny_run[0].model_copy(update={"executor": "curve", "search": "adaptive", "tolerance": "grid",
                                            "ranks": _GRID})
    whole = _swept(config.model_copy(update={"out": tmp_path / "whole"}))
    cut = config.model_copy(update={"out": tmp_path / "cut"})
    with pytest.raises(KeyboardInterrupt):
        _swept(cut, stop_after=2)
    # The directory's sweep is the union of both commands' ranks: the search runs over it, as the report reads it.
    notes = progress_stub()
    shorter = cut.model_copy(update={"ranks": (2, 4, 8, 16, 32, 64)})
    resumed = run_sweep(shorter, registry=Registry(plugins=[("curve", _Curve())]), progress=notes)
    assert resumed.search_log()[0] == whole.search_log()[0]
    assert sorted(r.rank for r in resumed.records()) == sorted(r.rank for r in whole.records())
    assert resumed.config().ranks == _GRID and not _unfinished(build_report(resumed))
    assert (f"{cut.out} holds rank(s) 12, 20, 24, 28, 40, 48, 56 of an earlier command: they are part of its sweep "
            "(another --out for a sweep without them)") in notes.notes


def test_a_rerun_that_names_no_search_goes_on_with_the_directorys_adaptive_one(tiny_run, tmp_path, progress_stub):
    from effrank_bench.config import RunConfig

    options = {**tiny_run[0].model_dump(exclude_unset=True), "executor": "curve", "ranks": _GRID, "out": tmp_path / "r"}
    with pytest.raises(KeyboardInterrupt):
        _swept(RunConfig(**options, search="adaptive", tolerance="grid"), stop_after=3)
    notes = progress_stub()
    again = run_sweep(RunConfig(**{**options, "ranks": (2, 64)}), registry=Registry(plugins=[("curve", _Curve())]),
                      progress=notes)  # the command without --search: a grid would train all 13 ranks
    assert sorted(r.rank for r in again.records()) == [2, 4, 12, 20, 24, 28, 32, 40, 64]  # the search's, as whole
    assert (again.config().search, again.config().tolerance) == ("adaptive", "grid")
    assert (f"{tmp_path / 'r'} holds an adaptive search (--tolerance grid): this command goes on with it "
            "(--search grid trains every rank of --ranks)") in notes.notes
    finished = progress_stub()
    run_sweep(RunConfig(**options), registry=Registry(plugins=[("curve", _Curve())]), progress=finished)
    assert finished.notes[0].endswith("this command goes on with it (--search grid trains every rank of --ranks)")
    assert finished.notes[-1].endswith("every trial of this sweep is recorded, nothing to train")  # said there too
    for named, kept in (({"search": "adaptive"}, "grid"), ({"tolerance": "3"}, "3"), ({}, "3")):
        # The same search named keeps its tolerance; a tolerance named alone is the directory search's new one.
        resumed = RunDir(tmp_path / "r").resumed(RunConfig(**options, **named))
        assert (resumed.search, resumed.tolerance) == ("adaptive", kept)
        RunDir.open(tmp_path / "r", resumed)
    grid = _swept(RunConfig(**options, search="grid"))  # named, the grid is what it asks for
    assert sorted({r.rank for r in grid.records()}) == list(_GRID) and grid.config().search == "grid"


def test_a_search_resumed_with_another_tolerance_drops_the_ranks_it_would_not_ask_for(tiny_run, tmp_path,
                                                                                       progress_stub):
    config = tiny_run[0].model_copy(update={"executor": "curve", "search": "adaptive", "ranks": _GRID,
                                            "out": tmp_path / "run"})
    with pytest.raises(KeyboardInterrupt):
        _swept(config, stop_after=2)  # ranks 2 and 5 of the 10% search's first round, 2, 5, 11, 27, 64
    notes = progress_stub()
    on_grid = config.model_copy(update={"tolerance": "grid"})
    run = run_sweep(on_grid, registry=Registry(plugins=[("curve", _Curve())]), progress=notes)
    assert ("rank(s) 11, 27, asked for before, are not among the ranks this search trains (--ranks, --search, "
            "--tolerance): they will not train (further)") in notes.notes
    assert (f"{tmp_path / 'run'}: its adaptive search goes on at --tolerance grid, where it ran at 10% (its rounds "
            "before keep the ranks they asked for)") in notes.notes
    trained = {r.rank for r in run.records()}
    assert trained - set(_GRID) == {5}  # recorded before the change: a measured point like any other
    assert run.search_log()[0][0] == [2, 5, 64] and not _unfinished(build_report(run))
    # Finished on the grid, the same command only reports; the 10% search would ask for ranks of its own.
    local = on_grid.model_copy(update={"executor": "local"})
    assert sweep.finished_teacher(prepare(local)) is not None
    assert sweep.finished_teacher(prepare(local.model_copy(update={"tolerance": None}))) is None


@pytest.mark.parametrize("stop_after", [2, 5, 6])  # in the first round, after it, in the second
def test_an_unfinished_reports_trials_are_those_its_rerun_trains_next(tiny_run, tmp_path, stop_after):
    from effrank_bench.plan import unfinished_trials

    config = tiny_run[0].model_copy(update={"executor": "curve", "search": "adaptive", "tolerance": "grid",
                                            "ranks": _GRID, "out": tmp_path / "run"})
    with pytest.raises(KeyboardInterrupt):
        _swept(config, stop_after=stop_after)
    run = RunDir(config.out)
    before = {r.trial for r in run.records()}
    listed = unfinished_trials(run.config(), run.records(), *run.search_log(),
                               run.teacher().test_accuracy)
    trained = [r.trial for r in _swept(config).records() if r.trial not in before]
    assert listed and listed == trained[:len(listed)]  # in the order the rerun trains them, none it never trains


def test_a_search_ended_by_its_round_budget_says_what_it_left_open(tiny_run, tmp_path, progress_stub, monkeypatch):
    from effrank_bench.search import AdaptiveSearch

    monkeypatch.setattr(sweep, "searcher", lambda config, rounds: AdaptiveSearch(config.ranks, max_rounds=2,
                                                                                 rounds=rounds))
    notes = progress_stub()
    config = tiny_run[0].model_copy(update={"executor": "curve", "search": "adaptive", "ranks": _GRID,
                                            "out": tmp_path / "run"})
    run = run_sweep(config, registry=Registry(plugins=[("curve", _Curve())]), progress=notes)
    assert len(run.search_log()[0]) == 2
    assert [n for n in notes.notes if n.startswith("[yellow]the search stopped at its budget of 2 rounds (this run "
                                                   "directory's: earlier commands' adaptive rounds count) with the ")]


@pytest.mark.parametrize("search", ["grid", "adaptive"])
def test_an_unfinished_reports_trials_across_commands_are_those_its_rerun_trains_next(tiny_run, tmp_path, search):
    # grid: ranks 2, 4, 8 stopped after rank 2, then 16 added and stopped at once: the report lists 4, 8 and 16.
    # adaptive: a finished search given a second seed: that seed's ranks, round by round.
    from effrank_bench.plan import unfinished_trials

    config = tiny_run[0].model_copy(update={"executor": "curve", "search": search, "out": tmp_path / "run",
                                            "ranks": (2, 4, 8) if search == "grid" else (2, 64)})
    if search == "grid":
        with pytest.raises(KeyboardInterrupt):
            _swept(config, stop_after=1)
        config = config.model_copy(update={"ranks": (16,)})
        with pytest.raises(KeyboardInterrupt):
            _swept(config, stop_after=0)
    else:
        _swept(config)
        config = config.model_copy(update={"seeds": (1,)})
    run = RunDir(config.out)
    before = {r.trial for r in run.records()}
    listed = unfinished_trials(run.resumed(config), run.records(), *run.search_log(),
                               run.teacher().test_accuracy)
    trained = [r.trial for r in _swept(config).records() if r.trial not in before]
    assert listed == trained and len(listed) == (3 if search == "grid" else 9)


def test_a_grids_rounds_spend_none_of_a_later_searchs_budget(tiny_run, tmp_path, monkeypatch):
    from effrank_bench.search import AdaptiveSearch

    config = tiny_run[0].model_copy(update={"executor": "curve", "ranks": (2, 64), "out": tmp_path / "run"})
    for ranks in ((2, 64), (4,), (8,)):  # a grid extended rank by rank: three rounds
        _swept(config.model_copy(update={"ranks": ranks}))
    # A budget of three rounds: counting the grid's three, the search would have none left.
    monkeypatch.setattr(sweep, "searcher", lambda config, rounds: AdaptiveSearch(config.ranks, max_rounds=3,
                                                                                 rounds=rounds))
    run = _swept(config.model_copy(update={"search": "adaptive"}))
    rounds = run.search_log()[0]  # the adaptive budget counts only its own: the grid's rounds are no part of it
    assert rounds[:3] == [[2, 64], [4], [8]] and run.search_log()[1] == len(rounds) - 3 > 0


@pytest.mark.parametrize("search_log", [True, False], ids=["this-version", "no-search-log"])
def test_the_other_seeds_of_a_rank_that_failed_train_when_the_sweep_resumes(tiny_run, tmp_path, search_log):
    config = tiny_run[0].model_copy(update={"executor": "curve", "ranks": (2, 4, 8), "seeds": (0, 1),
                                            "out": tmp_path / "run"})
    with pytest.raises(KeyboardInterrupt):
        _swept(config, fail={(4, 0)}, stop_after=3)  # seed 0 of ranks 2, 4 (failed) and 8
    if not search_log:  # a run directory of an earlier version keeps no search rounds
        RunDir(config.out).search_path.unlink()
    run = _swept(config)
    assert sorted((r.rank, r.seed, r.status) for r in run.records()) == [
        (2, 0, "ok"), (2, 1, "ok"), (4, 0, "failed"), (4, 1, "ok"), (8, 0, "ok"), (8, 1, "ok")]


def test_a_search_that_asks_again_for_what_is_recorded_ends_the_sweep(tiny_run, tmp_path, monkeypatch):
    # A teacher at 0 accuracy gives no normalized curve: the grid asks for every rank again, all recorded.
    monkeypatch.setattr(sweep, "measured_curve", lambda *args: {})
    run = _swept(tiny_run[0].model_copy(update={"executor": "curve", "out": tmp_path / "r"}))
    assert [(r.rank, r.status) for r in run.records()] == [(2, "ok"), (4, "ok")]
    assert run.search_log()[0] == [[2, 4]]


def test_a_tolerance_on_a_grid_sweep_is_noted_as_unused(tiny_run, tmp_path, progress_stub):
    notes = progress_stub()
    run_sweep(tiny_run[0].model_copy(update={"executor": "curve", "tolerance": "5", "out": tmp_path / "r"}),
              registry=Registry(plugins=[("curve", _Curve())]), progress=notes)
    assert "[yellow]--tolerance applies to --search adaptive: this grid sweep trains every rank" in notes.notes


class _Reads(_Curve):
    """The curve executor, declaring that it reads --gpus-per-trial (as a cluster executor of a third party would)."""

    @hookimpl
    def register_executors(self, register):
        super().register_executors(lambda spec: register(spec.model_copy(update={"name": "reads",
                                                                                 "options": ("gpus_per_trial",)})))


def test_executor_options_given_to_an_executor_that_does_not_read_them_are_noted(tiny_run, tmp_path, progress_stub):
    notes = progress_stub()
    run_sweep(tiny_run[0].model_copy(update={"executor": "curve", "gpus_per_trial": 1.0, "max_retries": 0,
                                             "out": tmp_path / "r"}),
              registry=Registry(plugins=[("curve", _Curve())]), progress=notes)
    assert "[yellow]--gpus-per-trial, --max-retries: the curve executor does not read them" in notes.notes
    # An executor that names an option among those it reads is not told it ignores it.
    notes = progress_stub()
    run_sweep(tiny_run[0].model_copy(update={"executor": "reads", "gpus_per_trial": 1.0, "max_retries": 0,
                                             "out": tmp_path / "s"}),
              registry=Registry(plugins=[("reads", _Reads())]), progress=notes)
    assert "[yellow]--max-retries: the reads executor does not read it" in notes.notes
    quiet = progress_stub()
    run_sweep(tiny_run[0].model_copy(update={"executor": "curve", "out": tmp_path / "q"}),
              registry=Registry(plugins=[("curve", _Curve())]), progress=quiet)
    assert not any("does not read" in note for note in quiet.notes)
    # Rerun with nothing left to train: the flag is still said to be unread (it was silent then).
    again = progress_stub()
    run_sweep(tiny_run[0].model_copy(update={"executor": "curve", "max_retries": 0, "out": tmp_path / "r"}),
              registry=Registry(plugins=[("curve", _Curve())]), progress=again)
    assert "[yellow]--max-retries: the curve executor does not read it" in again.notes
    assert any("nothing to train" in note for note in again.notes)


def test_an_executor_may_only_name_executor_options():
    with pytest.raises(ValidationError, match="'epochs' is not an executor option; they are: ray_address, "
                                              "gpus_per_trial, cpus_per_trial, max_retries"):
        ExecutorSpec(name="x", description="x", execute=lambda execution: None, options=("epochs",))
    # The built-in executors: Ray reads all four, the local executor none.
    from effrank_bench.config import EXECUTOR_OPTIONS

    assert default_registry().executor("ray").options == EXECUTOR_OPTIONS
    assert default_registry().executor("local").options == ()


def test_hub_weights_that_cannot_be_had_beside_a_checkpoint_say_to_add_no_pretrained(tiny_run, tmp_path,
                                                                                       monkeypatch):
    # A suite sets pretrained = true; offline, a --teacher-checkpoint beside it was told to pass that very flag.
    from effrank_bench.errors import CheckpointError

    micro_vit = default_registry().architecture("micro_vit")
    scratch = micro_vit.build

    def build(request):
        if request.pretrained:
            raise CheckpointError("cannot fetch micro_vit's weights; pass the file with --teacher-checkpoint PATH")
        return scratch(request)

    monkeypatch.setitem(micro_vit.__dict__, "build", build)
    config, trained = tiny_run
    with pytest.raises(CheckpointError) as err:
        run_sweep(config.model_copy(update={"pretrained": True, "teacher_epochs": 0, "out": tmp_path / "run",
                                            "teacher_checkpoint": trained.teacher_weights}))
    assert str(err.value) == ("cannot fetch micro_vit's weights; pass the file with --teacher-checkpoint PATH; "
                              "--teacher-checkpoint is given: with --no-pretrained the teacher starts from that file "
                              "alone, without the hub (the flag overrides a suite's pretrained = true)")


def test_a_cached_teacher_of_other_data_under_the_same_name_is_refused(tiny, tmp_path, progress_stub):
    # A plugin's load() changed (or files under --data-root were replaced): the key names the data set, not its
    # contents, and the stale teacher was used, its test accuracy of the old data normalizing the new students.
    from effrank_bench.errors import CheckpointError
    from effrank_bench.specs import DatasetSpec

    digits = default_registry().dataset("digits")
    seed = {"value": 0}

    def load(request):
        splits = digits.load(request)
        order = torch.randperm(len(splits.test), generator=torch.Generator().manual_seed(seed["value"]))
        return type(splits)(**{**splits.__dict__, "test": torch.utils.data.Subset(splits.test, order.tolist())})

    class Theirs:
        @hookimpl
        def register_datasets(self, register):
            register(DatasetSpec(name="shuffled", description="digits, test split shuffled", load=load))

    registry = Registry(plugins=[("theirs", Theirs())])
    first = run_sweep(tiny.config(tmp_path / "a", dataset="shuffled", ranks=(2,)), registry=registry)
    assert first.teacher().evaluated_on.items == 270
    run_sweep(tiny.config(tmp_path / "b", dataset="shuffled", ranks=(2,), epochs=2), registry=registry)  # the same
    seed["value"] = 1  # the plugin changed what it loads
    with pytest.raises(CheckpointError, match=r"^the teacher .* was trained and tested on other data under the name "
                                              r"'shuffled' \(first test labels \[.*\], this run's \[.*\]\): its key "
                                              r"names a data set and its options, not its contents, and the data "
                                              r"changed since; delete .* to train the teacher anew"):
        run_sweep(tiny.config(tmp_path / "c", dataset="shuffled", ranks=(2,)), registry=registry)
    with pytest.raises(CheckpointError, match="this run directory's students distilled from it: give another --out$"):
        run_sweep(tiny.config(tmp_path / "a", dataset="shuffled", ranks=(2, 4)), registry=registry)
    # Its way out taken: the cache's teacher trained anew on the new data. A run directory of the old data keeps
    # its own teacher, which its students distilled from, where it took the cache's under the same key.
    for path in cache_dir().glob(f"teachers/{first.teacher().key}.*"):
        path.unlink()
    run_sweep(tiny.config(tmp_path / "c", dataset="shuffled", ranks=(2,)), registry=registry)
    seed["value"], own = 0, first.teacher_weights.read_bytes()
    notes = progress_stub()
    resumed = run_sweep(tiny.config(tmp_path / "a", dataset="shuffled", ranks=(2, 4)), registry=registry,
                        progress=notes)
    assert any("teacher loaded from the run directory" in note for note in notes.notes)
    assert resumed.teacher_weights.read_bytes() == own and [r.rank for r in resumed.records()] == [2, 4]


@pytest.mark.parametrize("group", [1, "auto"])
def test_the_teachers_svd_is_computed_once_under_a_task_of_its_own(tiny, tmp_path, progress_stub, group):
    notes = progress_stub()
    run_sweep(tiny.config(tmp_path / "run", ranks=(2, 4), group=group), progress=notes)
    assert [task for task in notes.tasks if task.startswith("SVD")] == ["SVD of the teacher's 16 targeted layers"]
