"""Low-rank layers, and "factorize these sites of this model" from the teacher's SVD."""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from effrank_bench.errors import RankError, RegistrationError
from effrank_bench.specs import Site

Init = Literal["svd", "random"]
QKV = Literal["split", "fused"]


class LowRankLinear(nn.Module):
    """``x -> B(Ax) + bias`` with A: (chunks·r)×in (no bias) and B: out×r per chunk.

    With ``chunks`` > 1 the output is the concatenation of ``chunks`` independent
    rank-r maps sharing the input (a fused qkv factorized as separate q, k and v,
    as in the reference paper); the B factors are applied as one batched matmul
    so the split costs no extra kernel launches.
    """

    def __init__(self, in_features: int, out_features: int, rank: int, *, chunks: int = 1, bias: bool = True):
        super().__init__()
        if out_features % chunks:
            raise ValueError(f"out_features {out_features} is not divisible into {chunks} chunks")
        self.in_features, self.out_features, self.rank, self.chunks = in_features, out_features, rank, chunks
        self.a = nn.Parameter(torch.empty(chunks * rank, in_features))
        self.b = nn.Parameter(torch.empty(chunks, out_features // chunks, rank))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # The same law nn.Linear uses for its weight, applied to each factor.
        nn.init.kaiming_uniform_(self.a, a=math.sqrt(5))
        for b in self.b:
            nn.init.kaiming_uniform_(b, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.linear(x, self.a)
        if self.chunks == 1:
            return F.linear(h, self.b[0], self.bias)
        h = h.unflatten(-1, (self.chunks, self.rank))
        y = torch.einsum("...cr,cdr->...cd", h, self.b).flatten(-2)
        return y if self.bias is None else y + self.bias

    def weight(self) -> torch.Tensor:
        """The full out×in matrix BA this layer applies."""
        a = self.a.unflatten(0, (self.chunks, self.rank))
        return torch.cat([self.b[c] @ a[c] for c in range(self.chunks)])

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, rank={self.rank}, chunks={self.chunks}"


def full_rank(linear: nn.Linear, chunks: int) -> int:
    """The largest rank a chunk of this layer can have."""
    return min(linear.out_features // chunks, linear.in_features)


def low_rank_from(linear: nn.Linear, rank: int, *, chunks: int = 1, init: Init = "svd") -> LowRankLinear:
    """A rank-``rank`` replacement of ``linear`` (rank clamped to each chunk's full rank).

    ``svd`` sets A = √S·Vᵀ and B = U·√S from the truncated SVD of each chunk, the
    best rank-r approximation (Eckart–Young); ``random`` keeps nn.Linear's init
    for the factors, an ablation. Both keep the teacher's bias, which is not low-rank.
    """
    rank = min(rank, full_rank(linear, chunks))
    low = LowRankLinear(linear.in_features, linear.out_features, rank, chunks=chunks, bias=linear.bias is not None)
    low.to(device=linear.weight.device, dtype=linear.weight.dtype)
    with torch.no_grad():
        if linear.bias is not None:
            low.bias.copy_(linear.bias)
        if init == "svd":
            for c, w in enumerate(linear.weight.chunk(chunks)):
                # float64 so that a full-rank student reproduces the teacher to float32 precision.
                u, s, vh = torch.linalg.svd(w.double(), full_matrices=False)
                root = s[:rank].sqrt()
                low.a[c * rank:(c + 1) * rank] = root[:, None] * vh[:rank]
                low.b[c] = u[:, :rank] * root
    return low


def resolve_sites(model: nn.Module, sites: Sequence[Site], qkv: QKV) -> list[tuple[Site, nn.Linear]]:
    """Each site's Linear, checked; with ``qkv="fused"`` a fused projection is one chunk."""
    resolved = []
    for site in sites:
        try:
            module = model.get_submodule(site.path)
        except AttributeError:
            raise RegistrationError(f"target site '{site.path}' does not exist in the model") from None
        if not isinstance(module, nn.Linear):
            raise RegistrationError(f"target site '{site.path}' is a {type(module).__name__}, not a Linear")
        if module.out_features % site.chunks:
            raise RegistrationError(
                f"target site '{site.path}' has {module.out_features} outputs, not divisible into {site.chunks} chunks"
            )
        chunks = site.chunks if qkv == "split" else 1
        resolved.append((site.model_copy(update={"chunks": chunks}), module))
    if not resolved:
        raise RegistrationError("the target selects no layers in this model")
    return resolved


def check_rank(model: nn.Module, sites: Sequence[Site], rank: int, qkv: QKV, arch: str) -> None:
    """Refuse a rank that is not positive or exceeds every targeted layer's full rank."""
    if rank <= 0:
        raise RankError(f"rank must be positive, got {rank}")
    largest = max(full_rank(linear, site.chunks) for site, linear in resolve_sites(model, sites, qkv))
    if rank > largest:
        raise RankError(f"rank {rank} exceeds every targeted layer of {arch} (the largest has full rank {largest})")


def factorize(model: nn.Module, sites: Sequence[Site], rank: int, *, init: Init = "svd",
              qkv: QKV = "split") -> dict[str, LowRankLinear]:
    """Replace each site of ``model`` in place by a low-rank layer; returns them by path."""
    replaced = {}
    for site, linear in resolve_sites(model, sites, qkv):
        low = low_rank_from(linear, rank, chunks=site.chunks, init=init)
        parent_path, _, child = site.path.rpartition(".")
        setattr(model.get_submodule(parent_path), child, low)
        replaced[site.path] = low
    return replaced
