"""The trainer's recipe and batches: optimizers, schedule, loader workers."""
from __future__ import annotations

import gc
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from effrank_bench.data import Batches, default_workers
from effrank_bench.specs import Branch
from effrank_bench.taps import BranchTap
from effrank_bench.train import Recipe, make_optimizer


def test_sgd_is_nesterov_momentum_and_adamw_is_the_default():
    model = nn.Linear(4, 2)
    sgd, _ = make_optimizer(model, Recipe(1, 0.1, 0.0, optimizer="sgd"), torch.device("cpu"), 10)
    assert isinstance(sgd, torch.optim.SGD)
    assert sgd.defaults["momentum"] == 0.9 and sgd.defaults["nesterov"] and sgd.defaults["weight_decay"] == 0.0
    adamw, _ = make_optimizer(model, Recipe(1, 0.1, 0.05), torch.device("cpu"), 10)
    assert isinstance(adamw, torch.optim.AdamW) and adamw.defaults["weight_decay"] == 0.05


def test_the_schedule_warms_up_linearly_then_decays_to_zero():
    model = nn.Linear(4, 2)
    optimizer, scheduler = make_optimizer(model, Recipe(1, 1.0, warmup_fraction=0.2), torch.device("cpu"), 10)
    lrs = []
    for _ in range(10):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[:2] == [0.5, 1.0]  # 2 warm-up steps of 10
    assert lrs[2] == 1.0 and lrs[-1] < 0.05 and all(a >= b for a, b in zip(lrs[1:], lrs[2:]))


def test_workers_deliver_the_same_batches_in_the_same_order_every_pass_and_after_a_resume():
    data = TensorDataset(torch.arange(40, dtype=torch.float32).reshape(10, 1, 2, 2), torch.arange(10))
    kwargs = dict(batch_size=3, modality="image", input_size=4, device=torch.device("cpu"), shuffle=True, seed=7)

    def one_pass(batches):
        return [(x.clone(), y.clone()) for x, y in batches]

    def same(a, b):
        return [y.tolist() for _, y in a] == [y.tolist() for _, y in b] and all(
            torch.equal(u, v) for (u, _), (v, _) in zip(a, b))

    inline, pooled = Batches(data, **kwargs), Batches(data, workers=1, **kwargs)
    inline_passes = [one_pass(inline) for _ in range(3)]
    pooled_passes = [one_pass(pooled) for _ in range(3)]
    assert all(same(a, b) for a, b in zip(inline_passes, pooled_passes))
    assert not same(inline_passes[0], inline_passes[1])  # each pass is shuffled anew
    assert inline_passes[0][0][0].shape == (3, 1, 4, 4)  # resized from 2×2 on the device
    # A resumed fit restores the data generator as it was after the last saved epoch: the next pass is the
    # one an uninterrupted fit takes, with workers too (persistent ones would draw their seed again).
    stopped = Batches(data, workers=1, **kwargs)
    one_pass(stopped)
    resumed = Batches(data, workers=1, **kwargs)
    resumed.generator.set_state(stopped.generator.get_state())
    assert same(one_pass(resumed), pooled_passes[1])


@pytest.mark.skipif(sys.platform != "linux", reason="elsewhere workers start the platform's way")
def test_workers_fork_on_linux_whatever_the_pythons_default():
    # Python 3.14's default there, forkserver, would import torch in every worker every pass (seconds).
    data = TensorDataset(torch.zeros(4, 1), torch.zeros(4))
    batches = Batches(data, batch_size=2, modality="tokens", input_size=1, device=torch.device("cpu"), workers=1)
    assert batches._loader.multiprocessing_context.get_start_method() == "fork"
    assert Batches(data, batch_size=2, modality="tokens", input_size=1, device=torch.device("cpu"),
                   workers=0)._loader.multiprocessing_context is None  # no workers, no processes


