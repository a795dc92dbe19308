"""Calibration of a classifier: expected calibration error and negative log-likelihood."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from effrank_bench.errors import ConfigError

#: Equal-width confidence bins over (0, 1], as in Guo et al. (2017).
DEFAULT_BINS = 15


@dataclass(frozen=True)
class Calibration:
    """Top-1 accuracy, expected calibration error and mean cross-entropy (nats) over ``samples``."""

    samples: int
    accuracy: float
    ece: float
    nll: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class CalibrationMeter:
    """Streams batches of (logits, labels) into per-bin sums; keeps no per-sample values.

    Confidence is the top softmax probability; bin b holds confidences in (b/bins, (b+1)/bins], and
    ECE = Σ_b (n_b/N)·|accuracy_b − confidence_b|. Softmax runs in float64 on the logits' device;
    the sums live on the CPU in float64.
    """

    def __init__(self, bins: int = DEFAULT_BINS):
        if bins < 1:
            raise ConfigError(f"calibration needs at least one bin, got {bins}")
        self.bins = bins
        self._count = torch.zeros(bins, dtype=torch.float64)
        self._confidence = torch.zeros(bins, dtype=torch.float64)
        self._correct = torch.zeros(bins, dtype=torch.float64)
        self._nll = 0.0

    def update(self, logits: Tensor, labels: Tensor) -> None:
        """Add a batch: ``logits`` (N, classes) and integer ``labels`` (N,)."""
        if logits.dim() != 2 or labels.shape != logits.shape[:1]:
            raise ConfigError(f"expected logits (N, classes) and labels (N,), got {tuple(logits.shape)} "
                              f"and {tuple(labels.shape)}")
        log_probs = F.log_softmax(logits.detach().double(), dim=-1)
        labels = labels.to(log_probs.device, torch.long)
        top, predicted = log_probs.max(-1)
        confidence = top.exp()
        # ceil puts a confidence on a bin's upper edge into that bin: the bins are closed on the right.
        index = (confidence * self.bins).ceil().long().clamp(1, self.bins) - 1
        self._count += torch.bincount(index, minlength=self.bins).double().cpu()
        self._confidence += torch.bincount(index, confidence, minlength=self.bins).cpu()
        self._correct += torch.bincount(index, (predicted == labels).double(), minlength=self.bins).cpu()
        self._nll -= log_probs.gather(-1, labels[:, None]).sum().item()

    def result(self) -> Calibration:
        """Accuracy, ECE and NLL of every sample fed so far."""
        samples = self._count.sum().item()
        if not samples:
            raise ConfigError("no samples to measure calibration on: call update() with at least one batch")
        gap = (self._correct - self._confidence).abs().sum().item()
        return Calibration(samples=int(samples), accuracy=self._correct.sum().item() / samples,
                           ece=gap / samples, nll=self._nll / samples)


def expected_calibration_error(logits: Tensor, labels: Tensor, bins: int = DEFAULT_BINS) -> float:
    """ECE of one batch of (N, classes) logits over ``bins`` equal-width confidence bins."""
    meter = CalibrationMeter(bins)
    meter.update(logits, labels)
    return meter.result().ece


def negative_log_likelihood(logits: Tensor, labels: Tensor) -> float:
    """Mean cross-entropy in nats of one batch of (N, classes) logits."""
    meter = CalibrationMeter()
    meter.update(logits, labels)
    return meter.result().nll
