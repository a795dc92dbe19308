"""Pydantic model of a run, filled the same way from a TOML file and from CLI flags."""
from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import (BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator,
                      model_validator)

from effrank_bench.errors import ConfigError, format_validation_error, shown, unknown_key

if TYPE_CHECKING:
    from effrank_bench.specs import LossOptions

# Fields that do not change what a trial computes: a run directory may be resumed with other values
# (ranks and seeds may grow: each trial is keyed by its own rank and seed).
_NOT_IN_SWEEP_KEY = {
    "ranks", "seeds", "device", "out", "thresholds", "knee_axis", "monotone", "latency_batch_size",
    "latency_repeats", "download", "workers", "bootstrap_resamples", "executor", "spectrum_samples", "group",
    "memory_fraction", "search", "tolerance", "compile", "checkpoint_every", "ray_address", "gpus_per_trial",
    "cpus_per_trial", "max_retries", "mlflow", "plot",
}
# The options only some executors read (those naming them in ExecutorSpec.options: the built-in ray executor
# reads all four); given to an executor that does not, a run notes them as ignored.
EXECUTOR_OPTIONS = ("ray_address", "gpus_per_trial", "cpus_per_trial", "max_retries")
# The training recipe: what an architecture's own defaults (ArchitectureSpec.recipe) may set.
RECIPE_FIELDS = (
    "epochs", "teacher_epochs", "batch_size", "teacher_batch_size", "lr", "weight_decay", "teacher_lr",
    "teacher_optimizer", "teacher_weight_decay", "teacher_warmup", "teacher_schedule", "label_smoothing", "schedule",
)
# Options added after run directories and teachers were first keyed: in a key only when they differ
# from their default, so that runs and cached teachers made before they existed keep their keys.
_KEYED_WHEN_SET = {"schedule", "teacher_schedule", "select", "val_fraction", "teacher_batch_size", "limit_batches"}
# Fields that determine the teacher: its cache key.
_TEACHER_FIELDS = (
    "arch", "dataset", "data_root", "augment", "tokenizer", "teacher_seed", "teacher_epochs", "teacher_lr",
    "teacher_optimizer", "teacher_weight_decay", "teacher_warmup", "teacher_schedule", "select", "val_fraction",
    "label_smoothing", "batch_size", "amp", "pretrained", "teacher_checkpoint", "teacher_batch_size",
    "limit_batches",
)


# Upper bounds far beyond any real run: a value past them is a typo, and refusing it here keeps it from
# overflowing a tensor size, a seed or a sleep loop hours later.
MAX_EPOCHS = 100_000
MAX_SEED = 2**31 - 1
MAX_BATCH = 2**20
MAX_RANK = 2**20
MAX_WORKERS = 1024
MAX_LATENCY_BATCH = 65_536
MAX_REPEATS = 10**6
MAX_RESAMPLES = 10**7
MAX_LR = 10.0
MAX_WEIGHT_DECAY = 100.0
MAX_TEMPERATURE = 1000.0
MAX_THRESHOLD = 10.0
# Where --mlflow logs when given no URI: a SQLite store in the working directory (`mlflow ui` reads it).
MLFLOW_DEFAULT_URI = "sqlite:///mlruns.db"


