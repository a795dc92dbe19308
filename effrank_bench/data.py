"""Batches of a data set on the run's device, resized to the architecture's input size."""
from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset


class Batches:
    """Iterates ``(x, y)`` on ``device``; ``x`` resized to ``image_size`` when the data set's differs.

    Resizing happens per batch on the device (bilinear, as torchvision's Resize),
    so a GPU does it and the data set stays at its native size in memory.
    """

    def __init__(self, dataset: Dataset, *, batch_size: int, image_size: int, device: torch.device,
                 shuffle: bool = False, seed: int = 0):
        generator = torch.Generator().manual_seed(seed) if shuffle else None
        cuda = device.type == "cuda"
        self._loader = DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator,
                                  pin_memory=cuda, drop_last=False)
        self.image_size, self.device = image_size, device

    def __len__(self) -> int:
        return len(self._loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for x, y in self._loader:
            x = x.to(self.device, non_blocking=True)
            if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
                x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
            yield x, y.to(self.device, non_blocking=True)
