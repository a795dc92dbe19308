"""The CUDA path of a sweep: --group auto's memory probe, compiled (CUDA-graph) groups, checkpoints with the CUDA
random state. Skipped without CUDA; the CPU tests of the same functions (test_engine, test_compile) run everywhere."""
from __future__ import annotations

import pytest
import torch

from effrank_bench.grouping import cuda_capacity
from effrank_bench.setup import prepare
from effrank_bench.store import RunDir
from effrank_bench.sweep import run_sweep
from effrank_bench.teacher import obtain_teacher

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _losses(run) -> list[list[float]]:
    return [[e.loss for e in r.history] for r in run.records()]


@pytest.fixture(scope="module")
def eager(tmp_path_factory, tiny):
    """Ranks 2 and 4 on CUDA, eager, --group auto, 2 epochs of 4 batches, a checkpoint after each epoch."""
    config = tiny.config(tmp_path_factory.mktemp("cuda") / "run", device="cuda", compile=False, group="auto",
                         epochs=2, limit_batches=4, checkpoint_every=1)
    return config, run_sweep(config)


def test_auto_groups_every_trial_that_fits_and_records_cuda(eager):
    _, run = eager
    records = run.records()
    assert [(r.rank, r.status) for r in records] == [(2, "ok"), (4, "ok")]
    assert all(r.group == [(2, 0), (4, 0)] and r.environment["device"] == "cuda" for r in records)


def test_the_memory_probe_scales_with_the_fraction_and_gives_its_memory_back(eager, monkeypatch):
    config, _ = eager
    setup = prepare(config)
    teacher = obtain_teacher(setup)
    # The device's free memory as now: another test process on the same GPU must not move it between probes.
    free = torch.cuda.mem_get_info()
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: free)
    before = torch.cuda.memory_allocated()
    rank = max(config.ranks)
    half_setup = prepare(config.model_copy(update={"memory_fraction": 0.5}))
    half = cuda_capacity(half_setup, teacher, rank)
    quarter = cuda_capacity(prepare(config.model_copy(update={"memory_fraction": 0.25})), teacher, rank)
    smallest = cuda_capacity(half_setup, teacher, min(config.ranks))  # a round of small ranks
    assert torch.cuda.memory_allocated() == before
    # (free × f − transient) // kept: halving f more than halves the count, and micro students fit by thousands.
    assert quarter > 1000 and half >= 2 * quarter
    assert smallest > half  # fewer parameters to keep per student: the probe is of the rank handed over


def test_compiled_cuda_students_train_like_eager_ones_without_falling_back(eager, tmp_path, progress_stub):
    config, run = eager
    notes = progress_stub()
    compiled = run_sweep(config.model_copy(update={"compile": True, "out": tmp_path / "c"}), progress=notes)
    assert not any("torch.compile failed" in n for n in notes.notes), notes.notes
    assert [(r.rank, r.status) for r in compiled.records()] == [(2, "ok"), (4, "ok")]
    # bf16 either way; inductor's fused kernels round differently from eager's, so close, not equal.
    for mine, theirs in zip(_losses(compiled), _losses(run)):
        assert mine == pytest.approx(theirs, rel=0.05)


def test_an_interrupted_cuda_group_resumes_from_its_checkpoint(eager, tmp_path, progress_stub):
    config, run = eager
    out = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        run_sweep(config.model_copy(update={"out": out}), progress=progress_stub(stop_after=5))  # in epoch 2
    assert RunDir(out).records() == [] and len(list((out / "checkpoints").iterdir())) == 1
    resumed = run_sweep(config.model_copy(update={"out": out}))
    assert [(r.rank, r.status) for r in resumed.records()] == [(2, "ok"), (4, "ok")]
    # Weights, optimizer, schedule, data order and CUDA random state come back: the same curves.
    for mine, theirs in zip(_losses(resumed), _losses(run)):
        assert mine == pytest.approx(theirs, rel=1e-3)
    assert not (out / "checkpoints").exists()
