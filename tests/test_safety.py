"""Run-directory safety: one writer per directory, whole files only, the user's folders left alone."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from effrank_bench.atomic import atomic_path, atomic_write_text
from effrank_bench.cli import main
from effrank_bench.errors import CheckpointError, ConfigError, LockedError
from effrank_bench.lock import RUN_LOCK, FileLock, run_lock
from effrank_bench.records import TeacherRecord
from effrank_bench.store import RunDir, check_out_dir
from effrank_bench.teacher import CachedTeacher


@pytest.fixture
def live_pid():
    """The pid of a process alive for the test's duration."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc.pid
    proc.kill()
    proc.wait()


@pytest.fixture
def dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def write_lock(path, pid, host=None):
    path.write_text(json.dumps({"host": host or socket.gethostname(), "pid": pid, "started": "2024-01-02T03:04:05"}))


# --- the run lock -------------------------------------------------------------------------------------

def test_a_run_directory_held_by_a_live_process_is_refused_naming_the_holder(tmp_path, live_pid):
    write_lock(tmp_path / RUN_LOCK, live_pid)
    with pytest.raises(LockedError) as err, run_lock(tmp_path):
        pytest.fail("entered a held lock")
    message = str(err.value)
    assert f"pid {live_pid}" in message and socket.gethostname() in message and "2024-01-02T03:04:05" in message


def test_a_second_run_on_a_held_directory_exits_2_before_writing_anything(tmp_path, capsys, live_pid):
    out = tmp_path / "run"
    out.mkdir()
    write_lock(out / RUN_LOCK, live_pid)
    code = main(["run", "--ranks", "2", "--epochs", "1", "--teacher-epochs", "1", "--device", "cpu", "--out", str(out)])
    _, err = capsys.readouterr()
    assert code == 2 and err.count("\n") == 1 and f"pid {live_pid}" in err, err
    assert sorted(p.name for p in out.iterdir()) == [RUN_LOCK]  # nothing written, the holder's lock kept


def test_a_lock_left_by_a_dead_process_is_taken_over_with_a_note(tmp_path, dead_pid, progress_stub):
    write_lock(tmp_path / RUN_LOCK, dead_pid)
    notes = progress_stub()
    with run_lock(tmp_path, notes):
        held = json.loads((tmp_path / RUN_LOCK).read_text())
        assert held["pid"] == os.getpid()
    assert any("took over" in n and f"pid {dead_pid}" in n for n in notes.notes), notes.notes
    assert not (tmp_path / RUN_LOCK).exists()


