"""What the built-in presets share: building timm models, their preprocessing and recipe, refusing pretrained
weights clearly."""
from __future__ import annotations

import contextlib
import math
from collections.abc import Callable

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
        import timm

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


# The eval transform of each pinned pretrained tag, as timm's pretrained_cfg gives it: mean, std, crop_pct and
# interpolation. Copied, not read from timm at registration: importing timm (and the torchvision and
# torch._dynamo it imports) took 2.5-3 s of every command, `list` and bad input included, where the
# presets only need these numbers. tests/test_vit_preprocess.py checks each against timm's own eval transform.
_HALF = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
_IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
_PRETRAINED_EVAL = {
    "vit_base_patch32_224.augreg_in21k_ft_in1k": (*_HALF, 0.9, "bicubic"),
    "mixer_b16_224.goog_in21k_ft_in1k": (*_HALF, 0.875, "bicubic"),
    "resnet18.a1_in1k": (*_IMAGENET, 0.95, "bicubic"),
    "resnet50.a1_in1k": (*_IMAGENET, 0.95, "bicubic"),
    "convnext_tiny.in12k_ft_in1k": (*_IMAGENET, 0.95, "bicubic"),
}


def timm_preprocess(model_name: str, input_size: int) -> Preprocess:
    """The eval transform of a pinned timm pretrained tag (center crop).

    timm resizes the shorter side to floor(input_size / crop_pct) and center crops, as its
    ``transforms_imagenet_eval`` does in the default center crop mode.
    """
    mean, std, crop_pct, interpolation = _PRETRAINED_EVAL[model_name]
    return Preprocess(mean=mean, std=std, resize=math.floor(input_size / crop_pct), crop=input_size,
                      interpolation=interpolation)
