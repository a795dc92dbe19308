"""The small frozen objects plugins register, and the values the core hands to their callables."""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import nn
from torch.utils.data import Dataset

_NAME = r"^[a-z][a-z0-9_]*$"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)


class Site(_Frozen):
    """A ``Linear`` to factorize, by its path in the model.

    ``chunks`` > 1 marks a fused projection whose output concatenates that many
    equal projections (a fused qkv has 3); each chunk gets its own rank-r map
    unless the run asks to factorize it as one.
    """

    path: str
    chunks: int = Field(default=1, ge=1)


class ModelRequest(_Frozen):
    """What the core asks an architecture to build."""

    num_classes: int = Field(ge=1)
    in_chans: int = Field(ge=1)
    image_size: int = Field(ge=1)
    pretrained: bool = False


class ArchitectureSpec(_Frozen):
    """An architecture: how to build it, what each target factorizes, where its branches are.

    ``targets`` maps a registered target name to a function returning the
    sites of that target in a built model. ``branches`` returns, in a fixed
    order, the modules whose outputs are the branch outputs the geometric loss
    compares (attention and MLP branch of every block, before the residual add).
    ``image_size``, ``in_chans`` and ``num_classes`` describe the model's native
    input; a run keeps ``image_size`` (inputs are resized to it) and takes
    channels and classes from its data set.
    """

    name: str = Field(pattern=_NAME)
    description: str
    build: Callable[[ModelRequest], nn.Module]
    targets: Mapping[str, Callable[[nn.Module], list[Site]]]
    branches: Callable[[nn.Module], list[nn.Module]]
    image_size: int = Field(ge=1)
    in_chans: int = Field(default=3, ge=1)
    num_classes: int = Field(default=1000, ge=1)

    @field_validator("targets")
    @classmethod
    def _some_targets(cls, targets: Mapping[str, Callable]) -> Mapping[str, Callable]:
        if not targets:
            raise ValueError("an architecture needs at least one target")
        return dict(targets)


class TargetSpec(_Frozen):
    """A factorization target name (``attention``, ``mlp``, ``joint``, ...)."""

    name: str = Field(pattern=_NAME)
    description: str


@dataclass(frozen=True)
class Outputs:
    """A model's logits and, when the loss needs them, its branch outputs in ``branches`` order."""

    logits: torch.Tensor
    features: tuple[torch.Tensor, ...] = ()


class LossOptions(_Frozen):
    """Knobs a loss may read; the KD temperature T and label weight follow Hinton et al."""

    kd_temperature: float = Field(default=4.0, gt=0)
    kd_alpha: float = Field(default=0.5, ge=0, le=1)


class LossSpec(_Frozen):
    """A distillation loss ``compute(teacher, student, labels, options) -> scalar``.

    ``uses_features`` says whether the loss reads branch outputs; the trainer only
    hooks the branches when it does.
    """

    name: str = Field(pattern=_NAME)
    description: str
    compute: Callable[[Outputs, Outputs, torch.Tensor, LossOptions], torch.Tensor]
    uses_features: bool = False


@dataclass(frozen=True)
class DataSplits:
    """Train, validation (model selection) and test (reported number) splits of a data set.

    Each item is ``(image tensor C×H×W, int label)``.
    """

    train: Dataset
    val: Dataset
    test: Dataset
    num_classes: int
    in_chans: int
    image_size: int


class DataRequest(_Frozen):
    """What the core passes to a data set's loader."""

    root: Path | None = None


class DatasetSpec(_Frozen):
    """A data set: ``load(request) -> DataSplits``."""

    name: str = Field(pattern=_NAME)
    description: str
    load: Callable[[DataRequest], DataSplits]
