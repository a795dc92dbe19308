"""Cost of a teacher and of its factorized students at several ranks, without training anything."""
from __future__ import annotations

import copy

import torch

from effrank_bench.data import example_input
from effrank_bench.factorize import QKV, factorize, qkv_in_effect, resolve_sites
from effrank_bench.measure import StudentMacs, measure, profile_macs
from effrank_bench.setup import build_checked
from effrank_bench.specs import ArchitectureSpec, ModelRequest


def cost_table(arch: ArchitectureSpec, target: str, ranks: tuple[int, ...], request: ModelRequest, *,
               device: torch.device, batch_size: int = 1, warmup: int = 5, repeats: int = 30,
               qkv: QKV = "split") -> dict:
    """``{"teacher": cost, "students": [cost + rank + compression, ...], "qkv": how they were factorized}``;
    MACs are per sample. ``qkv`` is "split" where ``qkv`` asked for "fused" of a target without a fused
    projection: those students are the split ones.

    Students are randomly initialised: cost does not depend on the weights, and
    skipping the SVD keeps this quick on a paper-size model.
    """
    teacher, sites = build_checked(arch, request, target, ranks, qkv)
    qkv = qkv_in_effect(sites, qkv)
    teacher.to(device)
    example = example_input(request, arch.modality, batch_size, device)
    layers = [site.path for site, _ in resolve_sites(teacher, sites, qkv)]
    macs = StudentMacs(profile_macs(teacher, example[:1], layers), example[:1])
    teacher_cost = measure(teacher, example, warmup=warmup, repeats=repeats, macs=macs.profile.total)
    students = []
    for rank in ranks:
        student = copy.deepcopy(teacher)
        replaced = factorize(student, sites, rank, init="random", qkv=qkv)
        cost = measure(student, example, factorized=replaced.values(), warmup=warmup, repeats=repeats,
                       macs=macs(student, replaced))
        students.append({"rank": rank, **cost.model_dump(), "compression": teacher_cost.params / cost.params})
        del student
    return {"teacher": teacher_cost.model_dump(), "students": students, "qkv": qkv}