class RunConfig(BaseModel):
    """One sweep: an architecture × target × loss on a data set, over a grid of ranks."""

    # No float may be inf or NaN: JSON has neither, and config.json must read back as it was written.
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    # Every field is also a flag of `effrank-bench run` (cli.py builds them from these fields), its
    # description the flag's help; json_schema_extra={"cli": False} would keep a field off the command line.
    arch: str = Field(default="micro_vit", description="architecture (see `effrank-bench list`)")
    target: str = Field(default="joint", description="what to factorize: attention, mlp, joint, ...")
    loss: str = Field(default="geometric", description="distillation loss: geometric, logit, kd")
    dataset: str = Field(default="digits", description="data set (see `effrank-bench list`)")
    data_root: Path | None = Field(default=None, description="where the data set's files are (or go, with download)")
    download: bool = Field(default=False, description="fetch the data set into data_root when it is missing")
    augment: bool = Field(default=True, description="augment the training split (images: random crop + flip)")
    tokenizer: str | None = Field(default=None, description="tokenizer of text data (default: the architecture's)")
    val_fraction: float | None = Field(
        default=None, ge=0, lt=1,
        description="fraction of the training data held out for validation (default: the data set's own split: a "
                    "tenth of train for CIFAR, image folders and text; for digits, 270 of the 1,527 examples that "
                    "train or validate, a fixed 70/15/15 split with test); 0 trains on the whole training split "
                    "and needs --select last")
    limit_batches: int | None = Field(
        default=None, ge=1, le=MAX_BATCH, description="at most N batches of every split per epoch and per "
                                                      "evaluation, teacher's and students': a quick check that a "
                                                      "setup runs end to end, whose numbers measure nothing")
    workers: int | None = Field(default=None, ge=0, le=MAX_WORKERS,
                                description="DataLoader workers (default: 8 on CUDA for per-item data, else 0)")
    ranks: tuple[int, ...] = Field(default=(1, 2, 4, 8, 16, 32), description="the rank grid, comma-separated")
    seeds: tuple[int, ...] = Field(default=(0,), description="student seeds (confidence intervals need 2+)")
    teacher_seed: int = Field(default=0, ge=0, le=MAX_SEED, description="seed of the teacher (default: the first of seeds)")
    # The recipe defaults are the micro families' (micro models on CPU, students from the teacher's SVD):
    # the band and knee of a 4x longer recipe in seconds on 2 cores (README, "The sweep engine"). The embedded
    # default, micro_vit, trains its students one epoch (its own recipe); paper-size presets have theirs.
    epochs: int = Field(default=2, ge=1, le=MAX_EPOCHS, description="student distillation epochs per rank "
                                                                    "(default: 2; micro_vit, the embedded default: 1)")
    teacher_epochs: int = Field(default=12, ge=0, le=MAX_EPOCHS, description="teacher training epochs (0: use it as loaded)")
    batch_size: int = Field(default=64, ge=1, le=MAX_BATCH, description="training batch size, teacher and students")
    teacher_batch_size: int | None = Field(default=None, ge=1, le=MAX_BATCH,
                                           description="teacher training batch size (default: --batch-size)")
    lr: float = Field(default=4e-3, gt=0, le=MAX_LR, description="student AdamW learning rate")
    weight_decay: float = Field(default=0.01, ge=0, le=MAX_WEIGHT_DECAY, description="student AdamW weight decay")
    teacher_lr: float = Field(default=4e-3, gt=0, le=MAX_LR, description="teacher learning rate")
    teacher_optimizer: Literal["adamw", "sgd"] = Field(default="adamw",
                                                       description="teacher optimizer (sgd: momentum 0.9, Nesterov)")
    teacher_weight_decay: float = Field(default=0.01, ge=0, le=MAX_WEIGHT_DECAY, description="teacher weight decay")
    teacher_warmup: float = Field(default=0.05, ge=0, lt=1, description="fraction of teacher steps warming up")
    teacher_schedule: Literal["cosine", "constant"] = Field(
        default="cosine", description="teacher learning rate: cosine (after --teacher-warmup) or constant (no warm-up)")
    label_smoothing: float = Field(default=0.0, ge=0, lt=1, description="teacher cross-entropy label smoothing")
    amp: bool = Field(default=True, description="bf16 autocast on CUDA (CPU always trains in float32)")
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto",
                                                   description="where to train (auto: CUDA when available)")
    schedule: Literal["cosine", "constant"] = Field(
        default="cosine", description="student learning rate: warm-up then cosine, or constant (the paper's: no warm-up)")
    select: Literal["best", "last"] = Field(
        default="best", description="weights a fit ends with, teacher's and students': best (the epoch best on validation) "
                    "or last (after the last epoch, the paper's)")
    init: Literal["svd", "random", "paper-rebuild"] = Field(
        default="svd", description="student init: svd (truncated SVD of the teacher, the rest copied), random "
                                   "(random factors, the rest copied) or paper-rebuild (the paper's: random "
                                   "factors, fresh norms in the factorized blocks, a fresh head; embeddings "
                                   "and final norm copied)")
    qkv: Literal["split", "fused"] = Field(default="split", description="a fused qkv projection as 3 rank-r maps, "
                                                                        "q, k and v (split, the paper's), or as one "
                                                                        "(fused)")
    pretrained: bool = Field(default=False, description="start the teacher from the architecture's pretrained weights")
    teacher_checkpoint: Path | None = Field(default=None, description="teacher weights: safetensors or .pt/.pth "
                                                                      "state dict")
    kd_temperature: float = Field(default=4.0, gt=0, le=MAX_TEMPERATURE, description="KD temperature T")
    kd_alpha: float = Field(default=0.5, ge=0, le=1, description="KD weight of the KL term (1 - alpha on "
                                                                 "cross-entropy)")
    thresholds: tuple[float, float] = Field(default=(0.85, 0.95), description="the region's accuracy thresholds, "
                                                                              "as fractions of the teacher's")
    knee_axis: Literal["linear", "log2"] = Field(default="linear", description="rank axis of the knee (linear: "
                                                                               "the paper's)")
    monotone: Literal["running-max", "isotonic"] = Field(
        default="running-max", description="how the curve is made non-decreasing before the fit: running-max "
                                           "(the paper's) or isotonic (least squares)")
    latency_batch_size: int = Field(default=1, ge=1, le=MAX_LATENCY_BATCH, description="batch size of latency measurements")
    latency_repeats: int = Field(default=30, ge=1, le=MAX_REPEATS,
                                 description="timed repeats of latency measurements (on one thread on CPU)")
    bootstrap_resamples: int = Field(default=1000, ge=1, le=MAX_RESAMPLES, description="bootstrap resamples of the seed CIs")
    search: Literal["grid", "adaptive"] = Field(
        default="grid", description="which ranks to train: every rank of --ranks, or an adaptive search that "
                                    "brackets the crossings and the knee, over the integers between its ends (over "
                                    "its ranks with --tolerance grid); a rerun in a run directory that names none "
                                    "goes on with the directory's")
    tolerance: str | None = Field(
        default=None, description="adaptive search: how far apart the measured ranks around each crossing and the "
                                  "knee may be: a percentage of the rank (at least 1 rank), a number of ranks, or "
                                  "grid (adjacent ranks of --ranks, training none off it) (default: 10%)")
    spectrum_samples: int = Field(default=128, ge=0, le=100_000,
                                  description="test inputs the run's teacher spectrum is measured on (0: none)")
    executor: str = Field(default="local", description="how the trials run (see `effrank-bench list`)")
    group: int | Literal["auto"] = Field(
        default="auto", description="students trained together on one data stream and one teacher pass: N, or "
                                    "auto (all ranks of a seed on CPU; as many as fit under --memory-fraction on CUDA)")
    memory_fraction: float = Field(default=0.8, gt=0, le=1,
                                   description="share of free GPU memory --group auto may fill")
    compile: bool | None = Field(default=None, description="torch.compile the teacher's and students' forwards and "
                                                           "the loss (default: on CUDA only; a compile failure falls "
                                                           "back to eager with a warning)")
    checkpoint_every: int | None = Field(default=None, ge=1,
                                         description="save unfinished students every N epochs (default: after "
                                                     "about 10 minutes of work)")
    ray_address: str | None = Field(
        default=None, description="--executor ray: the cluster to join (auto: the running one, or ray://HOST:PORT; "
                                  "default: start Ray on this machine)")
    gpus_per_trial: float | None = Field(
        default=None, ge=0, le=1024, description="--executor ray: GPUs each unit of work reserves; a fraction lets "
                                                 "small students share a GPU (default: 1 where the cluster has "
                                                 "GPUs, else 0)")
    cpus_per_trial: float = Field(default=1.0, gt=0, le=1024,
                                  description="--executor ray: CPUs each unit of work reserves")
    max_retries: int = Field(default=3, ge=0, le=100, description="--executor ray: retries of a unit of work whose "
                                                                  "worker or node died (a NaN trial is not retried)")
    plot: bool = Field(default=True, description="draw curve.png with the run's report, and a suite's comparison "
                                                 "plots (--no-plot: tables only, a run about 0.2 s sooner; "
                                                 "`effrank-bench report` and `compare --out` draw them later)")
    mlflow: str | None = Field(default=None, description="log the run to MLflow at this tracking URI (the flag "
                                                         f"alone: {MLFLOW_DEFAULT_URI})")
    out: Path | None = Field(default=None, description="run directory (default: "
                                                       "runs/<arch>-<target>-<loss>-<dataset>-<hash>)")

    @model_validator(mode="before")
    @classmethod
    def _seed_alias(cls, values: Any) -> Any:
        """``seed = N`` means ``seeds = [N]``; the teacher's seed defaults to the first student seed."""
        if not isinstance(values, dict):
            return values
        values = dict(values)
        if "seed" in values:
            if "seeds" in values:
                raise ValueError("give seed or seeds, not both")
            values["seeds"] = [values.pop("seed")]
        if values.get("teacher_seed") is None:
            seeds = values.get("seeds", (0,))
            if isinstance(seeds, str):
                seeds = [p.strip() for p in seeds.split(",")]
            if isinstance(seeds, int | str):
                seeds = [seeds]
            # A malformed first seed is left for the seeds validator to name; the teacher's stays 0.
            with contextlib.suppress(TypeError, ValueError, LookupError):
                values["teacher_seed"] = int(seeds[0])
        return values

    @field_validator("data_root")
    @classmethod
    def _absolute_data_root(cls, root: Path | None) -> Path | None:
        """Absolute, so that the same data typed another way resumes the run and shares the teacher."""
        return root.expanduser().resolve() if root is not None else None

    @field_validator("ranks", "seeds", "thresholds", mode="before")
    @classmethod
    def _parse_csv(cls, value: Any, info: ValidationInfo) -> Any:
        """``"2,4,8"`` from a flag or a file, as well as a list; thresholds, two of them."""
        if isinstance(value, str):
            value = _split_csv(value, info.field_name)
        if info.field_name == "thresholds" and isinstance(value, (list, tuple)) and len(value) != 2:
            raise ValueError(f"two thresholds are needed, low and high, like 0.85,0.95; got {len(value)}")
        return value

    @field_validator("group", mode="before")
    @classmethod
    def _group_size(cls, value: Any) -> Any:
        """A positive number of students, or auto: a group of none would train nothing, forever."""
        if value == "auto":
            return value
        number = value.strip() if isinstance(value, str) else value
        if isinstance(number, str) and number.isdigit():
            number = int(number)
        if isinstance(number, int) and not isinstance(number, bool) and number >= 1:
            return number
        raise ValueError(f"group must be a positive number of students or auto, got {value!r}")

    @field_validator("tolerance", mode="before")
    @classmethod
    def _known_tolerance(cls, value: Any) -> Any:
        """``10%`` or ``4``, checked now rather than after the first round of training."""
        if value is None:
            return None
        from effrank_bench.search import parse_tolerance  # numpy and scipy: not for --help

        try:
            parse_tolerance(value)
        except ConfigError as err:
            raise ValueError(str(err)) from None
        return str(value).strip()

    @field_validator("ranks")
    @classmethod
    def _positive_ranks(cls, ranks: tuple[int, ...]) -> tuple[int, ...]:
        if not ranks:
            raise ValueError("give at least one rank")
        bad = [r for r in ranks if r <= 0]
        if bad:
            raise ValueError(f"ranks must be positive, got {_shown_int(bad[0])}")
        bad = [r for r in ranks if r > MAX_RANK]
        if bad:
            raise ValueError(f"ranks must be at most {MAX_RANK}, got {_shown_int(bad[0])}")
        return tuple(sorted(set(ranks)))

    @field_validator("seeds")
    @classmethod
    def _some_seeds(cls, seeds: tuple[int, ...]) -> tuple[int, ...]:
        if not seeds:
            raise ValueError("give at least one seed")
        bad = [s for s in seeds if not 0 <= s <= MAX_SEED]
        if bad:
            raise ValueError(f"seeds must be between 0 and {MAX_SEED}, got {_shown_int(bad[0])}")
        if len(set(seeds)) < len(seeds):  # one student per rank and seed: a seed twice is a student not trained
            seen: set[int] = set()
            twice = next(s for s in seeds if s in seen or seen.add(s))
            raise ValueError(f"seed {twice} is given twice: a seed trains one student per rank, the same each "
                             "time; give distinct seeds, like 0,1,2")
        return seeds  # in order: the first seed is the teacher's default

    @model_validator(mode="after")
    def _check(self) -> RunConfig:
        low, high = self.thresholds
        if not 0 < low < high:
            raise ValueError(f"thresholds must satisfy 0 < low < high, got {low}, {high}")
        if high > MAX_THRESHOLD:
            raise ValueError(f"thresholds are fractions of the teacher's accuracy: at most {MAX_THRESHOLD}, got {high}")
        if self.val_fraction == 0 and self.select == "best":
            raise ValueError("val_fraction 0 leaves no validation split to pick the best epoch on: pass "
                             "--select last (keep the weights after the last epoch, as the paper does)")
        if self.teacher_epochs == 0 and not self.pretrained and self.teacher_checkpoint is None:
            raise ValueError("teacher_epochs 0 keeps the teacher as loaded, but nothing is loaded: pass "
                             "--pretrained or --teacher-checkpoint PATH, or train it (--teacher-epochs N)")
        return self

    @property
    def loss_options(self) -> LossOptions:
        # Imported here: specs imports torch, and `run --help` builds its flags from this module.
        from effrank_bench.specs import LossOptions

        return LossOptions(kd_temperature=self.kd_temperature, kd_alpha=self.kd_alpha)

    def sweep_fields(self) -> dict[str, Any]:
        """Everything that determines a trial's result except its rank; a checkpoint by its content."""
        fields = {k: v for k, v in self.model_dump(mode="json").items() if k not in _NOT_IN_SWEEP_KEY
                  and not (k in _KEYED_WHEN_SET and v == RunConfig.model_fields[k].default)}
        if self.teacher_checkpoint is not None:
            fields["teacher_checkpoint"] = file_sha256(self.teacher_checkpoint)
        return fields

    def sweep_key(self) -> str:
        return digest(self.sweep_fields())

    def teacher_key(self, inputs: dict[str, Any] | None = None) -> str:
        """Hash of what determines the teacher, so sweeps over targets, losses and ranks share it.

        ``inputs`` is what the architecture adds (how its inputs are preprocessed), when it adds anything.
        """
        fields = self.sweep_fields()
        if self.teacher_batch_size is not None:
            # The teacher trains on batches of teacher_batch_size: the students' batch_size does not make it.
            fields["batch_size"] = fields.pop("teacher_batch_size")
        return digest({k: fields[k] for k in _TEACHER_FIELDS if k in fields} | ({"inputs": inputs} if inputs else {}))

    def default_out(self) -> Path:
        return Path("runs") / f"{self.arch}-{self.target}-{self.loss}-{self.dataset}-{self.sweep_key()[:8]}"


