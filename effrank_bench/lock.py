"""One writer at a time: a lock file naming its holder (host, pid, start), taken over from a dead one."""
from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from effrank_bench.errors import LockedError
from effrank_bench.paths import make_folder
from effrank_bench.progress import NullProgress, Progress
from effrank_bench.store import RunDir

RUN_LOCK = "run.lock"
# A lock file is created empty and then written: for an instant it reads as nothing. One that still
# reads as nothing after this long was left by a process killed in that instant.
_UNREADABLE_GRACE_S = 30.0
# The files a run writes before its first trial record; a run that fails before then takes them back
# (unless it saved a checkpoint: then the directory resumes it).
_BEFORE_FIRST_TRIAL = ("config.json", "target.json", "teacher.json", "teacher.safetensors", "spectrum.json",
                       "search.json")


@dataclass(frozen=True)
class Holder:
    """Who holds a lock, as its file says."""

    host: str
    pid: int
    started: str

    def describe(self) -> str:
        return f"host {self.host}, pid {self.pid}, started {self.started}"

    def on_this_host(self) -> bool:
        return self.host == socket.gethostname()

    def alive(self) -> bool:
        """Whether the process lives (only meaningful on this host: pids are per host).

        A zombie has exited: killed, it stays in the process table until its parent reaps it, which a
        container's first process or a killed ``timeout`` may take seconds to do, or never.
        """
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # someone else's process: alive
            return True
        except (OSError, OverflowError):
            return False
        return not _zombie(self.pid)


class FileLock:
    """A lock file created with O_CREAT|O_EXCL and holding JSON ``{host, pid, started}``."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._mine: bytes | None = None

    def try_acquire(self, progress: Progress = NullProgress()) -> Holder | None:
        """Take the lock and return None, or return who holds it: a live process here or one on another host.

        A lock whose process on this host is gone is taken over, with a note.
        """
        for _ in range(10):
            if self._create():
                return None
            raw = self._read()
            if raw is None:  # released between our two steps: try again
                continue
            holder = _parse(raw)
            if holder is None:
                age = _age(self.path)
                if age is None:
                    continue
                if age < _UNREADABLE_GRACE_S:
                    return Holder(host="?", pid=0, started="just now (the lock file is being written)")
                gone = f"an unreadable lock file {age:.0f} s old"
            elif not holder.on_this_host() or holder.alive():
                return holder
            else:
                gone = f"a process that is gone ({holder.describe()})"
            if self._remove_stale(raw):
                progress.note(f"took over {self.path}, left by {gone}")
        raise LockedError(f"cannot take {self.path}: other processes keep taking it; try again")

    def release(self) -> None:
        """Remove the lock file, if it is still ours."""
        if self._mine is not None and self._read() == self._mine:
            self.path.unlink(missing_ok=True)
        self._mine = None

    def _create(self) -> bool:
        mine = json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                           "started": datetime.now(timezone.utc).isoformat(timespec="seconds")}).encode()
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f:
            f.write(mine)
            f.flush()
            os.fsync(f.fileno())
        self._mine = mine
        return True

    def _read(self) -> bytes | None:
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return None

    def _remove_stale(self, raw: bytes) -> bool:
        """Remove the lock file if it still holds ``raw``; another process may have taken it over first."""
        grave = self.path.with_name(f"{self.path.name}.{os.getpid()}.stale")
        try:
            os.rename(self.path, grave)
        except FileNotFoundError:
            return False
        if grave.read_bytes() == raw:
            grave.unlink()
            return True
        # We moved a live lock that replaced the stale one: put it back (unless yet another took its place).
        with contextlib.suppress(FileExistsError):
            os.link(grave, self.path)
        grave.unlink()
        return False


def _zombie(pid: int) -> bool:
    """Whether ``pid`` is a zombie, where /proc tells (Linux); elsewhere a process that answers is taken as live."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()  # the command name may be any bytes, cut mid-character
    except OSError:
        return False
    return stat.rpartition(b")")[2].split()[:1] == [b"Z"]  # the state follows the command name in parentheses


def _parse(raw: bytes) -> Holder | None:
    try:
        data = json.loads(raw)
        return Holder(host=str(data["host"]), pid=int(data["pid"]), started=str(data["started"]))
    except (ValueError, TypeError, KeyError):
        return None


def _age(path: Path) -> float | None:
    try:
        return time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return None


def held_message(what: Path, lock: Path, holder: Holder) -> str:
    if holder.on_this_host() or holder.host == "?":
        return (f"{what} is in use by another run ({holder.describe()}); wait for it to finish, "
                "or stop it and run again")
    return (f"{what} is locked by a run on another host ({holder.describe()}), which cannot be checked from "
            f"here; if that run is gone, delete {lock} and run again")


@contextlib.contextmanager
def run_lock(path: Path, progress: Progress = NullProgress()) -> Iterator[None]:
    """Hold ``path/run.lock`` while a run writes its directory: a second run on it is refused (LockedError).

    Released at the end, also on an error or Ctrl-C. While held this process is the directory's
    only writer, so a last line of trials.jsonl torn by a killed writer is repaired here, with a note.
    A run that fails before its first trial record leaves no directory it created behind, unless it saved a
    checkpoint (hours of a first group's training, which the same command resumes).
    """
    path = Path(path)
    created = [p for p in (path, *path.parents) if not p.exists()]
    make_folder(path)
    lock = FileLock(path / RUN_LOCK)
    holder = lock.try_acquire(progress)
    if holder is not None:
        raise LockedError(held_message(path, lock.path, holder))
    try:
        if RunDir(path).repair_torn_tail():
            progress.note(f"repaired a torn last line of {path / 'trials.jsonl'} (a process was killed while "
                          "writing it); that trial runs again")
        yield
    except Exception:
        lock.release()
        run = RunDir(path)
        if created and not run.records_path.exists() and not run.checkpoints_path.exists():
            _take_back(path, created)
        raise
    finally:
        lock.release()


def _take_back(path: Path, created: list[Path]) -> None:
    """Remove what a run wrote before its first trial, and the folders it created, if that empties them."""
    for name in _BEFORE_FIRST_TRIAL:
        (path / name).unlink(missing_ok=True)
    for folder in created:  # innermost first
        try:
            folder.rmdir()
        except OSError:
            return
