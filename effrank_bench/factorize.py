"""Low-rank layers (Linear and Conv2d), and "factorize these sites of this model" from the teacher's SVD."""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from effrank_bench.errors import RankError, RegistrationError
from effrank_bench.specs import Site

Init = Literal["svd", "random", "paper-rebuild"]
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

    def macs(self, input_shape: Sequence[int]) -> int:
        """Multiply-accumulates of :meth:`forward` on an input of ``input_shape``: A on every row, then B (the
        bias adds left out, as torch's FlopCounterMode leaves them out of a Linear's)."""
        return math.prod(input_shape[:-1]) * self.rank * (self.chunks * self.in_features + self.out_features)

    @property
    def weight(self) -> torch.Tensor:
        """The full out×in matrix BA this layer applies: what a parent reading its layer's ``.weight`` gets
        (``nn.MultiheadAttention``'s ``out_proj``, a tied head), gradients flowing to A and B."""
        a = self.a.unflatten(0, (self.chunks, self.rank))
        return torch.cat([self.b[c] @ a[c] for c in range(self.chunks)])

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, rank={self.rank}, chunks={self.chunks}"


class LowRankConv2d(nn.Module):
    """A k×k conv in→r (the original's stride, padding, dilation; no bias) then a 1×1 conv r→out (the bias)."""

    def __init__(self, conv: nn.Conv2d, rank: int):
        super().__init__()
        self.rank = rank
        self.a = nn.Conv2d(conv.in_channels, rank, conv.kernel_size, stride=conv.stride, padding=conv.padding,
                           dilation=conv.dilation, bias=False, padding_mode=conv.padding_mode)
        self.b = nn.Conv2d(rank, conv.out_channels, 1, bias=conv.bias is not None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.a(x))

    @property
    def weight(self) -> torch.Tensor:
        """The full out×in×k×k kernel this pair applies (as :attr:`LowRankLinear.weight`)."""
        out = self.b.weight.shape[0]
        return (self.b.weight.reshape(out, self.rank) @ self.a.weight.flatten(1)).reshape(
            out, *self.a.weight.shape[1:])


LowRank = (LowRankLinear, LowRankConv2d)
Factorizable = nn.Linear | nn.Conv2d


