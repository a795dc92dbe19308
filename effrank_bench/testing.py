"""Conformance checks for architecture plugins: ``check_architecture("my_arch")`` in one test.

Every built-in architecture passes them in this project's test suite; a
third-party plugin runs the same line in its own tests::

    from effrank_bench.testing import check_architecture

    def test_my_arch_conforms():
        check_architecture("my_arch")
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn

from effrank_bench.data import example_input
from effrank_bench.distances import geometric_distance
from effrank_bench.errors import RegistrationError, UnsupportedTargetError
from effrank_bench.factorize import LowRank, factorize, full_rank, resolve_sites
from effrank_bench.measure import count_macs, count_params
from effrank_bench.registry import Registry, default_registry
from effrank_bench.setup import logits_mismatch, module_mismatch
from effrank_bench.specs import ArchitectureSpec, ModelRequest
from effrank_bench.taps import BranchTap

#: A full-rank SVD student must reproduce the teacher to this relative error (float32 round-off).
FULL_RANK_TOLERANCE = 1e-5


class ConformanceError(AssertionError):
    """An architecture plugin breaks a property every architecture must have."""


@dataclass
class TargetReport:
    """What was measured for one target; every number was also checked."""

    sites: int
    full_rank: int
    full_rank_rel_error: float
    params: dict[int, int] = field(default_factory=dict)
    macs: dict[int, int] = field(default_factory=dict)
    branches: int = 0
    loss_before: float = 0.0
    loss_after: float = 0.0


def _fail(arch: ArchitectureSpec, target: str | None, message: str) -> None:
    where = f"{arch.name}" + (f", target '{target}'" if target else "")
    raise ConformanceError(f"{where}: {message}")


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).double()


def _check_logits(arch: ArchitectureSpec, model: nn.Module, x: torch.Tensor, request: ModelRequest) -> None:
    """One row of logits per example, one logit per class the request asked for: a data set's classes."""
    problem = logits_mismatch(model, x, request.num_classes)
    if problem:
        _fail(arch, None, problem)


def _check_sites(arch: ArchitectureSpec, target: str, model: nn.Module) -> list:
    try:
        sites = arch.sites(model, target)
    except RegistrationError as err:  # no sites, no Sites, a site twice: its message names architecture and target
        raise ConformanceError(str(err)) from None
    try:
        return resolve_sites(model, sites, "split")
    except RegistrationError as err:  # a path to no layer, or to one that does not factorize
        _fail(arch, target, str(err))


def _check_joint(arch: ArchitectureSpec, model: nn.Module) -> None:
    """``joint`` must be exactly the union of the other targets: nothing left out silently."""
    if "joint" not in arch.targets:
        return
    try:
        joint = {s.path for s in arch.sites(model, "joint")}
        others = {s.path for t in arch.targets if t != "joint" for s in arch.sites(model, t)}
    except RegistrationError as err:  # no sites, or no Sites: its message names architecture and target
        raise ConformanceError(str(err)) from None
    if joint != others:
        _fail(arch, "joint", f"is not the union of the other targets: missing {sorted(others - joint)[:5]}, "
                             f"extra {sorted(joint - others)[:5]}")


def _check_full_rank(arch, target, teacher, sites, x) -> tuple[int, float]:
    rank = max(full_rank(layer, site.chunks) for site, layer in sites)
    student = copy.deepcopy(teacher)
    replaced = factorize(student, [site for site, _ in sites], rank, init="svd")
    unreached = [path for path in replaced if not isinstance(student.get_submodule(path), LowRank)]
    if unreached:
        _fail(arch, target, f"sites not replaced by a low-rank layer: {unreached[:5]}")
    t, s = _logits(teacher, x), _logits(student.eval(), x)
    error = (torch.linalg.norm(s - t) / torch.linalg.norm(t)).item()
    if not error < FULL_RANK_TOLERANCE:
        _fail(arch, target, f"a full-rank (r={rank}) SVD student differs from the teacher by {error:.2e} "
                            f"(relative), more than {FULL_RANK_TOLERANCE:g}")
    return rank, error