def flag_value(value: Any) -> str:
    """An option's value as its flag and a file's text take it: a list or tuple comma-separated ("2,4,8")."""
    return ",".join(map(str, value)) if isinstance(value, list | tuple) else str(value)


def flag_name(name: str) -> str:
    """The flag of the option ``name``: ``--latency-repeats`` for ``latency_repeats``."""
    return "--" + name.replace("_", "-")


def flag_args(name: str, value: Any) -> list[str]:
    """The option ``name`` at ``value`` as `run`'s arguments: ``["--lr", "0.004"]``, ``["--no-augment"]``,
    ``["--ranks", "2,4"]``; none for None (the option left unset)."""
    flag = flag_name(name)
    if value is None:
        return []
    if isinstance(value, bool):
        return [flag if value else "--no-" + flag[2:]]
    return [flag, flag_value(value)]


def _shown_int(value: int) -> str:
    """An integer for a message: a huge one by its size (str() refuses over 4300 digits)."""
    return str(value) if abs(value) < 10**30 else f"{'-' if value < 0 else ''}a {value.bit_length()}-bit number"


def _flags(overrides: dict[str, Any] | None) -> set[str]:
    """The options ``overrides`` (the command line's) set: None leaves an option to the file or default."""
    return {name for name, value in (overrides or {}).items() if value is not None}


