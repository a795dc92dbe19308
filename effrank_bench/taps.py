"""Forward hooks that collect branch outputs (before the residual add) for the geometric loss."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from effrank_bench.specs import Branch, Outputs


class BranchTap:
    """Records, in order, each branch's output during ``forward``, channels moved last.

    Outputs are copied when recorded: some blocks add the shortcut in place into
    the branch output (timm's ResNet blocks do), which would otherwise turn a
    recorded branch output into the block's output. Other passes through the
    model (an evaluation, a latency run) record nothing: a validation split's
    branch outputs, kept, would fill a GPU.
    """

    def __init__(self, branches: Sequence[Branch]):
        self._outputs: list[torch.Tensor] | None = None  # a list only during forward
        self._handles = [b.module.register_forward_hook(self._recorder(b.channel_dim)) for b in branches]

    def _recorder(self, channel_dim: int):
        def record(module: nn.Module, args, output: torch.Tensor) -> None:
            if self._outputs is not None:
                self._outputs.append(output.movedim(channel_dim, -1).clone())

        return record

    def forward(self, model: nn.Module, x: torch.Tensor) -> Outputs:
        self._outputs = []
        try:
            logits = model(x)
            outputs = tuple(self._outputs)
        finally:
            self._outputs = None
        return Outputs(logits=logits, features=outputs)

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
