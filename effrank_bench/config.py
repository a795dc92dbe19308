"""Pydantic model of a run, filled the same way from a TOML file and from CLI flags."""
from __future__ import annotations

import hashlib
import json
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import (BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator,
                      model_validator)

from effrank_bench.errors import ConfigError
from effrank_bench.specs import LossOptions

# Fields that do not change what a trial computes: a run directory may be resumed with other values.
_NOT_IN_SWEEP_KEY = {"ranks", "device", "out", "thresholds", "knee_axis", "latency_batch_size", "latency_repeats"}
# Fields that determine the teacher: its cache key.
_TEACHER_FIELDS = (
    "arch", "dataset", "data_root", "seed", "teacher_epochs", "teacher_lr", "batch_size",
    "weight_decay", "pretrained", "teacher_checkpoint",
)


class RunConfig(BaseModel):
    """One sweep: an architecture × target × loss on a data set, over a grid of ranks."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    arch: str = "micro_vit"
    target: str = "joint"
    loss: str = "geometric"
    dataset: str = "digits"
    data_root: Path | None = None
    ranks: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
    epochs: int = Field(default=12, ge=1, description="student distillation epochs per rank")
    teacher_epochs: int = Field(default=40, ge=0, description="teacher training epochs (0: use it as loaded)")
    batch_size: int = Field(default=64, ge=1)
    lr: float = Field(default=2e-3, gt=0, description="student AdamW learning rate")
    teacher_lr: float = Field(default=2e-3, gt=0)
    weight_decay: float = Field(default=0.01, ge=0)
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    init: Literal["svd", "random"] = "svd"
    qkv: Literal["split", "fused"] = "split"
    pretrained: bool = False
    teacher_checkpoint: Path | None = None
    kd_temperature: float = Field(default=4.0, gt=0)
    kd_alpha: float = Field(default=0.5, ge=0, le=1)
    thresholds: tuple[float, float] = (0.85, 0.95)
    knee_axis: Literal["linear", "log2"] = "linear"
    latency_batch_size: int = Field(default=1, ge=1)
    latency_repeats: int = Field(default=30, ge=1)
    out: Path | None = None

    @field_validator("ranks", "thresholds", mode="before")
    @classmethod
    def _parse_csv(cls, value: Any, info: ValidationInfo) -> Any:
        """``"2,4,8"`` from a flag or a file, as well as a list."""
        if isinstance(value, str):
            return _split_csv(value, info.field_name)
        return value

    @field_validator("ranks")
    @classmethod
    def _positive_ranks(cls, ranks: tuple[int, ...]) -> tuple[int, ...]:
        if not ranks:
            raise ValueError("give at least one rank")
        bad = [r for r in ranks if r <= 0]
        if bad:
            raise ValueError(f"ranks must be positive, got {bad[0]}")
        return tuple(sorted(set(ranks)))

    @model_validator(mode="after")
    def _check(self) -> RunConfig:
        low, high = self.thresholds
        if not 0 < low < high:
            raise ValueError(f"thresholds must satisfy 0 < low < high, got {low}, {high}")
        return self

    @property
    def loss_options(self) -> LossOptions:
        return LossOptions(kd_temperature=self.kd_temperature, kd_alpha=self.kd_alpha)

    def sweep_fields(self) -> dict[str, Any]:
        """Everything that determines a trial's result except its rank; a checkpoint by its content."""
        fields = {k: v for k, v in self.model_dump(mode="json").items() if k not in _NOT_IN_SWEEP_KEY}
        if self.teacher_checkpoint is not None:
            fields["teacher_checkpoint"] = _file_sha256(self.teacher_checkpoint)
        return fields

    def sweep_key(self) -> str:
        return _digest(self.sweep_fields())

    def teacher_key(self) -> str:
        """Hash of what determines the teacher, so sweeps over targets, losses and ranks share it."""
        fields = self.sweep_fields()
        return _digest({k: fields[k] for k in _TEACHER_FIELDS})

    def default_out(self) -> Path:
        return Path("runs") / f"{self.arch}-{self.target}-{self.loss}-{self.dataset}-{self.sweep_key()[:8]}"


def _split_csv(text: str, what: str) -> list[str]:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise ValueError(f"{what} is empty")
    return parts


def _digest(fields: dict) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def _file_sha256(path: Path) -> str:
    """The file's digest; a file that is gone (a finished run's checkpoint, deleted) hashes as such."""
    if not path.is_file():
        return f"missing file {path}"
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def format_validation_error(err: ValidationError, source: str) -> str:
    """One line: where each problem is and what it is."""
    problems = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"])
        message = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            problems.append(f"unknown key '{where}'")
        else:
            problems.append(f"{where}: {message}" if where else message)
    return f"{source}: " + "; ".join(problems)


def read_toml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: malformed TOML: {err}") from None
    # Paths in a file are relative to the file, as a user editing it expects.
    for key in ("data_root", "teacher_checkpoint", "out"):
        if isinstance(data.get(key), str):
            data[key] = str((path.parent / data[key]))
    return data


def load_config(path: Path | None = None, overrides: dict[str, Any] | None = None) -> RunConfig:
    """The file's values (if any), overridden by the non-None ``overrides`` (CLI flags)."""
    values = read_toml(path) if path is not None else {}
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        config = RunConfig(**values)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, str(path) if path else "run options")) from None
    # Checked here, at the edge, not in the model: a finished run's config stays readable
    # after its checkpoint is moved.
    if config.teacher_checkpoint is not None and not config.teacher_checkpoint.is_file():
        raise ConfigError(f"teacher checkpoint not found: {config.teacher_checkpoint}")
    return config
