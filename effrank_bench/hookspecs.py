"""The plugin contract: each hook receives a ``register`` callback and calls it once per spec."""
from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("effrank_bench")


@hookspec
def register_architectures(register):
    """Call ``register(ArchitectureSpec(...))`` for each architecture you provide.

    Runs once, the first time the registry is used in a process.
    """


@hookspec
def register_targets(register):
    """Call ``register(TargetSpec(...))`` for each factorization target name you provide.

    A target is only a name and a description; each architecture says what it means for it.
    """


@hookspec
def register_losses(register):
    """Call ``register(LossSpec(...))`` for each distillation loss you provide."""


@hookspec
def register_datasets(register):
    """Call ``register(DatasetSpec(...))`` for each data set you provide."""


@hookspec
def register_executors(register):
    """Call ``register(ExecutorSpec(...))`` for each way of running a sweep's trials you provide.

    A run picks one by name (``--executor``, default ``local``); the others stay out of its way.
    """
