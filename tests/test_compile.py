"""--compile: students and teacher through torch.compile give the eager records; a compiler failure falls back."""
from __future__ import annotations

import pytest
import torch

import effrank_bench.train as train
from effrank_bench.sweep import run_sweep


def _computed(run):
    return [(r.rank, r.test_accuracy, [e.loss for e in r.history]) for r in run.records()]


def _compiled_run(config, out, progress_stub):
    """A sweep with --compile: its records as :func:`_computed` gives them, and its compile warnings."""
    notes = progress_stub()
    run = run_sweep(config.model_copy(update={"compile": True, "out": out}), progress=notes)
    return _computed(run), [n for n in notes.notes if "torch.compile failed" in n]


def _raising(message):
    """A torch.compile stand-in whose compiled functions raise RuntimeError(message)."""
    def compile_(fn, **kw):
        def call(*args):
            raise RuntimeError(message)
        return call

    return compile_


@pytest.fixture(scope="module")
def eager(tmp_path_factory, tiny):
    config = tiny.config(tmp_path_factory.mktemp("eager") / "run", compile=False, ranks=(2,))
    return config, run_sweep(config)


def test_compile_is_off_on_cpu_unless_asked(eager):
    from effrank_bench.setup import prepare

    config, _ = eager
    assert prepare(config.model_copy(update={"compile": None})).compile is False
    assert prepare(config.model_copy(update={"compile": True})).compile is True


def test_compiled_students_train_to_the_eager_records(eager, tmp_path, monkeypatch, progress_stub):
    # dynamo captures the forward with its branch hooks; the eager backend then runs the captured graphs
    # op for op, so the numbers must match exactly (inductor's fused kernels would differ in the last bits).
    compile_ = torch.compile
    monkeypatch.setattr(train.torch, "compile", lambda model, **kw: compile_(model, backend="eager", dynamic=False))
    config, run = eager
    assert _compiled_run(config, tmp_path / "c", progress_stub) == (_computed(run), [])


def test_a_compiler_failure_falls_back_to_eager_with_one_warning(eager, tmp_path, monkeypatch, progress_stub):
    monkeypatch.setattr(train.torch, "compile", _raising("backend exploded\nwith a long traceback"))
    config, run = eager
    computed, warnings = _compiled_run(config, tmp_path / "f", progress_stub)
    assert computed == _computed(run)
    # The teacher's forward fails first and takes the students' forwards and the loss with it: one line.
    assert len(warnings) == 1 and "RuntimeError: backend exploded with a long traceback" in warnings[0]


def _forwards_only(wrap):
    """A torch.compile stand-in that wraps models' forwards with ``wrap`` and leaves the loss as it is."""
    return lambda fn, **kw: wrap(fn) if isinstance(fn, torch.nn.Module) else fn


def test_the_loss_is_compiled_and_its_failure_falls_back_too(eager, tmp_path, monkeypatch, progress_stub):
    compiled, raising = [], _raising("the loss would not compile")

    def compile_(fn, **kw):
        if isinstance(fn, torch.nn.Module):
            return fn
        compiled.append(kw)
        return raising(fn)

    monkeypatch.setattr(train.torch, "compile", compile_)
    config, run = eager
    computed, warnings = _compiled_run(config, tmp_path / "l", progress_stub)
    assert computed == _computed(run)
    # One compiled loss for the group, without CUDA graphs (its inputs are the forwards' graph outputs).
    assert compiled == [{"mode": None, "dynamic": False}]
    assert len(warnings) == 1 and "the loss would not compile" in warnings[0]


def test_an_effrank_error_in_a_compiled_function_is_not_blamed_on_the_compiler(monkeypatch, progress_stub):
    from effrank_bench.errors import LossError

    def loss(*args):
        raise LossError("geometric loss: no branch outputs were captured")

    # As dynamo would: the plugin's own check raises while tracing, out of the compiled call.
    monkeypatch.setattr(train.torch, "compile", lambda fn, **kw: fn)
    notes = progress_stub()
    compilation = train.Compilation(torch.device("cpu"), notes)
    compiled = compilation.loss(loss)
    with pytest.raises(LossError, match="no branch outputs"):
        compiled(None, None, None, None)
    assert compilation.active and notes.notes == []


