"""Test-wide setup and the helpers test modules share: offline model hubs, a private teacher cache,
the command line in this process, the tiny run recipe, hand-made run directories, scrambled models."""
import contextlib
import gc
import io
import os
from dataclasses import dataclass, field

# Set before anything imports huggingface_hub, which reads it once: tests never wait on a hub.
os.environ["HF_HUB_OFFLINE"] = "1"
# pytest runs in 2 processes (pytest-xdist, `-n 2` in pyproject), one per core: each computes on one
# thread, set before torch is imported, since two processes of two threads would fight over 2 cores.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"

import pytest  # noqa: E402


# The garbage collector: each worker's heap holds torch, timm, transformers, Ray, MLflow and more, and
# each full collection walks all of it (0.2-0.5 s). Measured per worker (gc.callbacks): full collections
# 4.4-6 s of a run, and 2-3 s more in pytest's five at exit. Modules loaded by collection are frozen
# (never garbage), full collections are rarer, and at exit one collection runs finalizers (pytest turns
# their errors into warnings) before everything is frozen: 3 s and 0 s instead.
def pytest_collection_finish(session):
    gc.freeze()
    gc.set_threshold(700, 10, 100)


def pytest_sessionfinish(session):
    gc.collect()
    gc.freeze()


# Test files that import a heavy optional library run in the same process, so that one process pays
# for the import: each of these costs one to three CPU-seconds (scikit-learn 2.0, Hugging Face datasets
# with pandas and pyarrow 1.5, MLflow with SQLAlchemy and alembic 3), and a suite's time on two cores is
# its CPU time over two. Every other file is a unit of its own, as `--dist loadfile` makes it.
SHARED_IMPORTS = {
    "test_splits.py": "scikit-learn", "test_digits_tokens.py": "scikit-learn",
    "test_text_data.py": "datasets", "test_real_data_runs.py": "datasets",
    "test_mlflow.py": "mlflow", "test_bad_input.py": "mlflow",  # a fuzzed --mlflow flag opens a store
}


# The files that take longest start first, the longest first, and the rest follow in file order: a run
# then ends on short files in both processes, not on one long file while the other process has finished.
# Ray's file waits on Ray's own processes (two workers importing torch, its daemons) for about 25 s of
# wall time; last, it ran alone at the end. In-process CPU seconds (2026-11-26): suite 10.5, compile 11.7,
# MLflow with its group 10.9, cli 8.4, engine 7.5, sweep 5.9, conformance 5.7.
RUN_FIRST = ("test_ray_executor.py", "test_compile.py", "test_mlflow.py", "test_suite.py", "test_cli.py",
             "test_engine.py", "test_sweep.py", "test_conformance.py")


def pytest_collection_modifyitems(items):
    first = {name: place for place, name in enumerate(RUN_FIRST)}
    items.sort(key=lambda item: first.get(item.path.name, len(first)))  # stable: file order otherwise


