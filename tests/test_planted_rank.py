"""A planted rank is found exactly: an SVD student at rank >= k reproduces a rank-k teacher (the premise of
benchmarks/planted_rank.py), and that script's multiplied-out teacher is the rank-k model it trained."""
from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import pytest
import torch

from effrank_bench.factorize import factorize, resolve_sites
from effrank_bench.registry import default_registry
from effrank_bench.specs import ModelRequest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "planted_rank.py"
# Digits as the micro presets see them: 8×8 for ViT, upsampled to 32×32 for the ConvNet.
SIZES = {"micro_vit": 8, "micro_convnet": 32}


def built(arch: str):
    """The untrained model (eval mode), its joint target's sites and a batch of inputs."""
    torch.manual_seed(0)
    spec = default_registry().architecture(arch)
    model = spec.build(ModelRequest(num_classes=10, in_chans=1, input_size=SIZES[arch])).eval()
    return model, spec.sites(model, "joint"), torch.randn(16, 1, SIZES[arch], SIZES[arch])


def truncate(model: torch.nn.Module, sites, k: int) -> None:
    """Every targeted weight (each chunk: q, k, v apart) replaced by its rank-k truncated SVD."""
    with torch.no_grad():
        for site, layer in resolve_sites(model, sites, "split"):
            chunks = layer.weight.flatten(1).double().chunk(site.chunks)
            planted = []
            for w in chunks:
                u, s, vh = torch.linalg.svd(w, full_matrices=False)
                planted.append((u[:, :k] * s[:k]) @ vh[:k])
            layer.weight.copy_(torch.cat(planted).reshape(layer.weight.shape))


@pytest.mark.parametrize("arch", ["micro_vit", "micro_convnet"])
def test_an_svd_student_at_rank_k_or_more_reproduces_a_rank_k_teacher(arch):
    teacher, sites, x = built(arch)
    truncate(teacher, sites, 3)
    with torch.no_grad():
        expected = teacher(x)
        for rank in (3, 5):
            student = copy.deepcopy(teacher)
            factorize(student, sites, rank, init="svd")
            assert (student.eval()(x) - expected).abs().max().item() < 1e-5, rank
        # Below the planted rank it does not: the check can tell.
        student = copy.deepcopy(teacher)
        factorize(student, sites, 2, init="svd")
        assert (student.eval()(x) - expected).abs().max().item() > 1e-3


@pytest.mark.parametrize("arch", ["micro_vit", "micro_convnet"])
def test_the_planted_teacher_is_its_factors_multiplied_out_at_exactly_rank_k(arch):
    spec = importlib.util.spec_from_file_location("planted_rank", SCRIPT)
    planted = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(planted)
    model, sites, x = built(arch)
    factorized = copy.deepcopy(model)
    factorize(factorized, sites, 3, init="random")
    full = planted.multiply_out(model, factorized, list(sites))
    assert type(full) is type(model) and planted.chunk_ranks(full, list(sites)) == {3}
    with torch.no_grad():
        assert (full.eval()(x) - factorized.eval()(x)).abs().max().item() < 1e-5