class _BackwardFails(torch.autograd.Function):
    """Identity forward whose backward raises: a compiled graph whose backward fails to compile."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError("the backward graph\nwould not compile")


def test_a_failure_past_the_compiled_call_falls_back_to_eager_before_any_step(eager, tmp_path, monkeypatch,
                                                                              progress_stub):
    # Inductor compiles the backward at the first backward pass, after the forward returned.
    monkeypatch.setattr(train.torch, "compile", _forwards_only(lambda model: lambda x: _BackwardFails.apply(model(x))))
    config, run = eager
    computed, warnings = _compiled_run(config, tmp_path / "b", progress_stub)
    assert computed == _computed(run)  # the failed step was taken again, eagerly
    assert len(warnings) == 1 and "RuntimeError: the backward graph would not compile" in warnings[0]


def test_two_failures_in_one_step_give_one_warning(eager, tmp_path, monkeypatch, progress_stub):
    raising = _raising("the loss would not compile")

    def compile_(fn, **kw):  # the loss fails at its call, then the student's backward at its first pass
        return (lambda x: _BackwardFails.apply(fn(x))) if isinstance(fn, torch.nn.Module) else raising(fn)

    monkeypatch.setattr(train.torch, "compile", compile_)
    config, run = eager
    computed, warnings = _compiled_run(config, tmp_path / "two", progress_stub)
    assert computed == _computed(run)
    assert len(warnings) == 1 and "the loss would not compile" in warnings[0]


def test_an_error_eager_makes_too_inside_a_compiled_call_propagates_without_the_warning(monkeypatch, progress_stub):
    def loss(*args):
        raise ValueError("a third-party loss's own bug")

    monkeypatch.setattr(train.torch, "compile", lambda fn, **kw: fn)  # compiled, it fails as eager does
    notes = progress_stub()
    with pytest.raises(ValueError, match="own bug"):
        train.Compilation(torch.device("cpu"), notes).loss(loss)(None, None, None, None)
    assert notes.notes == []


class _PartialBackwardFails(torch.autograd.Function):
    """Identity forward whose backward raises for a batch of another size than 256: a recompile that fails."""

    @staticmethod
    def forward(ctx, x):
        ctx.rows = len(x)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        if ctx.rows != 256:
            raise RuntimeError("recompiling for the partial batch failed")
        return grad


def test_a_failure_compiling_for_the_partial_last_batch_falls_back_too(eager, tmp_path, monkeypatch, progress_stub):
    config, run = eager
    # 1,257 training digits in batches of 256: four full ones, then 233, a new shape to compile for. The
    # eager run's teacher, as a checkpoint used as it is: a teacher trained on every batch would cost more
    # than the rest of the test.
    config = config.model_copy(update={"limit_batches": None, "batch_size": 256, "select": "last",
                                       "teacher_checkpoint": run.teacher_weights, "teacher_epochs": 0})
    baseline = run_sweep(config.model_copy(update={"out": tmp_path / "eager"}))
    monkeypatch.setattr(train.torch, "compile",
                        _forwards_only(lambda model: lambda x: _PartialBackwardFails.apply(model(x))))
    computed, warnings = _compiled_run(config, tmp_path / "p", progress_stub)
    assert computed == _computed(baseline)
    assert len(warnings) == 1 and "recompiling for the partial batch failed" in warnings[0]


def test_an_error_eager_training_makes_too_propagates_without_blaming_the_compiler(eager, tmp_path, monkeypatch,
                                                                                   progress_stub):
    def broken_loss(*args, **kwargs):
        raise RuntimeError("a bug in the loss")

    monkeypatch.setattr(train.torch, "compile", lambda model, **kw: model)
    monkeypatch.setattr(train, "student_step", broken_loss)
    config, _ = eager
    notes = progress_stub()
    with pytest.raises(RuntimeError, match="a bug in the loss"):
        run_sweep(config.model_copy(update={"compile": True, "out": tmp_path / "e"}), progress=notes)
    assert not any("torch.compile failed" in n for n in notes.notes)


class _Pooled(torch.nn.Module):
    """Returns the same tensor every call, as a CUDA graph returns its pool's memory."""

    def __init__(self):
        super().__init__()
        self.out = torch.randn(4, 3)

    def forward(self, x):
        return self.out