def pytest_xdist_make_scheduler(config, log):
    """--dist loadfile (pyproject's), with the files of ``SHARED_IMPORTS`` scheduled as one unit per
    library, in the order of collection (``RUN_FIRST``), not xdist's by number of tests; another --dist
    on the command line is left to xdist."""
    if config.getoption("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    config.option.loadscopereorder = False

    class SharedImportScheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            file = super()._split_scope(nodeid)
            return SHARED_IMPORTS.get(file.rpartition("/")[2], file)

    return SharedImportScheduling(config, log)


@pytest.fixture(scope="session", autouse=True)
def _private_teacher_cache(tmp_path_factory):
    """No test reads or fills the user's ~/.cache/effrank-bench; tests share one tmp cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EFFRANK_BENCH_CACHE", str(tmp_path_factory.mktemp("teacher-cache")))
        yield


# --- the command line ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def run_cli():
    """`effrank-bench ARGV` in this process: run_cli(*argv) -> (exit code, stdout, stderr).

    Arguments may be paths or numbers. Session-scoped, so module-scoped fixtures can run the CLI too;
    it captures what the command itself prints, nothing printed before it.
    """
    from effrank_bench.cli import main

    def run(*argv):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main([str(arg) for arg in argv])
        return code, out.getvalue(), err.getvalue()

    return run


@pytest.fixture(scope="session")
def measure_json(run_cli):
    """measure_json(arch, target, ranks) -> (teacher, students): `effrank-bench measure --json` on CPU with
    one timed repeat and no warm-up (these tests read parameters and MACs), exit code checked."""
    import json

    def measure(arch: str, target: str, ranks: str):
        code, out, err = run_cli("measure", "--arch", arch, "--target", target, "--ranks", ranks, "--json",
                                 "--repeats", "1", "--warmup", "0", "--device", "cpu")
        assert code == 0, err
        table = json.loads(out)
        return table["teacher"], table["students"]

    return measure


# --- the tiny run recipe -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recipe:
    """Run options as a library config, as ``run`` flags and as suite overrides, from one dict."""

    options: dict = field(default_factory=dict)

    def config(self, out, **changes):
        """A RunConfig of this recipe writing to ``out``; ``changes`` override or add options."""
        from effrank_bench.config import RunConfig

        return RunConfig(**{**self.options, **changes}, out=out)

    def args(self, **changes) -> list[str]:
        """The same as ``run`` flags; a change to None leaves that option to its default."""
        from effrank_bench.config import flag_args

        return [arg for name, value in {**self.options, **changes}.items() for arg in flag_args(name, value)]


# Budgets so small that a run checks what runs end to end and what it records, never how well it
# learns: one batch of 32 per epoch and per evaluation (--limit-batches 1), teacher and students
# alike, on any data set. One recipe means one teacher per architecture for the whole session (the
# shared teacher cache). No curve.png (--no-plot): a plot took as long as the rest of a tiny run; the
# tests of plots ask for one.
TINY = Recipe({"ranks": (2, 4), "epochs": 1, "teacher_epochs": 2, "batch_size": 32, "limit_batches": 1,
               "latency_repeats": 1, "spectrum_samples": 0, "plot": False, "device": "cpu"})


@pytest.fixture(scope="session")
def tiny() -> Recipe:
    """The tiny recipe: tiny.config(out, **changes), tiny.args(**changes), tiny.options."""
    return TINY


# --- a Progress to hand to runs --------------------------------------------------------------------------


class ProgressStub:
    """A Progress that keeps its notes and its tasks' labels, and can stand for a kill: KeyboardInterrupt as the task labelled
    ``interrupt_at`` starts, or once more than ``stop_after`` training steps are done (mid-epoch; the steps of
    the task that computes the teacher's SVD are layers, not counted)."""

    def __init__(self, *, interrupt_at: str | None = None, stop_after: int | None = None):
        self.notes: list[str] = []
        self.tasks: list[str] = []
        self.interrupt_at, self.stop_after, self.steps = interrupt_at, stop_after, 0

    @contextlib.contextmanager
    def task(self, description, total):
        self.tasks.append(description)
        if description == self.interrupt_at:
            raise KeyboardInterrupt

        def advance(n):
            if description.startswith("SVD of the teacher's"):
                return
            self.steps += n
            if self.stop_after is not None and self.steps > self.stop_after:
                raise KeyboardInterrupt

        yield advance

    def note(self, message):
        self.notes.append(message)


@pytest.fixture(scope="session")
def progress_stub():
    """progress_stub(interrupt_at=None, stop_after=None) -> a ProgressStub: notes kept, kills on demand."""
    return ProgressStub


# --- hand-made run directories -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def make_run():
    """make_run(path, points, ...) -> RunDir: a run directory written by hand, nothing trained."""
    return _make_run


def _make_run(path, points, *, teacher_accuracy=0.9, teacher_params=10_000, failed=(),
              params=lambda rank: 1000 + 100 * rank, width=None, **config):
    """A run directory holding a teacher and one ok record per (rank, seed, test accuracy) in ``points``.

    The teacher has ``teacher_params`` parameters, ``teacher_accuracy`` and two epochs of history; a
    student of rank r has ``params(r)`` parameters; MACs are 100 × parameters throughout. ``failed``
    adds a failed record per (rank, seed); ``width`` (the target's largest full rank) writes target.json.
    ``config`` holds further RunConfig options (arch, target and loss also name the records).
    """
    from effrank_bench.config import RunConfig
    from effrank_bench.records import Cost, TargetInfo, TeacherRecord, TrialRecord
    from effrank_bench.store import RunDir

    ranks = sorted({p[0] for p in points} | {f[0] for f in failed})
    seeds = sorted({p[1] for p in points} | {f[1] for f in failed})
    run = RunDir.open(path, RunConfig(ranks=ranks, seeds=seeds, **config))
    run.teacher_info.write_text(TeacherRecord(
        key="k", source="scratch", recipe={}, val_accuracy=teacher_accuracy, test_accuracy=teacher_accuracy,
        history=[{"epoch": 1, "loss": 2.0, "val_accuracy": 0.5}, {"epoch": 2, "loss": 1.0, "val_accuracy": 0.9}],
        train_seconds=3.0, environment={"device": "cpu"},
        cost=Cost(params=teacher_params, factorized_params=0, macs=100 * teacher_params, latency_ms=1.0,
                  peak_memory_mb=None)).model_dump_json())
    if width is not None:
        run.store_target(TargetInfo(target=config.get("target", "joint"), layers=8, max_rank=width))
    common = dict(arch=config.get("arch", "micro_vit"), target=config.get("target", "joint"),
                  loss=config.get("loss", "geometric"), dataset="digits", init="svd", environment={"device": "cpu"})
    for rank, seed, accuracy in points:
        run.append(TrialRecord(status="ok", rank=rank, seed=seed, val_accuracy=accuracy, test_accuracy=accuracy,
                               cost=Cost(params=params(rank), factorized_params=0, macs=100 * params(rank),
                                         latency_ms=0.5, peak_memory_mb=None), **common))
    for rank, seed in failed:
        run.append(TrialRecord(status="failed", rank=rank, seed=seed, error="loss became nan in epoch 1", **common))
    return run


# --- architectures and models with every weight counting ----------------------------------------------


@pytest.fixture(scope="session")
def architecture():
    """architecture(name) -> ArchitectureSpec, through the default registry (the plugins installed)."""
    from effrank_bench.registry import default_registry

    return default_registry().architecture


@pytest.fixture(scope="session")
def scrambled():
    """scrambled(build, seed=0): the model ``build()`` returns, seeded, every parameter perturbed, in eval mode.

    timm zero-initialises some layers (the last BatchNorm of each residual branch, a Mixer's head) and
    nearly zeroes others, which would hide a layer's contribution; the noise makes every number count.
    """
    import torch

    def build_scrambled(build, seed=0):
        torch.manual_seed(seed)
        model = build()
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.1 * torch.randn_like(p))
        return model.eval()

    return build_scrambled


@pytest.fixture(scope="session")
def block_io():
    """block_io(model, blocks, branches, x) -> (each block's (input, output), the branch features): one
    forward of ``x`` with the blocks hooked and the branches tapped, as the branch tests compare them."""
    import torch

    from effrank_bench.taps import BranchTap

    def run(model, blocks, branches, x):
        seen = []
        handles = [block.register_forward_hook(lambda m, args, out: seen.append((args[0], out.clone())))
                   for block in blocks]
        tap = BranchTap(branches)
        try:
            with torch.no_grad():
                features = tap.forward(model, x).features
        finally:
            for handle in handles:
                handle.remove()
            tap.close()
        return seen, features

    return run
