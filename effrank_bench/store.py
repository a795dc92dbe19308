"""A run directory: resolved config, append-only trial records, teacher, reports; resumes safely."""
from __future__ import annotations

import json
import os
import shlex
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from effrank_bench.atomic import atomic_path, atomic_write_text
from effrank_bench.config import RunConfig, flag_args, flag_name
from effrank_bench.errors import ConfigError, format_validation_error, shown
from effrank_bench.paths import make_folder
from effrank_bench.records import (SpectralEstimates, TargetInfo, TeacherRecord, TrialRecord, read_teacher,
                                   read_trial)

if TYPE_CHECKING:
    from effrank_bench.teacher_spectrum import ModelSpectrum


def _flag(name: str, value: Any) -> str:
    """The option at ``value`` as a shell command line takes it; an unset one named as such."""
    args = flag_args(name, value)
    return shlex.join(args) if args else f"(no {flag_name(name)})"


#: How a run times its students' latency: a directory that holds a trial keeps its own, so that its cost table
#: holds one kind of latency (the records do not say how each was timed).
TIMING_OPTIONS = ("latency_batch_size", "latency_repeats")


class RunDir:
    """Files of one sweep; every finished trial is on disk before the next one starts."""

    def __init__(self, path: Path):
        self.path = Path(path)

    config_path = property(lambda self: self.path / "config.json")
    records_path = property(lambda self: self.path / "trials.jsonl")
    teacher_weights = property(lambda self: self.path / "teacher.safetensors")
    teacher_info = property(lambda self: self.path / "teacher.json")
    target_path = property(lambda self: self.path / "target.json")
    spectrum_path = property(lambda self: self.path / "spectrum.json")
    search_path = property(lambda self: self.path / "search.json")
    checkpoints_path = property(lambda self: self.path / "checkpoints")  # one folder per unfinished group

    def check_resumable(self, config: RunConfig) -> RunConfig | None:
        """The config this directory holds, if any, after checking that ``config`` may resume it."""
        if not self.config_path.is_file():
            return None
        previous = self.config()
        old, new = previous.sweep_fields(), config.sweep_fields()
        if old != new:
            changed = [k for k in {**new, **old} if old.get(k) != new.get(k)]
            flags = " ".join(_flag(k, getattr(previous, k)) for k in changed if k != "teacher_checkpoint")
            raise ConfigError(
                f"{self.path} holds another sweep (differs in: {', '.join(changed)}); use another --out or "
                "the same options to resume it" + (f", here {flags}" if flags else "")
            )
        return previous

    def resumed(self, config: RunConfig) -> RunConfig | None:
        """The sweep ``config`` makes of this directory's: ``config`` with the ranks and seeds the directory
        already holds added (a sweep extended by a rank or a seed keeps what it had), the directory's search
        where ``config`` sets none (a rerun that names no search goes on with an adaptive one, rather than train
        every rank of its grid) and its tolerance where ``config`` sets none for the same search, and, once it
        holds a trial, its latency options (:data:`TIMING_OPTIONS`: its students timed one way); None where the
        directory holds no sweep yet. The sweep trains, and its report reads, this one."""
        previous = self.check_resumable(config)
        if previous is None:
            return None
        update = {"ranks": tuple(sorted(set(previous.ranks) | set(config.ranks))),
                  "seeds": tuple(dict.fromkeys(previous.seeds + config.seeds))}
        search = config.search if "search" in config.model_fields_set else previous.search
        update["search"] = search
        if "tolerance" not in config.model_fields_set and search == previous.search:  # the same search, as it was
            update["tolerance"] = previous.tolerance
        if self.records_path.is_file() and self.records_path.stat().st_size:  # one kind of latency per cost table
            update |= {name: getattr(previous, name) for name in TIMING_OPTIONS}
        return config.model_copy(update=update)

    @classmethod
    def open(cls, path: Path, config: RunConfig) -> RunDir:
        """Create it, or reopen it for the same sweep (other ranks and seeds may be added: :meth:`resumed`)."""
        run = cls(path)
        config = run.resumed(config) or config
        make_folder(run.path)
        atomic_write_text(run.config_path, config.model_dump_json(indent=2))
        run.repair_torn_tail()
        return run

    def repair_torn_tail(self) -> bool:
        """Cut a last line left half-written by a killed process, so the next append starts clean.

        A last line that ends whole but reads as no record is cut too: :meth:`records` skips any such last
        line, and a record appended after it would make it a bad line before the last, an error. True when
        there was one to cut.
        """
        if not self.records_path.is_file():
            return False
        data = self.records_path.read_bytes()
        start = data.rfind(b"\n", 0, len(data) - 1) + 1  # where the last line begins
        if not data or data.endswith(b"\n") and self._is_record(data[start:]):
            return False
        with atomic_path(self.records_path) as tmp:
            tmp.write_bytes(data[:start])
        return True

    def _is_record(self, line: bytes) -> bool:
        init = self.config().init if self.config_path.is_file() else "svd"  # an unreadable config is its own error
        try:
            read_trial(line.decode(), init=init)
        except ValueError:  # UnicodeDecodeError and pydantic's ValidationError are ValueErrors
            return False
        return True

    def config(self) -> RunConfig:
        if not self.config_path.is_file():
            raise ConfigError(f"{self.path} is not a run directory (no config.json)")
        try:
            return RunConfig.model_validate_json(read_text(self.config_path))
        except ValidationError as err:
            raise ConfigError(format_validation_error(err, str(self.config_path))) from None

    def records(self) -> list[TrialRecord]:
        if not self.records_path.is_file():
            return []
        records = []
        lines = read_text(self.records_path).splitlines()
        init = self.config().init if lines else "svd"
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                records.append(read_trial(line, init=init))
            except ValueError:
                # A process killed mid-write can leave a torn last line; that trial simply reruns.
                if i == len(lines) - 1:
                    continue
                raise ConfigError(f"{self.records_path}: line {i + 1} is not a valid trial record") from None
        return records

    def append(self, record: TrialRecord) -> None:
        with open(self.records_path, "a") as f:
            f.write(record.model_dump_json() + "\n")
            f.flush()
            os.fsync(f.fileno())

    def store_teacher(self, weights: Path, record: TeacherRecord) -> None:
        if not self.teacher_weights.exists():
            try:
                os.link(weights, self.teacher_weights)  # same file system: no copy of a large checkpoint
            except OSError:
                with atomic_path(self.teacher_weights) as tmp:
                    shutil.copyfile(weights, tmp)
        atomic_write_text(self.teacher_info, record.model_dump_json(indent=2))

    def store_target(self, info: TargetInfo) -> None:
        atomic_write_text(self.target_path, info.model_dump_json(indent=2))

    def target_info(self) -> TargetInfo | None:
        """The stored target description; None for a run directory written before it existed."""
        if not self.target_path.is_file():
            return None
        try:
            return TargetInfo.model_validate_json(read_text(self.target_path))
        except ValidationError as err:
            raise ConfigError(format_validation_error(err, str(self.target_path))) from None

    def store_spectrum(self, spectrum: ModelSpectrum) -> None:
        atomic_write_text(self.spectrum_path, json.dumps(spectrum.to_dict(), indent=2))

    def spectrum(self) -> SpectralEstimates | None:
        """The teacher's stored spectral estimates; None for a run directory written before they were kept."""
        if not self.spectrum_path.is_file():
            return None
        try:
            data = json.loads(read_text(self.spectrum_path))
            return SpectralEstimates.model_validate(data["estimates"] if isinstance(data, dict) else data)
        except ValidationError as err:
            raise ConfigError(format_validation_error(err, str(self.spectrum_path))) from None
        except (ValueError, KeyError):
            raise ConfigError(f"{self.spectrum_path} is not a spectrum written by effrank-bench") from None

    def search_log(self) -> tuple[list[list[int]], int]:
        """The ranks the sweep's search asked for, round by round, and how many of those rounds an adaptive
        search asked for: the round budget it has spent (a grid's rounds spend none; a log written before this
        was kept counts every round). None and 0 for a run directory written before rounds were kept."""
        if not self.search_path.is_file():
            return [], 0
        try:
            log = json.loads(read_text(self.search_path))
            rounds = log["rounds"]
            adaptive = log.get("adaptive_rounds", len(rounds))
            if not all(isinstance(r, list) and all(type(x) is int for x in r) for r in rounds) or \
                    type(adaptive) is not int:
                raise ValueError
        except (ValueError, KeyError, TypeError, AttributeError):
            raise ConfigError(f"{self.search_path} is not a search written by effrank-bench") from None
        return rounds, adaptive

    def store_search_rounds(self, rounds: list[list[int]], adaptive_rounds: int) -> None:
        """Keep the rounds the search asked for, the last before it is trained (a resumed sweep finishes it
        first), and how many of them an adaptive search asked for (:meth:`search_log`)."""
        atomic_write_text(self.search_path, json.dumps({"rounds": rounds, "adaptive_rounds": adaptive_rounds}))

    def teacher(self) -> TeacherRecord:
        if not self.teacher_info.is_file():
            raise ConfigError(f"{self.path} has no teacher.json yet: the run stopped before its teacher was ready")
        record = read_teacher(read_text(self.teacher_info), str(self.teacher_info))
        if record.cost is None:
            raise ConfigError(f"{self.teacher_info} has no cost: it is a cache entry, not a run's teacher record")
        return record


