"""Resolve and check a run's config once, into the frozen setup that its teacher and trials read."""
from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from effrank_bench.config import RunConfig
from effrank_bench.data import Batches, default_workers, example_input
from effrank_bench.data_contract import checked_splits
from effrank_bench.environment import resolve_device
from effrank_bench.errors import ConfigError, EffrankError, RegistrationError, a_type, one_line
from effrank_bench.factorize import QKV, check_rank, max_rank, resolve_sites
from effrank_bench.measure import StudentMacs, measure, profile_macs
from effrank_bench.registry import Registry, default_registry
from effrank_bench.specs import (ArchitectureSpec, DataRequest, DatasetSpec, DataSplits, ExecutorSpec, LossSpec,
                                  ModelRequest, Site)
from effrank_bench.records import Cost, TargetInfo, TeacherRecord
from effrank_bench.store import RunDir, check_out_dir


@dataclass(frozen=True)
class Components:
    """The registered specs a config names."""

    arch: ArchitectureSpec
    loss: LossSpec
    dataset: DatasetSpec
    executor: ExecutorSpec


def resolve_architecture(registry: Registry, name: str, target: str) -> ArchitectureSpec:
    """The architecture called ``name``, checked to have ``target``."""
    arch = registry.architecture(name)
    registry.target(target)
    arch.require_target(target)
    return arch


def resolve_components(config: RunConfig, registry: Registry) -> Components:
    """Look up every name of ``config`` and check that they fit together, before anything loads."""
    arch = resolve_architecture(registry, config.arch, config.target)
    dataset = registry.dataset(config.dataset)
    dataset.check_architecture(arch, [name for name in registry.names("dataset")
                                      if registry.dataset(name).modality == arch.modality])
    if config.tokenizer is not None and not dataset.reads_tokenizer:
        # It keys the teacher: taken silently, it would train another teacher for nothing.
        what = "images, which are not tokenized" if dataset.modality == "image" else "tokens already"
        raise ConfigError(f"--tokenizer {config.tokenizer}: data set '{config.dataset}' gives {what}; leave "
                          "--tokenizer out")
    return Components(arch=arch, loss=registry.loss(config.loss), dataset=dataset,
                      executor=registry.executor(config.executor))


def data_request(config: RunConfig, arch: ArchitectureSpec) -> DataRequest:
    """What a run asks of its data set: where it is, the architecture's input size, tokenizer and preprocessing."""
    return DataRequest(root=config.data_root, download=config.download, input_size=arch.input_size,
                       tokenizer=config.tokenizer or arch.tokenizer, augment=config.augment,
                       preprocess=arch.preprocess, val_fraction=config.val_fraction)


class SuiteCache:
    """What a suite's runs share in one process: data sets loaded once per request, and each model's
    cost measured once (the runs of one teacher, target and rank under several losses build the same
    student; the runs of one teacher, the same teacher)."""

    def __init__(self) -> None:
        self._made: dict[tuple, Any] = {}

    def load(self, dataset: DatasetSpec, request: DataRequest) -> DataSplits:
        return self._once(("data", dataset.name, request), lambda: checked_splits(dataset, dataset.load(request)))

    def cost(self, key: tuple, measure: Callable[[], Cost]) -> Cost:
        return self._once(("cost", *key), measure)

    def student_macs(self, key: tuple, make: Callable[[], StudentMacs]) -> StudentMacs:
        return self._once(("macs", *key), make)

    def _once(self, key: tuple, make: Callable[[], Any]) -> Any:
        if key not in self._made:
            self._made[key] = make()
        return self._made[key]


