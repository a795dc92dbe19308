"""One student step before a teacher trains: what only a step shows (a plugin's branch list, a parent that reads its
factorized layer's weight itself, a loss that cannot take the outputs) stops a run in one line naming its parts,
not in a traceback after the teacher's training, which on a paper-size model takes hours."""
from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import torch

from effrank_bench.data import example_input
from effrank_bench.errors import EffrankError, LossError, RegistrationError, one_line
from effrank_bench.factorize import factorize
from effrank_bench.specs import Outputs
from effrank_bench.train import checked_loss, tapped, teacher_outputs

if TYPE_CHECKING:
    from effrank_bench.setup import RunSetup

#: Inputs of the step: two, so that a layer that needs more than one value per channel (batch norm) can train.
BATCH = 2


def check_student_step(setup: RunSetup) -> None:
    """A forward, loss and backward of the run's smallest student (random factors) on :data:`BATCH` example
    inputs, on CPU, the untrained teacher giving the targets. Draws nothing from the global random streams (the
    teacher's training that follows is the same with or without it); leaves ``setup.model`` as it was."""
    config, arch, loss = setup.config, setup.parts.arch, setup.parts.loss
    rank = min(config.ranks)
    what = f"a rank-{rank} student of {arch.name} ({config.target} target, {loss.name} loss)"
    teacher, mode = setup.model, setup.model.training
    teacher.eval()  # as distillation runs it, and so that a forward moves no batch-norm statistics
    try:
        with torch.random.fork_rng(devices=[]):
            student = copy.deepcopy(teacher)
            factorize(student, setup.sites, rank, init="random", qkv=config.qkv)
            student.train().requires_grad_(True)
            x = example_input(setup.request, arch.modality, BATCH, torch.device("cpu"))
            y = torch.zeros(BATCH, dtype=torch.long)
            needs = loss.uses_features
            with tapped(arch.branches(teacher) if needs else None) as t_tap, \
                    tapped(arch.branches(student) if needs else None) as tap:
                target = teacher_outputs(teacher, t_tap, x, amp=False)
                out = tap.forward(student, x) if tap is not None else Outputs(logits=student(x))
                if not needs:  # a loss that reads them anyway would get () in training: a zero or a crash
                    target, out = (Outputs(logits=o.logits, features=_Untapped(loss.name)) for o in (target, out))
                checked_loss(loss)(target, out, y, config.loss_options).backward()
    except LossError as err:
        raise LossError(f"{what}: {err}") from err
    except EffrankError:
        raise
    except Exception as err:  # noqa: BLE001 - whatever a plugin's model, branches or loss raise
        raise RegistrationError(f"{what} fails its first step, on {BATCH} example inputs before the teacher trains: "
                                f"{one_line(err)} (--debug shows where)") from err
    finally:
        teacher.train(mode)


class _Untapped(tuple):
    """The branch outputs of a loss registered without ``uses_features``: reading them is refused, naming the flag
    (in training they are an empty tuple, whose mean is a crash and whose sum a loss that trains nothing)."""

    def __new__(cls, loss: str) -> _Untapped:
        untapped = super().__new__(cls)
        untapped.loss = loss
        return untapped

    def _refuse(self, *args: object) -> None:
        raise LossError(f"loss '{self.loss}' reads the branch outputs (.features) but is registered without "
                        "uses_features=True, so no branch is tapped for it: register it with "
                        "LossSpec(..., uses_features=True)")

    __iter__ = __getitem__ = _refuse  # not len() or bool(): a loss may ask whether there are any, and fall back
