"""Mid-trial checkpoints: a group's unfinished models, optimizers, schedules and random state, every few epochs."""
from __future__ import annotations

import contextlib
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from effrank_bench.errors import CheckpointError, one_line
from effrank_bench.records import Trial

# Without --checkpoint-every, a checkpoint is written at the first epoch boundary after this much work.
DEFAULT_INTERVAL_SECONDS = 600.0


@dataclass
class ModelState:
    """One model of a fit, between two epochs: weights, optimizer, schedule, curve and selected weights."""

    weights: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    history: list[dict]
    best_accuracy: float | None
    best_weights: dict[str, torch.Tensor] | None


@dataclass
class FitState:
    """A fit after ``epoch`` epochs: every model still training (by its index) and the random streams.

    ``seconds`` and ``step_seconds``: the fit's time so far and that of its training steps; ``batches``: its
    batches per epoch (None in a checkpoint written before they were kept); ``failed``: the models that left
    the fit with a loss not finite, by index, with the reason (none in a checkpoint written before they were
    kept, whose failures were recorded as they happened)."""

    epoch: int
    step_seconds: float
    rng: dict[str, torch.Tensor]
    models: dict[int, ModelState] = field(default_factory=dict)
    seconds: float = 0.0
    batches: int | None = None
    failed: dict[int, str] = field(default_factory=dict)


class CheckpointNotWritten(Exception):
    """A checkpoint could not be written (a full disk, say): the previous one, if any, is still whole, and the
    training it would have saved goes on. A second failure in a row is a CheckpointError instead: a disk that
    stays full would fail the records too, after all the group's training."""


def _tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in state.items()}


#: The folders a save keeps beside a checkpoint while it runs: the new one being written, the previous one.
_BESIDE = (".tmp", ".old")