def test_outside_its_forward_a_branch_tap_records_nothing():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    tap = BranchTap([Branch(model[0]), Branch(model[2])])
    rows = 997  # a batch size no other live tensor has: counting all tensors is at the mercy of other tests' garbage
    x = torch.randn(rows, 4)

    def branch_outputs_alive():
        gc.collect()
        return sum(isinstance(o, torch.Tensor) and o.dim() == 2 and o.shape[0] == rows for o in gc.get_objects())

    with torch.no_grad():
        for _ in range(20):  # evaluation passes: their branch outputs would pile up until the next forward
            model(x)
    assert branch_outputs_alive() == 1  # x itself
    features = tap.forward(model, x).features
    assert [f.shape for f in features] == [(rows, 8), (rows, 2)]
    tap.close()


def test_a_pass_counts_the_samples_it_delivers():
    # What samples/s divides: ten samples in batches of 3, less a dropped last batch or what a limit cuts.
    data = TensorDataset(torch.zeros(10, 1), torch.zeros(10, dtype=torch.long))
    kwargs = dict(batch_size=3, modality="tokens", input_size=1, device=torch.device("cpu"))
    passes = [Batches(data, **kwargs, **extra) for extra in (
        {}, {"drop_last": True}, {"limit": 2}, {"limit": 4}, {"limit": 9}, {"limit": 3, "drop_last": True})]
    assert [p.samples for p in passes] == [sum(len(y) for _, y in p) for p in passes] == [10, 9, 6, 10, 10, 9]


def test_training_leaves_out_a_last_batch_of_one_sample_that_batch_norm_cannot_train_on(tmp_path, tiny):
    from effrank_bench.setup import prepare
    from effrank_bench.sweep import run_sweep

    # Digits' 1,257 training images in batches of 628: two, and one image over, which micro_convnet's batch norm
    # refused with a traceback, in the teacher's training and the students' alike.
    config = tiny.config(tmp_path / "run", arch="micro_convnet", target="conv", limit_batches=None, batch_size=628,
                         teacher_epochs=1, ranks=(2,))
    setup = prepare(config)
    examples = len(setup.splits.train)
    assert examples % 628 == 1 and setup.training_batches(seed=0).samples == examples - 1
    assert setup.training_batches(seed=0, batch_size=627).samples == examples  # a last batch of two or more stays
    (record,) = run_sweep(config).records()
    assert record.status == "ok" and record.samples_per_second > 0


def test_a_limit_cuts_every_pass_to_its_first_batches():
    data = TensorDataset(torch.arange(40, dtype=torch.float32).reshape(10, 1, 2, 2), torch.arange(10))
    kwargs = dict(batch_size=3, modality="image", input_size=2, device=torch.device("cpu"), shuffle=True, seed=7)
    whole, cut = Batches(data, **kwargs), Batches(data, limit=2, **kwargs)
    assert (len(whole), len(cut)) == (4, 2)
    # The same shuffled order, stopped early: the first two batches of the whole pass.
    assert [y.tolist() for _, y in cut] == [y.tolist() for _, y in list(Batches(data, **kwargs))[:2]]
    assert len(Batches(data, limit=9, **kwargs)) == 4  # a limit past the end changes nothing


def test_channels_last_batches_keep_their_values():
    data = TensorDataset(torch.randn(4, 3, 5, 5), torch.zeros(4, dtype=torch.long))
    kwargs = dict(batch_size=4, modality="image", input_size=5, device=torch.device("cpu"))
    (plain, _), = list(Batches(data, **kwargs))
    (last, _), = list(Batches(data, channels_last=True, **kwargs))
    assert last.is_contiguous(memory_format=torch.channels_last) and torch.equal(plain, last)


