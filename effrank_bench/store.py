"""A run directory: resolved config, append-only trial records, teacher, reports; resumes safely."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from pydantic import ValidationError

from effrank_bench.config import RunConfig
from effrank_bench.errors import ConfigError, format_validation_error
from effrank_bench.records import TargetInfo, TeacherRecord, TrialRecord, read_teacher, read_trial


class RunDir:
    """Files of one sweep; every finished trial is on disk before the next one starts."""

    def __init__(self, path: Path):
        self.path = Path(path)

    config_path = property(lambda self: self.path / "config.json")
    records_path = property(lambda self: self.path / "trials.jsonl")
    teacher_weights = property(lambda self: self.path / "teacher.safetensors")
    teacher_info = property(lambda self: self.path / "teacher.json")
    target_path = property(lambda self: self.path / "target.json")

    def check_resumable(self, config: RunConfig) -> RunConfig | None:
        """The config this directory holds, if any, after checking that ``config`` may resume it."""
        if not self.config_path.is_file():
            return None
        previous = self.config()
        old, new = previous.sweep_fields(), config.sweep_fields()
        if old != new:
            changed = [k for k in new if old.get(k) != new[k]]
            raise ConfigError(
                f"{self.path} holds another sweep (differs in: {', '.join(changed)}); "
                "use another --out or the same options to resume it"
            )
        return previous

    @classmethod
    def open(cls, path: Path, config: RunConfig) -> RunDir:
        """Create it, or reopen it for the same sweep (other ranks and seeds may be added)."""
        run = cls(path)
        previous = run.check_resumable(config)
        if previous is not None:
            # Ranks and seeds accumulate: a sweep extended by a rank or a seed keeps what it had.
            config = config.model_copy(update={
                "ranks": tuple(sorted(set(previous.ranks) | set(config.ranks))),
                "seeds": tuple(dict.fromkeys(previous.seeds + config.seeds)),
            })
        run.path.mkdir(parents=True, exist_ok=True)
        run.config_path.write_text(config.model_dump_json(indent=2))
        run._drop_torn_tail()
        return run

    def _drop_torn_tail(self) -> None:
        """Cut a last line left half-written by a killed process, so the next append starts clean."""
        if not self.records_path.is_file():
            return
        data = self.records_path.read_bytes()
        if data and not data.endswith(b"\n"):
            self.records_path.write_bytes(data[: data.rfind(b"\n") + 1])

    def config(self) -> RunConfig:
        if not self.config_path.is_file():
            raise ConfigError(f"{self.path} is not a run directory (no config.json)")
        try:
            return RunConfig.model_validate_json(self.config_path.read_text())
        except ValidationError as err:
            raise ConfigError(format_validation_error(err, str(self.config_path))) from None

    def records(self) -> list[TrialRecord]:
        if not self.records_path.is_file():
            return []
        records = []
        lines = self.records_path.read_text().splitlines()
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
                shutil.copyfile(weights, self.teacher_weights)
        self.teacher_info.write_text(record.model_dump_json(indent=2))

    def store_target(self, info: TargetInfo) -> None:
        self.target_path.write_text(info.model_dump_json(indent=2))

    def target_info(self) -> TargetInfo | None:
        """The stored target description; None for a run directory written before it existed."""
        if not self.target_path.is_file():
            return None
        try:
            return TargetInfo.model_validate_json(self.target_path.read_text())
        except ValidationError as err:
            raise ConfigError(format_validation_error(err, str(self.target_path))) from None

    def teacher(self) -> TeacherRecord:
        if not self.teacher_info.is_file():
            raise ConfigError(f"{self.path} has no teacher.json yet: the run stopped before its teacher was ready")
        record = read_teacher(self.teacher_info.read_text(), str(self.teacher_info))
        if record.cost is None:
            raise ConfigError(f"{self.teacher_info} has no cost: it is a cache entry, not a run's teacher record")
        return record
