"""The full-rank teacher: build, load a checkpoint, train, and cache it by what determines it."""
from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from effrank_bench.atomic import atomic_path, atomic_write_text
from effrank_bench.environment import environment
from effrank_bench.errors import CheckpointError, EffrankError, one_line
from effrank_bench.lock import FileLock
from effrank_bench.factorize import TeacherSVD, classifier_of
from effrank_bench.paths import CACHE_HINT, cache_dir, make_folder
from effrank_bench.preflight import check_student_step
from effrank_bench.progress import NullProgress, Progress
from effrank_bench.records import DataPrint, TeacherRecord, read_teacher
from effrank_bench.store import read_text
from effrank_bench.train import Recipe, evaluate, evaluate_calibrated, train_teacher

if TYPE_CHECKING:
    from effrank_bench.setup import RunSetup

# How often a process waiting for another to finish training a teacher looks again.
_POLL_S = 2.0


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from safetensors, or from a ``.pt``/``.pth`` file loaded with ``weights_only=True``."""
    if not path.is_file():
        raise CheckpointError(f"teacher checkpoint not found: {path}")
    try:
        if path.suffix == ".safetensors":
            return load_file(path)
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the same user error
        raise _unreadable(path, err) from None
    # Lightning and many training scripts nest the weights.
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors")
    return state


def _unreadable(path: Path, err: Exception) -> CheckpointError:
    """The one-line refusal of a checkpoint file. torch words every weights_only refusal as "Weights only load
    failed", then suggests weights_only=False, which would run the file's code: its text is left out."""
    text = str(err)
    if "Unsupported global" in text:  # a pickled object other than tensors, which weights_only=True does not build
        return CheckpointError(f"cannot read teacher checkpoint {path}: UnpicklingError: it holds objects other than "
                               "tensors, and a checkpoint is only loaded as weights (weights_only=True); save the "
                               "model's state_dict() with torch.save, or as .safetensors")
    detail = "" if "Weights only load failed" in text else f": {one_line(err)}"
    return CheckpointError(f"cannot read teacher checkpoint {path}: neither a torch.save file nor, by its suffix, "
                           f"safetensors{detail}")


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

    @property
    def lock(self) -> Path:
        return self.info.with_suffix(".lock")

    def exists(self) -> bool:
        return self.weights.is_file() and self.info.is_file()

    def record(self) -> TeacherRecord:
        return read_teacher(read_text(self.info), str(self.info))

    def load(self, model: nn.Module) -> TeacherRecord:
        """The weights into ``model``; a file that is torn, holds NaN or does not fit is a CheckpointError.

        The key names the architecture, not its code: weights that do not fit were trained before its
        plugin changed the model.
        """
        try:
            model.load_state_dict(self._state())
        except RuntimeError as err:  # torch's list of missing, unexpected and misshapen keys
            raise CheckpointError(f"teacher weights {self.weights} do not fit the model as its architecture builds "
                                  f"it now ({one_line(err)}); if its plugin changed the model, delete it and "
                                  f"{self.info.name} to train the teacher again") from None
        return self.record()

    def _state(self) -> dict[str, torch.Tensor]:
        try:
            state = load_file(self.weights)
        except Exception as err:  # noqa: BLE001 - safetensors raises its own and OS errors alike
            raise CheckpointError(f"teacher weights {self.weights} cannot be read ({one_line(err)}); "
                                  f"delete it and {self.info.name} to train the teacher again") from None
        bad = next((k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
        if bad is not None:
            raise CheckpointError(f"teacher weights {self.weights} hold NaN or infinite values ({bad}); "
                                  f"delete it and {self.info.name} to train the teacher again")
        return state

    def save(self, model: nn.Module, record: TeacherRecord) -> None:
        """Weights, then the record, each written whole and renamed: ``exists()`` only sees complete entries."""
        make_folder(self.weights.parent, CACHE_HINT)
        with atomic_path(self.weights) as tmp:
            save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, tmp)
        atomic_write_text(self.info, record.model_copy(update={"cost": None}).model_dump_json(indent=2))

    @contextlib.contextmanager
    def claim(self, progress: Progress = NullProgress()) -> Iterator[None]:
        """Hold ``<key>.lock`` while this entry is read, or trained and saved: one process trains a key.

        While another live process holds it (it is training this teacher), wait and poll, then use what
        it saved. An entry that cannot be read (torn, NaN weights, damaged record) is moved aside, with
        a note, so that it is trained again instead of failing every later run.
        """
        make_folder(self.weights.parent, CACHE_HINT)
        lock = FileLock(self.lock)
        noted = False
        while (holder := lock.try_acquire(progress)) is not None:
            if not noted:
                gone = ("" if holder.on_this_host() or holder.host == "?"
                        else f"; it runs on another host: if it is gone, delete {self.lock}")
                progress.note(f"waiting for another process training this teacher ({holder.describe()}){gone}")
                noted = True
            time.sleep(_POLL_S)
        try:
            self._set_aside_if_unreadable(progress)
            yield
        finally:
            lock.release()

    def _set_aside_if_unreadable(self, progress: Progress) -> None:
        if not self.exists():
            return
        try:
            self.record()
            self._state()
        except EffrankError as err:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            for path in (self.info, self.weights):  # the record first: without it the entry is not there
                path.replace(path.with_name(f"{path.stem}.unreadable-{stamp}{path.suffix}"))
            progress.note(f"the cached teacher {self.weights.stem} is unreadable ({err}); moved it aside to "
                          f"*.unreadable-{stamp}.* and training it again")


@dataclass(frozen=True)
class Teacher:
    """A ready teacher on the run's device, its record (cost included), where its weights are on disk, and
    the SVD of its targeted layers that its students share (filled as they are factorized)."""

    model: nn.Module
    record: TeacherRecord
    weights: Path
    svd: TeacherSVD

    @classmethod
    def of(cls, setup: RunSetup, model: nn.Module, record: TeacherRecord, weights: Path) -> Teacher:
        """The run's teacher, its shared SVD kept as wide as the run's largest rank."""
        return cls(model=model, record=record, weights=weights, svd=TeacherSVD(max(setup.config.ranks)))


def obtain_teacher(setup: RunSetup, progress: Progress = NullProgress(), *, students: bool = True) -> Teacher:
    """The run's teacher: the run directory's own (of the same key), else the shared cache's, else obtained and
    trained; one loaded is refused where it was tested on other data than this run's (:class:`DataPrint`).

    A teacher trained here goes into the cache, so that every sweep with the same teacher key (any
    target, loss, rank or seed) reuses it; a run directory copied to another machine brings its own.
    ``students``: a sweep's students will distill from it, so one student step is checked before it trains
    (:func:`check_student_step`); ``spectrum`` measures the teacher alone, with no loss or ranks to check.
    """
    key = setup.teacher_key
    model = copy.deepcopy(setup.model)
    cached = CachedTeacher.at(key)
    kept = CachedTeacher(setup.run.teacher_weights, setup.run.teacher_info)
    with cached.claim(progress):  # another process training this key is waited for, not raced
        # The run directory's own first: its students distilled from it, and the cache's may have been trained
        # anew since (deleted, or refused for other data); a new directory takes the cache's.
        if kept.exists() and kept.record().key == key:
            source, record = kept, _same_data(kept, kept.load(model), setup)
            progress.note(f"teacher loaded from the run directory ({kept.weights})")
        elif cached.exists():
            source, record = cached, _same_data(cached, cached.load(model), setup)
            progress.note(f"teacher loaded from cache ({cached.weights})")
        else:
            if students:
                check_student_step(setup)  # what only a step shows, before hours of the teacher's training
            model, record = _train(setup, model, progress)
            source = cached
            cached.save(model, record)
    setup.to_device(model)
    return Teacher.of(setup, model, record.model_copy(update={"cost": setup.teacher_cost(model)}), source.weights)


#: The test items whose labels and mean values a teacher's record keeps (:class:`DataPrint`).
PRINT_ITEMS = 8


def data_print(setup: RunSetup) -> DataPrint:
    """The run's data as a teacher's record keeps it: its splits' sizes, its first test items' labels and means."""
    split = setup.splits.test
    first = [split[i] for i in range(min(PRINT_ITEMS, len(split)))]
    return DataPrint(items=len(split), train_items=len(setup.splits.train), labels=[int(y) for _, y in first],
                     means=[round(float(torch.as_tensor(x).float().mean()), 6) for x, _ in first])


def _same_data(source: CachedTeacher, record: TeacherRecord, setup: RunSetup) -> TeacherRecord:
    """``record``, if its teacher was evaluated on this run's test data (or its record predates keeping it)."""
    if record.evaluated_on is None or (problem := record.evaluated_on.differs_from(data_print(setup))) is None:
        return record
    way_out = ("this run directory's students distilled from it: give another --out"
               if source.weights == setup.run.teacher_weights else
               f"delete {source.weights} and {source.info} to train the teacher anew (run directories that used "
               "it keep their own copy)")
    raise CheckpointError(f"the teacher {source.weights} was trained and tested on other data under the name "
                          f"'{setup.config.dataset}' ({problem}): its key names a data set and its options, not "
                          f"its contents, and the data changed since; {way_out}")


def _train(setup: RunSetup, model: nn.Module, progress: Progress) -> tuple[nn.Module, TeacherRecord]:
    config, arch, source = setup.config, setup.parts.arch, "scratch"
    if config.pretrained:
        try:
            model = arch.build(setup.request.model_copy(update={"pretrained": True}))
        except EffrankError as err:  # weights the hub cannot give: the builder says to pass a file
            if config.teacher_checkpoint is None:
                raise
            raise CheckpointError(f"{err}; --teacher-checkpoint is given: with --no-pretrained the teacher starts "
                                  "from that file alone, without the hub (the flag overrides a suite's pretrained = "
                                  "true)") from err
        source = "pretrained"
    skipped: list[str] = []
    if config.pretrained and setup.request.num_classes != arch.num_classes:
        # The published head has the architecture's classes: the builder made a new one, not loaded.
        head = classifier_of(model)
        skipped = ([f"{head[0]}.{k}" if head[0] else k for k in head[1].state_dict()] if head is not None
                   else [f"classifier ({setup.request.num_classes} classes, not in the pretrained weights)"])
    if config.teacher_checkpoint is not None:
        state = load_state_dict(config.teacher_checkpoint)
        if arch.convert_checkpoint is not None:
            state = arch.convert_checkpoint(state)
        skipped = apply_checkpoint(model, state, config.teacher_checkpoint)
        source = f"checkpoint {config.teacher_checkpoint}"
    setup.to_device(model)
    recipe = Recipe(config.teacher_epochs, config.teacher_lr, config.teacher_weight_decay,
                    warmup_fraction=config.teacher_warmup, optimizer=config.teacher_optimizer,
                    label_smoothing=config.label_smoothing, amp=config.amp, schedule=config.teacher_schedule,
                    select=config.select)
    val, test = setup.batches(setup.splits.val), setup.batches(setup.splits.test)
    fit, samples = None, 0
    if config.teacher_epochs > 0:
        train = setup.training_batches(seed=config.teacher_seed, batch_size=config.teacher_batch_size)
        fit, samples = train_teacher(model, train, val, recipe, progress), config.teacher_epochs * train.samples
    (tested,) = evaluate_calibrated([model], test, config.amp)
    record = TeacherRecord(
        key=setup.teacher_key, source=source, skipped_keys=skipped, recipe=asdict(recipe),
        val_accuracy=evaluate(model, val, config.amp), test_accuracy=tested.accuracy, test_ece=tested.ece,
        test_nll=tested.nll,
        num_classes=setup.splits.num_classes, evaluated_on=data_print(setup),
        history=fit.history if fit else [], train_seconds=fit.seconds if fit else 0.0,
        samples_per_second=samples / fit.step_seconds if fit else None,
        environment=environment(str(setup.device)),
    )
    return model, record