@pytest.mark.parametrize("device, copied", [("cuda", True), ("cpu", False)])
def test_a_cuda_graphed_teachers_outputs_are_copied_out_of_the_graph_pool(device, copied, monkeypatch, progress_stub):
    # Each student's graph starts a new CUDA-graph iteration, which reuses the teacher's output memory.
    monkeypatch.setattr(train.torch, "compile", lambda model, **kw: model)
    model = _Pooled()
    forward = train.Compilation(torch.device(device), progress_stub()).forward(model)
    assert forward.graphed is copied
    logits = train.teacher_outputs(forward, None, torch.zeros(4, 2), amp=False).logits
    assert torch.equal(logits, model.out) and (logits is not model.out) is copied
    forward.compilation.eager()  # fallen back: nothing lives in a graph's pool any more
    assert train.teacher_outputs(forward, None, torch.zeros(4, 2), amp=False).logits is model.out


def test_every_student_of_a_group_stays_compiled_for_both_batch_shapes(monkeypatch, progress_stub):
    # The teacher and four students of other widths (ranks) share nn.Sequential.forward: with the partial last
    # batch kept (CPU), dynamo holds 2 × 5 versions of it, more than its default limit of 8, past which it would
    # run the rest eagerly.
    import logging

    from torch.utils.data import TensorDataset

    from effrank_bench.data import Batches
    from effrank_bench.registry import default_registry
    from effrank_bench.specs import LossOptions

    torch._dynamo.reset()
    before = torch._dynamo.config.cache_size_limit
    compile_ = torch.compile
    monkeypatch.setattr(train.torch, "compile", lambda fn, **kw: compile_(fn, backend="eager", dynamic=False))
    limits = []

    class Limits(logging.Handler):
        def emit(self, record):
            if "recompile_limit" in record.getMessage() or "cache_size_limit" in record.getMessage():
                limits.append(record.getMessage())

    handler = Limits()
    logging.getLogger("torch._dynamo").addHandler(handler)
    try:
        # Dynamo's default, whatever ran before; torch's own patch, not monkeypatch's: pytest 9.2 undoes a
        # setattr on an object whose value is not in its __dict__ by deleting it, and torch's config then
        # hides the name for good (this process's later compiled runs would fail reading it).
        with torch._dynamo.config.patch(cache_size_limit=8):
            torch.manual_seed(0)
            teacher = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
            students = [torch.nn.Sequential(torch.nn.Linear(4, width), torch.nn.ReLU(), torch.nn.Linear(width, 3))
                        for width in (1, 2, 3, 4)]
            data = TensorDataset(torch.randn(10, 4), torch.randint(0, 3, (10,)))  # batches of 4, 4 and 2
            shape = dict(batch_size=4, modality="tokens", input_size=4, device=torch.device("cpu"))
            batches = Batches(data, **shape)
            no_val = Batches(TensorDataset(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long)), **shape)
            results = train.distill(teacher, students, lambda model: [], batches, no_val,
                                    default_registry().loss("logit"), LossOptions(),
                                    train.Recipe(epochs=2, lr=1e-3, amp=False, select="last"),
                                    progress=progress_stub(), compile=True)
            assert torch._dynamo.config.cache_size_limit == 10  # 2 batch shapes × (teacher + 4 students)
    finally:
        logging.getLogger("torch._dynamo").removeHandler(handler)
        torch._dynamo.reset()
    assert torch._dynamo.config.cache_size_limit == before  # restored, and still readable
    assert all(not isinstance(r, Exception) for r in results)
    assert limits == []


def test_a_loss_value_no_loss_may_have_is_refused_compiled_too(eager, tmp_path, monkeypatch, progress_stub):
    from effrank_bench import hookimpl
    from effrank_bench.errors import LossError
    from effrank_bench.registry import Registry
    from effrank_bench.specs import LossSpec

    class PerExample:
        @hookimpl
        def register_losses(self, register):
            register(LossSpec(name="per_example", description="one value per example",
                              compute=lambda t, s, y, o: ((s.logits - t.logits) ** 2).mean(1)))

    monkeypatch.setattr(train.torch, "compile", lambda fn, **kw: fn)  # compiled, it returns what eager does
    config, _ = eager
    notes = progress_stub()
    with pytest.raises(LossError, match=r"^loss 'per_example' returned a torch.float32 tensor of shape \(32,\); "):
        run_sweep(config.model_copy(update={"compile": True, "loss": "per_example", "out": tmp_path / "x"}),
                  registry=Registry(plugins=[("theirs", PerExample())]), progress=notes)
    assert not any("torch.compile failed" in n for n in notes.notes)  # the plugin's mistake, not the compiler's
