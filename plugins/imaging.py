"""How image data sets turn uint8 images into model inputs: whose mean and std normalize them, and crop+flip."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from effrank_bench.errors import DataError
from effrank_bench.specs import Preprocess

@dataclass(frozen=True)
class Normalize:
    """uint8 C×H×W -> float32 in [0, 1], minus ``mean``, over ``std`` per channel (picklable, for workers)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "_mean", torch.tensor(self.mean).view(-1, 1, 1))
        object.__setattr__(self, "_std", torch.tensor(self.std).view(-1, 1, 1))

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return (image.float() / 255 - self._mean) / self._std

    @classmethod
    def expected_by(cls, preprocess: Preprocess, channels: int) -> Normalize:
        """The mean and std a pretrained model's weights expect, for a data set of ``channels`` channels.

        A pretrained model was trained on inputs normalized its way, so a data set must speak that way
        to it (a model trained here from scratch gets its data set's own statistics instead). A
        one-channel data set takes the channels' average, as timm folds an RGB stem into one channel.
        """
        mean, std = preprocess.mean, preprocess.std
        if len(mean) != channels:
            if channels != 1:
                raise DataError(f"the architecture normalizes {len(mean)} channels but the data set has {channels}")
            mean, std = (sum(mean) / len(mean),), (sum(std) / len(std),)
        return cls(tuple(mean), tuple(std))


def train_augment(side: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """The CIFAR recipe the paper trains with: random crop with zero padding side/8, then horizontal flip."""
    from torchvision.transforms import v2

    return v2.Compose([v2.RandomCrop(side, padding=side // 8), v2.RandomHorizontalFlip()])