def _split_csv(text: str, what: str) -> list[str]:
    """The entries of ``"2, 4,8,"``: a trailing comma is allowed, an empty entry between two is refused (``1,,2``
    is a typo of ``1,2`` or of ``1,12``, and either reading could be wrong)."""
    parts = [p.strip() for p in text.split(",")]
    if parts and not parts[-1]:
        parts.pop()
    if not any(parts):
        raise ValueError(f"{what} is empty")
    if "" in parts:
        raise ValueError(f"entry {parts.index('') + 1} of {shown(text)!r} is empty: separate entries by one comma")
    return parts


def digest(fields: dict) -> str:
    """A key for ``fields`` (JSON values): the SHA-256 of their JSON, keys sorted."""
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def file_sha256(path: Path) -> str:
    """The file's digest; a file that is gone (a finished run's checkpoint, deleted) hashes as such."""
    if not path.is_file():
        return f"missing file {path}"
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_toml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"cannot read {path}: {err.strerror or err}") from None
    if raw.startswith(b"\xef\xbb\xbf"):
        raise ConfigError(f"{path}: starts with a byte-order mark; TOML is UTF-8 without one (save it without BOM)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start}); TOML files are UTF-8") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: malformed TOML: {err}") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to read") from None
    return _relative_to(path, data)


