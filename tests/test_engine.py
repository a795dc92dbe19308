"""The grouped engine: a group of one is a lone trial, groups are deterministic, a NaN student leaves its
group, and a group killed mid-epoch resumes from its checkpoint to the same records."""
from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from effrank_bench import checkpoint, hookimpl
from effrank_bench.checkpoint import CheckpointNotWritten, Checkpoints, FitState, ModelState, saved_groups
from effrank_bench.errors import CheckpointError, ConfigError, RegistrationError
from effrank_bench.records import Trial
from effrank_bench.registry import Registry
from effrank_bench.specs import LossSpec
from effrank_bench.store import RunDir
from effrank_bench.sweep import run_sweep

FIXTURE = Path(__file__).parent / "fixtures" / "run_v1"
HISTORIES = Path(__file__).parent / "fixtures" / "run_v1_histories.json"  # the same trials, per CPU


def _result(record) -> dict:
    """What a trial computed (not how long it took, nor where)."""
    return record.model_dump(include={"status", "rank", "seed", "val_accuracy", "test_accuracy", "history",
                                      "cost", "error", "group"}, exclude={"cost": {"latency_ms", "latency_iqr_ms"}})


@pytest.fixture
def recorded_threads():
    """The intra-op threads the fixture was recorded with (one, as each test process computes): float sums
    depend on it."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def cpu_numerics() -> str | None:
    """What decides how this process's float sums round: torch, its CPU kernels' instruction set and the CPU
    (None where /proc/cpuinfo is not there to say)."""
    try:
        info = Path("/proc/cpuinfo").read_text().split("\n\n")[0]
    except OSError:
        return None
    lines = (line.split(":", 1) for line in info.splitlines() if ":" in line)
    fields = {key.strip(): value.strip() for key, value in lines}
    return (f"torch {torch.__version__.split('+')[0]}, {torch.backends.cpu.get_cpu_capability()}, "
            f"{fields.get('vendor_id')} family {fields.get('cpu family')} model {fields.get('model')}")


def test_a_group_of_one_reproduces_the_previous_engine_bit_for_bit(tmp_path, monkeypatch, recorded_threads):
    # The fixture's students were trained one per data pass by the code before the grouped engine.
    monkeypatch.setenv("EFFRANK_BENCH_CACHE", str(tmp_path / "cache"))
    shutil.copytree(FIXTURE, tmp_path / "run")
    before = [json.loads(line) for line in (tmp_path / "run" / "trials.jsonl").read_text().splitlines()]
    (tmp_path / "run" / "trials.jsonl").write_text("")
    # The teacher's spectrum (no part of a trial's record) is left out: it takes seconds.
    config = RunDir(tmp_path / "run").config().model_copy(update={"out": tmp_path / "run", "group": 1,
                                                                   "seeds": (0,), "spectrum_samples": 0})
    # Seed 0's two students only: the directory's sweep made seed 0's alone (a rerun trains all its seeds).
    (tmp_path / "run" / "config.json").write_text(config.model_dump_json())
    records = run_sweep(config).records()
    # Losses round by the CPU's kernels: the previous engine's, from this fixture's teacher, differ between CPUs
    # in their last bits (0.12528798 on the CPU that recorded trials.jsonl, 0.12528797 on an AVX-512 Xeon) and
    # so does this one's, in step. Bit for bit where the previous engine was run on this CPU and torch; within
    # a millionth elsewhere. Accuracies, ranks and seeds are equal everywhere.
    by_cpu = json.loads(HISTORIES.read_text())
    recorded = by_cpu.get(cpu_numerics())
    for i, (record, old) in enumerate(zip(records, before[:2])):
        assert (record.rank, record.seed) == (old["rank"], old["seed"])
        assert record.test_accuracy == old["test_accuracy"] and record.val_accuracy == old["val_accuracy"]
        history = [e.model_dump() for e in record.history]
        assert history == (recorded[i] if recorded else [{**e, "loss": pytest.approx(e["loss"], rel=1e-6)}
                                                         for e in old["history"]])
        assert record.group == []


def test_the_cpu_numerics_key_names_this_torch_and_its_instruction_set():
    key = cpu_numerics()
    if key is None:
        pytest.skip("no /proc/cpuinfo here")
    assert key.startswith(f"torch {torch.__version__.split('+')[0]}, {torch.backends.cpu.get_cpu_capability()}, ")
    assert " family " in key and " model " in key


def test_the_students_of_a_run_share_one_svd_per_layer(tmp_path, tiny, monkeypatch):
    calls = []
    svd = torch.linalg.svd
    monkeypatch.setattr(torch.linalg, "svd", lambda *args, **kwargs: calls.append(1) or svd(*args, **kwargs))
    run = run_sweep(tiny.config(tmp_path / "run", group=1))  # ranks 2 and 4, each trial a group of its own
    assert [r.status for r in run.records()] == ["ok", "ok"]
    # micro_vit's joint target: 4 blocks × (q, k, v, proj, fc1, fc2), each layer decomposed once for both students.
    assert len(calls) == 24


@pytest.fixture(scope="module")
def grouped(tmp_path_factory, tiny):
    """Ranks 2 and 4 trained as one group for 2 epochs, with a checkpoint after every epoch."""
    config = tiny.config(tmp_path_factory.mktemp("grouped") / "run", epochs=2, checkpoint_every=1)
    return config, run_sweep(config)


def test_an_interrupt_while_a_trained_group_is_measured_records_none_of_it_and_the_rerun_matches(
        grouped, tmp_path, monkeypatch):
    from effrank_bench.setup import RunSetup

    config, run = grouped
    config = config.model_copy(update={"out": tmp_path / "cut", "checkpoint_every": None})  # no checkpoint saved
    measured = RunSetup.student_cost
    calls = []

    def interrupted(self, *args):
        calls.append(args[1])
        if len(calls) == 2:  # rank 4's cost, rank 2's measured: recorded one by one, rank 2 would be on disk
            raise KeyboardInterrupt
        return measured(self, *args)

    monkeypatch.setattr(RunSetup, "student_cost", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(config)
    assert RunDir(config.out).records() == []
    monkeypatch.setattr(RunSetup, "student_cost", measured)
    # Rank 4 alone would have trained as a group of its own, in its own data order, to other numbers.
    assert [_result(r) for r in run_sweep(config).records()] == [_result(r) for r in run.records()]


def test_students_of_a_group_record_their_group_in_the_same_shape(grouped):
    config, run = grouped
    records = run.records()
    assert [(r.rank, r.status) for r in records] == [(2, "ok"), (4, "ok")]
    assert all(r.group == [(2, 0), (4, 0)] for r in records)
    assert all(len(r.history) == 2 for r in records)
    assert records[0].cost.params < records[1].cost.params
    assert not (run.path / "checkpoints").exists()  # finished groups leave no checkpoint (nor its folder)


def test_a_group_gives_the_same_records_every_time(grouped, tmp_path):
    config, run = grouped
    again = run_sweep(config.model_copy(update={"out": tmp_path / "again"}))
    assert [_result(r) for r in again.records()] == [_result(r) for r in run.records()]


def test_a_group_on_two_cores_steps_its_students_in_threads_and_resumes_to_the_same_records(
        grouped, tmp_path, monkeypatch, progress_stub):
    from effrank_bench import train

    config, run = grouped  # trained on this test process's one thread
    config = config.model_copy(update={"out": tmp_path / "threaded"})
    pools = []
    pool = train.ThreadPoolExecutor
    monkeypatch.setattr(train, "ThreadPoolExecutor", lambda *a, **k: pools.append(a) or pool(*a, **k))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with pytest.raises(KeyboardInterrupt):  # in epoch 2, after epoch 1's checkpoint
            run_sweep(config, progress=progress_stub(stop_after=1))
        assert len(list(RunDir(config.out).checkpoints_path.iterdir())) == 1
        notes = progress_stub()
        threaded = run_sweep(config, progress=notes)
    finally:
        torch.set_num_threads(before)
    # Each fit, the first and the resumed one, stepped its students in two threads; the students evaluated in
    # two as well: epoch 1's validation before the interrupt, epoch 2's after the resume, then the test split.
    assert pools == [(2,)] * 5
    assert any("resumed from its checkpoint after epoch 1 of 2" in note for note in notes.notes)
    assert [_result(r) for r in threaded.records()] == [_result(r) for r in run.records()]


def _disk_full(*args, **kwargs):
    raise OSError(28, "No space left on device")


def test_a_checkpoint_the_disk_refuses_is_noted_and_the_group_trains_on_to_the_same_records(
        grouped, tmp_path, progress_stub, monkeypatch):
    config, run = grouped
    monkeypatch.setattr(checkpoint, "save_file", _disk_full)
    notes = progress_stub()
    again = run_sweep(config.model_copy(update={"out": tmp_path / "full"}), progress=notes)
    assert [_result(r) for r in again.records()] == [_result(r) for r in run.records()]
    refused = [n for n in notes.notes if "the checkpoint after epoch 1 was not written" in n]
    assert len(refused) == 1
    assert refused[0].endswith("No space left on device); training goes on, and a kill before the next one "
                               "resumes from the start")
    assert not (again.path / "checkpoints").exists()  # nor a half-written one


def test_a_checkpoint_that_cannot_be_written_leaves_the_previous_one_whole(tmp_path, monkeypatch):
    folder = tmp_path / "checkpoints" / "group"
    checkpoints = Checkpoints(folder, (Trial("joint", "geometric", 2, 0),))
    state = FitState(1, 0.5, {"torch": torch.arange(3)}, {0: ModelState({"w": torch.ones(2)}, {}, {}, [], None, None)},
                     batches=4)
    checkpoints.save(state)
    monkeypatch.setattr(checkpoint, "save_file", _disk_full)
    with pytest.raises(CheckpointNotWritten, match="after epoch 2 .* resumes from its previous checkpoint$"):
        checkpoints.save(dataclasses.replace(state, epoch=2))
    assert checkpoints.load().epoch == 1
    assert [p.name for p in folder.parent.iterdir()] == ["group"]
    # A disk still full at the next one would refuse the records too, after all the training: the run stops.
    with pytest.raises(CheckpointError, match=r"^two checkpoints in a row were not written, the last after epoch 3 "
                                              r"\(OSError: \[Errno 28\] No space left on device\): make room on the "
                                              r"disk of .*/checkpoints and run the same command again; it resumes "
                                              r"from its previous checkpoint$"):
        checkpoints.save(dataclasses.replace(state, epoch=3))
    monkeypatch.undo()
    checkpoints.save(dataclasses.replace(state, epoch=4))  # written: the count starts again
    monkeypatch.setattr(checkpoint, "save_file", _disk_full)
    with pytest.raises(CheckpointNotWritten):
        checkpoints.save(dataclasses.replace(state, epoch=5))
    assert checkpoints.load().epoch == 4


def test_a_save_killed_between_its_renames_resumes_from_the_previous_checkpoint(tmp_path):
    folder = tmp_path / "checkpoints" / "group"
    trials = (Trial("joint", "geometric", 2, 0),)
    checkpoints = Checkpoints(folder, trials)
    state = FitState(1, 0.5, {"torch": torch.arange(3)}, {0: ModelState({"w": torch.ones(2)}, {}, {}, [], None, None)},
                     batches=4)
    checkpoints.save(dataclasses.replace(state, epoch=2))
    previous = shutil.copytree(folder, tmp_path / "epoch2")
    checkpoints.save(dataclasses.replace(state, epoch=3))
    folder.replace(folder.with_name("group.tmp"))  # epoch 3 written, not swapped in
    previous.replace(folder.with_name("group.old"))  # killed after the first rename: no checkpoint under its name
    assert saved_groups(folder.parent) == [trials]  # its group, once
    resumed = Checkpoints(folder, trials)
    assert resumed.load().epoch == 2  # the whole previous one, not the unswapped one
    assert sorted(p.name for p in folder.parent.iterdir()) == ["group", "group.tmp"]
    resumed.clear()
    assert not folder.parent.exists()  # with what the killed save left beside it


def test_a_save_killed_while_it_removed_the_previous_checkpoint_saves_again(tmp_path):
    folder = tmp_path / "checkpoints" / "group"
    checkpoints = Checkpoints(folder, (Trial("joint", "geometric", 2, 0),))
    state = FitState(1, 0.5, {"torch": torch.arange(3)}, {0: ModelState({"w": torch.ones(2)}, {}, {}, [], None, None)},
                     batches=4)
    checkpoints.save(state)
    shutil.copytree(folder, folder.with_name("group.old"))  # the last save's .old, not yet removed
    (folder.with_name("group.old") / "state.pt").unlink()  # half removed
    checkpoints.save(dataclasses.replace(state, epoch=2))  # Errno 39 (directory not empty) before
    assert checkpoints.load().epoch == 2 and [p.name for p in folder.parent.iterdir()] == ["group"]


def _out_of_memory(*args, checkpoints, **kwargs):
    raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def _out_of_memory_after_a_checkpoint(*args, checkpoints, **kwargs):
    checkpoints.save(FitState(1, 0.1, {}, batches=1))
    _out_of_memory(checkpoints=checkpoints)


def test_a_group_out_of_gpu_memory_says_which_smaller_group_to_run(tiny, tmp_path, monkeypatch):
    from effrank_bench import trial

    monkeypatch.setattr(trial, "distill", _out_of_memory)
    config = tiny.config(tmp_path / "run")
    with pytest.raises(ConfigError, match=r"^out of GPU memory training 2 students \(rank 2, …\) "
                       r"\(CUDA out of memory. Tried to allocate 2.00 GiB\): run again with "
                       r"--group 1 or a lower --memory-fraction than 0.8$"):
        run_sweep(config)
    with pytest.raises(ConfigError, match=r"training rank 2 \(.*\): lower --batch-size: another sweep, in a run "
                                          r"directory of its own, its teacher trained again$"):
        run_sweep(config.model_copy(update={"group": 1}))
    # With a checkpoint, the group resumes whole whatever --group says: the message says how to regroup.
    monkeypatch.setattr(trial, "distill", _out_of_memory_after_a_checkpoint)
    with pytest.raises(ConfigError, match=r"run again with --group 1; the checkpoint .*/checkpoints/[^ ]+ resumes "
                                          r"its group whole: delete it to regroup \(its students start again\)$"):
        run_sweep(config.model_copy(update={"group": 2}))


# A run in a process of its own that hangs once its students are into epoch 2 (one batch per epoch), after
# epoch 1's checkpoint, and says so by creating the file argv[2]: the test then kills it with SIGKILL there.
# argv[3]: the test process's intra-op threads. Orphaned (the test process gone), it exits instead of training on.
_HANGING_RUN = """
import contextlib, os, sys, time
from pathlib import Path
import torch
from effrank_bench.config import RunConfig
from effrank_bench.progress import NullProgress
from effrank_bench.sweep import run_sweep

