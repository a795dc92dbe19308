"""What the built-in presets share: building timm models, and refusing pretrained weights clearly."""
from __future__ import annotations

from collections.abc import Callable

import timm
from torch import nn

from effrank_bench.errors import CheckpointError
from effrank_bench.specs import ModelRequest


def timm_builder(model_name: str, *, fixed_size: bool) -> Callable[[ModelRequest], nn.Module]:
    """``build`` for a timm preset; ``fixed_size`` models (ViT, Mixer) take the input size at construction."""

    def build(request: ModelRequest) -> nn.Module:
        size = {"img_size": request.input_size} if fixed_size else {}
        try:
            return timm.create_model(model_name, pretrained=request.pretrained, num_classes=request.num_classes,
                                     in_chans=request.in_chans, **size)
        except (OSError, RuntimeError, ValueError) as err:
            if not request.pretrained:
                raise
            raise CheckpointError(
                f"cannot fetch timm's pretrained weights for {model_name} ({type(err).__name__}: {err}); "
                "download them where you have network access and pass the file with --teacher-checkpoint PATH "
                "(safetensors, or a .pt/.pth state dict)"
            ) from None

    return build


def refuse_pretrained(name: str, request: ModelRequest) -> None:
    """Micro presets are trained here; they have no published weights."""
    if request.pretrained:
        raise CheckpointError(f"{name} has no pretrained weights; train it from scratch (drop --pretrained) "
                              "or pass --teacher-checkpoint PATH")
