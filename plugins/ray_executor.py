"""The ray executor: a sweep's units of work as Ray tasks, across the GPUs of one machine or a cluster."""
from __future__ import annotations

import contextlib
import copy
import functools
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from effrank_bench import hookimpl
from effrank_bench.checkpoint import saved_groups
from effrank_bench.config import EXECUTOR_OPTIONS, RunConfig
from effrank_bench.errors import ConfigError, EffrankError, one_line, shown
from effrank_bench.grouping import group_size
from effrank_bench.network import check_answers
from effrank_bench.progress import Progress
from effrank_bench.records import TeacherRecord, Trial, TrialRecord
from effrank_bench.setup import RunSetup, prepare
from effrank_bench.specs import ExecutorSpec
from effrank_bench.teacher import Teacher, obtain_teacher
from effrank_bench.trial import run_group
from effrank_bench_plugins.executors import layout, regrouped

if TYPE_CHECKING:  # the sweep imports the rank search and scipy, which a cluster's workers never use
    from effrank_bench.sweep import Execution

# Test-only: a file path. The first unit of work that finds no file there creates it and kills its own
# worker process, so that the retry of a unit whose worker died is exercised. Read by the driver and
# handed to each unit: a test sets it after its Ray (and so the workers' environment) has started.
DIE_ONCE = "EFFRANK_BENCH_RAY_DIE_ONCE"


def connect(config: RunConfig) -> Any:
    """The ``ray`` module, joined to the run's cluster (or a Ray started on this machine) once per process.

    A Ray this process is already connected to (a test's, a notebook's) is used as it is. Quiet: no
    dashboard, and workers' output stays in Ray's log files instead of crossing the progress bars.
    """
    try:
        import ray
    except ImportError:
        raise ConfigError("--executor ray needs Ray: pip install -e '.[ray]'") from None
    if not ray.is_initialized():
        if config.ray_address is not None:
            check_reachable(config.ray_address)
        try:
            ray.init(address=config.ray_address, include_dashboard=False, log_to_driver=False,
                     logging_level=logging.ERROR)
        except ConnectionError as err:
            raise ConfigError(f"--ray-address {shown(config.ray_address)}: {one_line(err)}") from None
    return ray


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """A cluster address nothing answers at is refused now, in one line: Ray itself retries for minutes.

    ``auto`` and ``local`` are Ray's own lookups of a cluster on this machine, and fail fast by themselves.
    """
    if address in ("auto", "local"):
        return
    host, colon, port = address.removeprefix("ray://").rpartition(":")
    if not colon or not host or not port.isdigit():
        raise ConfigError(f"--ray-address {shown(address)}: expected auto, HOST:PORT or ray://HOST:PORT")
    check_answers(host, int(port), f"--ray-address {shown(address)}",
                  "start the cluster's head with `ray start --head`, or check the address", timeout)


@functools.cache
def _remote(ray: Any, function: Callable) -> Any:
    return ray.remote(function)  # defined once per process: Ray ships a remote function's code once


@functools.lru_cache(maxsize=1)
def _prepared(config: RunConfig) -> RunSetup:
    """The run, prepared in a worker; kept, as a worker runs one run's units one after another."""
    return prepare(config)


def _worker_setup(config: RunConfig, cwd: str) -> RunSetup:
    # Relative paths of the config (--out, --data-root) mean on a worker what they mean to the driver,
    # on every node that has the driver's working directory (one machine, or a shared file system).
    if os.path.isdir(cwd):
        os.chdir(cwd)
    return _prepared(config)


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def _loaded(setup: RunSetup, state: dict[str, torch.Tensor]) -> nn.Module:
    model = copy.deepcopy(setup.model)
    model.load_state_dict(state)
    return setup.to_device(model)


def _teacher_task(config: RunConfig, cwd: str) -> tuple[dict[str, torch.Tensor], TeacherRecord, str]:
    """A run's teacher, obtained on a worker as the local executor obtains it (cache, run directory, else
    trained into the shared cache) and measured there, on the device its students train on."""
    teacher = obtain_teacher(_worker_setup(config, cwd))
    return _cpu_state(teacher.model), teacher.record, str(teacher.weights)


def _unit_task(config: RunConfig, cwd: str, weights: dict[str, torch.Tensor], record: TeacherRecord,
               unit: tuple[Trial, ...], die_once: str | None) -> list[TrialRecord]:
    """One unit of work on a worker: its students trained together, as the local executor trains a group."""
    if die_once is not None:
        _die_once(Path(die_once))
    setup = _worker_setup(config, cwd)
    teacher = Teacher.of(setup, _loaded(setup, weights), record, setup.run.teacher_weights)
    records: list[TrialRecord] = []
    run_group(setup, teacher, unit, records.append)
    return records