torch.set_num_threads(int(sys.argv[3]))  # the test's own: float sums depend on it
parent = os.getppid()


class HangInEpoch2(NullProgress):
    @contextlib.contextmanager
    def task(self, description, total):
        steps = 0

        def advance(n):
            nonlocal steps
            steps += n
            if description.startswith("2 students") and steps > 1:
                Path(sys.argv[2]).touch()
                while os.getppid() == parent:
                    time.sleep(0.1)
                os._exit(1)
        yield advance


run_sweep(RunConfig.model_validate_json(sys.argv[1]), progress=HangInEpoch2())
"""


def test_a_group_killed_mid_epoch_resumes_from_its_checkpoint_to_the_same_records(grouped, tmp_path,
                                                                                   progress_stub):
    config, run = grouped
    out, hanging, log = tmp_path / "killed", tmp_path / "hanging", tmp_path / "child.log"
    with log.open("w") as stderr:
        child = subprocess.Popen([sys.executable, "-c", _HANGING_RUN,
                                  config.model_copy(update={"out": out}).model_dump_json(), str(hanging),
                                  str(torch.get_num_threads())], stderr=stderr)
    try:
        deadline = time.monotonic() + 120
        while not hanging.exists():
            assert child.poll() is None, f"the run ended before its second epoch:\n{log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, f"the run never reached its second epoch:\n{log.read_text()[-2000:]}"
            time.sleep(0.05)
    finally:
        child.kill()  # SIGKILL: no exception, no cleanup, the lock left behind
        child.wait()
    assert RunDir(out).records() == []
    saved = list((out / "checkpoints").iterdir())
    assert len(saved) == 1 and (saved[0] / "model-0.safetensors").is_file()
    state = torch.load(saved[0] / "state.pt", weights_only=True)
    assert state["batches"] == 1 and state["seconds"] >= state["step_seconds"] > 0
    # The same checkpoint, as if saved with another number of batches per epoch (a compiled CUDA run drops
    # the last partial batch): its schedules would end off their course, so it is refused, not resumed.
    other = tmp_path / "other"
    shutil.copytree(out, other)
    torch.save({**state, "batches": 2}, other / "checkpoints" / saved[0].name / "state.pt")
    with pytest.raises(CheckpointError, match=r"saved with 2 training batches per epoch, this run has 1 .*resume "
                                              r"with the --compile and --device it was saved with, or delete"):
        run_sweep(config.model_copy(update={"out": other}))
    notes = progress_stub()
    # Rerun with --group 1: the group resumes whole all the same (its students' weights and data order), and says so.
    resumed = run_sweep(config.model_copy(update={"out": out, "group": 1}), progress=notes)
    assert [_result(r) for r in resumed.records()] == [_result(r) for r in run.records()]
    assert "2 students (rank 2, …): resumed from its checkpoint after epoch 1 of 2" in notes.notes
    assert (f"2 students resume as the group their checkpoint holds (groups of 1 are laid out for the trials not "
            f"started; delete {saved[0]} to train these again in groups of that size)") in notes.notes
    assert all(r.train_seconds > state["seconds"] for r in resumed.records())  # the first process's time counts
    assert not (out / "checkpoints").exists()


def test_a_group_is_sized_for_the_largest_rank_it_trains_not_the_grids(tmp_path, monkeypatch):
    # A search's round of small ranks (or a run directory holding an earlier command's larger ranks): the CUDA
    # memory probe of --group auto is of the largest rank handed over, whatever --ranks says.
    from types import SimpleNamespace

    from effrank_bench_plugins import executors

    sized, trained = [], []
    monkeypatch.setattr(executors, "group_size", lambda setup, teacher, trials, rank: sized.append((trials, rank)) or 2)
    monkeypatch.setattr(executors, "run_group", lambda setup, teacher, group, record, progress: trained.append(group))
    trials = tuple(Trial("joint", "geometric", rank, 0) for rank in (2, 48, 16))
    executors.run_locally(SimpleNamespace(setup=SimpleNamespace(run=SimpleNamespace(checkpoints_path=tmp_path)),
                                          teacher=None, trials=trials, record=None, progress=None))
    assert sized == [(3, 48)] and trained == [trials[:2], trials[2:]]


def test_groups_hold_one_seed_each_in_plan_order_and_a_saved_group_resumes_first():
    from effrank_bench.records import Trial
    from effrank_bench_plugins.executors import layout

    trials = tuple(Trial("joint", "geometric", rank, seed) for seed in (0, 1) for rank in (2, 4, 8))

    def ranks_seeds(groups):
        return [[(t.rank, t.seed) for t in group] for group in groups]

    assert ranks_seeds(layout(trials, [], 8)) == [[(2, 0), (4, 0), (8, 0)], [(2, 1), (4, 1), (8, 1)]]
    assert ranks_seeds(layout(trials, [], 2)) == [[(2, 0), (4, 0)], [(8, 0)], [(2, 1), (4, 1)], [(8, 1)]]
    # A checkpointed group (an older layout's, seeds mixed) resumes whole, before the rest.
    saved = (trials[2], trials[5])
    assert ranks_seeds(layout(trials, [saved], 8)) == [[(8, 0), (8, 1)], [(2, 0), (4, 0)], [(2, 1), (4, 1)]]


def test_the_seeds_of_a_rank_train_in_groups_of_their_own_and_differ(tmp_path, tiny):
    run = run_sweep(tiny.config(tmp_path / "run", seeds=(0, 1)))  # --group auto: one group per seed
    records = {(r.rank, r.seed): r for r in run.records()}
    assert {key: r.group for key, r in records.items()} == {
        (2, 0): [(2, 0), (4, 0)], (4, 0): [(2, 0), (4, 0)], (2, 1): [(2, 1), (4, 1)], (4, 1): [(2, 1), (4, 1)]}
    for rank in (2, 4):  # each seed its own data order, as trained alone
        assert records[rank, 0].history[0].loss != records[rank, 1].history[0].loss


class _NanForSecond:
    """A loss that is NaN once, for the second student of the first step (a group calls its students in order)."""

    @hookimpl
    def register_losses(self, register):
        calls = {"n": 0}

        def compute(teacher, student, labels, options):
            calls["n"] += 1
            value = ((student.logits - teacher.logits) ** 2).mean()
            return value * float("nan") if calls["n"] == 2 else value

        register(LossSpec(name="nan_second", description="NaN at the second call", compute=compute))


def test_a_nan_student_leaves_its_group_and_the_others_finish(tmp_path, tiny, monkeypatch):
    from effrank_bench import train

    monkeypatch.setattr(train, "student_threads", lambda *args: 1)  # in order, whatever cores this process has
    config = tiny.config(tmp_path / "run", loss="nan_second", epochs=2)
    run = run_sweep(config, registry=Registry(plugins=[("nan", _NanForSecond())]))
    records = {r.rank: r for r in run.records()}
    assert records[4].status == "failed" and records[4].error == "loss became nan in epoch 1"
    assert records[2].status == "ok" and len(records[2].history) == 2
    assert [r.rank for r in run.records()] == [2, 4]  # recorded with the group's records, in its order


def _nan_at_rank_4(monkeypatch):
    """Rank 4's loss turns NaN at its every step, in every process (a loss plugin cannot tell students apart)."""
    from effrank_bench import train
    from effrank_bench.factorize import LowRankLinear

    step = train.student_step

    def student_step(student, *args, **kwargs):
        value = step(student, *args, **kwargs)
        ranks = {m.rank for m in student.modules() if isinstance(m, LowRankLinear)}
        return value * float("nan") if ranks == {4} else value

    monkeypatch.setattr(train, "student_step", student_step)
    monkeypatch.setattr(train, "student_threads", lambda *args: 1)  # in order, whatever cores this process has


