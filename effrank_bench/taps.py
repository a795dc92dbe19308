"""Forward hooks that collect branch outputs (before the residual add) for the geometric loss."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from effrank_bench.specs import Outputs


class BranchTap:
    """Records, in order, the output of each given module during ``forward``.

    Outputs of other passes through the model (an evaluation, a latency run)
    are dropped at the next ``forward``, so the loss never sees stale features.
    """

    def __init__(self, modules: Sequence[nn.Module]):
        self._outputs: list[torch.Tensor] = []
        self._handles = [m.register_forward_hook(self._record) for m in modules]

    def _record(self, module: nn.Module, args, output) -> None:
        self._outputs.append(output)

    def forward(self, model: nn.Module, x: torch.Tensor) -> Outputs:
        self._outputs = []
        logits = model(x)
        outputs, self._outputs = tuple(self._outputs), []
        return Outputs(logits=logits, features=outputs)

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