def full_rank(layer: Factorizable, chunks: int = 1) -> int:
    """The largest rank a chunk of this layer can have (a kernel counts as out × in·k·k)."""
    if isinstance(layer, nn.Conv2d):
        return min(layer.out_channels, layer.weight[0].numel())
    return min(layer.out_features // chunks, layer.in_features)


def _svd_factors(w: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, A) = (U·√S, √S·Vᵀ) of the rank-``rank`` truncated SVD of the 2-D ``w``.

    In float64 so that a full-rank student reproduces the teacher to float32 precision.
    """
    u, s, vh = torch.linalg.svd(w.double(), full_matrices=False)
    root = s[:rank].sqrt()
    return u[:, :rank] * root, root[:, None] * vh[:rank]


class TeacherSVD:
    """The truncated SVD factors of a teacher's targeted layers, computed once for all of its students.

    A student is a copy of the teacher, so each layer it factorizes holds the teacher's weights: its
    rank-r factors are the first r columns of B = U·√S and rows of A = √S·Vᵀ of the teacher's layer,
    the numbers its own SVD would give (computed in float64, kept in the layer's dtype on its device).
    One SVD per layer instead of one per student: ViT-B/32's joint target takes 72 of them, about 28 s
    on 2 CPU cores. ``keep``: the widest rank kept (a run's largest), which bounds the memory.
    """

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self._factors: dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor]] = {}

    def factors(self, key: tuple[str, int], w: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The rank-``rank`` (B, A) of ``w``, the weight (chunk) at ``key`` = (site path, chunk)."""
        kept = self._factors.get(key)
        if kept is not None and (len(kept[0]), kept[1].shape[1]) != tuple(w.shape):
            raise ValueError(f"TeacherSVD: the layer at {key} was {len(kept[0])}×{kept[1].shape[1]}, now "
                             f"{tuple(w.shape)}: its model is no copy of this teacher")
        if not self._holds(key, rank):
            b, a = _svd_factors(w, max(rank, self.keep))
            kept = self._factors[key] = (b.to(w.dtype), a.to(w.dtype))
        b, a = kept
        return b[:, :rank], a[:rank]

    def pending(self, teacher: nn.Module, sites: Sequence[Site], rank: int,
                qkv: QKV) -> list[tuple[Site, Factorizable]]:
        """The sites of ``teacher`` whose factors its students of ``rank`` would have to compute first."""
        return [(site, layer) for site, layer in resolve_sites(teacher, sites, qkv)
                if not all(self._holds((site.path, chunk), min(rank, full_rank(layer, site.chunks)))
                           for chunk in range(site.chunks))]

    def _holds(self, key: tuple[str, int], rank: int) -> bool:
        """Whether the factors at ``key`` are kept at least ``rank`` wide."""
        kept = self._factors.get(key)
        return kept is not None and kept[0].shape[1] >= rank

    def fill(self, pending: list[tuple[Site, Factorizable]], rank: int,
             advance: Callable[[int], None] = lambda n: None) -> None:
        """Compute the factors of ``pending`` (:meth:`pending`) now, a layer at a time (``advance`` after each):
        the students then take them as they are factorized. Draws nothing from the global random streams."""
        with torch.random.fork_rng(devices=[]):  # a throwaway low-rank layer's init draws; the factors do not
            for site, layer in pending:
                low_rank_from(layer, rank, chunks=site.chunks, init="svd", svd=self, path=site.path)
                advance(1)


def low_rank_from(layer: Factorizable, rank: int, *, chunks: int = 1, init: Init = "svd",
                  svd: TeacherSVD | None = None, path: str | None = None) -> nn.Module:
    """A rank-``rank`` replacement of ``layer`` (rank clamped to each chunk's full rank).

    ``svd`` initialises from the truncated SVD of each chunk (of the kernel
    reshaped to out × in·k·k for a conv), the best rank-r approximation
    (Eckart–Young); ``random`` keeps torch's default init for the factors, an
    ablation. Both keep the teacher's bias, which is not low-rank; ``paper-rebuild``
    is a new layer: random factors and the layer's own fresh bias. With a
    :class:`TeacherSVD` (``svd``), the factors of the teacher's layer at ``path`` are reused.
    """
    if svd is not None and path is None:
        raise ValueError("low_rank_from: a shared TeacherSVD needs the layer's path, which keys its factors")
    rank = min(rank, full_rank(layer, chunks))

    def factors(chunk: int, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return svd.factors((path, chunk), w, rank) if svd is not None else _svd_factors(w, rank)

    if isinstance(layer, nn.Conv2d):
        low = LowRankConv2d(layer, rank)
    else:
        low = LowRankLinear(layer.in_features, layer.out_features, rank, chunks=chunks, bias=layer.bias is not None)
    low.to(device=layer.weight.device, dtype=layer.weight.dtype)
    with torch.no_grad():
        if layer.bias is not None and init != "paper-rebuild":
            (low.b.bias if isinstance(low, LowRankConv2d) else low.bias).copy_(layer.bias)
        if init == "svd" and isinstance(low, LowRankConv2d):
            b, a = factors(0, layer.weight.flatten(1))
            low.a.weight.copy_(a.reshape(low.a.weight.shape))
            low.b.weight.copy_(b.reshape(low.b.weight.shape))
        elif init == "svd":
            for c, w in enumerate(layer.weight.chunk(chunks)):
                b, a = factors(c, w)
                low.a[c * rank:(c + 1) * rank] = a
                low.b[c] = b
    return low


def qkv_in_effect(sites: Sequence[Site], qkv: QKV) -> QKV:
    """``qkv`` as it factorizes ``sites``: "fused" only changes a target with a fused projection (chunks)."""
    return qkv if any(site.chunks > 1 for site in sites) else "split"


def resolve_sites(model: nn.Module, sites: Sequence[Site], qkv: QKV) -> list[tuple[Site, Factorizable]]:
    """Each site's layer, checked; with ``qkv="fused"`` a fused projection is one chunk."""
    resolved = []
    for site in sites:
        try:
            module = model.get_submodule(site.path)
        except AttributeError:
            raise RegistrationError(f"target site '{site.path}' does not exist in the model") from None
        if isinstance(module, nn.Conv2d):
            if module.groups != 1:
                raise RegistrationError(f"target site '{site.path}' is a grouped convolution (groups="
                                        f"{module.groups}); only dense (groups=1) convolutions factorize")
            if site.chunks != 1:
                raise RegistrationError(f"target site '{site.path}' is a convolution with chunks={site.chunks}; "
                                        "chunks split a fused Linear projection (qkv), a convolution factorizes whole")
        elif not isinstance(module, nn.Linear):
            raise RegistrationError(f"target site '{site.path}' is a {type(module).__name__}, not a Linear or Conv2d")
        elif module.out_features % site.chunks:
            raise RegistrationError(
                f"target site '{site.path}' has {module.out_features} outputs, not divisible into {site.chunks} chunks"
            )
        chunks = site.chunks if qkv == "split" else 1
        resolved.append((site.model_copy(update={"chunks": chunks}), module))
    if not resolved:
        raise RegistrationError("the target selects no layers in this model")
    return resolved


def max_rank(model: nn.Module, sites: Sequence[Site], qkv: QKV) -> int:
    """The largest full rank among the targeted layers: the rank at which every one of them is exact.

    It is the target's width, against which ranks of models of different widths compare.
    """
    return max(full_rank(layer, site.chunks) for site, layer in resolve_sites(model, sites, qkv))


def check_rank(rank: int, largest: int, arch: str) -> None:
    """Refuse a rank that is not positive or exceeds every targeted layer's full rank (``largest``: the
    target's :func:`max_rank`)."""
    if rank <= 0:
        raise RankError(f"rank must be positive, got {rank}")
    if rank > largest:
        raise RankError(f"rank {rank} exceeds every targeted layer of {arch} (the largest has full rank {largest})")


def factorize(model: nn.Module, sites: Sequence[Site], rank: int, *, init: Init = "svd",
              qkv: QKV = "split", svd: TeacherSVD | None = None) -> dict[str, nn.Module]:
    """Replace each site of ``model`` in place by a low-rank layer; returns them by path.

    ``paper-rebuild`` also gives the targeted blocks fresh norms and the model a fresh head
    (:func:`rebuild_blocks_and_head`), as the reference paper's students were built. ``svd``: the
    SVD of the teacher that ``model`` is a copy of, shared by its students (see :class:`TeacherSVD`).
    """
    replaced = {}
    resolved = resolve_sites(model, sites, qkv)
    if init == "paper-rebuild":
        rebuild_blocks_and_head(model, [site.path for site, _ in resolved])
    for site, layer in resolved:
        low = low_rank_from(layer, rank, chunks=site.chunks, init=init, svd=svd, path=site.path)
        parent_path, _, child = site.path.rpartition(".")
        setattr(model.get_submodule(parent_path), child, low)
        replaced[site.path] = low
    return replaced


def classifier_of(model: nn.Module) -> tuple[str, nn.Module] | None:
    """The head's path and module, from timm's ``model.get_classifier()``; None for a model without one."""
    get_classifier = getattr(model, "get_classifier", None)
    if not callable(get_classifier):
        return None
    head = get_classifier()
    return next(((path, m) for path, m in model.named_modules() if m is head), None)


# The layers a block's "norms" are: their reset_parameters() gives weight 1, bias 0 (and, for
# batch norms, fresh running statistics).
NORMS = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm)


def _has_norm(module: nn.Module) -> bool:
    return any(isinstance(m, NORMS) for m in module.modules())


def block_of(model: nn.Module, path: str) -> str | None:
    """The block of the layer at ``path``: its deepest enclosing module, the model itself excluded,
    that holds a norm layer (``blocks.3`` of ``blocks.3.attn.qkv`` in a ViT, ``layer2.0`` of a ResNet's
    ``layer2.0.conv1``, ``…layer.3.attention`` of a BERT query). None when only the model holds one.
    """
    parts = path.split(".")
    for depth in range(len(parts) - 1, 0, -1):
        prefix = ".".join(parts[:depth])
        if _has_norm(model.get_submodule(prefix)):
            return prefix
    return None


def rebuild_blocks_and_head(model: nn.Module, paths: Sequence[str]) -> list[str]:
    """Fresh norms in the blocks of the layers at ``paths`` and a fresh head; returns the blocks.

    The reference paper rebuilt the students' encoder blocks (fresh norms) and head on top of the
    pretrained embeddings. What is reset here: every norm layer inside each targeted layer's
    :func:`block_of`, and every parameter of ``model.get_classifier()`` (timm's name for the head),
    re-initialised by its own ``reset_parameters``. Everything else (embeddings, class and position
    tokens, the final norm, untargeted blocks) stays as it is: the teacher's.
    """
    head = classifier_of(model)
    if head is None:
        raise RegistrationError(f"init paper-rebuild gives a fresh head, but {type(model).__name__} has no "
                                "get_classifier() method returning its classifier module (timm models have one)")
    blocks = sorted({block for path in paths if (block := block_of(model, path)) is not None})
    for block in blocks:
        for module in model.get_submodule(block).modules():
            if isinstance(module, NORMS):
                module.reset_parameters()
    for module in head[1].modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    return blocks