def test_loader_workers_only_on_cuda_and_only_for_data_that_decodes_per_item():
    in_memory = TensorDataset(torch.zeros(4, 1))

    class Decoded(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return torch.zeros(1), 0

    assert default_workers(torch.device("cpu"), Decoded()) == 0
    assert default_workers(torch.device("cuda"), in_memory) == 0
    assert 1 <= default_workers(torch.device("cuda"), Decoded()) <= 8


# --- students stepped side by side in threads (CPU) -----------------------------------------------------------


def _tiny_distill(students, monkeypatch, threads: int, loss=None):
    """distill() of a small teacher into ``students`` on ``threads`` torch threads; returns the pools it made
    and the results."""
    from effrank_bench import train
    from effrank_bench.registry import default_registry
    from effrank_bench.specs import LossOptions

    pools = []
    monkeypatch.setattr(train, "ThreadPoolExecutor", lambda *a, **k: pools.append(k) or ThreadPoolExecutor(*a, **k))
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    data = TensorDataset(torch.randn(12, 4), torch.randint(0, 3, (12,)))
    shape = dict(batch_size=4, modality="tokens", input_size=4, device=torch.device("cpu"))
    no_val = Batches(TensorDataset(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long)), **shape)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        results = train.distill(teacher, students, lambda model: [], Batches(data, shuffle=True, **shape), no_val,
                                loss or default_registry().loss("logit"), LossOptions(),
                                Recipe(epochs=2, lr=1e-2, amp=False, select="last"))
        with ThreadPoolExecutor(1) as fresh:  # a thread started later computes on the process's own count
            assert fresh.submit(torch.get_num_threads).result() == threads
    finally:
        torch.set_num_threads(before)
    assert all(isinstance(r, train.TrialFailed) or r.history[-1]["loss"] > 0 for r in results)
    return pools, results


def _students(dropout: float = 0.0):
    torch.manual_seed(1)
    return [nn.Sequential(nn.Linear(4, width), nn.Dropout(dropout), nn.ReLU(), nn.Linear(width, 3))
            for width in (1, 2, 3)]


@pytest.mark.parametrize("ahead_bytes", [None, 1], ids=["an epoch ahead", "a batch ahead"])
def test_students_step_in_threads_of_one_core_each_to_the_numbers_of_one_thread(monkeypatch, ahead_bytes):
    from effrank_bench import train

    if ahead_bytes is not None:
        monkeypatch.setattr(train, "AHEAD_BYTES", ahead_bytes)
    alone, side_by_side = _students(), _students()
    assert _tiny_distill(alone, monkeypatch, threads=1)[0] == []
    assert _tiny_distill(side_by_side, monkeypatch, threads=2)[0] == [{"initializer": torch.set_num_threads,
                                                                    "initargs": (1,)}]
    for a, b in zip(alone, side_by_side):
        assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def test_the_teacher_runs_as_many_batches_ahead_as_the_byte_budget_holds(monkeypatch):
    from effrank_bench import train
    from effrank_bench.specs import Outputs

    x, target = torch.zeros(4, 8), Outputs(logits=torch.zeros(4, 2), features=(torch.zeros(4, 6),))
    size = 4 * (8 + 2 + 6) * 4  # bytes of one batch's input and teacher outputs, float32
    monkeypatch.setattr(train, "AHEAD_BYTES", 10 * size + 1)
    batch = (x, target.logits, *target.features)
    assert train.batches_ahead(batch, most=50) == 10
    assert train.batches_ahead(batch, most=3) == 3  # an epoch's batches at most
    monkeypatch.setattr(train, "AHEAD_BYTES", size - 1)
    assert train.batches_ahead(batch, most=50) == 1  # one batch, however large


class _Watched(nn.Linear):
    """A model that notes, on each forward, its thread and whether gradients were being recorded."""

    def __init__(self, width: int):
        super().__init__(4, width)
        self.seen: list[tuple[int, bool]] = []

    def forward(self, x):
        import threading

        self.seen.append((threading.get_ident(), torch.is_grad_enabled()))
        return super().forward(x)


