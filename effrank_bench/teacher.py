"""The full-rank teacher: build, load a checkpoint, train, and cache it by what determines it."""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from effrank_bench.environment import environment
from effrank_bench.errors import CheckpointError, one_line
from effrank_bench.paths import cache_dir
from effrank_bench.progress import NullProgress, Progress
from effrank_bench.records import TeacherRecord, read_teacher
from effrank_bench.train import Recipe, evaluate, train_teacher

if TYPE_CHECKING:
    from effrank_bench.setup import RunSetup


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from safetensors, or from a ``.pt``/``.pth`` file loaded with ``weights_only=True``."""
    if not path.is_file():
        raise CheckpointError(f"teacher checkpoint not found: {path}")
    try:
        if path.suffix == ".safetensors":
            return load_file(path)
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the same user error
        raise CheckpointError(f"cannot read teacher checkpoint {path}: {one_line(err)}") from None
    # Lightning and many training scripts nest the weights.
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors")
    return state


def apply_checkpoint(model: nn.Module, state: dict[str, torch.Tensor], source: Path) -> list[str]:
    """Load ``state`` into ``model``; returns the keys skipped because their shape differs (a new head).

    Any other missing or unexpected key is an error: a checkpoint of another architecture
    must not be half-loaded silently.
    """
    own = model.state_dict()
    skipped = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    result = model.load_state_dict({k: v for k, v in state.items() if k not in skipped}, strict=False)
    missing = [k for k in result.missing_keys if k not in skipped]
    if missing or result.unexpected_keys:
        raise CheckpointError(
            f"{source} does not fit this architecture: {len(missing)} missing keys "
            f"(e.g. {missing[:3]}), {len(result.unexpected_keys)} unexpected (e.g. {result.unexpected_keys[:3]})"
        )
    return skipped


@dataclass(frozen=True)
class CachedTeacher:
    """A teacher's weights and its record, stored under its key."""

    weights: Path
    info: Path

    @classmethod
    def at(cls, key: str, root: Path | None = None) -> CachedTeacher:
        folder = (root or cache_dir()) / "teachers"
        return cls(folder / f"{key}.safetensors", folder / f"{key}.json")

    def exists(self) -> bool:
        return self.weights.is_file() and self.info.is_file()

    def record(self) -> TeacherRecord:
        return read_teacher(self.info.read_text(), str(self.info))

    def load(self, model: nn.Module) -> TeacherRecord:
        model.load_state_dict(load_file(self.weights))
        return self.record()

    def save(self, model: nn.Module, record: TeacherRecord) -> None:
        self.weights.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename, so an interrupted save never leaves a truncated cache entry behind.
        tmp = self.weights.with_suffix(".tmp")
        save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, tmp)
        tmp.replace(self.weights)
        self.info.write_text(record.model_copy(update={"cost": None}).model_dump_json(indent=2))


@dataclass(frozen=True)
class Teacher:
    """A ready teacher on the run's device, its record (cost included) and where its weights are on disk."""

    model: nn.Module
    record: TeacherRecord
    weights: Path


def obtain_teacher(setup: RunSetup, progress: Progress = NullProgress()) -> Teacher:
    """The run's teacher: from the shared cache, else from the run directory, else obtained and trained.

    A teacher trained here goes into the cache, so that every sweep with the same teacher key (any
    target, loss, rank or seed) reuses it; a run directory copied to another machine brings its own.
    """
    key = setup.teacher_key
    model = copy.deepcopy(setup.model)
    cached = CachedTeacher.at(key)
    kept = CachedTeacher(setup.run.teacher_weights, setup.run.teacher_info)
    if cached.exists():
        source, record = cached, cached.load(model)
        progress.note(f"teacher loaded from cache ({cached.weights})")
    elif kept.exists() and kept.record().key == key:
        source, record = kept, kept.load(model)
        progress.note(f"teacher loaded from the run directory ({kept.weights})")
    else:
        model, record = _train(setup, model, progress)
        source = cached
        cached.save(model, record)
    setup.to_device(model)
    return Teacher(model=model, record=record.model_copy(update={"cost": setup.cost(model)}), weights=source.weights)


def _train(setup: RunSetup, model: nn.Module, progress: Progress) -> tuple[nn.Module, TeacherRecord]:
    config, arch, source = setup.config, setup.parts.arch, "scratch"
    if config.pretrained:
        model = arch.build(setup.request.model_copy(update={"pretrained": True}))
        source = "pretrained"
    skipped: list[str] = []
    if config.teacher_checkpoint is not None:
        state = load_state_dict(config.teacher_checkpoint)
        if arch.convert_checkpoint is not None:
            state = arch.convert_checkpoint(state)
        skipped = apply_checkpoint(model, state, config.teacher_checkpoint)
        source = f"checkpoint {config.teacher_checkpoint}"
    setup.to_device(model)
    recipe = Recipe(config.teacher_epochs, config.teacher_lr, config.teacher_weight_decay,
                    warmup_fraction=config.teacher_warmup, optimizer=config.teacher_optimizer,
                    label_smoothing=config.label_smoothing, amp=config.amp)
    val, test = setup.batches(setup.splits.val), setup.batches(setup.splits.test)
    fit = None
    if config.teacher_epochs > 0:
        train = setup.batches(setup.splits.train, shuffle=True, seed=config.teacher_seed)
        fit = train_teacher(model, train, val, recipe, progress)
    samples = config.teacher_epochs * len(setup.splits.train)
    record = TeacherRecord(
        key=setup.teacher_key, source=source, skipped_keys=skipped, recipe=asdict(recipe),
        val_accuracy=evaluate(model, val, config.amp), test_accuracy=evaluate(model, test, config.amp),
        history=fit.history if fit else [], train_seconds=fit.seconds if fit else 0.0,
        samples_per_second=samples / fit.step_seconds if fit else None,
        environment=environment(str(setup.device)),
    )
    return model, record
