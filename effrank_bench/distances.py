"""The distance between teacher and student outputs that the geometric loss and the conformance kit share."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from effrank_bench.specs import Outputs


def mse_cosine(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """MSE + (1 − cosine over the last (channel) dim, averaged over every other position)."""
    student, teacher = student.float(), teacher.float()
    return F.mse_loss(student, teacher) + (1 - F.cosine_similarity(student, teacher, dim=-1).mean())


def geometric_distance(teacher: Outputs, student: Outputs) -> torch.Tensor:
    """:func:`mse_cosine` of the logits and of every branch output, averaged over the number of terms."""
    pairs = [(student.logits, teacher.logits), *zip(student.features, teacher.features)]
    return torch.stack([mse_cosine(s, t) for s, t in pairs]).mean()