@pytest.mark.parametrize("checkpoint_every", [None, 1], ids=["no checkpoint", "checkpoint after the failure"])
def test_a_group_interrupted_after_a_student_failed_reruns_to_an_uninterrupted_runs_records(
        tmp_path, tiny, monkeypatch, progress_stub, checkpoint_every):
    _nan_at_rank_4(monkeypatch)
    config = tiny.config(tmp_path / "whole", epochs=2, checkpoint_every=checkpoint_every)
    notes = progress_stub()
    whole = run_sweep(config, progress=notes).records()
    assert [(r.rank, r.status, r.error) for r in whole] == [(2, "ok", None), (4, "failed", "loss became nan in epoch 1")]
    assert ("[red]rank 4: loss became nan in epoch 1; it leaves its group, and is recorded as failed with the "
            "group's records") in notes.notes
    cut = config.model_copy(update={"out": tmp_path / "cut"})
    with pytest.raises(KeyboardInterrupt):
        run_sweep(cut, progress=progress_stub(stop_after=1))  # in epoch 2: rank 4 has failed, rank 2 trains on
    # Recorded at once, rank 4's failure would have left rank 2 to train again alone, in its own data order.
    assert RunDir(cut.out).records() == []
    checkpoints = cut.out / "checkpoints"
    assert len(list(checkpoints.iterdir()) if checkpoints.exists() else []) == (1 if checkpoint_every else 0)
    assert [_result(r) for r in run_sweep(cut).records()] == [_result(r) for r in whole]