def _relative_to(path: Path, values: dict[str, Any]) -> dict[str, Any]:
    """Paths in a file are relative to the file, as a user editing it expects."""
    for key in ("data_root", "teacher_checkpoint", "out"):
        if isinstance(values.get(key), str):
            values[key] = str(path.parent / values[key])
    return values


def _merged(values: dict[str, Any], overrides: dict[str, Any] | None) -> dict[str, Any]:
    """``values`` overridden by the non-None ``overrides``; a seed flag replaces seeds under either key."""
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    values = dict(values)
    if {"seed", "seeds"} & set(given):
        values.pop("seed", None), values.pop("seeds", None)
    values.update(given)
    return values


# arch -> its recipe (the registry's ``recipe``): run options an architecture defaults to.
Recipes = Callable[[str], Mapping[str, Any]]


def _run_config(values: dict[str, Any], source: str, recipes: Recipes | None = None,
                flags: Iterable[str] = ()) -> RunConfig:
    """``values`` as a RunConfig; ``flags``: the options the command line set, named as flags in errors."""
    try:
        config = RunConfig(**values)  # what the user gave, checked before any recipe is looked up
        recipe = recipes(config.arch) if recipes is not None else {}
        if recipe:  # below all the user gave: file, suite defaults and blocks, flags
            config = RunConfig(**{**recipe, **values})
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source, RunConfig.model_fields, flags)) from None
    # Checked here, at the edge, not in the model: a finished run's config stays readable
    # after its checkpoint is moved.
    if config.teacher_checkpoint is not None and not config.teacher_checkpoint.is_file():
        raise ConfigError(f"teacher checkpoint not found: {config.teacher_checkpoint}")
    return config