@pytest.mark.parametrize("ahead_bytes", [None, 1], ids=["the split read ahead", "a batch at a time"])
def test_a_group_evaluates_side_by_side_in_threads_of_one_core_to_the_numbers_of_one_thread(monkeypatch, ahead_bytes):
    import threading

    from effrank_bench import train

    if ahead_bytes is not None:
        monkeypatch.setattr(train, "AHEAD_BYTES", ahead_bytes)
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(40, 4), torch.randint(0, 3, (40,)))
    split = Batches(data, batch_size=8, modality="tokens", input_size=4, device=torch.device("cpu"))
    models = [_Watched(3) for _ in range(3)]
    models[1].train(), models[2].eval()
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        alone = train.evaluate_calibrated(models, split, amp=False)
        side_by_side = train.evaluate_calibrated(models, split, amp=False, threads=2)
    finally:
        torch.set_num_threads(before)
    assert alone == side_by_side and all(result.accuracy > 0 for result in alone)
    threads = {thread for model in models for thread, _ in model.seen[5:]}  # the threaded pass: 5 batches each
    assert threads and threading.get_ident() not in threads  # the pool's threads (one or both: they start lazily)
    assert all(len(model.seen) == 10 and not any(grad for _, grad in model.seen) for model in models)
    assert [model.training for model in models] == [True, True, False]  # each model's mode as it was


class _Slow(nn.Linear):
    """A model whose forward takes 10 ms, and at its fourth batch raises (``fail``) or interrupts the main thread."""

    def __init__(self, fail: str | None = None):
        super().__init__(4, 3)
        self.fail, self.calls = fail, 0

    def forward(self, x):
        import _thread
        import time

        self.calls += 1
        if self.calls == 4 and self.fail == "error":
            raise ValueError("a model's forward failed")
        if self.calls == 4 and self.fail == "interrupt":
            _thread.interrupt_main()
        time.sleep(0.01)
        return super().forward(x)


@pytest.mark.parametrize("stop", ["interrupt", "error"])
def test_models_evaluating_side_by_side_stop_at_their_next_batch_on_an_interrupt_or_an_error(stop):
    from effrank_bench import train

    data = TensorDataset(torch.randn(200, 4), torch.randint(0, 3, (200,)))
    split = Batches(data, batch_size=2, modality="tokens", input_size=4, device=torch.device("cpu"))
    models = [_Slow(fail=stop), _Slow()]
    models[1].train()
    with pytest.raises(KeyboardInterrupt if stop == "interrupt" else ValueError):
        train.evaluate_calibrated(models, split, amp=False, threads=2)  # one span: all 100 batches
    assert models[1].calls < 50  # evaluating on, it would have taken all 100 batches
    assert [model.training for model in models] == [True, True]  # their modes put back


class _Sized:
    def __init__(self, width: int):
        self.model = nn.Linear(width, 1)


def _through(step, students=2, batches=40, advance=lambda n: None, workers=2):
    from effrank_bench.train import side_by_side

    fittings = [_Sized(width) for width in range(1, students + 1)]
    totals = [torch.zeros(()) for _ in fittings]
    with ThreadPoolExecutor(workers) as pool:
        side_by_side(pool, workers, [(torch.tensor(float(i)), None, None) for i in range(batches)], fittings, totals,
                     step, advance)
    return fittings, totals


def test_students_step_through_the_batches_side_by_side_and_progress_counts_batches_from_this_thread():
    import threading

    seen, advanced = [], []

    def step(f, x, y, target):
        seen.append((f, int(x)))
        return x

    fittings, totals = _through(step, students=3, batches=5,
                                advance=lambda n: advanced.append((n, threading.get_ident())))
    assert [[i for g, i in seen if g is f] for f in fittings] == [list(range(5))] * 3  # each, every batch in order
    assert [t.item() for t in totals] == [10.0] * 3
    assert sum(n for n, _ in advanced) == 5 and {t for _, t in advanced} == {threading.get_ident()}


def test_progress_advances_while_the_students_step_and_the_one_with_most_left_goes_next_the_largest_first():
    import time

    seen, advanced = [], []

    def step(f, x, y, target):
        time.sleep(0.01)
        seen.append(f.model.in_features)
        return x

    _through(step, students=2, batches=40, advance=advanced.append)  # 0.4 s of steps, progress polled every 0.25
    assert sum(advanced) == 40 and len(advanced) >= 2  # not all at the end
    seen.clear()
    _through(lambda f, x, y, t: seen.append(f.model.in_features) or x, students=3, batches=2, workers=1)
    assert seen == [3, 2, 1, 3, 2, 1]  # one thread: a step of the one with most batches left, the largest first