@dataclass(frozen=True)
class RunSetup:
    """Everything a run's teacher and trials share, resolved and checked once.

    ``model`` is the untrained model, built under the teacher's seed: the teacher starts from a
    copy of it. ``run`` is the run directory, checked to be resumable by this config but not
    created yet: nothing is written before the run starts. ``shared``: what it shares with the
    other runs of its suite (a run alone has one of its own).
    """

    config: RunConfig
    parts: Components
    device: torch.device
    splits: DataSplits
    request: ModelRequest
    workers: int
    channels_last: bool
    model: nn.Module
    sites: tuple[Site, ...]
    run: RunDir
    shared: SuiteCache

    @cached_property
    def teacher_key(self) -> str:
        """The teacher's cache key: the config's teacher fields and the inputs its architecture expects.

        Computed once: with a --teacher-checkpoint it hashes that file, and every measured cost is keyed by it.
        """
        preprocess = self.parts.arch.preprocess
        return self.config.teacher_key(preprocess.model_dump(mode="json") if preprocess else None)

    @property
    def max_rank(self) -> int:
        """The target's width: the largest full rank among its layers."""
        return max_rank(self.model, self.sites, self.config.qkv)

    def target_info(self) -> TargetInfo:
        """What the target factorizes in this model, as ``target.json`` stores it."""
        c = self.config
        return TargetInfo(target=c.target, qkv=c.qkv, layers=len(self.sites), max_rank=self.max_rank)

    @property
    def compile(self) -> bool:
        """Whether students train through torch.compile: as asked, else on CUDA only (where it was measured faster)."""
        return self.config.compile if self.config.compile is not None else self.device.type == "cuda"

    def batches(self, dataset: Dataset, *, shuffle: bool = False, seed: int = 0, batch_size: int | None = None,
                drop_last: bool = False) -> Batches:
        """``dataset`` in batches of ``batch_size`` (default: the config's batch_size)."""
        return Batches(dataset, batch_size=batch_size or self.config.batch_size, modality=self.splits.modality,
                       input_size=self.request.input_size, device=self.device, shuffle=shuffle, seed=seed,
                       workers=self.workers, channels_last=self.channels_last, preprocess=self.parts.arch.preprocess,
                       drop_last=drop_last, limit=self.config.limit_batches)

    def training_batches(self, *, seed: int, batch_size: int | None = None, drop_last: bool = False) -> Batches:
        """The training split shuffled by ``seed``, less a last batch of one sample: batch norm cannot train on
        a single sample (it needs two values per channel: micro_convnet stopped with a traceback at
        ``--batch-size 8`` on digits, whose 1,257 training images leave one over), and one sample makes a step of
        noise. A last batch of two or more is kept (``drop_last``: every partial batch dropped)."""
        size = batch_size or self.config.batch_size
        examples = len(self.splits.train)
        single = examples > size and examples % size == 1
        return self.batches(self.splits.train, shuffle=True, seed=seed, batch_size=size, drop_last=drop_last or single)

    def to_device(self, model: nn.Module) -> nn.Module:
        model.to(self.device)
        # Convolutions run faster on CUDA in channels-last layout (tensor cores); on CPU it only costs copies.
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def teacher_cost(self, model: nn.Module) -> Cost:
        """The teacher's cost; measured once for all runs of a suite that share this teacher."""
        return self.shared.cost(self._cost_key(), lambda: self._measure(model, macs=self.student_macs().profile.total))

    def keep_teacher_cost(self, record: TeacherRecord) -> None:
        """A run's recorded teacher cost, for the runs of its suite that share the teacher and measure it in
        this process: one teacher, one latency, across a suite resumed with some of its runs finished (a cost
        measured on another device is left to itself)."""
        if record.cost is not None and record.environment.get("device") == str(self.device):
            self.shared.cost(self._cost_key(), lambda: record.cost)

    def student_cost(self, model: nn.Module, rank: int, replaced: Mapping[str, nn.Module]) -> Cost:
        """A student's cost (``replaced``: its low-rank layers by path, as factorize returns them); measured once
        for all runs of a suite that build this student (its teacher, target, rank and factorization). Its
        MACs are the teacher's with those layers' swapped (:class:`StudentMacs`), not counted over its whole
        forward again."""
        c = self.config
        return self.shared.cost(self._cost_key() + (c.target, c.qkv, c.init, rank), lambda: self._measure(
            model, replaced.values(), macs=self.student_macs()(model, replaced)))

    def student_macs(self) -> StudentMacs:
        """The students' MACs from the teacher's profile: its forward on one example and each layer its target
        factorizes, counted once per suite for a teacher, device, target and split on a copy of the untrained
        model (the same computation) on the run's device, from an example of its own (the global random state
        left as it was)."""
        c = self.config

        def make() -> StudentMacs:
            model = self.to_device(copy.deepcopy(self.model))
            layers = [site.path for site, _ in resolve_sites(model, self.sites, c.qkv)]
            example = example_input(self.request, self.splits.modality, 1, self.device,
                                    generator=torch.Generator(self.device).manual_seed(0))
            return StudentMacs(profile_macs(model, example, layers), example)

        return self.shared.student_macs((self.teacher_key, str(self.device), c.target, c.qkv), make)

    def _cost_key(self) -> tuple:
        c = self.config
        return (self.teacher_key, str(self.device), c.latency_batch_size, c.latency_repeats)

    def _measure(self, model: nn.Module, factorized: Iterable[nn.Module] = (), macs: int | None = None) -> Cost:
        example = example_input(self.request, self.splits.modality, self.config.latency_batch_size, self.device)
        if self.channels_last:  # timed in the layout the model computes in, as training feeds it
            example = example.contiguous(memory_format=torch.channels_last)
        return measure(model, example, factorized=factorized, repeats=self.config.latency_repeats, macs=macs)