class Checkpoints:
    """The checkpoint of one group of trials in ``folder``, written every ``every`` epochs.

    ``every`` None: at the first epoch boundary after :data:`DEFAULT_INTERVAL_SECONDS` of work.
    Weights go to safetensors, the rest (optimizer and schedule state, curves, random state) to a
    ``torch.save`` file read back with ``weights_only=True``. A new checkpoint is written beside the
    old one and swapped in, so a kill while saving leaves the previous one whole.
    """

    def __init__(self, folder: Path, trials: tuple[Trial, ...], every: int | None = None):
        self.folder, self.trials, self.every = Path(folder), trials, every
        self._last_save = time.perf_counter()
        self._failed = False  # the last save failed

    @staticmethod
    def name(trials: tuple[Trial, ...]) -> str:
        first = trials[0]
        members = "_".join(f"r{t.rank}s{t.seed}" for t in trials)
        return f"{first.target}-{first.loss}-{members}"

    def due(self, epoch: int, epochs: int) -> bool:
        if epoch >= epochs:
            return False  # the fit is over: its records are about to be written
        if self.every is not None:
            return epoch % self.every == 0
        return time.perf_counter() - self._last_save >= DEFAULT_INTERVAL_SECONDS

    def save(self, state: FitState) -> None:
        """Write ``state`` beside the previous checkpoint and swap it in; CheckpointNotWritten where the file
        system refuses (the half-written one is removed, the previous one kept), CheckpointError where it
        refused the last one too."""
        self._last_save = time.perf_counter()  # a failed save is tried again after another interval, not at once
        tmp = self.folder.with_name(self.folder.name + ".tmp")
        try:
            self._write(state, tmp)
        except (OSError, RuntimeError, SafetensorError) as err:  # torch.save reports a full disk as RuntimeError
            shutil.rmtree(tmp, ignore_errors=True)
            kept = "its previous checkpoint" if (self.folder / "state.pt").is_file() else "the start"
            if self._failed:
                raise CheckpointError(f"two checkpoints in a row were not written, the last after epoch {state.epoch} "
                                      f"({one_line(err)}): make room on the disk of {self.folder.parent} and run "
                                      f"the same command again; it resumes from {kept}") from None
            self._failed = True
            raise CheckpointNotWritten(f"the checkpoint after epoch {state.epoch} was not written ({one_line(err)}); "
                                       f"training goes on, and a kill before the next one resumes from {kept}") \
                from None
        self._failed = False
        old = self.folder.with_name(self.folder.name + ".old")
        # A kill while the last save removed .old left some of it: the checkpoint in use is whole.
        shutil.rmtree(old, ignore_errors=True)
        if self.folder.exists():
            self.folder.replace(old)
        tmp.replace(self.folder)  # a kill before this leaves the previous checkpoint as .old: load() takes it
        shutil.rmtree(old, ignore_errors=True)

    def _write(self, state: FitState, tmp: Path) -> None:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        rest: dict[str, Any] = {"epoch": state.epoch, "step_seconds": state.step_seconds, "rng": state.rng,
                                "seconds": state.seconds, "batches": state.batches, "failed": state.failed,
                                "models": {}}
        for i, model in state.models.items():
            save_file(_tensors(model.weights), tmp / f"model-{i}.safetensors")
            if model.best_weights is not None:
                save_file(_tensors(model.best_weights), tmp / f"best-{i}.safetensors")
            rest["models"][i] = {"optimizer": model.optimizer, "scheduler": model.scheduler,
                                 "history": model.history, "best_accuracy": model.best_accuracy,
                                 "has_best": model.best_weights is not None}
        torch.save(rest, tmp / "state.pt")
        (tmp / "trials.json").write_text(json.dumps([list(vars(t).values()) for t in self.trials]))

    def load(self) -> FitState | None:
        """The saved state, or None when there is none; a damaged checkpoint is an error naming it.

        A save killed between its two renames left the previous checkpoint, whole, as ``.old``: it is
        put back and loaded."""
        old = self.folder.with_name(self.folder.name + ".old")
        if not (self.folder / "state.pt").is_file() and (old / "state.pt").is_file():
            shutil.rmtree(self.folder, ignore_errors=True)
            old.replace(self.folder)
        if not (self.folder / "state.pt").is_file():
            return None
        try:
            rest = torch.load(self.folder / "state.pt", map_location="cpu", weights_only=True)
            models = {}
            for i, m in rest["models"].items():
                best = load_file(self.folder / f"best-{i}.safetensors") if m["has_best"] else None
                models[int(i)] = ModelState(load_file(self.folder / f"model-{i}.safetensors"), m["optimizer"],
                                            m["scheduler"], m["history"], m["best_accuracy"], best)
        except Exception as err:  # noqa: BLE001 - whatever is unreadable, the remedy is the same
            raise CheckpointError(f"cannot read the checkpoint {self.folder} ({one_line(err)}); delete that "
                                  "folder to restart its trials from the beginning") from None
        return FitState(epoch=rest["epoch"], step_seconds=rest["step_seconds"], rng=rest["rng"], models=models,
                        seconds=rest.get("seconds", rest["step_seconds"]), batches=rest.get("batches"),
                        failed={int(i): reason for i, reason in rest.get("failed", {}).items()})

    def clear(self) -> None:
        for folder in (self.folder, *(self.folder.with_name(self.folder.name + end) for end in _BESIDE)):
            shutil.rmtree(folder, ignore_errors=True)  # with what a killed save left beside it
        with contextlib.suppress(OSError):  # the last group's: no empty checkpoints/ is left behind
            self.folder.parent.rmdir()


def saved_groups(folder: Path) -> list[tuple[Trial, ...]]:
    """The groups of trials that have a checkpoint under ``folder``, each in its training order."""
    if not folder.is_dir():
        return []
    # A save killed while it ran left the previous checkpoint as .old (load() takes it back) and the new one as
    # .tmp (never loaded): one group each, the .tmp's not counted.
    kept = {path.parent.name.removesuffix(".old"): path for path in sorted(folder.glob("*/trials.json"))
            if not path.parent.name.endswith(".tmp")}
    return [tuple(Trial(target, loss, int(rank), int(seed)) for target, loss, rank, seed in
                  json.loads(path.read_text())) for _, path in sorted(kept.items())]
