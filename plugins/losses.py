"""The distillation losses: geometric (branch outputs + logits), logit (MSE + cosine) and Hinton KD."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from effrank_bench import hookimpl
from effrank_bench.distances import geometric_distance, mse_cosine
from effrank_bench.errors import LossError
from effrank_bench.specs import LossOptions, LossSpec, Outputs


def geometric(teacher: Outputs, student: Outputs, labels: torch.Tensor, options: LossOptions) -> torch.Tensor:
    if len(teacher.features) != len(student.features):
        raise LossError(
            f"geometric loss: the teacher gave {len(teacher.features)} branch outputs "
            f"but the student gave {len(student.features)}"
        )
    if not teacher.features:
        raise LossError("geometric loss: no branch outputs were captured; the architecture's branches() is empty")
    for i, (t, s) in enumerate(zip(teacher.features, student.features)):
        if t.shape != s.shape:
            raise LossError(f"geometric loss: branch {i} has shape {tuple(s.shape)} in the student "
                            f"but {tuple(t.shape)} in the teacher")
    return geometric_distance(teacher, student)


def logit(teacher: Outputs, student: Outputs, labels: torch.Tensor, options: LossOptions) -> torch.Tensor:
    return mse_cosine(student.logits, teacher.logits)


def kd(teacher: Outputs, student: Outputs, labels: torch.Tensor, options: LossOptions) -> torch.Tensor:
    """α·T²·KL(softmax(t/T) ‖ softmax(s/T)) + (1 − α)·CE(s, y); T² keeps gradients comparable across T."""
    t = options.kd_temperature
    s_logits, t_logits = student.logits.float(), teacher.logits.float()
    kl = F.kl_div(F.log_softmax(s_logits / t, dim=-1), F.log_softmax(t_logits / t, dim=-1),
                  reduction="batchmean", log_target=True)
    ce = F.cross_entropy(s_logits, labels)
    return options.kd_alpha * t * t * kl + (1 - options.kd_alpha) * ce


@hookimpl
def register_losses(register):
    register(LossSpec(
        name="geometric", compute=geometric, uses_features=True,
        description="MSE + (1 − cos) on every attention/MLP branch output and the logits, averaged",
    ))
    register(LossSpec(name="logit", compute=logit, description="MSE + (1 − cos) on the logits"))
    register(LossSpec(name="kd", compute=kd,
                      description="Hinton KD: α·T²·KL(teacher ‖ student) + (1 − α)·cross-entropy"))
