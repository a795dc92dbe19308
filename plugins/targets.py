"""The factorization targets every architecture may interpret: attention, mlp and joint."""
from __future__ import annotations

from effrank_bench import hookimpl
from effrank_bench.specs import TargetSpec


@hookimpl
def register_targets(register):
    register(TargetSpec(name="attention", description="the token-mixing projections (q, k, v and output in a Transformer)"))
    register(TargetSpec(name="mlp", description="the channel-mixing MLP linears of every block"))
    register(TargetSpec(name="joint", description="all of an architecture's other targets together (attention and mlp "
                                                 "for a Transformer)"))