def _check_cost_falls(arch, target, teacher, sites, x, report: TargetReport) -> None:
    smallest = min(full_rank(layer, site.chunks) for site, layer in sites)
    ranks = sorted({1, max(1, smallest // 2), smallest})
    for rank in ranks:
        student = copy.deepcopy(teacher)
        replaced = factorize(student, [site for site, _ in sites], rank, init="random")
        report.params[rank] = count_params(student, replaced.values())[0]
        report.macs[rank] = count_macs(student, x[:1])
    for lo, hi in zip(ranks, ranks[1:]):
        for what, values in (("parameters", report.params), ("MACs", report.macs)):
            if not values[lo] < values[hi]:
                _fail(arch, target, f"{what} do not fall with rank: {values[lo]:,} at rank {lo}, "
                                    f"{values[hi]:,} at rank {hi}")


def _check_branches_and_step(arch, target, teacher, sites, x, report: TargetReport) -> None:
    student = copy.deepcopy(teacher)
    # Random factors: the SVD was checked above, and skipping it here halves a paper-size model's check.
    replaced = factorize(student, [site for site, _ in sites], 1, init="random")
    t_tap, s_tap = BranchTap(arch.branches(teacher)), BranchTap(arch.branches(student))
    try:
        with torch.no_grad():
            t_out = t_tap.forward(teacher, x)
        student.eval()
        s_out = s_tap.forward(student, x)
        if not t_out.features:
            _fail(arch, target, "branches() gave no branch outputs; the geometric loss needs them")
        if len(t_out.features) != len(s_out.features):
            _fail(arch, target, f"teacher hooks yield {len(t_out.features)} branch outputs, "
                                f"the student {len(s_out.features)}")
        shapes = [(tuple(t.shape), tuple(s.shape)) for t, s in zip(t_out.features, s_out.features)]
        bad = [i for i, (ts, ss) in enumerate(shapes) if ts != ss]
        if bad:
            _fail(arch, target, f"branch {bad[0]} has shape {shapes[bad[0]][1]} in the student, "
                                f"{shapes[bad[0]][0]} in the teacher")
        report.branches = len(t_out.features)
        loss = geometric_distance(t_out, s_out)
        loss.backward()
        dead = [path for path, module in replaced.items()
                if all(p.grad is None or not p.grad.any() for p in module.parameters())]
        if dead:
            _fail(arch, target, f"no gradient reaches the factors of {dead[:5]}")
        # A small enough gradient step lowers a smooth loss; backtrack to find one.
        params = [p for p in student.parameters() if p.grad is not None]
        start = [p.detach().clone() for p in params]
        report.loss_before = loss.item()
        for lr in (1e-2, 1e-3, 1e-4, 1e-5):
            with torch.no_grad():
                for p, p0 in zip(params, start):
                    p.copy_(p0 - lr * p.grad)
                report.loss_after = geometric_distance(t_out, s_tap.forward(student, x)).item()
            if report.loss_after < report.loss_before:
                return
        _fail(arch, target, f"a distillation step does not lower the loss ({report.loss_before:.6g} → "
                            f"{report.loss_after:.6g} at the smallest step)")
    finally:
        t_tap.close()
        s_tap.close()


def _check_refusal(arch: ArchitectureSpec) -> None:
    try:
        arch.require_target("no_such_target")
    except UnsupportedTargetError as err:
        missing = [t for t in arch.targets if t not in str(err)]
        if arch.name not in str(err) or missing:
            _fail(arch, None, f"the refusal of a target does not name the architecture and its targets: {err}")
        return
    _fail(arch, None, "an unsupported target was not refused")


def check_architecture(arch: str | ArchitectureSpec, *, registry: Registry | None = None,
                       request: ModelRequest | None = None, batch_size: int = 2,
                       seed: int = 0) -> dict[str, TargetReport]:
    """Check every target of ``arch``; raise ConformanceError on the first broken property.

    The model gives one logit per class the request asks for. For every target: full-rank SVD
    students reproduce the teacher's logits;
    parameters and MACs fall strictly with the rank; every site becomes a
    low-rank layer and ``joint`` is the union of the other targets; teacher and
    student hooks yield the same number of branch outputs with the same shapes;
    a distillation step lowers the geometric loss on a fixed batch; and an
    unsupported target is refused with a message naming the valid ones.
    ``request`` defaults to the architecture's native input.
    """
    spec = (registry or default_registry()).architecture(arch) if isinstance(arch, str) else arch
    request = request or spec.native_request()
    torch.manual_seed(seed)
    teacher = spec.build(request)
    problem = module_mismatch(teacher)
    if problem:
        _fail(spec, None, problem)
    teacher.eval()
    with torch.no_grad():
        # Fresh models zero-init some layers (timm: the last BN of a residual block, ViT biases),
        # which would hide a dead gradient path or a dropped bias; a trained teacher has none.
        for p in teacher.parameters():
            p.add_(torch.randn_like(p), alpha=0.02)
    x = example_input(request, spec.modality, batch_size, torch.device("cpu"))
    _check_logits(spec, teacher, x, request)
    _check_refusal(spec)
    _check_joint(spec, teacher)
    reports = {}
    for target in spec.targets:
        sites = _check_sites(spec, target, teacher)
        rank, error = _check_full_rank(spec, target, teacher, sites, x)
        report = TargetReport(sites=len(sites), full_rank=rank, full_rank_rel_error=error)
        _check_cost_falls(spec, target, teacher, sites, x, report)
        _check_branches_and_step(spec, target, teacher, sites, x, report)
        reports[target] = report
    return reports