@pytest.fixture
def zombie_pid():
    """The pid of a process that has exited but is not reaped yet, as a killed run whose parent is slow to."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    stat = Path(f"/proc/{proc.pid}/stat")
    if not stat.exists():
        proc.wait()
        pytest.skip("no /proc to tell a zombie by")
    deadline = time.monotonic() + 30
    while stat.read_text().rpartition(")")[2].split()[0] != "Z":
        assert time.monotonic() < deadline, "the child never exited"
        time.sleep(0.01)
    yield proc.pid
    proc.wait()


def test_a_lock_left_by_a_killed_process_not_yet_reaped_is_taken_over(tmp_path, zombie_pid, progress_stub):
    write_lock(tmp_path / RUN_LOCK, zombie_pid)
    notes = progress_stub()
    with run_lock(tmp_path, notes):  # what `report` right after a kill -9 takes, as `run` does
        assert json.loads((tmp_path / RUN_LOCK).read_text())["pid"] == os.getpid()
    assert any("took over" in n and f"pid {zombie_pid}" in n for n in notes.notes), notes.notes


def test_a_lock_from_another_host_is_respected_and_says_so(tmp_path, dead_pid):
    write_lock(tmp_path / RUN_LOCK, dead_pid, host="elsewhere.example")
    with pytest.raises(LockedError, match="another host.*elsewhere.example.*delete"), run_lock(tmp_path):
        pass


@pytest.mark.parametrize("error", [KeyboardInterrupt, RuntimeError])
def test_the_lock_is_released_on_an_error_or_ctrl_c(tmp_path, error):
    (tmp_path / "trials.jsonl").write_text("")  # a started run: its directory stays
    with pytest.raises(error), run_lock(tmp_path):
        assert (tmp_path / RUN_LOCK).exists()
        raise error
    assert not (tmp_path / RUN_LOCK).exists() and (tmp_path / "trials.jsonl").exists()


def test_a_run_that_fails_before_its_first_trial_takes_back_the_directory_it_made(tmp_path):
    out = tmp_path / "new" / "run"
    with pytest.raises(CheckpointError), run_lock(out):
        (out / "config.json").write_text("{}")
        raise CheckpointError("refused")
    assert not (tmp_path / "new").exists()
    # Unless a checkpoint was saved: the same command resumes it, so the directory stays whole.
    with pytest.raises(CheckpointError), run_lock(out):
        (out / "config.json").write_text("{}")
        (out / "checkpoints" / "group").mkdir(parents=True)
        raise CheckpointError("failed in its first group's epoch 3")
    assert (out / "config.json").is_file() and (out / "checkpoints" / "group").is_dir()


def test_a_run_whose_loss_fails_at_its_first_step_leaves_nothing_and_runs_again_once_fixed(tiny, tmp_path):
    # Everything a run writes before training (search.json included) is taken back: else the same command,
    # once the plugin is fixed, met a folder that "holds files but is not a run directory".
    from effrank_bench import hookimpl
    from effrank_bench.errors import LossError
    from effrank_bench.registry import Registry
    from effrank_bench.specs import LossSpec
    from effrank_bench.sweep import run_sweep

    def theirs(compute):
        class Plugin:
            @hookimpl
            def register_losses(self, register):
                register(LossSpec(name="theirs", description="a third party's loss", compute=compute))
        return Registry(plugins=[("theirs", Plugin())])

    config = tiny.config(tmp_path / "run", loss="theirs")
    with pytest.raises(LossError, match="^loss 'theirs' returned a float"):
        run_sweep(config, theirs(lambda t, s, y, o: 0.5))
    assert not (tmp_path / "run").exists()
    fixed = run_sweep(config, theirs(lambda t, s, y, o: ((s.logits - t.logits) ** 2).mean()))
    assert [r.status for r in fixed.records()] == ["ok", "ok"]


def test_a_refused_checkpoint_leaves_no_half_made_run_directory(tmp_path, capsys):
    checkpoint = tmp_path / "other.safetensors"
    save_file({"not.a.layer.of.micro_vit": torch.zeros(2)}, checkpoint)
    out = tmp_path / "run"
    code = main(["run", "--ranks", "2", "--teacher-epochs", "0", "--teacher-checkpoint", str(checkpoint),
                 "--device", "cpu", "--out", str(out)])
    _, err = capsys.readouterr()
    assert code == 2 and "does not fit this architecture" in err and err.count("\n") == 1
    assert not out.exists()


def test_a_torn_last_line_is_repaired_on_resume_with_a_note(tmp_path, progress_stub):
    (tmp_path / "trials.jsonl").write_bytes(b'{"whole": 1}\n{"torn')
    notes = progress_stub()
    with run_lock(tmp_path, notes):
        pass
    assert (tmp_path / "trials.jsonl").read_bytes() == b'{"whole": 1}\n'
    assert any("repaired a torn last line of" in n for n in notes.notes)


def test_two_threads_racing_for_one_lock_get_it_once():
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "x.lock")
        results, start = [], threading.Barrier(8)

        def take():
            start.wait()
            results.append(FileLock(path).try_acquire())

        threads = [threading.Thread(target=take) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results.count(None) == 1  # one got it; the others were told the holder (this live process)


# --- whole files only ---------------------------------------------------------------------------------

def test_an_atomic_write_replaces_the_file_whole_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "summary.json"
    path.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]
    atomic_write_text(path, "new")
    assert path.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]


def test_an_atomic_temporary_keeps_the_extension_and_the_usual_mode(tmp_path):
    with atomic_path(tmp_path / "curve.png") as tmp:
        assert tmp.suffix == ".png" and tmp.parent == tmp_path and tmp.name.startswith(".curve.")
        tmp.write_bytes(b"png")
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "curve.png").stat().st_mode & 0o777 == 0o666 & ~umask


# --- the teacher cache --------------------------------------------------------------------------------

def record(key="k"):
    return TeacherRecord(key=key, source="scratch", recipe={}, val_accuracy=0.5, test_accuracy=0.5, environment={})


def test_a_cached_teacher_is_saved_whole_record_last(tmp_path):
    cached = CachedTeacher.at("k", tmp_path)
    cached.save(nn.Linear(2, 2), record())
    assert cached.exists() and cached.record().key == "k"
    assert sorted(p.name for p in cached.weights.parent.iterdir()) == ["k.json", "k.safetensors"]


def test_a_process_waits_for_another_training_the_same_teacher(tmp_path, live_pid, monkeypatch, progress_stub):
    import effrank_bench.teacher as teacher

    monkeypatch.setattr(teacher, "_POLL_S", 0.05)
    cached = CachedTeacher.at("k", tmp_path)
    cached.weights.parent.mkdir(parents=True)
    write_lock(cached.lock, live_pid)  # the other process, training

    def finish():
        cached.save(nn.Linear(2, 2), record())
        cached.lock.unlink()

    timer = threading.Timer(0.3, finish)
    timer.start()
    notes = progress_stub()
    with cached.claim(notes):
        assert cached.exists()  # what the other one saved: nothing to train
    timer.join()
    assert any("waiting for another process training this teacher" in n and f"pid {live_pid}" in n
               for n in notes.notes)
    assert not cached.lock.exists()


@pytest.mark.parametrize("damage", ["truncated json", "torn weights", "nan weights"])
def test_an_unreadable_cache_entry_is_moved_aside_with_a_note_and_trained_again(tmp_path, damage, progress_stub):
    cached = CachedTeacher.at("k", tmp_path)
    cached.save(nn.Linear(2, 2), record())
    if damage == "truncated json":
        cached.info.write_text(cached.info.read_text()[:20])
    elif damage == "torn weights":
        cached.weights.write_bytes(cached.weights.read_bytes()[:30])
    else:
        save_file({"weight": torch.full((2, 2), float("nan")), "bias": torch.zeros(2)}, cached.weights)
    notes = progress_stub()
    with cached.claim(notes):
        assert not cached.exists()  # so obtain_teacher trains it again
    assert len(notes.notes) == 1 and "unreadable" in notes.notes[0] and "moved it aside" in notes.notes[0]
    assert len(list(cached.weights.parent.glob("k.unreadable-*"))) == 2


def test_a_cached_teacher_that_no_longer_fits_its_architecture_is_refused_in_one_line(tmp_path):
    # The key names the architecture, not its code: a plugin that changed its model (13 classes, then 10)
    # finds the old teacher under the same key.
    cached = CachedTeacher.at("k", tmp_path)
    cached.save(nn.Linear(4, 13), record())
    with pytest.raises(CheckpointError) as err:
        cached.load(nn.Linear(4, 10))
    message = str(err.value)
    assert message.startswith(f"teacher weights {cached.weights} do not fit the model as its architecture builds it "
                              "now (RuntimeError: Error(s) in loading state_dict for Linear: size mismatch for weight")
    assert message.endswith("if its plugin changed the model, delete it and k.json to train the teacher again")
    assert "\n" not in message


def test_an_unreadable_teacher_in_a_run_directory_names_its_file(tmp_path):
    kept = CachedTeacher(tmp_path / "teacher.safetensors", tmp_path / "teacher.json")
    kept.weights.write_bytes(b"\x00" * 12)
    with pytest.raises(CheckpointError, match="teacher.safetensors cannot be read"):
        kept.load(nn.Linear(2, 2))
    kept.info.write_bytes(b"\xff\xfe{")
    with pytest.raises(ConfigError, match="teacher.json is not UTF-8"):
        kept.record()


# --- the user's folders -------------------------------------------------------------------------------

def test_a_teacher_cache_that_cannot_be_made_is_one_line_saying_how_to_move_it(tmp_path, tiny, monkeypatch, capsys):
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv("EFFRANK_BENCH_CACHE", str(tmp_path / "file"))
    code = main(["run", *tiny.args(), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and err == (f"error: cannot create the folder {tmp_path / 'file' / 'teachers'}: Not a directory; "
                                 "set EFFRANK_BENCH_CACHE to a folder you can write to\n")
    assert not (tmp_path / "run").exists()  # the run directory it had made is taken back



def test_an_out_folder_of_someone_elses_files_is_refused_and_left_as_it_was(tmp_path, capsys):
    (tmp_path / "thesis.tex").write_text("mine")
    with pytest.raises(ConfigError, match="holds files .*thesis.tex.* not a run directory"):
        check_out_dir(tmp_path)
    code = main(["run", "--out", str(tmp_path), "--device", "cpu"])
    _, err = capsys.readouterr()
    assert code == 2 and "not a run directory" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thesis.tex"]


def test_an_empty_folder_a_run_directory_and_a_new_path_are_accepted(tmp_path):
    check_out_dir(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "trials.jsonl").write_text("")
    check_out_dir(tmp_path)
    check_out_dir(tmp_path / "a" / "b")
    lone = tmp_path / "locked-only"
    lone.mkdir()
    (lone / RUN_LOCK).write_text("")  # a run killed before it wrote config.json
    check_out_dir(lone)


@pytest.mark.parametrize("make, message", [
    (lambda p: (p / "f").write_text(""), "exists and is not a directory"),
    (lambda p: None, "a name in it is longer than the file system allows"),
])
def test_an_out_that_cannot_be_a_run_directory_is_refused(tmp_path, make, message):
    make(tmp_path)
    out = tmp_path / "f" if "exists" in message else tmp_path / ("x" * 300)
    with pytest.raises(ConfigError, match=message):
        check_out_dir(out)


def test_an_out_under_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(ConfigError, match="lies under .*f, which is a file"):
        check_out_dir(tmp_path / "f" / "run")


def test_an_out_that_is_not_writable_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # as root, nothing is unwritable
    with pytest.raises(ConfigError, match="is not writable"):
        check_out_dir(tmp_path / "run")


def test_a_run_directory_reads_as_before_after_its_files_are_written_atomically(tmp_path):
    from effrank_bench.config import RunConfig

    run = RunDir.open(tmp_path / "run", RunConfig(ranks=(2,)))
    assert run.config().ranks == (2,)
    assert sorted(p.name for p in run.path.iterdir()) == ["config.json"]
