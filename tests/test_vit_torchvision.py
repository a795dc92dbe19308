"""vit_b32_tv: torchvision's ViT-B/32 weights (the paper's teacher) in our timm ViT compute torchvision's logits."""
from __future__ import annotations

from urllib.error import URLError

import pytest
import torch
import torchvision
from torch import nn

from effrank_bench.errors import CheckpointError
from effrank_bench.registry import default_registry
from effrank_bench.specs import ModelRequest
from effrank_bench.teacher import apply_checkpoint
from effrank_bench_plugins import torchvision_vit
from effrank_bench_plugins.torchvision_vit import timm_state_dict_from_torchvision


@pytest.fixture(scope="module")
def arch():
    return default_registry().architecture("vit_b32_tv")


@pytest.fixture(scope="module")
def reference() -> nn.Module:
    """torchvision's vit_b_32 with 100 classes and random weights nothing is zero or one in.

    torchvision starts the head, class token and attention biases at zero and LayerNorms at 1/0:
    a conversion that dropped or swapped any of them would go unseen with those values. Built on the
    meta device and filled here: torchvision's own init of 88M weights would only be overwritten.
    """
    torch.manual_seed(0)
    with torch.device("meta"):
        model = torchvision.models.vit_b_32(weights=None, num_classes=100)
    model = model.to_empty(device="cpu").eval()
    assert not list(model.buffers())  # every tensor is a parameter, filled below
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.02)
        for m in model.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.normal_(1.0, 0.2)
                m.bias.normal_(0.0, 0.2)
    return model


def test_the_pretrained_build_from_torchvision_weights_gives_torchvision_logits(arch, reference, monkeypatch):
    monkeypatch.setattr(torchvision_vit, "_fetch_weights", lambda: reference.state_dict())
    model = arch.build(ModelRequest(num_classes=100, input_size=224, pretrained=True)).eval()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, logits = reference(x), model(x)
    assert expected.std() > 0.1  # the check below compares real numbers, not zeros
    assert (logits - expected).abs().max() < 1e-4


def test_another_class_count_keeps_every_weight_but_the_head(arch, reference, monkeypatch):
    torchvision_state = reference.state_dict()
    monkeypatch.setattr(torchvision_vit, "_fetch_weights", lambda: torchvision_state)
    model = arch.build(ModelRequest(num_classes=10, input_size=224, pretrained=True))
    converted, own = timm_state_dict_from_torchvision(torchvision_state), model.state_dict()
    assert own["head.weight"].shape == (10, 768)
    assert all(torch.equal(own[k], v) for k, v in converted.items() if not k.startswith("head."))
    # --teacher-checkpoint with torchvision's file: the core converts, then loads all but the head.
    assert apply_checkpoint(model, arch.convert_checkpoint(torchvision_state), "vit_b_32.pth") == [
        "head.weight", "head.bias"]


def test_offline_the_pretrained_build_says_how_to_pass_the_file(arch, monkeypatch):
    def offline(self, *args, **kwargs):
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.models.ViT_B_32_Weights, "get_state_dict", offline)
    with pytest.raises(CheckpointError) as err:
        arch.build(ModelRequest(num_classes=100, input_size=224, pretrained=True))
    message = str(err.value)
    assert "\n" not in message and "name resolution" in message
    assert "https://download.pytorch.org/models/vit_b_32-d86f8d99.pth" in message
    assert "--teacher-checkpoint PATH" in message


def test_the_key_map_follows_torchvision_and_leaves_timm_keys_alone():
    value = torch.zeros(1)
    names = ["class_token", "conv_proj.weight", "encoder.pos_embedding", "encoder.ln.bias", "heads.head.weight",
             *(f"encoder.layers.encoder_layer_11.{k}" for k in (
                 "ln_1.weight", "self_attention.in_proj_weight", "self_attention.in_proj_bias",
                 "self_attention.out_proj.weight", "ln_2.bias", "mlp.0.weight", "mlp.3.bias"))]
    assert list(timm_state_dict_from_torchvision(dict.fromkeys(names, value))) == [
        "cls_token", "patch_embed.proj.weight", "pos_embed", "norm.bias", "head.weight",
        "blocks.11.norm1.weight", "blocks.11.attn.qkv.weight", "blocks.11.attn.qkv.bias",
        "blocks.11.attn.proj.weight", "blocks.11.norm2.bias", "blocks.11.mlp.fc1.weight", "blocks.11.mlp.fc2.bias"]
    timm_keys = {"cls_token": value, "blocks.0.attn.qkv.weight": value}
    assert timm_state_dict_from_torchvision(timm_keys) == timm_keys
    with pytest.raises(CheckpointError, match="'heads.pre_logits.weight' is not a key of torchvision's vit_b_32"):
        timm_state_dict_from_torchvision({"conv_proj.weight": value, "heads.pre_logits.weight": value})