def read_text(path: Path) -> str:
    """A file of the run as text; unreadable or not UTF-8 is a ConfigError naming the file."""
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path} is not UTF-8 text (byte {err.start}): it is damaged; restore or delete it") from None
    except OSError as err:
        raise ConfigError(f"cannot read {path}: {err.strerror or err}") from None


def check_out_dir(out: Path, marker: str = "config.json", kind: str = "run directory") -> None:
    """Refuse an ``--out`` that cannot become this run's directory (with ``marker`` and ``kind``: a suite's,
    ``suite.json``), before anything is written.

    A file, a path under a file, an unwritable folder, a name too long for the file system, or an
    existing folder that is not a run directory but holds files (nothing of the user's is overwritten).
    """
    where = f"--out {shown(str(out))}"
    try:
        existing = next(p for p in (out, *out.parents) if os.path.lexists(p))
        name_max = os.pathconf(existing if existing.is_dir() else existing.parent, "PC_NAME_MAX")
    except (OSError, ValueError) as err:
        raise ConfigError(f"{where}: {getattr(err, 'strerror', None) or err}") from None
    if any(len(os.fsencode(part)) > name_max for part in out.parts):
        raise ConfigError(f"{where}: a name in it is longer than the file system allows ({name_max} bytes)")
    if existing == out and not out.is_dir():
        raise ConfigError(f"{where} exists and is not a directory")
    if not existing.is_dir():
        raise ConfigError(f"{where} lies under {existing}, which is a file, not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{where}: {existing} is not writable")
    if existing == out and not (out / marker).exists():
        try:
            held = [p.name for p in out.iterdir() if p.name != "run.lock"]
        except OSError as err:
            raise ConfigError(f"{where}: {err.strerror or err}") from None
        if held:
            raise ConfigError(f"{where} is a folder that holds files ({', '.join(sorted(held)[:3])}"
                              f"{', ...' if len(held) > 3 else ''}) but is not a {kind} (no {marker}); "
                              "give an empty or new folder")