def load_config(path: Path | None = None, overrides: dict[str, Any] | None = None,
                recipes: Recipes | None = None) -> RunConfig:
    """The file's values (if any), overridden by the non-None ``overrides`` (CLI flags); with ``recipes``,
    options neither sets take the architecture's recipe before RunConfig's defaults."""
    values = read_toml(path) if path is not None else {}
    if "matrix" in values:
        raise ConfigError(f"{path}: a suite (it has [[matrix]] blocks), not a run's config: run it with "
                          f"`effrank-bench run --suite {path}`")
    return _run_config(_merged(values, overrides), str(path) if path else "run options", recipes,
                       _flags(overrides))


# The axes of a suite's matrix; every other key of a block is a run option.
SUITE_AXES = ("arch", "target", "loss", "dataset")
_SUITE_KEYS = {"name", "description", "out", "defaults", "matrix"}


class SuiteConfig(BaseModel):
    """A list of runs, one per combination of a matrix block, each with its own run directory under ``out``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    out: Path
    runs: tuple[RunConfig, ...]

    def run_names(self) -> list[str]:
        return [run.out.name for run in self.runs]


_TAG = r"[A-Za-z0-9_.-]+"


def _run_options(table: Any, where: str, path: Path) -> dict[str, Any]:
    """A [defaults] table or a block's options: a table, paths relative to the suite file, no ``out``."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table of run options, got {table!r}")
    if "out" in table:
        raise ConfigError(f"{where}: 'out' is the suite's own (a top-level key or --out); each run goes in "
                          "OUT/<arch>-<target>-<loss>-<dataset>[-<tag>]")
    known = {*RunConfig.model_fields, "seed"}
    unknown = [unknown_key(name, known) for name in table if name not in known]
    if unknown:  # said where it is: merged into each run's options, it would be blamed on a block
        raise ConfigError(f"{where}: " + "; ".join(unknown))
    return _relative_to(path, dict(table))


