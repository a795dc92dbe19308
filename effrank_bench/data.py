"""Batches of a data set on the run's device, images resized to the architecture's input size."""
from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from effrank_bench.specs import Modality, ModelRequest


class Batches:
    """Iterates ``(x, y)`` on ``device``; images resized to ``input_size`` when the data set's differs.

    Resizing happens per batch on the device (bilinear, as torchvision's Resize),
    so a GPU does it and the data set stays at its native size in memory.
    Token batches pass through unchanged.
    """

    def __init__(self, dataset: Dataset, *, batch_size: int, modality: Modality, input_size: int,
                 device: torch.device, shuffle: bool = False, seed: int = 0):
        generator = torch.Generator().manual_seed(seed) if shuffle else None
        self._loader = DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator,
                                  pin_memory=device.type == "cuda")
        self.resize = modality == "image"
        self.input_size, self.device = input_size, device

    def __len__(self) -> int:
        return len(self._loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        size = self.input_size
        for x, y in self._loader:
            x = x.to(self.device, non_blocking=True)
            if self.resize and x.shape[-2:] != (size, size):
                x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
            yield x, y.to(self.device, non_blocking=True)


def example_input(request: ModelRequest, modality: Modality, batch_size: int, device: torch.device) -> torch.Tensor:
    """A batch shaped like real input, for counting MACs and timing: cost does not depend on values."""
    if modality == "tokens":
        # Ids from 1: 0 is padding, and a padded example would skip work a real one does.
        return torch.randint(1, request.vocab_size, (batch_size, request.input_size), device=device)
    size = request.input_size
    return torch.randn(batch_size, request.in_chans, size, size, device=device)
