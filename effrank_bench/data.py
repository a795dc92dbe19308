"""Batches of a data set on the run's device, images resized to the architecture's input size its weights' way."""
from __future__ import annotations

import itertools
import os
import sys
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, TensorDataset

from effrank_bench.specs import Modality, ModelRequest, Preprocess


# Workers fork on Linux, as they did by default before Python 3.14 made it forkserver there: a forkserver
# worker imports torch and unpickles the data set first, and workers start anew each pass (a 200-epoch fit
# makes 400). benchmarks/worker_start.py: 6.2 s a pass against 0.9 s (2 workers, 4,500 CIFAR-100 items).
# Elsewhere (macOS: spawn), the platform's way.
WORKER_START = "fork" if sys.platform == "linux" else None


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

    Resizing happens per batch on the device, so a GPU does it and the data set stays at its
    native size in memory: bilinear straight to the input size, or, with a ``preprocess`` that
    resizes first, as its weights were evaluated (the shorter side to ``resize``, then the center
    square of the input size, with its interpolation; antialiased as torchvision's and PIL's
    Resize are, which changes nothing when upsampling bilinearly). The
    data set's own transforms (decoding, augmentation) run in ``workers`` processes
    and batches come through pinned memory on CUDA. ``channels_last`` hands image
    batches over in the memory format a channels-last model computes in.
    Token batches pass through unchanged. ``limit`` stops every pass after that many batches.
    """

    def __init__(self, dataset: Dataset, *, batch_size: int, modality: Modality, input_size: int,
                 device: torch.device, shuffle: bool = False, seed: int = 0, workers: int = 0,
                 channels_last: bool = False, preprocess: Preprocess | None = None, drop_last: bool = False,
                 limit: int | None = None):
        # The generator also seeds the workers, so augmentation is reproducible for a seed. Workers start
        # anew each pass, seeded from it as the pass begins: every pass is a function of the generator's
        # state, which a resumed fit restores (persistent workers would take their seed once, in the first
        # pass of each process, so a resumed run would shuffle and augment otherwise than an uninterrupted one).
        generator = self.generator = torch.Generator().manual_seed(seed)
        self._loader = DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator,
                                  drop_last=drop_last, pin_memory=device.type == "cuda", num_workers=workers,
                                  multiprocessing_context=WORKER_START if workers else None)
        self.resize = modality == "image"
        self.channels_last = channels_last and modality == "image"
        self.input_size, self.device, self.preprocess, self.limit = input_size, device, preprocess, limit

    def __len__(self) -> int:
        return len(self._loader) if self.limit is None else min(self.limit, len(self._loader))

    @property
    def samples(self) -> int:
        """Samples in one pass: the data set's, less a dropped last batch or what --limit-batches cuts."""
        n, size = len(self._loader.dataset), self._loader.batch_size
        whole = n // size * size if self._loader.drop_last else n
        return whole if len(self) == len(self._loader) else len(self) * size

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        size = self.input_size
        for x, y in itertools.islice(self._loader, self.limit):
            x = x.to(self.device, non_blocking=True)
            if self.resize and x.shape[-2:] != (size, size):
                x = self._resize(x)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y.to(self.device, non_blocking=True)

    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        size, p = self.input_size, self.preprocess
        if p is None or p.resize is None:
            mode, antialias = ("bilinear", False) if p is None else (p.interpolation, True)
            return F.interpolate(x, size=(size, size), mode=mode, align_corners=False, antialias=antialias)
        h, w = x.shape[-2:]
        # torchvision's Resize(int): the shorter side exactly, the longer one scaled and truncated.
        short = round(p.resize * size / p.crop)  # = resize at the crop the weights expect
        new = (short, int(short * w / h)) if h <= w else (int(short * h / w), short)
        x = F.interpolate(x, size=new, mode=p.interpolation, align_corners=False, antialias=True)
        top, left = int(round((new[0] - size) / 2.0)), int(round((new[1] - size) / 2.0))
        return x[..., top:top + size, left:left + size]


def example_input(request: ModelRequest, modality: Modality, batch_size: int, device: torch.device,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """A batch shaped like real input, for counting MACs and timing: cost does not depend on values.
    ``generator`` draws it (on ``device``) instead of the global random state."""
    if modality == "tokens":
        # Ids from 1: 0 is padding, and a padded example would skip work a real one does.
        return torch.randint(1, request.vocab_size, (batch_size, request.input_size), device=device,
                             generator=generator)
    size = request.input_size
    return torch.randn(batch_size, request.in_chans, size, size, device=device, generator=generator)
