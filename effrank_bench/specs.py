"""The small frozen objects plugins register, and the values the core hands to their callables."""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from torch import nn
from torch.utils.data import Dataset

from effrank_bench.config import EXECUTOR_OPTIONS
from effrank_bench.errors import (ConfigError, EffrankError, LossError, RegistrationError, UnsupportedTargetError,
                                  a_type, format_validation_error, one_line, shown)

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


Modality = Literal["image", "tokens"]


class Preprocess(_Frozen):
    """How a pretrained model's weights expect images: resize, center crop, normalize.

    ``resize`` is the side the shorter edge is resized to before the center crop of side
    ``crop`` (None: resize straight to ``crop``); ``mean`` and ``std`` normalize each channel
    of an image in [0, 1]. timm's augreg ViTs take 0.5/0.5, torchvision's weights ImageNet's statistics.
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    resize: int | None = Field(default=None, ge=1)
    crop: int = Field(ge=1)
    interpolation: Literal["bilinear", "bicubic"] = "bilinear"

    @model_validator(mode="after")
    def _consistent(self) -> Preprocess:
        if len(self.mean) != len(self.std) or not self.mean:
            raise ValueError("mean and std need one value per channel")
        if any(s <= 0 for s in self.std):
            raise ValueError("std must be positive")
        if self.resize is not None and self.resize < self.crop:
            raise ValueError(f"resize ({self.resize}) must be at least the crop ({self.crop})")
        return self


class ModelRequest(_Frozen):
    """What the core asks an architecture to build.

    ``input_size`` is the image side for images and the sequence length for tokens;
    ``in_chans`` counts image channels, ``vocab_size`` token ids (tokens only).
    """

    num_classes: int = Field(ge=1)
    input_size: int = Field(ge=1)
    in_chans: int = Field(default=3, ge=1)
    vocab_size: int | None = Field(default=None, ge=1)
    pretrained: bool = False


@dataclass(frozen=True)
class Branch:
    """A module whose output is one branch output (before the residual add) for the geometric loss.

    ``channel_dim`` is where that output keeps its channels: -1 for token-major
    outputs (B, N, C), 1 for convolutional ones (B, C, H, W) or a Mixer's
    token-mixing MLP (B, C, N).
    """

    module: nn.Module
    channel_dim: int = -1


class ArchitectureSpec(_Frozen):
    """An architecture: how to build it, what each target factorizes, where its branches are.

    ``targets`` maps a registered target name to a function returning the
    sites of that target in a built model; without a ``joint``, ``joint`` is added: the sites of all the others,
    in their order, each once (of a single target, its sites: so the default ``--target joint`` runs every
    architecture). ``branches`` returns, in a fixed
    order, the branch outputs the geometric loss compares (attention-like and
    MLP-like branch of every block, before the residual add).
    ``input_size``, ``in_chans``, ``vocab_size`` and ``num_classes`` describe the
    model's native input; a run keeps ``input_size`` (images are resized to it)
    and takes channels, vocabulary and classes from its data set. ``tokenizer``
    names the tokenizer its pretrained weights expect, used to tokenize text data sets.
    ``preprocess`` is the image preprocessing its pretrained weights expect (None: a model
    trained here, fed with its data set's own statistics). ``convert_checkpoint`` turns a
    foreign state dict (e.g. torchvision's) into this model's keys, and returns its own unchanged.
    ``recipe`` holds the run options (of ``config.RECIPE_FIELDS``: epochs, batch sizes, learning rates,
    ...) its runs default to where the user sets none: a paper-size model needs other ones than the
    micro families', which are RunConfig's own.
    """

    name: str = Field(pattern=_NAME)
    description: str
    build: Callable[[ModelRequest], nn.Module]
    targets: Mapping[str, Callable[[nn.Module], list[Site]]]
    branches: Callable[[nn.Module], list[Branch]]
    modality: Modality = "image"
    input_size: int = Field(ge=1)
    in_chans: int = Field(default=3, ge=1)
    vocab_size: int | None = Field(default=None, ge=1)
    num_classes: int = Field(default=1000, ge=1)
    tokenizer: str | None = Field(default=None, description="Hugging Face tokenizer (name or path) for text data")
    preprocess: Preprocess | None = None
    convert_checkpoint: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None
    recipe: dict[str, Any] = Field(default_factory=dict)

    @field_validator("recipe")
    @classmethod
    def _recipe_of_run_options(cls, recipe: dict[str, Any]) -> dict[str, Any]:
        from effrank_bench.config import RECIPE_FIELDS, RunConfig

        unknown = sorted(set(recipe) - set(RECIPE_FIELDS))
        if unknown:
            raise ValueError(f"{', '.join(unknown)} not among the recipe's options "
                             f"({', '.join(RECIPE_FIELDS)})")
        try:
            RunConfig(**recipe)  # each value as a run would take it
        except ValidationError as err:
            raise ValueError(format_validation_error(err, None)) from None  # pydantic names the field
        return dict(recipe)

    @field_validator("targets")
    @classmethod
    def _some_targets(cls, targets: Mapping[str, Callable]) -> Mapping[str, Callable]:
        if not targets:
            raise ValueError("an architecture needs at least one target")
        others = [sites for name, sites in targets.items() if name != "joint"]
        if "joint" in targets:
            return dict(targets)

        def joint(model: nn.Module) -> list[Site]:  # every site of the other targets, in their order, once
            sites, paths = [], set()
            for site in (site for target_sites in others for site in target_sites(model)):
                path = getattr(site, "path", None)  # not a Site: sites() refuses it, naming the target
                if path is None or path not in paths:
                    sites.append(site)
                    paths.add(path)
            return sites

        return {**targets, "joint": joint}

    @model_validator(mode="after")
    def _tokens_need_a_vocabulary(self) -> ArchitectureSpec:
        if self.modality == "tokens" and self.vocab_size is None:
            raise ValueError("a tokens architecture needs its native vocab_size")
        return self

    def require_target(self, target: str) -> None:
        """Refuse a target this architecture lacks, naming the ones it has."""
        if target not in self.targets:
            raise UnsupportedTargetError(
                f"{self.name} does not support target '{target}'; its targets are: {', '.join(self.targets)}"
            )

    def sites(self, model: nn.Module, target: str) -> list[Site]:
        """The sites of ``target`` in ``model``; a target function that gives none, or gives something
        else than Sites, is refused naming the architecture and the target."""
        self.require_target(target)
        where = f"target '{target}' of architecture '{self.name}'"
        try:
            sites = list(self.targets[target](model))
        except EffrankError:
            raise
        except Exception as err:  # noqa: BLE001 - whatever a plugin's target function raises
            raise RegistrationError(f"{where} failed on its model: {one_line(err)}") from err
        if not sites:
            raise RegistrationError(f"{where} selects no layers in this model")
        wrong = next((site for site in sites if not isinstance(site, Site)), None)
        if wrong is not None:
            raise RegistrationError(f"{where} gave {shown(wrong)} ({type(wrong).__name__}); a target function "
                                    "returns Site(path=...) for each layer it factorizes")
        twice = sorted(path for path, n in Counter(site.path for site in sites).items() if n > 1)
        if twice:
            raise RegistrationError(f"{where} lists a site twice: {', '.join(map(shown, twice[:5]))}")
        return sites

    def native_request(self) -> ModelRequest:
        """The model as published: native classes, channels, vocabulary and input size."""
        return ModelRequest(num_classes=self.num_classes, input_size=self.input_size,
                            in_chans=self.in_chans, vocab_size=self.vocab_size)


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

    ``compute`` returns a scalar floating-point tensor computed from the student's outputs (one
    ``backward()`` can follow); it may raise LossError for inputs it cannot compare. ``uses_features``
    says whether the loss reads branch outputs (``Outputs.features``); the trainer only hooks the
    branches when it does, and leaves ``features`` empty otherwise.
    """

    name: str = Field(pattern=_NAME)
    description: str
    compute: Callable[[Outputs, Outputs, torch.Tensor, LossOptions], torch.Tensor]
    uses_features: bool = False

    def checked(self, value: Any) -> torch.Tensor:
        """``value``, as ``compute`` (or it compiled) returned it, checked: anything but a one-element
        floating-point tensor with a gradient is the plugin's mistake, refused in one line naming the loss,
        not a trial that failed. Only metadata is read (no sync); a shape-(1,) loss comes back as a scalar."""
        if (isinstance(value, torch.Tensor) and value.numel() == 1 and value.is_floating_point()
                and value.requires_grad):
            return value if value.dim() == 0 else value.reshape(())
        if not isinstance(value, torch.Tensor):
            got = a_type(value)
        elif value.numel() != 1 or not value.is_floating_point():
            got = f"a {value.dtype} tensor of shape {tuple(value.shape)}"
        else:
            got = "a tensor no gradient flows back through (detached, or not computed from the student's outputs)"
        raise LossError(f"loss '{self.name}' returned {got}; a loss returns a scalar floating-point tensor "
                        "computed from the student's outputs")


@dataclass(frozen=True)
class DataSplits:
    """Train, validation (model selection) and test (reported number) splits of a data set.

    Each item is ``(input, int label)``: an image tensor C×H×W of side ``input_size``,
    or a 1-D tensor of ``input_size`` token ids (0 is padding) below ``vocab_size``.
    """

    train: Dataset
    val: Dataset
    test: Dataset
    num_classes: int
    modality: Modality
    input_size: int
    in_chans: int = 1
    vocab_size: int | None = None

    def model_request(self, arch: ArchitectureSpec, *, pretrained: bool = False) -> ModelRequest:
        """The model ``arch`` must be to train on this data: its input size, our classes and channels.

        That ``arch`` takes this data's modality was checked before loading, by :meth:`DatasetSpec.check_architecture`.
        """
        return ModelRequest(num_classes=self.num_classes, input_size=arch.input_size, in_chans=self.in_chans,
                            vocab_size=self.vocab_size, pretrained=pretrained)


class DataRequest(_Frozen):
    """What the core passes to a data set's loader.

    ``root`` is where the user keeps the data (None: the loader's default place);
    ``download`` allows fetching it there when it is missing. ``input_size`` is the
    architecture's input size: an image side (loaders of images with mixed sizes
    resize to it; fixed-size sets such as CIFAR stay native and the core resizes
    per batch) or a sequence length (text is tokenized to it). ``tokenizer`` is the
    Hugging Face name or local path of the teacher's tokenizer, for text sets.
    ``augment`` turns on the training split's augmentation (random crop and flip
    for images); validation and test splits are never augmented. ``preprocess`` is the
    architecture's: its mean and std normalize the images, and loaders that resize (image
    folders) resize and center crop its way; None: the data set's own statistics.
    ``val_fraction`` is the fraction of the training data held out for validation (None: the data
    set's own split; 0: none, the whole training split trains and the validation split is empty).
    """

    root: Path | None = None
    download: bool = False
    input_size: int | None = Field(default=None, ge=1)
    tokenizer: str | None = None
    augment: bool = True
    preprocess: Preprocess | None = None
    val_fraction: float | None = Field(default=None, ge=0, lt=1)


class DatasetSpec(_Frozen):
    """A data set: ``load(request) -> DataSplits`` of ``modality`` inputs.

    The modality is declared, not only loaded, so that a run pairing it with an architecture
    of the other kind is refused before anything is downloaded or tokenized. ``tokenizes``: whether ``load``
    reads ``request.tokenizer`` (None: as its modality says, token data sets do); a run that names a tokenizer
    for a data set that reads none is refused, since the tokenizer keys its teacher.
    """

    name: str = Field(pattern=_NAME)
    description: str
    load: Callable[[DataRequest], DataSplits]
    modality: Modality = "image"
    tokenizes: bool | None = None

    @property
    def reads_tokenizer(self) -> bool:
        return self.modality == "tokens" if self.tokenizes is None else self.tokenizes

    def check_architecture(self, arch: ArchitectureSpec, fitting: Sequence[str] = ()) -> None:
        """Refuse an architecture of the other modality; ``fitting``: the data sets that would do, to name."""
        if arch.modality != self.modality:
            kind = {"image": "images", "tokens": "token sequences"}
            hint = f" ({', '.join(fitting)})" if fitting else ""
            raise ConfigError(f"{arch.name} takes {kind[arch.modality]} but data set '{self.name}' gives "
                              f"{kind[self.modality]}; pick a data set of {kind[arch.modality]}{hint}")


class ExecutorSpec(_Frozen):
    """A way to run a sweep's trials: ``execute(execution)`` runs ``execution.trials`` and hands each
    finished :class:`~effrank_bench.records.TrialRecord` to ``execution.record`` as soon as it exists.

    ``execution`` is an :class:`effrank_bench.sweep.Execution`: the prepared run, its teacher, the
    trials left, the record callback and the progress display. Whatever runs the trials (this
    process, a group of students sharing a teacher pass, a cluster), only ``record`` writes the run
    directory, in the calling process; it keeps a trial's first record and ignores any repeat.

    ``obtain_teachers(setups, progress)`` returns the teachers of these prepared runs
    (:class:`effrank_bench.setup.RunSetup`), in their order, obtained where this executor trains: on a
    cluster, in tasks, so that a driver without a GPU never trains one and a suite's teachers train side
    by side. None: in this process, one run at a time (:func:`effrank_bench.teacher.obtain_teacher`).

    ``options``: the executor-specific run options it reads, of ``effrank_bench.config.EXECUTOR_OPTIONS``
    (``"gpus_per_trial"`` for ``--gpus-per-trial``); a run given one its executor does not read says so.
    """

    name: str = Field(pattern=_NAME)
    description: str
    execute: Callable[[Any], None]
    obtain_teachers: Callable[[Any, Any], list[Any]] | None = None
    options: tuple[str, ...] = ()

    @field_validator("options")
    @classmethod
    def _known_options(cls, options: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [name for name in options if name not in EXECUTOR_OPTIONS]
        if unknown:
            raise ValueError(f"'{unknown[0]}' is not an executor option; they are: {', '.join(EXECUTOR_OPTIONS)}")
        return options