class _Twice:
    """An executor that hands every record over twice, as a retried cluster task or a resumed group may."""

    @hookimpl
    def register_executors(self, register):
        from effrank_bench.specs import ExecutorSpec
        from effrank_bench.trial import run_group

        def execute(execution):
            def record(result):
                execution.record(result)
                execution.record(result)

            run_group(execution.setup, execution.teacher, execution.trials, record, execution.progress)

        register(ExecutorSpec(name="twice", execute=execute, description="every record handed over twice"))


def test_a_trial_handed_over_twice_is_recorded_once(tmp_path, tiny):
    run = run_sweep(tiny.config(tmp_path / "run", executor="twice"), registry=Registry(plugins=[("twice", _Twice())]))
    lines = (run.path / "trials.jsonl").read_text().splitlines()
    assert [(r.rank, r.seed) for r in run.records()] == [(2, 0), (4, 0)] and len(lines) == 2


def test_a_group_of_two_seeds_is_refused_before_anything_trains(tiny, tmp_path):
    from effrank_bench.setup import prepare
    from effrank_bench.teacher import obtain_teacher
    from effrank_bench.trial import run_group

    setup = prepare(tiny.config(tmp_path / "run", seeds=(0, 1)))
    trials = [Trial(target="joint", loss="geometric", rank=2, seed=seed) for seed in (0, 1)]
    recorded = []
    with pytest.raises(RegistrationError, match=r"^executor 'local' handed one group the trials of seeds \[0, 1\]: "):
        run_group(setup, obtain_teacher(setup), trials, recorded.append)
    assert recorded == []
