"""Student inits: svd and random copy everything but the factors; paper-rebuild gives fresh norms and head."""
from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from effrank_bench.factorize import NORMS, block_of, factorize
from effrank_bench.registry import default_registry


def _teacher(arch: str) -> tuple[nn.Module, object]:
    """A built model whose every parameter and running statistic is moved off its init, as training would."""
    spec = default_registry().architecture(arch)
    torch.manual_seed(0)
    model = spec.build(spec.native_request()).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p), alpha=0.1)
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-1, 1), m.running_var.uniform_(2, 3), m.num_batches_tracked.fill_(7)
    return model, spec


def test_the_block_of_a_site_is_its_deepest_enclosing_module_with_a_norm():
    vit, _ = _teacher("micro_vit")
    convnet, _ = _teacher("micro_convnet")
    mixer, _ = _teacher("micro_mixer")
    assert block_of(vit, "blocks.2.attn.qkv") == "blocks.2" and block_of(vit, "blocks.0.mlp.fc2") == "blocks.0"
    assert block_of(convnet, "layer2.0.conv1") == "layer2.0"
    assert block_of(convnet, "layer2.0.downsample.0") == "layer2.0.downsample"  # its own conv + bn
    assert block_of(mixer, "blocks.1.mlp_tokens.fc1") == "blocks.1"
    assert block_of(nn.Sequential(nn.Linear(2, 2)), "0") is None  # only the model itself could hold one


def test_paper_rebuild_gives_fresh_norms_and_head_and_keeps_the_embeddings():
    teacher, spec = _teacher("micro_vit")
    student = copy.deepcopy(teacher)
    torch.manual_seed(1)
    replaced = factorize(student, spec.sites(student, "attention"), 4, init="paper-rebuild")
    for i, block in enumerate(student.blocks):
        for norm in (block.norm1, block.norm2):  # both norms of a block holding a factorized layer
            assert torch.equal(norm.weight, torch.ones(64)) and torch.equal(norm.bias, torch.zeros(64))
        assert torch.equal(block.mlp.fc1.weight, teacher.blocks[i].mlp.fc1.weight)  # untargeted: the teacher's
    # Fresh factors and biases: a new layer, nothing of the teacher's projection.
    qkv = replaced["blocks.0.attn.qkv"]
    assert torch.equal(qkv.bias, torch.zeros(192))
    # The head is re-initialised by nn.Linear's own law: uniform within 1/sqrt(in_features) = 1/8.
    head = student.get_classifier()
    assert not torch.allclose(head.weight, teacher.head.weight)
    assert head.weight.abs().max() <= 1 / math.sqrt(64) and head.bias.abs().max() <= 1 / math.sqrt(64)
    assert teacher.head.weight.abs().max() > 1 / math.sqrt(64)  # the teacher's was not in that range
    # Embeddings, tokens and the final norm are the teacher's.
    for name in ("patch_embed.proj.weight", "patch_embed.proj.bias", "cls_token", "pos_embed", "norm.weight",
                 "norm.bias"):
        assert torch.equal(student.state_dict()[name], teacher.state_dict()[name]), name
    assert not torch.equal(teacher.norm.weight, torch.ones(64))  # so that equality above means "kept"


def test_paper_rebuild_resets_batch_norm_statistics_of_a_factorized_block_only():
    teacher, spec = _teacher("micro_convnet")
    student = copy.deepcopy(teacher)
    factorize(student, [s for s in spec.sites(student, "conv") if s.path.startswith("layer1.")], 2,
              init="paper-rebuild")
    bn = student.layer1[0].bn1
    assert torch.equal(bn.weight, torch.ones_like(bn.weight)) and torch.equal(bn.bias, torch.zeros_like(bn.bias))
    assert torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean))
    assert torch.equal(bn.running_var, torch.ones_like(bn.running_var)) and bn.num_batches_tracked == 0
    kept = student.layer2[0].bn1  # a block with no targeted site
    assert torch.equal(kept.running_mean, teacher.layer2[0].bn1.running_mean)
    assert torch.equal(student.conv1[0].weight, teacher.conv1[0].weight)  # the stem


@pytest.mark.parametrize("init", ["svd", "random"])
def test_svd_and_random_copy_norms_head_and_biases_from_the_teacher(init):
    teacher, spec = _teacher("micro_vit")
    student = copy.deepcopy(teacher)
    replaced = factorize(student, spec.sites(student, "joint"), 4, init=init)
    state, own = student.state_dict(), teacher.state_dict()
    norms = [name for name, m in teacher.named_modules() if isinstance(m, NORMS)]
    for name in [f"{n}.{p}" for n in norms for p in ("weight", "bias")] + ["head.weight", "head.bias"]:
        assert torch.equal(state[name], own[name]), name
    assert torch.equal(replaced["blocks.1.mlp.fc1"].bias, teacher.blocks[1].mlp.fc1.bias)
