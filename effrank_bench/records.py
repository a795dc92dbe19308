"""The typed records a run directory holds (trials, teacher, costs, spectral estimates), and how records of
version 1 are read. No torch here: reading and reporting a run directory needs none."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from effrank_bench.errors import ConfigError, format_validation_error

# 2: records say which student init produced them; the teacher record carries its own version.
SCHEMA_VERSION = 2


class Cost(BaseModel):
    """What one forward pass of a model on an example input costs (MACs per sample).

    ``latency_ms`` is the median of the timed passes of the batch, ``latency_iqr_ms`` their interquartile
    range (None where not timed or timed once, or in a record from before it was kept).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    params: int
    factorized_params: int
    macs: int
    latency_ms: float | None
    peak_memory_mb: float | None
    latency_iqr_ms: float | None = None


class SpectralEstimates(BaseModel):
    """A teacher's two spectral rank estimates, as a run directory keeps them (``spectrum.json``).

    ``weight_r95``: median over the targeted weight matrices of the rank holding 95% of Σs².
    ``feature_r99``: median over the branch outputs of the rank holding 99% of the pooled PCA variance,
    on ``samples`` test inputs. ``key`` is the teacher's cache key: a stored spectrum of another teacher
    is computed again.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    key: str
    samples: int
    weight_r95: float
    feature_r99: float | None


@dataclass(frozen=True, order=True)
class Trial:
    """One student: a rank of a target under a loss and a seed. It is also a record's key."""

    target: str
    loss: str
    rank: int
    seed: int

    def label(self, seeds: int = 1) -> str:
        return f"rank {self.rank}" if seeds == 1 else f"rank {self.rank} seed {self.seed}"


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Epoch(_Record):
    """One epoch of a fit: mean training loss and validation accuracy after it (None: no validation split)."""

    epoch: int
    loss: float
    val_accuracy: float | None


class TargetInfo(_Record):
    """What a run's target factorizes in its model; ``max_rank`` (the largest full rank) is its width."""

    target: str
    qkv: Literal["split", "fused"] = "split"
    layers: int
    max_rank: int


class DataPrint(_Record):
    """What a teacher was trained and tested on: the sizes of its training and test splits, and its first test
    items' labels and mean values. The cache key names a data set and its options, not its contents: a teacher
    of other data under the same name (a plugin's ``load`` changed, files under ``--data-root`` replaced) is told
    apart by this, where the change reaches these (one past the first test items that keeps both sizes is not)."""

    items: int
    train_items: int
    labels: list[int]
    means: list[float]

    def differs_from(self, other: DataPrint) -> str | None:
        """How ``other`` is not this data, in words; None where it is (means within 1e-2, decoders differ)."""
        if self.items != other.items:
            return f"{self.items} test items, this run's {other.items}"
        if self.train_items != other.train_items:
            return f"{self.train_items} training items, this run's {other.train_items}"
        if self.labels != other.labels:
            return f"first test labels {self.labels}, this run's {other.labels}"
        if any(abs(a - b) > 1e-2 for a, b in zip(self.means, other.means)):
            return "other values in its first test items"
        return None


class TeacherRecord(_Record):
    """What is known of a teacher: where it came from, how it was trained, how good it is, its cost.

    ``cost`` is measured on the run's device when a run stores the teacher; the shared cache keeps
    the record without it (cost depends on the device, the teacher does not). ``val_accuracy`` is
    None without a validation split; ``num_classes`` is that of the data it was evaluated on (None
    in records written before it was kept).
    """

    schema_version: int = SCHEMA_VERSION
    key: str
    source: str
    skipped_keys: list[str] = []
    recipe: dict[str, Any]
    val_accuracy: float | None
    test_accuracy: float
    test_ece: float | None = None  # expected calibration error (15 bins) on the test split; None in old records
    test_nll: float | None = None  # mean cross-entropy in nats on the test split; None in old records
    num_classes: int | None = None
    evaluated_on: DataPrint | None = None  # its test split; None in records written before it was kept
    history: list[Epoch] = []
    train_seconds: float = 0.0
    samples_per_second: float | None = None
    environment: dict[str, Any]
    cost: Cost | None = None

    @property
    def origin(self) -> str:
        """Where its weights began, in words (``source``: scratch, pretrained, or checkpoint PATH)."""
        if self.source == "scratch":
            return "trained from scratch"
        return "from pretrained weights" if self.source == "pretrained" else f"from {self.source}"


class TrialRecord(_Record):
    """One finished (or failed) trial, as one line of ``trials.jsonl``.

    ``group`` holds the (rank, seed) of every student it trained beside, itself included (one data
    stream, one teacher pass per batch); empty when it trained alone.
    """

    schema_version: int = SCHEMA_VERSION
    status: Literal["ok", "failed"]
    arch: str
    target: str
    loss: str
    dataset: str
    rank: int
    seed: int
    init: Literal["svd", "random", "paper-rebuild"]
    group: list[tuple[int, int]] = []
    val_accuracy: float | None = None
    test_accuracy: float | None = None
    test_ece: float | None = None  # expected calibration error (15 bins) on the test split; None in old records
    test_nll: float | None = None  # mean cross-entropy in nats on the test split; None in old records
    error: str | None = None
    history: list[Epoch] = []
    train_seconds: float | None = None
    samples_per_second: float | None = None
    cost: Cost | None = None
    environment: dict[str, Any]

    @property
    def trial(self) -> Trial:
        return Trial(self.target, self.loss, self.rank, self.seed)


def read_trial(line: str, *, init: str) -> TrialRecord:
    """A record from its JSON line; a version-1 record gets the run's student ``init``, which it lacked.

    Raises ValueError (pydantic's ValidationError is one) for a line that is no record.
    """
    data = json.loads(line)
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    if data.get("schema_version") == 1:
        data = {**data, "schema_version": SCHEMA_VERSION, "init": init}
    return TrialRecord.model_validate(data)


def read_teacher(text: str, source: str) -> TeacherRecord:
    """A teacher record from JSON; version 1 (written before teacher records had a version) reads as is."""
    try:
        data = json.loads(text)
        if isinstance(data, dict):
            data.setdefault("schema_version", SCHEMA_VERSION)
        return TeacherRecord.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source)) from None
    except ValueError:
        raise ConfigError(f"{source} is not a teacher record (not valid JSON)") from None
