"""Low-rank layers and factorization of effrank_bench.factorize, checked against the SVD and hand counts."""
from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from effrank_bench.errors import RankError, RegistrationError
from effrank_bench.factorize import (LowRankLinear, TeacherSVD, check_rank, factorize, full_rank, low_rank_from,
                                     max_rank, resolve_sites)
from effrank_bench.registry import default_registry
from effrank_bench.specs import ModelRequest, Site


def seeded_linear(in_features: int, out_features: int, seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    linear = nn.Linear(in_features, out_features)
    with torch.no_grad():
        linear.bias.normal_()  # a non-zero bias, so that "keeps the bias" means something
    return linear


def tail_norm(w: torch.Tensor, rank: int) -> float:
    """Eckart–Young: ‖W − W_r‖_F = sqrt(Σ_{i>r} σ_i²)."""
    s = torch.linalg.svdvals(w.detach().double())
    return float(s[rank:].pow(2).sum().sqrt())


def residual(w: torch.Tensor, low: LowRankLinear) -> float:
    return float((w.detach().double() - low.weight.detach().double()).norm())


# --- the SVD initialisation is the best rank-r approximation --------------------------------


def test_known_singular_values_give_known_residual():
    # W = U diag(5, 4, 3, 2, 1) Vᵀ: at rank 2 the residual is sqrt(3² + 2² + 1²) = sqrt(14).
    torch.manual_seed(0)
    u, _ = torch.linalg.qr(torch.randn(7, 5, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(6, 5, dtype=torch.float64))
    w = u @ torch.diag(torch.tensor([5.0, 4, 3, 2, 1], dtype=torch.float64)) @ v.T
    linear = nn.Linear(6, 7, dtype=torch.float64)
    with torch.no_grad():
        linear.weight.copy_(w)
    for rank, expected in [(1, math.sqrt(16 + 9 + 4 + 1)), (2, math.sqrt(14)), (4, 1.0), (5, 0.0)]:
        low = low_rank_from(linear, rank)
        assert residual(w, low) == pytest.approx(expected, rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("rank", [1, 4, 16, 31])
def test_svd_residual_equals_singular_value_tail(rank):
    linear = seeded_linear(48, 32)
    low = low_rank_from(linear, rank)
    assert low.rank == rank
    assert low.a.shape == (rank, 48) and low.b.shape == (1, 32, rank)
    assert residual(linear.weight, low) == pytest.approx(tail_norm(linear.weight, rank), rel=1e-5)


@pytest.mark.parametrize("rank", [1, 3, 8, 11])
def test_chunked_svd_residual_is_the_tail_of_each_chunk(rank):
    # A fused qkv-like Linear(20, 36) as three 12×20 chunks, each its own rank-r map.
    linear = seeded_linear(20, 3 * 12, seed=1)
    low = low_rank_from(linear, rank, chunks=3)
    assert low.a.shape == (3 * rank, 20) and low.b.shape == (3, 12, rank)
    full, approx = linear.weight.detach().chunk(3), low.weight.detach().chunk(3)
    tails = [tail_norm(w, rank) for w in full]
    for w, w_r, tail in zip(full, approx, tails):
        assert float((w.double() - w_r.double()).norm()) == pytest.approx(tail, rel=1e-5)
    assert residual(linear.weight, low) == pytest.approx(math.sqrt(sum(t * t for t in tails)), rel=1e-5)
    # Splitting into chunks can only help: three rank-r maps beat one rank-r map of the whole.
    assert residual(linear.weight, low) < tail_norm(linear.weight, rank)


@pytest.mark.parametrize("chunks", [1, 3])
def test_forward_applies_weight_and_bias(chunks):
    linear = seeded_linear(20, 36, seed=2)
    low = low_rank_from(linear, 5, chunks=chunks)
    x = torch.randn(4, 7, 20)
    expected = x @ low.weight.T + low.bias
    torch.testing.assert_close(low(x), expected, rtol=1e-5, atol=1e-6)
    assert torch.equal(low.bias, linear.bias)


def test_rank_is_clamped_to_each_chunks_full_rank():
    linear = seeded_linear(20, 36)
    assert full_rank(linear, 1) == 20 and full_rank(linear, 3) == 12
    assert low_rank_from(linear, 50, chunks=3).rank == 12
    assert low_rank_from(linear, 50, chunks=1).rank == 20


@pytest.mark.parametrize("chunks", [1, 3])
def test_full_rank_reproduces_the_linear(chunks):
    linear = seeded_linear(20, 36, seed=3)
    low = low_rank_from(linear, 20, chunks=chunks)
    assert residual(linear.weight, low) / float(linear.weight.detach().norm()) < 1e-6
    x = torch.randn(8, 20)
    with torch.no_grad():
        y, y_low = linear(x), low(x)
    assert float((y - y_low).norm() / y.norm()) < 1e-6


def test_parameter_count_of_a_low_rank_linear():
    # A: 3·5×20 = 300, B: 3 chunks × 12×5 = 180, bias 36 -> 516.
    low = LowRankLinear(20, 36, 5, chunks=3)
    assert sum(p.numel() for p in low.parameters()) == 516
    with pytest.raises(ValueError, match="not divisible into 5 chunks"):
        LowRankLinear(20, 36, 5, chunks=5)


# --- random init: the ablation ----------------------------------------------------------------


def test_random_init_keeps_the_bias_but_not_the_svd_weight():
    linear = seeded_linear(48, 32, seed=4)
    torch.manual_seed(10)
    svd = low_rank_from(linear, 8, init="svd")
    rand = low_rank_from(linear, 8, init="random")
    assert torch.equal(rand.bias, linear.bias) and torch.equal(svd.bias, linear.bias)
    # The SVD student is the optimum; a random one is far from it (its residual exceeds the tail).
    tail = tail_norm(linear.weight, 8)
    assert residual(linear.weight, svd) == pytest.approx(tail, rel=1e-5)
    assert residual(linear.weight, rand) > 1.05 * tail
    assert not torch.allclose(rand.weight, svd.weight, atol=1e-3)


# --- whole models ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def micro_vit_arch():
    return default_registry().architecture("micro_vit")


def micro_vit(arch, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = arch.build(ModelRequest(num_classes=10, in_chans=1, input_size=8)).eval()
    with torch.no_grad():  # timm zeroes biases and uses std 0.02; make every number count
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("qkv", ["split", "fused"])
def test_full_rank_joint_micro_vit_reproduces_the_teachers_logits(micro_vit_arch, qkv):
    teacher = micro_vit(micro_vit_arch)
    student = micro_vit(micro_vit_arch)
    sites = micro_vit_arch.targets["joint"](student)
    assert len(sites) == 16  # 4 blocks × (qkv, proj, fc1, fc2)
    replaced = factorize(student, sites, 64, init="svd", qkv=qkv)
    assert set(replaced) == {s.path for s in sites}
    qkv_layer = student.get_submodule("blocks.0.attn.qkv")
    assert isinstance(qkv_layer, LowRankLinear)
    assert qkv_layer.chunks == (3 if qkv == "split" else 1) and qkv_layer.rank == 64
    x = torch.randn(16, 1, 8, 8)
    with torch.no_grad():
        t, s = teacher(x), student(x)
    assert float(t.norm()) > 1.0
    assert float((t - s).norm() / t.norm()) < 1e-5


@pytest.mark.parametrize("arch, target, layers", [("micro_vit", "joint", 24), ("micro_convnet", "conv", 8)])
def test_students_sharing_their_teachers_svd_get_the_factors_of_their_own(arch, target, layers, scrambled,
                                                                          monkeypatch):
    spec = default_registry().architecture(arch)
    teacher = scrambled(lambda: spec.build(spec.native_request()))
    sites = spec.targets[target](teacher)
    calls = []
    svd = torch.linalg.svd
    monkeypatch.setattr(torch.linalg, "svd", lambda *args, **kwargs: calls.append(1) or svd(*args, **kwargs))
    shared, computed = TeacherSVD(keep=8), []
    for rank in (8, 2, 5, 64):  # the run's largest first (as kept), smaller ones, then one wider than kept
        alone, together = copy.deepcopy(teacher), copy.deepcopy(teacher)
        factorize(alone, sites, rank)
        before = len(calls)
        factorize(together, sites, rank, svd=shared)
        computed.append(len(calls) - before)
        own = alone.state_dict()
        assert all(torch.equal(own[name], value) for name, value in together.state_dict().items()), rank
    # One SVD per layer (a split qkv: per chunk) for every rank up to what is kept; a wider rank computes again.
    assert computed == [layers, 0, 0, layers]


@pytest.mark.parametrize("qkv", ["split", "fused"])
def test_the_teachers_svd_filled_ahead_gives_its_students_the_factors_of_their_own(scrambled, qkv):
    # A run computes its teacher's SVD ahead of its students, under a progress bar (a minute of silence on CPU
    # for ViT-B/32): the students then take the very factors they would have computed.
    spec = default_registry().architecture("micro_vit")
    teacher = scrambled(lambda: spec.build(spec.native_request()))
    sites = spec.targets["joint"](teacher)
    shared, steps = TeacherSVD(keep=8), []
    pending = shared.pending(teacher, sites, 8, qkv)
    assert [site.path for site, _ in pending] == [site.path for site in sites]
    state = torch.get_rng_state()
    shared.fill(pending, 8, steps.append)
    assert torch.equal(torch.get_rng_state(), state) and steps == [1] * len(sites)
    assert shared.pending(teacher, sites, 8, qkv) == [] and shared.pending(teacher, sites, 4, qkv) == []
    assert len(shared.pending(teacher, sites, 16, qkv)) == len(sites)  # wider than kept: computed again
    alone, together = copy.deepcopy(teacher), copy.deepcopy(teacher)
    factorize(alone, sites, 8, qkv=qkv)
    factorize(together, sites, 8, qkv=qkv, svd=shared)
    own = alone.state_dict()
    assert all(torch.equal(own[name], value) for name, value in together.state_dict().items())


def test_a_shared_svd_refuses_a_layer_of_another_shape_and_a_layer_without_its_path():
    shared = TeacherSVD(keep=4)
    low_rank_from(seeded_linear(6, 5), 2, svd=shared, path="fc")
    with pytest.raises(ValueError, match="the layer at \\('fc', 0\\) was 5×6, now \\(5, 7\\)"):
        low_rank_from(seeded_linear(7, 5), 2, svd=shared, path="fc")
    with pytest.raises(ValueError, match="needs the layer's path"):
        low_rank_from(seeded_linear(6, 5), 2, svd=shared)


def test_low_rank_micro_vit_differs_from_the_teacher(micro_vit_arch):
    # The counterpart of the test above: at rank 4 the logits do change.
    teacher = micro_vit(micro_vit_arch)
    student = micro_vit(micro_vit_arch)
    factorize(student, micro_vit_arch.targets["joint"](student), 4)
    x = torch.randn(16, 1, 8, 8)
    with torch.no_grad():
        t, s = teacher(x), student(x)
    assert float((t - s).norm() / t.norm()) > 1e-2


VIT_B32_PARAMS = 87_532_132
# Per block (width 768, MLP 3072) at rank 32, qkv split into three rank-32 maps:
#   qkv  A 3·32·768 + B 2304·32 + bias 2304 = 149,760   (dense 768·2304 + 2304 = 1,771,776)
#   proj A 32·768   + B 768·32  + bias 768  =  49,920   (dense 590,592)
#   fc1  A 32·768   + B 3072·32 + bias 3072 = 125,952   (dense 2,362,368)
#   fc2  A 32·3072  + B 768·32  + bias 768  = 123,648   (dense 2,360,064)
#   449,280 per block instead of 7,084,800: 12 blocks save 79,626,240 -> 7,905,892.
VIT_B32_RANK32_SPLIT = 7_905_892
# Fused, qkv is one rank-32 map: A 32·768 + B 2304·32 + bias 2304 = 100,608, i.e. 49,152 fewer
# per block than split: 7,905,892 − 12·49,152 = 7,316,068.
VIT_B32_RANK32_FUSED = 7_316_068


@pytest.fixture(scope="module")
def vit_b32_arch():
    return default_registry().architecture("vit_b32")


def vit_b32_on_meta(arch) -> nn.Module:
    # No memory and no init cost: the counts only need shapes.
    with torch.device("meta"):
        return arch.build(ModelRequest(num_classes=100, in_chans=3, input_size=224))


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_vit_b32_teacher_parameter_count(vit_b32_arch):
    assert n_params(vit_b32_on_meta(vit_b32_arch)) == VIT_B32_PARAMS


@pytest.mark.parametrize("qkv, expected", [("split", VIT_B32_RANK32_SPLIT), ("fused", VIT_B32_RANK32_FUSED)])
def test_vit_b32_rank32_joint_parameter_count(vit_b32_arch, qkv, expected):
    model = vit_b32_on_meta(vit_b32_arch)
    replaced = factorize(model, vit_b32_arch.targets["joint"](model), 32, init="random", qkv=qkv)
    assert len(replaced) == 48
    assert n_params(model) == expected
    if qkv == "split":
        assert VIT_B32_PARAMS / expected == pytest.approx(11.0717, abs=1e-4)


# --- refusals ------------------------------------------------------------------------------


@pytest.mark.parametrize("qkv", ["split", "fused"])
def test_check_rank_bounds(micro_vit_arch, qkv):
    model = micro_vit_arch.build(ModelRequest(num_classes=10, in_chans=1, input_size=8))
    largest = max_rank(model, micro_vit_arch.targets["joint"](model), qkv)
    assert largest == 64
    check_rank(64, largest, "micro_vit")
    check_rank(1, largest, "micro_vit")
    with pytest.raises(RankError, match="positive"):
        check_rank(0, largest, "micro_vit")
    with pytest.raises(RankError, match=r"rank 65 .*micro_vit.*full rank 64"):
        check_rank(65, largest, "micro_vit")


@pytest.mark.parametrize("site, message", [
    (Site(path="blocks.9.attn.qkv"), "does not exist"),
    (Site(path="no_such_layer"), "does not exist"),
    (Site(path="norm"), "is a LayerNorm, not a Linear"),
    (Site(path="blocks.0.attn"), "not a Linear"),
    (Site(path="blocks.0.attn.proj", chunks=3), "64 outputs, not divisible into 3 chunks"),
])
def test_bad_sites_raise_registration_error(micro_vit_arch, site, message):
    model = micro_vit_arch.build(ModelRequest(num_classes=10, in_chans=1, input_size=8))
    with pytest.raises(RegistrationError, match=message):
        factorize(model, [site], 8)
    with pytest.raises(RegistrationError, match=message):
        max_rank(model, [site], "split")


def test_no_sites_raise_registration_error(micro_vit_arch):
    model = micro_vit_arch.build(ModelRequest(num_classes=10, in_chans=1, input_size=8))
    with pytest.raises(RegistrationError, match="selects no layers"):
        factorize(model, [], 8)


@pytest.mark.parametrize(("layer", "chunks", "message"), [
    (nn.Conv2d(4, 8, 3, groups=4), 1, "target site 'conv' is a grouped convolution (groups=4); only dense (groups=1) "
                                      "convolutions factorize"),
    (nn.Conv2d(4, 8, 3), 2, "target site 'conv' is a convolution with chunks=2; chunks split a fused Linear "
                            "projection (qkv), a convolution factorizes whole"),
])
def test_a_convolution_that_cannot_factorize_says_why(layer, chunks, message):
    model = nn.Sequential()
    model.add_module("conv", layer)
    with pytest.raises(RegistrationError) as err:
        resolve_sites(model, [Site(path="conv", chunks=chunks)], "split")
    assert str(err.value) == message
