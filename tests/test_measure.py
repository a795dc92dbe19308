"""Tests for effrank_bench.measure against known parameter and MAC counts."""
from __future__ import annotations

import copy
import math

import pytest
import timm
import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn
from torch.nn import functional as F
from torch.utils.flop_counter import FlopCounterMode

from effrank_bench.data import example_input
from effrank_bench.errors import ConfigError
from effrank_bench.factorize import LowRankLinear, factorize
from effrank_bench.measure import (StudentMacs, count_macs, count_params, forward_times_ms, interquartile_range,
                                   measure, peak_memory_mb, profile_macs)
from effrank_bench.records import Cost
from effrank_bench.setup import prepare


@pytest.fixture(scope="module")
def vit_b32() -> nn.Module:
    """timm's ViT-B/32 on the meta device: counts need shapes only, not 88M initialised weights."""
    with torch.device("meta"):
        return timm.create_model("vit_base_patch32_224", num_classes=1000)


def small_vit(fused: bool) -> VisionTransformer:
    model = VisionTransformer(
        img_size=8, patch_size=2, in_chans=1, num_classes=10, embed_dim=64, depth=2, num_heads=4, mlp_ratio=2.0
    )
    for block in model.blocks:
        block.attn.fused_attn = fused
    return model


SMALL_VIT_INPUT = (2, 1, 8, 8)


def small_vit_macs(batch: int) -> int:
    tokens, dim = (8 // 2) ** 2 + 1, 64
    patch_embed = (tokens - 1) * dim * 1 * 2 * 2
    linears = tokens * dim * (3 * dim + dim + 2 * dim) + tokens * (2 * dim) * dim
    attention = 2 * tokens**2 * dim  # q @ k^T and scores @ v
    head = dim * 10  # class token only
    return batch * (patch_embed + 2 * (linears + attention) + head)


class CallCounter(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 4)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.linear(x)


class SelfAttention(nn.Module):
    def __init__(self, module: nn.MultiheadAttention) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x, x, x, need_weights=False)[0]


class SDPA(nn.Module):
    def __init__(self, k_len: int, v_dim: int) -> None:
        super().__init__()
        self.k_len, self.v_dim = k_len, v_dim

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        k = q[..., :1, :].expand(-1, -1, self.k_len, -1)
        return F.scaled_dot_product_attention(q, k, k[..., : self.v_dim])


def test_vit_b32_macs_match_timm_published(vit_b32: nn.Module) -> None:
    gmacs = count_macs(vit_b32, torch.randn(1, 3, 224, 224, device="meta")) / 1e9
    assert gmacs == pytest.approx(4.41, rel=0.01)


def test_vit_b32_params(vit_b32: nn.Module) -> None:
    assert count_params(vit_b32) == (88_224_232, 0)
    with torch.device("meta"):  # counting needs shapes only; skips the slow weight init
        vit_b32_100 = timm.create_model("vit_base_patch32_224", num_classes=100)
    assert count_params(vit_b32_100) == (87_532_132, 0)


def test_fused_and_eager_attention_count_the_same_hand_computed_macs() -> None:
    x = torch.randn(SMALL_VIT_INPUT)
    fused, eager = small_vit(fused=True), small_vit(fused=False)
    assert count_macs(fused, x) == count_macs(eager, x) == small_vit_macs(batch=2)


# Equal head dims take CPU's fused kernel; a smaller value dim falls back to the math path.
@pytest.mark.parametrize("v_dim", [8, 4])
def test_sdpa_macs(v_dim: int) -> None:
    batch, heads, q_len, k_len, qk_dim = 2, 3, 5, 7, 8
    model = SDPA(k_len, v_dim)
    macs = count_macs(model, torch.randn(batch, heads, q_len, qk_dim))
    assert macs == batch * heads * q_len * k_len * (qk_dim + v_dim)


def test_multihead_attention_fast_path_is_counted() -> None:
    tokens, dim, heads = 5, 16, 2
    model = SelfAttention(nn.MultiheadAttention(dim, heads, batch_first=True))
    expected = tokens * dim * 3 * dim + 2 * tokens**2 * dim + tokens * dim * dim
    assert count_macs(model, torch.randn(1, tokens, dim)) == expected
    assert torch.backends.mha.get_fastpath_enabled()


