"""The local executor: a run's trials one after another, in this process."""
from __future__ import annotations

from effrank_bench import hookimpl
from effrank_bench.specs import ExecutorSpec
from effrank_bench.sweep import Execution
from effrank_bench.trial import run_trial


def run_locally(execution: Execution) -> None:
    for trial in execution.trials:
        execution.record(run_trial(execution.setup, execution.teacher, trial, execution.progress))


@hookimpl
def register_executors(register):
    register(ExecutorSpec(name="local", execute=run_locally,
                          description="trials one after another in this process (the default)"))
