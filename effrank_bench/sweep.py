"""The local executor: one config from data and teacher to a run directory of finished trials."""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import torch
from rich.markup import escape
from torch import nn

from effrank_bench.config import RunConfig
from effrank_bench.data import Batches, default_workers, example_input
from effrank_bench.environment import environment, resolve_device
from effrank_bench.errors import TrialFailed
from effrank_bench.factorize import check_rank, factorize, max_rank
from effrank_bench.measure import Cost, measure
from effrank_bench.plan import Trial, plan_trials
from effrank_bench.progress import NullProgress, Progress
from effrank_bench.registry import Registry, default_registry
from effrank_bench.specs import (ArchitectureSpec, DataRequest, DatasetSpec, DataSplits, LossSpec, ModelRequest,
                                  Site)
from effrank_bench.store import RunDir, TrialRecord
from effrank_bench.teacher import CachedTeacher, apply_checkpoint, load_state_dict
from effrank_bench.train import Recipe, distill, evaluate, train_teacher


@dataclass(frozen=True)
class Components:
    """The registered specs a config names, looked up and checked once."""

    arch: ArchitectureSpec
    loss: LossSpec
    dataset: DatasetSpec

    @classmethod
    def of(cls, config: RunConfig, registry: Registry) -> Components:
        arch = registry.architecture(config.arch)
        registry.target(config.target)
        arch.require_target(config.target)
        dataset = registry.dataset(config.dataset)
        dataset.check_architecture(arch)
        return cls(arch=arch, loss=registry.loss(config.loss), dataset=dataset)


def data_request(config: RunConfig, arch: ArchitectureSpec) -> DataRequest:
    """What a run asks of its data set: where it is, the architecture's input size and tokenizer."""
    return DataRequest(root=config.data_root, download=config.download, input_size=arch.input_size,
                       tokenizer=config.tokenizer or arch.tokenizer, augment=config.augment)


def build_checked(config: RunConfig, arch: ArchitectureSpec, request: ModelRequest) -> tuple[nn.Module, list[Site]]:
    """The untrained model and its target's sites, every rank of ``config`` checked against them.

    Built untrained first: a rank no layer can take is refused before any time goes into a teacher.
    """
    model = arch.build(request)
    sites = arch.sites(model, config.target)
    for rank in config.ranks:
        check_rank(model, sites, rank, config.qkv, config.arch)
    return model, sites


class DataCache:
    """Loaded data sets by request, so that a suite's runs on one data set load it once."""

    def __init__(self) -> None:
        self._loaded: dict[tuple[str, DataRequest], DataSplits] = {}

    def load(self, dataset: DatasetSpec, request: DataRequest) -> DataSplits:
        key = (dataset.name, request)
        if key not in self._loaded:
            self._loaded[key] = dataset.load(request)
        return self._loaded[key]