def module_mismatch(built: Any) -> str | None:
    """What is wrong with what an architecture's ``build`` returned (None: a torch.nn.Module)."""
    return None if isinstance(built, nn.Module) else f"build returned {a_type(built)}, not a torch.nn.Module"


def logits_mismatch(model: nn.Module, x: torch.Tensor, num_classes: int) -> str | None:
    """What is wrong with ``model``'s logits for the batch ``x`` (None: one row per example, one logit per
    class). Computed in eval mode without gradients: nothing drawn from the random state, no statistics
    updated; the model is left in the mode it was in."""
    training = model.training
    try:
        with torch.no_grad():
            logits = model.eval()(x)
    finally:
        model.train(training)
    if isinstance(logits, torch.Tensor) and tuple(logits.shape) == (len(x), num_classes):
        return None
    got = f"shape {tuple(logits.shape)}" if isinstance(logits, torch.Tensor) else a_type(logits)
    return (f"a model built for {num_classes} classes gives {got} for a batch of {len(x)}; "
            f"expected logits of shape ({len(x)}, {num_classes})")


def _check_logits(arch: ArchitectureSpec, model: nn.Module, request: ModelRequest) -> None:
    """An example through the untrained model: one logit per class of the data set, else refused naming the
    architecture (a head of another width would train and report accuracies over classes there are not).
    The example is drawn on the CPU from a generator of its own, then moved where the model is."""
    tensors = itertools.chain(model.parameters(), model.buffers())
    device = next((t.device for t in tensors), torch.device("cpu"))
    x = example_input(request, arch.modality, 1, torch.device("cpu"), torch.Generator().manual_seed(0)).to(device)
    try:
        problem = logits_mismatch(model, x, request.num_classes)
    except Exception as err:  # the plugin's model failed on input of the shape it was built for
        raise RegistrationError(f"architecture '{arch.name}': its model failed on a batch of shape "
                                f"{tuple(x.shape)}: {one_line(err)}") from err
    if problem:
        raise RegistrationError(f"architecture '{arch.name}': {problem}")


def build_checked(arch: ArchitectureSpec, request: ModelRequest, target: str, ranks: Iterable[int],
                  qkv: QKV) -> tuple[nn.Module, list[Site]]:
    """The untrained model, its logits checked (one forward of one example: 0.07–0.2 s on 2 CPU cores for the
    paper-size models, less than building them), and its target's sites, every rank checked against them.

    Built untrained first: a rank no layer can take is refused before any time goes into a teacher.
    """
    try:
        model = arch.build(request)
    except EffrankError:  # a builder's own: weights that cannot be fetched, a checkpoint that does not fit
        raise
    except Exception as err:  # noqa: BLE001 - whatever a plugin's build raises
        raise RegistrationError(f"architecture '{arch.name}': build failed for {request!r}: {one_line(err)}") from err
    problem = module_mismatch(model)
    if problem:
        raise RegistrationError(f"architecture '{arch.name}': {problem}")
    _check_logits(arch, model, request)  # first: the target's functions may assume a model that works
    sites = arch.sites(model, target)
    try:
        largest = max_rank(model, sites, qkv)  # every site resolved to its layer
    except RegistrationError as err:  # a path the plugin got wrong: say whose it is
        raise RegistrationError(f"target '{target}' of architecture '{arch.name}': {err}") from None
    for rank in ranks:
        check_rank(rank, largest, arch.name)
    return model, sites


def prepare(config: RunConfig, registry: Registry | None = None, shared: SuiteCache | None = None, *,
            sweep: bool = True) -> RunSetup:
    """Resolve ``config`` into a :class:`RunSetup`: names, data, device, model and ranks, run directory.

    Every check a run needs happens here, before any training: unknown names, a data set of the
    wrong kind or missing, a rank no targeted layer can take, a run directory that holds another sweep.
    ``sweep=False``: only the teacher is wanted (``spectrum``), so ranks and run directory go unchecked.
    """
    parts = resolve_components(config, registry or default_registry())
    out = config.out or config.default_out()
    check_out_dir(out)
    run = RunDir(out)
    if sweep:
        run.check_resumable(config)
    device = torch.device(resolve_device(config.device))
    shared = shared or SuiteCache()
    splits = shared.load(parts.dataset, data_request(config, parts.arch))
    request = splits.model_request(parts.arch)
    torch.manual_seed(config.teacher_seed)  # the teacher trained from scratch starts from this init
    model, sites = build_checked(parts.arch, request, config.target, config.ranks if sweep else (), config.qkv)
    workers = config.workers if config.workers is not None else default_workers(device, splits.train)
    return RunSetup(config=config, parts=parts, device=device, splits=splits, request=request, workers=workers,
                    channels_last=device.type == "cuda" and splits.modality == "image", model=model,
                    sites=tuple(sites), run=run, shared=shared)
