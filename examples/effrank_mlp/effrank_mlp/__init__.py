"""An example architecture plugin: a residual MLP classifier on flattened images."""
from __future__ import annotations

import torch
from torch import nn

from effrank_bench import hookimpl
from effrank_bench.errors import CheckpointError
from effrank_bench.specs import ArchitectureSpec, Branch, ModelRequest, Site


class Block(nn.Module):
    """x + fc2(gelu(fc1(norm(x)))): the MLP branch is what gets factorized and distilled."""

    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mlp(self.norm(x))


class MLPClassifier(nn.Module):
    def __init__(self, in_features: int, num_classes: int, width: int = 64, hidden: int = 128, depth: int = 3):
        super().__init__()
        self.stem = nn.Linear(in_features, width)
        self.blocks = nn.Sequential(*(Block(width, hidden) for _ in range(depth)))
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x.flatten(1))))


def build(request: ModelRequest) -> nn.Module:
    if request.pretrained:
        raise CheckpointError("mlp_classifier has no pretrained weights; pass --teacher-checkpoint PATH")
    return MLPClassifier(request.in_chans * request.input_size**2, request.num_classes)


def mlp_sites(model: MLPClassifier) -> list[Site]:
    return [Site(path=f"blocks.{i}.mlp.{j}") for i in range(len(model.blocks)) for j in (0, 2)]


def branches(model: MLPClassifier) -> list[Branch]:
    return [Branch(block.mlp) for block in model.blocks]


@hookimpl
def register_architectures(register):
    register(ArchitectureSpec(
        name="mlp_classifier",
        description="residual MLP on flattened 8×8 images (example third-party plugin)",
        build=build,
        targets={"mlp": mlp_sites},  # no attention here: the core refuses it, naming "mlp"
        branches=branches,
        input_size=8, in_chans=1, num_classes=10,
    ))