def test_linear_macs_exclude_bias() -> None:
    assert count_macs(nn.Linear(6, 5), torch.randn(3, 6)) == 3 * 6 * 5


def test_count_macs_restores_training_modes() -> None:
    model = nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.5))
    model[0].eval()
    count_macs(model, torch.randn(1, 3))
    assert [m.training for m in model.modules()] == [True, False, True]


def test_factorized_params_counted_once() -> None:
    inner = nn.Linear(4, 3)  # 15
    outer = nn.Sequential(inner, nn.Linear(3, 2))  # 15 + 8
    model = nn.Sequential(outer, nn.Linear(2, 2))  # + 6
    assert count_params(model, [inner, outer, inner]) == (29, 23)


def test_shared_params_counted_once() -> None:
    shared = nn.Linear(4, 4)
    model = nn.Sequential(shared, shared)
    assert count_params(model, [model[0], model[1]]) == (20, 20)


def test_latency_runs_warmup_plus_repeats() -> None:
    model = CallCounter()
    times = forward_times_ms(model, torch.randn(2, 4), warmup=3, repeats=7)
    assert model.calls == 10 and len(times) == 7
    assert all(0 < t < math.inf for t in times)


class ThreadsSeen(nn.Module):
    """Notes torch's thread count at each forward."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.threads.append(torch.get_num_threads())
        return x


def test_cpu_latency_is_timed_on_one_thread_and_the_thread_count_is_put_back() -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        model = ThreadsSeen()
        forward_times_ms(model, torch.randn(1, 4), warmup=2, repeats=3)
        assert model.threads == [1] * 5  # warm-up and timed passes alike
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize(("warmup", "repeats"), [(-1, 5), (0, 0)])
def test_latency_rejects_bad_counts(warmup: int, repeats: int) -> None:
    with pytest.raises(ConfigError):
        forward_times_ms(CallCounter(), torch.randn(1, 4), warmup=warmup, repeats=repeats)


def test_latency_is_the_median_of_the_timed_passes_and_their_interquartile_range(monkeypatch) -> None:
    from effrank_bench import measure as measuring

    times = [1.0, 9.0, 2.0, 3.0, 4.0]  # a slow outlier moves the spread, not the median
    monkeypatch.setattr(measuring, "forward_times_ms", lambda *args, **kwargs: list(times))
    cost = measure(nn.Linear(4, 2), torch.randn(1, 4))
    assert cost.latency_ms == 3.0 and cost.latency_iqr_ms == 2.0  # quartiles 2 and 4
    assert interquartile_range([5.0]) is None  # one pass has no spread


def test_a_cost_recorded_before_the_spread_was_kept_reads_without_it() -> None:
    old = {"params": 1, "factorized_params": 0, "macs": 2, "latency_ms": 0.5, "peak_memory_mb": None}
    assert Cost.model_validate(old).latency_iqr_ms is None


def test_peak_memory_is_none_on_cpu() -> None:
    assert peak_memory_mb(nn.Linear(4, 4), torch.randn(1, 4)) is None


def test_measure_bundles_every_cost() -> None:
    model = small_vit(fused=True)
    cost = measure(model, torch.randn(SMALL_VIT_INPUT), factorized=[model.head], warmup=1, repeats=2)
    assert cost.params == sum(p.numel() for p in model.parameters())
    assert cost.factorized_params == 64 * 10 + 10
    assert cost.macs == small_vit_macs(batch=1)  # MACs are per sample; latency is of the batch
    assert cost.latency_ms is not None and cost.latency_ms > 0
    assert cost.peak_memory_mb is None
    assert cost.model_dump() == {
        "params": cost.params,
        "factorized_params": 650,
        "macs": cost.macs,
        "latency_ms": cost.latency_ms,
        "peak_memory_mb": None,
        "latency_iqr_ms": cost.latency_iqr_ms,
    }
    assert cost.latency_iqr_ms is not None and cost.latency_iqr_ms >= 0
    untimed = measure(model, torch.randn(SMALL_VIT_INPUT), time_it=False)
    assert untimed == Cost(
        params=cost.params, factorized_params=0, macs=cost.macs, latency_ms=None, peak_memory_mb=None
    )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_costs() -> None:
    x = torch.randn(SMALL_VIT_INPUT)
    model = small_vit(fused=True)
    cpu_macs = count_macs(model, x)
    model, x = model.cuda(), x.cuda()
    weights_mb = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
    assert count_macs(model, x) == cpu_macs
    assert peak_memory_mb(model, x) >= weights_mb
    cost = measure(model, x, warmup=1, repeats=3)
    assert cost.latency_ms is not None and cost.latency_ms > 0
    assert cost.peak_memory_mb is not None and cost.peak_memory_mb >= weights_mb


# --- a student's MACs from its teacher's profile -------------------------------------------------------------


@pytest.mark.parametrize("changes", [
    dict(arch="micro_vit", target="joint"),
    dict(arch="micro_vit", target="joint", qkv="fused"),
    dict(arch="micro_vit", target="attention", init="paper-rebuild"),
    dict(arch="micro_convnet", target="joint"),  # convolutions: counted on zeros of each call's input
    dict(arch="micro_mixer", target="attention"),  # micro_bert's: hand-counted in test_families.py's sweep
], ids=lambda changes: "-".join(changes.values()))
def test_a_students_macs_from_the_teachers_profile_are_those_of_its_whole_forward(tiny, tmp_path, changes):
    setup = prepare(tiny.config(tmp_path / "run", **changes), sweep=False)
    example = example_input(setup.request, setup.splits.modality, 1, setup.device)
    macs = setup.student_macs()
    profile = macs.profile
    assert profile.total == count_macs(setup.model, example) and len(profile.layers) == len(setup.sites)
    for rank in (1, 2, 3):
        student = copy.deepcopy(setup.model)
        replaced = factorize(student, setup.sites, rank, init=setup.config.init, qkv=setup.config.qkv)
        assert profile.swapped(replaced) == macs(student, replaced) == count_macs(student, example) < profile.total
    assert macs.trusted  # the first student, counted both ways, agreed


def test_a_low_rank_layer_counts_the_multiplies_torch_does_elementwise_at_rank_1() -> None:
    x = torch.zeros(2, 5, 8)  # 10 rows
    for rank in (1, 2):
        layer = LowRankLinear(8, 12, rank, chunks=3)
        assert layer.macs(x.shape) == 10 * rank * (3 * 8 + 12) == count_macs(layer, x)
    # At rank 1 the chunks' B factors contract over one index: einsum multiplies elementwise, which the flop
    # counter alone counts as nothing (10 rows × 12 outputs missed).
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        LowRankLinear(8, 12, 1, chunks=3)(x)
    assert counter.get_total_flops() // 2 == 10 * 3 * 8


class _Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.called, self.keyword, self.read = nn.Linear(4, 6), nn.Linear(4, 6), nn.Linear(4, 6)
        self.shared = self.also = nn.Linear(6, 6)  # one layer at two paths

    def forward(self, x):
        h = self.called(x) + self.keyword(input=x) + F.linear(x, self.read.weight)
        return self.also(self.shared(h))


def test_a_layer_not_called_as_a_module_of_one_tensor_leaves_the_student_to_be_counted_whole() -> None:
    x = torch.zeros(3, 4)
    profile = profile_macs(_Model(), x, ["called", "keyword", "read"])
    assert profile.total == 3 * (3 * 4 * 6 + 2 * 6 * 6) and list(profile.layers) == ["called"]
    assert profile.layers["called"] == (3 * 4 * 6, (((3, 4), torch.float32),))
    assert profile.swapped({"called": LowRankLinear(4, 6, 1)}) == profile.total - 3 * 4 * 6 + 3 * (4 + 6)
    assert profile.swapped({"keyword": LowRankLinear(4, 6, 1)}) is None
    assert profile.swapped({"called": LowRankLinear(4, 6, 1), "read": LowRankLinear(4, 6, 1)}) is None


def test_students_are_counted_whole_where_the_profile_disagrees_with_a_whole_count() -> None:
    x = torch.zeros(3, 4)
    model = _Model()
    # The layer at "shared" and "also" is recorded twice under each path: the profile would count 4 calls.
    macs = StudentMacs(profile_macs(model, x, ["shared", "also"]), x)
    for rank in (1, 2):
        student = copy.deepcopy(model)
        student.shared = student.also = low = LowRankLinear(6, 6, rank)
        replaced = {"shared": low, "also": low}
        assert macs(student, replaced) == count_macs(student, x) == 3 * (3 * 4 * 6 + 2 * rank * 12)
        assert macs.profile.swapped(replaced) != count_macs(student, x) and macs.trusted is False
