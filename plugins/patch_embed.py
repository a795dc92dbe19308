"""Patch embeddings (a convolution whose stride is its kernel) computed as one matrix product on CUDA."""
from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from effrank_bench.specs import ModelRequest


def patch_matmul(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``conv2d(x, weight, bias, stride=kernel)``, as the product of the unfolded patches and the flat kernel.

    Rows and columns past the last whole patch are dropped, as the convolution drops them.
    """
    n, c, h, w = x.shape
    ph, pw = weight.shape[-2:]
    rows, cols = h // ph, w // pw
    patches = x[..., :rows * ph, :cols * pw].reshape(n, c, rows, ph, cols, pw).permute(0, 2, 4, 1, 3, 5)
    out = F.linear(patches.reshape(n * rows * cols, c * ph * pw), weight.reshape(len(weight), -1), bias)
    return out.reshape(n, rows, cols, -1).permute(0, 3, 1, 2)


class PatchConv2d(nn.Conv2d):
    """A patch embedding: the convolution's parameters, state dict and outputs, computed on CUDA by
    :func:`patch_matmul`.

    On an H200, cuDNN took 5.4 ms for ViT-B/32's patch embedding forward and weight gradient at batch 256 (a fifth
    of a compiled rank-32 student's step), the matrix product 0.8 ms (benchmarks/patch_embed.py). On CPU, and
    for an unbatched input, the convolution runs as it always has: it was no slower there, and runs keep their
    numbers.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return patch_matmul(x, self.weight, self.bias) if x.is_cuda and x.dim() == 4 else super().forward(x)


def is_patch_conv(module: nn.Module) -> bool:
    """A plain convolution over non-overlapping patches: stride equal to the kernel, no padding or dilation."""
    return (type(module) is nn.Conv2d and module.stride == module.kernel_size and module.padding == (0, 0)
            and module.dilation == (1, 1) and module.groups == 1)


def with_patch_matmul(build: Callable[[ModelRequest], nn.Module]) -> Callable[[ModelRequest], nn.Module]:
    """``build``, whose model's patch convolutions (a ViT's or an MLP-Mixer's patch embedding) become
    :class:`PatchConv2d`: the same modules, parameters and hooks; only their forward differs."""

    @functools.wraps(build)
    def built(request: ModelRequest) -> nn.Module:
        model = build(request)
        for module in model.modules():
            if is_patch_conv(module):
                module.__class__ = PatchConv2d
        return model

    return built
