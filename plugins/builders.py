"""What the built-in presets share: building timm models, their preprocessing and recipe, refusing pretrained
weights clearly."""
from __future__ import annotations

import contextlib
import math
from collections.abc import Callable

import timm
from timm.models import get_pretrained_cfg
from torch import nn

from effrank_bench.errors import CheckpointError
from effrank_bench.specs import ModelRequest, Preprocess
from effrank_bench_plugins.hub import cache_only_when_offline, why_it_failed


# The recipe of a paper-size image model (ViT-B/32, Mixer-B/16), this project's fast recipe for ViT-B/32
# on CIFAR-100 (benchmarks/vit_b32_cifar100_fast.toml): the teacher fine-tuned by SGD with momentum at
# lr 0.01, no weight decay, as the ViT and Mixer papers fine-tune; students AdamW at lr 1e-4 for 15
# epochs from the teacher's SVD, both at batch 256 (warm-up, cosine: RunConfig's own).
IMAGE_RECIPE = {"batch_size": 256, "teacher_optimizer": "sgd", "teacher_lr": 0.01, "teacher_weight_decay": 0.0,
                "teacher_epochs": 10, "lr": 1e-4, "epochs": 15}


def timm_builder(model_name: str, *, fixed_size: bool) -> Callable[[ModelRequest], nn.Module]:
    """``build`` for a timm preset; ``fixed_size`` models (ViT, Mixer) take the input size at construction."""

    def build(request: ModelRequest) -> nn.Module:
        size = {"img_size": request.input_size} if fixed_size else {}
        try:
            # Offline, the hub is asked for its local cache only: it would otherwise retry for a minute.
            with cache_only_when_offline() if request.pretrained else contextlib.nullcontext() as offline:
                return timm.create_model(model_name, pretrained=request.pretrained,
                                         num_classes=request.num_classes, in_chans=request.in_chans, **size)
        except (OSError, RuntimeError, ValueError) as err:
            if not request.pretrained:
                raise
            why = why_it_failed(offline, err)
            raise CheckpointError(
                f"cannot fetch timm's pretrained weights for {model_name} ({why}); download them where you have "
                "network access and pass the file with --teacher-checkpoint PATH (safetensors, or a .pt/.pth "
                "state dict)"
            ) from None

    return build


def refuse_pretrained(name: str, request: ModelRequest) -> None:
    """Micro presets are trained here; they have no published weights."""
    if request.pretrained:
        raise CheckpointError(f"{name} has no pretrained weights; train it from scratch (drop --pretrained) "
                              "or pass --teacher-checkpoint PATH")


def timm_preprocess(model_name: str, input_size: int) -> Preprocess:
    """The eval transform of a timm model's pretrained tag, read from timm's tables (no download).

    timm resizes the shorter side to floor(input_size / crop_pct) and center crops, as its
    ``transforms_imagenet_eval`` does in the default center crop mode.
    """
    cfg = get_pretrained_cfg(model_name)
    if cfg is None or cfg.crop_mode not in (None, "center"):
        raise ValueError(f"timm has no center-crop pretrained configuration for {model_name}")
    return Preprocess(mean=tuple(cfg.mean), std=tuple(cfg.std), resize=math.floor(input_size / cfg.crop_pct),
                      crop=input_size, interpolation=cfg.interpolation)
