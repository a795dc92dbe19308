"""Batches of a data set on the run's device, images resized to the architecture's input size."""
from __future__ import annotations

import os
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, TensorDataset

from effrank_bench.specs import Modality, ModelRequest


def default_workers(device: torch.device, dataset: Dataset) -> int:
    """DataLoader workers: 8 on CUDA for data sets that decode or augment per item.

    No workers on CPU, where they would compete with training for the cores, and none for tensors
    already in memory (a TensorDataset's item is a slice: workers would only add processes).
    """
    if device.type != "cuda" or isinstance(dataset, TensorDataset):
        return 0
    return min(8, os.cpu_count() or 1)


class Batches:
    """Iterates ``(x, y)`` on ``device``; images resized to ``input_size`` when the data set's differs.

    Resizing happens per batch on the device (bilinear, as torchvision's Resize),
    so a GPU does it and the data set stays at its native size in memory; the
    data set's own transforms (decoding, augmentation) run in ``workers`` processes
    and batches come through pinned memory on CUDA. ``channels_last`` hands image
    batches over in the memory format a channels-last model computes in.
    Token batches pass through unchanged.
    """

    def __init__(self, dataset: Dataset, *, batch_size: int, modality: Modality, input_size: int,
                 device: torch.device, shuffle: bool = False, seed: int = 0, workers: int = 0,
                 channels_last: bool = False):
        # The generator also seeds the workers, so augmentation is reproducible for a seed.
        generator = torch.Generator().manual_seed(seed)
        self._loader = DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator,
                                  pin_memory=device.type == "cuda", num_workers=workers,
                                  persistent_workers=workers > 0)
        self.resize = modality == "image"
        self.channels_last = channels_last and modality == "image"
        self.input_size, self.device = input_size, device

    def __len__(self) -> int:
        return len(self._loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        size = self.input_size
        for x, y in self._loader:
            x = x.to(self.device, non_blocking=True)
            if self.resize and x.shape[-2:] != (size, size):
                x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y.to(self.device, non_blocking=True)


def example_input(request: ModelRequest, modality: Modality, batch_size: int, device: torch.device) -> torch.Tensor:
    """A batch shaped like real input, for counting MACs and timing: cost does not depend on values."""
    if modality == "tokens":
        # Ids from 1: 0 is padding, and a padded example would skip work a real one does.
        return torch.randint(1, request.vocab_size, (batch_size, request.input_size), device=device)
    size = request.input_size
    return torch.randn(batch_size, request.in_chans, size, size, device=device)
