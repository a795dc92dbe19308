"""Patch embeddings as a matrix product: the convolution's numbers and gradients, the same modules and state."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from effrank_bench.specs import ModelRequest
from effrank_bench_plugins.patch_embed import PatchConv2d, is_patch_conv, patch_matmul


@pytest.mark.parametrize("shape, kernel, bias", [
    ((2, 3, 64, 64), (32, 32), True),   # ViT-B/32's patches, two of them a side
    ((3, 1, 8, 8), (2, 2), False),      # micro_vit's
    ((2, 3, 70, 45), (16, 8), True),    # neither side whole: the convolution drops the rest, so must the product
    ((2, 4, 5, 5), (1, 1), True),       # micro_mixer's patch of one pixel
])
def test_the_product_is_the_convolution_in_value_and_gradient(shape, kernel, bias):
    torch.manual_seed(0)
    x = torch.randn(*shape, dtype=torch.float64)
    weight = torch.randn(7, shape[1], *kernel, dtype=torch.float64, requires_grad=True)
    b = torch.randn(7, dtype=torch.float64, requires_grad=True) if bias else None
    expected = F.conv2d(x, weight, b, stride=kernel)
    got = patch_matmul(x, weight, b)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    upstream = torch.randn_like(expected)
    params = [weight] + ([b] if bias else [])
    grads = torch.autograd.grad((expected * upstream).sum(), params)
    torch.testing.assert_close(torch.autograd.grad((got * upstream).sum(), params), grads, rtol=1e-12, atol=1e-12)


def test_channels_last_inputs_and_kernels_give_the_same_product():
    # A CUDA image run moves models and batches to channels-last (setup.to_device): the product reads logical
    # order whatever the memory order.
    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    weight, bias = torch.randn(5, 3, 32, 32, dtype=torch.float64), torch.randn(5, dtype=torch.float64)
    last = patch_matmul(x.contiguous(memory_format=torch.channels_last),
                        weight.contiguous(memory_format=torch.channels_last), bias)
    torch.testing.assert_close(last, F.conv2d(x, weight, bias, stride=32), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("conv, patch", [
    (nn.Conv2d(3, 8, 4, stride=4), True),
    (nn.Conv2d(3, 8, 1), True),
    (nn.Conv2d(3, 8, 4, stride=2), False),             # overlapping windows
    (nn.Conv2d(3, 8, 4, stride=4, padding=1), False),
    (nn.Conv2d(4, 8, 2, stride=2, groups=2), False),
    (nn.Conv2d(3, 8, 2, stride=2, dilation=2), False),
])
def test_only_plain_non_overlapping_convolutions_are_patch_convolutions(conv, patch):
    assert is_patch_conv(conv) is patch


@pytest.mark.parametrize("name", ["micro_vit", "micro_mixer"])
def test_vit_and_mixer_presets_embed_patches_by_the_product_with_the_convolutions_state(name, architecture):
    spec = architecture(name)
    request = ModelRequest(num_classes=10, in_chans=1, input_size=8)
    torch.manual_seed(0)
    model = spec.build(request)
    patches = [m for m in model.modules() if isinstance(m, PatchConv2d)]
    assert len(patches) == 1 and not any(type(m) is nn.Conv2d for m in model.modules())
    torch.manual_seed(0)
    plain = spec.build.__wrapped__(request)  # the preset's own build: timm's model as it comes
    assert any(type(m) is nn.Conv2d for m in plain.modules())
    state, plain_state = model.state_dict(), plain.state_dict()
    assert list(state) == list(plain_state) and all(torch.equal(state[k], plain_state[k]) for k in state)
    x = torch.randn(2, 1, 8, 8)
    # On CPU a PatchConv2d is its convolution: a run's numbers do not move.
    assert torch.equal(model.eval()(x), plain.eval()(x))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_on_cuda_the_patch_embedding_runs_as_the_product_within_bf16_rounding(layout):
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 768, 32, stride=32).cuda().to(memory_format=layout)
    patch = PatchConv2d(3, 768, 32, stride=32).cuda().to(memory_format=layout)
    patch.load_state_dict(conv.state_dict())
    x = torch.randn(4, 3, 224, 224, device="cuda").contiguous(memory_format=layout)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        expected, got = conv(x), patch(x)
    torch.testing.assert_close(got.float(), expected.float(), rtol=2e-2, atol=5e-2)