def test_threads_finish_within_a_step_of_each_other_instead_of_one_stepping_the_last_student_alone():
    import threading
    import time

    ends: dict[int, float] = {}

    def step(f, x, y, target):
        time.sleep(0.02)
        ends[threading.get_ident()] = time.perf_counter()
        return x

    # Three students of 10 steps on two threads: a whole student per thread would leave one thread stepping
    # the third alone for its 10 steps (0.2 s); a step at a time, they end 30 steps later, together.
    _through(step, students=3, batches=10)
    first, last = sorted(ends.values())
    assert len(ends) == 2 and last - first < 0.08


@pytest.mark.parametrize("stop", ["interrupt", "error"])
def test_students_stepping_side_by_side_stop_at_their_next_batch_on_an_interrupt_or_an_error(stop):
    import time

    steps = []

    failing = []

    def step(f, x, y, target):
        if stop == "error" and int(x) == 3 and f.model.in_features == 2:
            failing.append(int(x))
            raise ValueError("a student's step failed")
        time.sleep(0.01)
        steps.append(int(x))
        return x

    def advance(n):
        if stop == "interrupt":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt if stop == "interrupt" else ValueError):
        _through(step, batches=100, advance=advance)
    # Stepping on, the other student would have taken all its 100 steps (200 of both, 103 with the error).
    assert len(steps) < (150 if stop == "interrupt" else 50)
    assert failing == ([3] if stop == "error" else [])  # the failed step was not taken again by the other thread


def test_a_student_turning_nan_in_threads_leaves_its_group_and_the_others_train_as_in_one_thread(monkeypatch):
    from effrank_bench import train

    monkeypatch.setattr(train, "AHEAD_BYTES", 1)  # a span of one batch: three spans an epoch

    def students():
        made = _students()
        with torch.no_grad():
            made[1][0].weight[0, 0] = float("nan")
        return made

    alone, side_by_side = students(), students()
    _, expected = _tiny_distill(alone, monkeypatch, threads=1)
    pools, got = _tiny_distill(side_by_side, monkeypatch, threads=2)
    assert pools != []
    assert [str(r) for r in got if isinstance(r, train.TrialFailed)] == ["loss became nan in epoch 1"]
    assert [r.history for r in got if not isinstance(r, train.TrialFailed)] == [
        r.history for r in expected if not isinstance(r, train.TrialFailed)]
    for i in (0, 2):
        assert all(torch.equal(p, q) for p, q in zip(alone[i].state_dict().values(), side_by_side[i].state_dict().values()))


def test_students_that_draw_random_numbers_step_one_after_another(monkeypatch):
    assert _tiny_distill(_students(dropout=0.5), monkeypatch, threads=2)[0] == []


def test_the_random_draw_probe_leaves_generator_buffers_and_modes_as_they_were():
    from effrank_bench.train import draws_random_numbers

    x = torch.randn(5, 4)
    normed = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    normed[1].eval()  # a frozen norm inside a training model stays frozen
    dropping = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.1)).eval()
    buffers = [b.clone() for b in normed.buffers()]
    state = torch.get_rng_state()
    assert not draws_random_numbers(normed, lambda: normed(x))
    assert normed.training and not normed[1].training
    assert all(torch.equal(a, b) for a, b in zip(buffers, normed.buffers()))
    assert draws_random_numbers(dropping, lambda: dropping(x))  # in training mode for the probe
    assert not dropping.training
    assert draws_random_numbers(normed, lambda: torch.rand(3) + normed(x).sum())  # a loss that samples
    assert torch.equal(state, torch.get_rng_state())


def test_students_whose_loss_draws_random_numbers_step_one_after_another(monkeypatch):
    from effrank_bench.registry import default_registry
    from effrank_bench.specs import LossSpec

    logit = default_registry().loss("logit")
    sampling = LossSpec(name="sampling", description="logit MSE, drawing a random number each step",
                        compute=lambda t, s, y, o: logit.compute(t, s, y, o) * (1 + 0 * torch.rand(())))
    assert _tiny_distill(_students(), monkeypatch, threads=2, loss=sampling)[0] == []
