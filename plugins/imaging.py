"""How image data sets turn uint8 images into model inputs: ImageNet normalisation and the crop+flip augmentation."""
from __future__ import annotations

from collections.abc import Callable

import torch

# Pretrained timm/torchvision teachers expect ImageNet statistics, so every image set uses them.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_MEAN = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
_STD = torch.tensor(IMAGENET_STD).view(3, 1, 1)


def normalize(image: torch.Tensor) -> torch.Tensor:
    """uint8 C×H×W -> float32 normalized with the ImageNet mean and std."""
    return (image.float() / 255 - _MEAN) / _STD


def train_augment(side: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """The CIFAR recipe the paper trains with: random crop with zero padding side/8, then horizontal flip."""
    from torchvision.transforms import v2

    return v2.Compose([v2.RandomCrop(side, padding=side // 8), v2.RandomHorizontalFlip()])