class Sweep:
    """Everything a sweep's trials share: data, device, teacher, its sites and the run directory."""

    def __init__(self, config: RunConfig, registry: Registry | None = None, progress: Progress = NullProgress(),
                 data: DataCache | None = None):
        self.config, self.progress = config, progress
        self.parts = Components.of(config, registry or default_registry())
        self.device = torch.device(resolve_device(config.device))
        self.splits: DataSplits = (data or DataCache()).load(self.parts.dataset, data_request(config, self.parts.arch))
        self.request = self.splits.model_request(self.parts.arch)
        self.workers = config.workers if config.workers is not None else default_workers(self.device, self.splits.train)
        # Convolutions run faster on CUDA in channels-last layout (tensor cores); on CPU it only costs copies.
        self.channels_last = self.device.type == "cuda" and self.splits.modality == "image"
        torch.manual_seed(config.teacher_seed)
        self.teacher, self.sites = build_checked(config, self.parts.arch, self.request)
        self.run = RunDir.open(config.out or config.default_out(), config)
        self.run.store_target({"target": config.target, "qkv": config.qkv, "layers": len(self.sites),
                               "max_rank": max_rank(self.teacher, self.sites, config.qkv)})
        self.val = self._batches(self.splits.val)
        self.test = self._batches(self.splits.test)

    def _batches(self, dataset, *, shuffle: bool = False, seed: int = 0) -> Batches:
        return Batches(dataset, batch_size=self.config.batch_size, modality=self.splits.modality,
                       input_size=self.request.input_size, device=self.device, shuffle=shuffle, seed=seed,
                       workers=self.workers, channels_last=self.channels_last)

    def _to_device(self, model: nn.Module) -> nn.Module:
        model.to(self.device)
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def _teacher_recipe(self) -> Recipe:
        c = self.config
        return Recipe(c.teacher_epochs, c.teacher_lr, c.teacher_weight_decay, warmup_fraction=c.teacher_warmup,
                      optimizer=c.teacher_optimizer, label_smoothing=c.label_smoothing, amp=c.amp)

    def _cost(self, model: nn.Module, factorized=()) -> Cost:
        example = example_input(self.request, self.splits.modality, self.config.latency_batch_size, self.device)
        if self.channels_last:  # timed in the layout the model computes in, as training feeds it
            example = example.contiguous(memory_format=torch.channels_last)
        return measure(model, example, factorized=factorized, repeats=self.config.latency_repeats)

    def prepare_teacher(self) -> dict:
        """Load the teacher from the cache, or obtain and train it and cache it; returns its record."""
        config = self.config
        cached = CachedTeacher.at(config.teacher_key())
        if cached.exists():
            info = cached.load(self.teacher)
            self._to_device(self.teacher)
            self.progress.note(f"teacher loaded from cache ({cached.weights})")
        else:
            info = self._train_teacher()
            cached.save(self.teacher, info)
        info["cost"] = self._cost(self.teacher).to_dict()
        self.run.store_teacher(cached.weights, info)
        return info

    def _train_teacher(self) -> dict:
        config, source = self.config, "scratch"
        if config.pretrained:
            self.teacher = self.parts.arch.build(self.request.model_copy(update={"pretrained": True}))
            source = "pretrained"
        skipped: list[str] = []
        if config.teacher_checkpoint is not None:
            state = load_state_dict(config.teacher_checkpoint)
            skipped = apply_checkpoint(self.teacher, state, config.teacher_checkpoint)
            source = f"checkpoint {config.teacher_checkpoint}"
        self._to_device(self.teacher)
        history, seconds, step_seconds, samples = [], 0.0, 0.0, 0
        recipe = self._teacher_recipe()
        if config.teacher_epochs > 0:
            train = self._batches(self.splits.train, shuffle=True, seed=config.teacher_seed)
            fit = train_teacher(self.teacher, train, self.val, recipe, self.progress)
            history, seconds, step_seconds = fit.history, fit.seconds, fit.step_seconds
            samples = config.teacher_epochs * len(self.splits.train)
        return {
            "key": config.teacher_key(), "source": source, "skipped_keys": skipped,
            "recipe": asdict(recipe),
            "val_accuracy": evaluate(self.teacher, self.val, config.amp),
            "test_accuracy": evaluate(self.teacher, self.test, config.amp),
            "history": history, "train_seconds": seconds,
            "samples_per_second": samples / step_seconds if samples else None,
            "environment": environment(str(self.device)),
        }

    def run_trial(self, trial: Trial) -> TrialRecord:
        config = self.config
        common = dict(arch=config.arch, target=trial.target, loss=trial.loss, dataset=config.dataset,
                      rank=trial.rank, seed=trial.seed, environment=environment(str(self.device)))
        torch.manual_seed(trial.seed * 100_003 + trial.rank)
        student = copy.deepcopy(self.teacher)
        replaced = factorize(student, self.sites, trial.rank, init=config.init, qkv=config.qkv)
        self._to_device(student)
        train = self._batches(self.splits.train, shuffle=True, seed=trial.seed * 100_003 + trial.rank)
        try:
            fit = distill(self.teacher, student, self.parts.arch.branches, train, self.val, self.parts.loss,
                          config.loss_options, Recipe(config.epochs, config.lr, config.weight_decay, amp=config.amp),
                          label=trial.label(len(config.seeds)), progress=self.progress)
        except TrialFailed as err:
            return TrialRecord(status="failed", error=str(err), **common)
        return TrialRecord(
            status="ok", val_accuracy=fit.val_accuracy, test_accuracy=evaluate(student, self.test, config.amp),
            history=fit.history, train_seconds=fit.seconds,
            samples_per_second=config.epochs * len(self.splits.train) / fit.step_seconds,
            cost=self._cost(student, replaced.values()).to_dict(), **common,
        )

    def execute(self) -> RunDir:
        """Run every trial not yet recorded, appending each record as soon as it finishes."""
        teacher = self.prepare_teacher()
        self.progress.note(f"teacher: test accuracy {teacher['test_accuracy']:.4f} ({teacher['source']})")
        done = {record.key for record in self.run.records()}
        trials = plan_trials(self.config, done)
        if done:
            self.progress.note(f"resuming {self.run.path}: {len(done)} trial(s) already recorded")
        with self.progress.task("sweep", total=len(trials)) as advance:
            for trial in trials:
                record = self.run_trial(trial)
                self.run.append(record)
                if record.status == "failed":
                    self.progress.note(f"[red]{trial.label(len(self.config.seeds))} failed: {escape(record.error)}")
                advance(1)
        return self.run


def run_sweep(config: RunConfig, registry: Registry | None = None, progress: Progress = NullProgress()) -> RunDir:
    return Sweep(config, registry, progress).execute()