def _die_once(marker: Path) -> None:
    try:
        os.close(os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        return
    os._exit(1)


def _reserve(ray: Any, config: RunConfig) -> tuple[dict[str, Any], int]:
    """What one task reserves (retried when its worker or node dies, never for an error of its own), and
    how many such tasks the cluster runs at once: on each node, as many as fit its CPUs and GPUs.

    A task that fits no node would wait forever: it is refused instead.
    """
    gpus = config.gpus_per_trial
    if gpus is None:
        gpus = 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
    slots = 0
    for node in ray.nodes():
        if node["Alive"]:
            has = node["Resources"]
            fits = [has.get("CPU", 0) / config.cpus_per_trial] + ([has.get("GPU", 0) / gpus] if gpus else [])
            slots += int(min(fits))
    if slots == 0:
        raise ConfigError(f"no node of the Ray cluster has {config.cpus_per_trial:g} CPU(s) and {gpus:g} GPU(s) "
                          "for one unit of work; lower --cpus-per-trial or --gpus-per-trial")
    return dict(num_cpus=config.cpus_per_trial, num_gpus=gpus, max_retries=config.max_retries,
                retry_exceptions=False), slots


def _unit_size(execution: Execution, slots: int, gpus: float) -> int:
    """``--group N`` as given; ``auto``: the trials spread evenly over the cluster's slots (each seed's over
    its share of them: a unit holds one seed's trials), and on a driver with a GPU (like its workers'), no
    more than fit in a unit's share of one."""
    per_seed = Counter(trial.seed for trial in execution.trials)
    setup, share = execution.setup, -(-max(per_seed.values()) // max(1, slots // len(per_seed)))
    if 0 < gpus < 1:  # two or more units share a GPU: each fills its part of what --group auto may fill
        config = setup.config
        setup = replace(setup, config=config.model_copy(update={"memory_fraction": config.memory_fraction * gpus}))
    return group_size(setup, execution.teacher, share, max(trial.rank for trial in execution.trials))


def _get(ray: Any, ref: Any) -> Any:
    """A task's result; an error of ours raised on a worker comes back as itself, one line for the CLI."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as err:
        if isinstance(err.cause, EffrankError):
            raise err.cause from None
        raise


@contextlib.contextmanager
def _as_finished(ray: Any, refs: list[Any]) -> Iterator[Iterator[tuple[Any, Any]]]:
    """(ref, result) of each task as it finishes; tasks left when the caller stops (Ctrl-C, an error) are
    cancelled, their workers stopped."""
    left = list(refs)

    def finished() -> Iterator[tuple[Any, Any]]:
        while left:
            (ref,), _ = ray.wait(left, num_returns=1)
            left.remove(ref)
            yield ref, _get(ray, ref)

    try:
        yield finished()
    finally:
        for ref in left:
            ray.cancel(ref, force=True)


def obtain_on_ray(setups: Sequence[RunSetup], progress: Progress) -> list[Teacher]:
    """The runs' teachers, each from one task submitted at once: trained side by side where not yet cached.

    A driver without a GPU never trains one; workers get a teacher's weights from the driver, never
    train it again. Runs that share a teacher key wait for the one task training it (the cache's lock).
    """
    if not setups:
        return []
    ray = connect(setups[0].config)
    cwd = os.getcwd()
    refs = [_remote(ray, _teacher_task).options(**_reserve(ray, setup.config)[0]).remote(setup.config, cwd)
            for setup in setups]
    with _as_finished(ray, refs) as finished:
        results = dict(finished)
    teachers = []
    for setup, ref in zip(setups, refs):
        weights, record, path = results[ref]
        teachers.append(Teacher.of(setup, _loaded(setup, weights), record, Path(path)))
    return teachers


def run_on_ray(execution: Execution) -> None:
    """The trials in units of work laid out as the local executor lays out its groups, one Ray task each.

    The teacher's weights go into the object store once; each record is handed to ``execution.record``
    in this process as its unit finishes.
    """
    setup, progress = execution.setup, execution.progress
    ray = connect(setup.config)
    options, slots = _reserve(ray, setup.config)
    size = _unit_size(execution, slots, options["num_gpus"])
    saved = saved_groups(setup.run.checkpoints_path)
    units = layout(execution.trials, saved, size)
    resources = ray.cluster_resources()
    nodes = sum(node["Alive"] for node in ray.nodes())
    progress.note(f"ray: {nodes} node(s), {resources.get('CPU', 0):g} CPU(s), {resources.get('GPU', 0):g} GPU(s); "
                  f"{len(units)} unit(s) of up to {max(map(len, units))} trial(s), each on {options['num_cpus']:g} "
                  f"CPU(s) and {options['num_gpus']:g} GPU(s), {slots} at a time")
    regrouped(execution, units, saved, size)
    weights = ray.put(_cpu_state(execution.teacher.model))
    task = _remote(ray, _unit_task).options(**options)
    cwd, die_once = os.getcwd(), os.environ.get(DIE_ONCE)
    waiting = {task.remote(setup.config, cwd, weights, execution.teacher.record, unit, die_once): unit
               for unit in units}
    pending, total = set(execution.trials), len(execution.trials)
    with _as_finished(ray, list(waiting)) as finished:
        for ref, records in finished:
            del waiting[ref]
            for result in records:
                execution.record(result)
                pending.discard(result.trial)
            # Ray tells no task's state without its dashboard: the first units still out hold the slots.
            running = sum(len(unit) for unit in list(waiting.values())[:slots])
            progress.note(f"ray: {total - len(pending)} of {total} trial(s) finished, {running} running, "
                          f"{len(pending) - running} waiting")


@hookimpl
def register_executors(register):
    register(ExecutorSpec(name="ray", execute=run_on_ray, obtain_teachers=obtain_on_ray, options=EXECUTOR_OPTIONS,
                          description="Ray tasks across the GPUs of this machine or of a cluster "
                                      "(--ray-address); needs the ray extra"))