def _axis(block: dict[str, Any], axis: str, where: str) -> list[str]:
    value = block.pop(axis, None)
    if value is None:
        raise ConfigError(f"{where}: missing '{axis}' (a name or a list of names)")
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
        raise ConfigError(f"{where}: '{axis}' must be a name or a non-empty list of names, got {value!r}")
    return values


def load_suite(path: Path, overrides: dict[str, Any] | None = None, recipes: Recipes | None = None) -> SuiteConfig:
    """Expand a suite file's ``[[matrix]]`` blocks into runs: the architecture's recipe (with ``recipes``)
    < defaults < block options < ``overrides``.

    A block's axes (arch, target, loss, dataset) take a name or a list; every combination is one
    run, stored in ``out/<arch>-<target>-<loss>-<dataset>[-<tag>]``.
    """
    data = read_toml(path)
    unknown = sorted(set(data) - _SUITE_KEYS)
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(unknown)}; a suite has "
                          f"{', '.join(sorted(_SUITE_KEYS))} (run options go in [defaults] or a [[matrix]] block)")
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    fixed = sorted(set(overrides) & set(SUITE_AXES))
    if fixed:
        raise ConfigError(f"--{fixed[0]} cannot be combined with --suite: the suite's matrix chooses it")
    if "out" in data and not isinstance(data["out"], str):
        raise ConfigError(f"{path}: 'out' must be a folder name (a string), got {shown(data['out'])}")
    out = Path(overrides.pop("out", None) or data.get("out") or Path("runs") / f"suite-{data.get('name', path.stem)}")
    defaults = _run_options(data.get("defaults", {}), f"{path} [defaults]", path)
    blocks = data.get("matrix")
    if not isinstance(blocks, list) or not blocks or not all(isinstance(b, dict) for b in blocks):
        raise ConfigError(f"{path}: a suite needs at least one [[matrix]] block (a table of arch, target, "
                          "loss, dataset and run options)")
    runs: dict[str, RunConfig] = {}
    made_by: dict[str, int] = {}  # the block each run comes from
    for i, block in enumerate(blocks, 1):
        where = f"{path} [[matrix]] block {i}"
        axes = [_axis(block, axis, where) for axis in SUITE_AXES]
        tag = block.pop("tag", None)
        if tag is not None and not (isinstance(tag, str) and re.fullmatch(_TAG, tag)):
            raise ConfigError(f"{where}: tag must be letters, digits, '_', '.' or '-', got {tag!r}")
        block = _run_options(block, where, path)
        for arch, target, loss, dataset in itertools.product(*axes):
            name = "-".join([arch, target, loss, dataset] + ([tag] if tag else []))
            if made_by.get(name) == i:
                raise ConfigError(f"{where}: {name} twice: its lists name a value twice; give each once")
            if name in runs:
                raise ConfigError(f"{where}: {name} is already in the suite (block {made_by[name]}); give one of the "
                                  f"two blocks {'another' if tag else 'a'} 'tag' to keep both")
            made_by[name] = i
            values = _merged(_merged(defaults, block), overrides)
            values.update(arch=arch, target=target, loss=loss, dataset=dataset, out=out / name)
            runs[name] = _run_config(values, f"{where} ({name})", recipes, _flags(overrides))
    try:
        return SuiteConfig(name=data.get("name", path.stem), description=data.get("description", ""), out=out,
                           runs=tuple(runs.values()))
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, str(path))) from None
