"""Planted-rank validation: does the method find a rank that is known to be there?

For each micro architecture family it builds a teacher whose targeted layers (the ``joint``
target) are exactly rank k: the untrained model is factorized at rank k (truncated SVD of its
fresh init), trained supervised in that factorized form, and its factors multiplied back into a
full model of the original architecture (every targeted weight is then B·A, of rank k per
chunk; q, k and v are three chunks). That teacher is saved as safetensors and swept through
the library like any other (``--teacher-checkpoint``, no further teacher training), once with
SVD students and once with the paper's rebuilt students. The table shows the region band and
the knee each finds against the planted k.

Not a test: prints what this run measured. Usage:
    python benchmarks/planted_rank.py --quick      # tiny budgets, about 2-3 minutes on 2 cores
    python benchmarks/planted_rank.py [--k 4] [--out DIR]
Run again with the same --out to resume (teachers and finished trials are kept).
"""
from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from effrank_bench.config import RunConfig
from effrank_bench.factorize import LowRankConv2d, factorize, resolve_sites
from effrank_bench.report import build_report
from effrank_bench.setup import RunSetup, prepare
from effrank_bench.specs import Site
from effrank_bench.sweep import run_sweep
from effrank_bench.train import Recipe, evaluate, train_teacher

FAMILIES = (("micro_vit", "digits"), ("micro_convnet", "digits"), ("micro_mixer", "digits"),
            ("micro_bert", "digits_tokens"))
INITS = ("svd", "paper-rebuild")
TARGET = "joint"
RANKS = (1, 2, 3, 4, 5, 6, 8, 12, 16)
# (teacher epochs, student epochs, latency repeats, bootstrap resamples)
BUDGETS = {"quick": (8, 2, 1, 1), "default": (40, 12, 30, 1000)}


def multiply_out(template: nn.Module, factorized: nn.Module, sites: list[Site]) -> nn.Module:
    """A copy of ``template`` (the unfactorized architecture) holding ``factorized``'s weights, each
    low-rank layer multiplied back into one full weight (B·A) of the original layer's shape."""
    state = dict(factorized.state_dict())
    for site in sites:
        low = factorized.get_submodule(site.path)
        for key in [k for k in state if k.startswith(site.path + ".")]:
            del state[key]
        original = template.get_submodule(site.path)
        with torch.no_grad():
            state[f"{site.path}.weight"] = low.weight.reshape(original.weight.shape).detach().clone()
            bias = low.b.bias if isinstance(low, LowRankConv2d) else low.bias
            if bias is not None:
                state[f"{site.path}.bias"] = bias.detach().clone()
    full = copy.deepcopy(template)
    full.load_state_dict(state, strict=True)
    return full


def chunk_ranks(model: nn.Module, sites: list[Site], qkv: str = "split") -> set[int]:
    """The numerical ranks of every targeted weight's chunks (a kernel as out × in·k·k): singular values
    above 1e-5 of the largest, float32 round-off of a product B·A lying far below that."""
    ranks = set()
    for site, layer in resolve_sites(model, sites, qkv):
        for w in layer.weight.detach().flatten(1).chunk(site.chunks):
            ranks.add(int(torch.linalg.matrix_rank(w.double(), rtol=1e-5)))
    return ranks


def plant(setup: RunSetup, k: int, epochs: int) -> tuple[nn.Module, float]:
    """The rank-k teacher: trained factorized at rank k, then multiplied out; and its test accuracy."""
    config = setup.config
    torch.manual_seed(config.teacher_seed)
    factorized = copy.deepcopy(setup.model)
    factorize(factorized, setup.sites, k, init="svd", qkv=config.qkv)
    recipe = Recipe(epochs, config.teacher_lr, config.teacher_weight_decay, amp=False)
    train = setup.training_batches(seed=config.teacher_seed)
    train_teacher(setup.to_device(factorized), train, setup.batches(setup.splits.val), recipe)
    factorized.cpu().eval()
    full = multiply_out(setup.model, factorized, list(setup.sites)).eval()
    ranks = chunk_ranks(full, list(setup.sites), config.qkv)
    if ranks != {k}:
        raise AssertionError(f"{config.arch}: targeted chunks have ranks {sorted(ranks)}, not {k}")
    x, _ = next(iter(setup.batches(setup.splits.test)))
    with torch.no_grad():
        x = x.cpu()
        gap = (full(x) - factorized(x)).abs().max().item()
    if gap > 1e-3:
        raise AssertionError(f"{config.arch}: the multiplied-out teacher differs from its factors by {gap}")
    return full, evaluate(setup.to_device(full), setup.batches(setup.splits.test), amp=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny budgets: a check that it runs, in minutes")
    parser.add_argument("--k", type=int, default=4, help="the planted rank (default: 4)")
    parser.add_argument("--out", type=Path, default=None, help="where teachers and runs go "
                        "(default: runs/planted-rank[-quick])")
    args = parser.parse_args()
    budget = "quick" if args.quick else "default"
    teacher_epochs, epochs, repeats, resamples = BUDGETS[budget]
    out = args.out or Path("runs") / ("planted-rank-quick" if args.quick else "planted-rank")
    out.mkdir(parents=True, exist_ok=True)
    rows, start = [], time.perf_counter()
    for arch, dataset in FAMILIES:
        base = dict(arch=arch, dataset=dataset, target=TARGET, ranks=RANKS, epochs=epochs, latency_repeats=repeats,
                    bootstrap_resamples=resamples, device="cpu")
        checkpoint = out / f"{arch}-rank{args.k}-teacher.safetensors"
        if not checkpoint.is_file():
            setup = prepare(RunConfig(**base, out=out / f"{arch}-teacher"))
            teacher, accuracy = plant(setup, args.k, teacher_epochs)
            save_file({n: t.detach().cpu().contiguous() for n, t in teacher.state_dict().items()}, checkpoint)
            print(f"{arch}: rank-{args.k} teacher, test accuracy {accuracy:.3f} -> {checkpoint}", flush=True)
        for init in INITS:
            config = RunConfig(**base, init=init, teacher_checkpoint=checkpoint.resolve(), teacher_epochs=0,
                               out=out / f"{arch}-{init}")
            report = build_report(run_sweep(config))
            a = report.analysis
            at_k = dict(zip(a.ranks, a.normalized)).get(float(args.k)) if a else None
            rows.append((arch, args.k, init, report.teacher.test_accuracy,
                         a.region.band_text() if a and a.region.band else "none",
                         f"{a.knee:.1f}" if a else "none", f"{at_k:.3f}" if at_k is not None else "-"))
            print(f"{arch} {init}: band {rows[-1][4]}, knee {rows[-1][5]}", flush=True)
    print(f"\nplanted-rank validation ({budget} budget: teacher {teacher_epochs} epochs factorized, students "
          f"{epochs} epochs; target {TARGET}; ranks {','.join(map(str, RANKS))}), "
          f"{time.perf_counter() - start:.0f} s\n")
    print("| family | planted k | init | teacher acc | band (85–95%) | knee | accuracy at k / teacher |")
    print("|---|---|---|---|---|---|---|")
    for arch, k, init, acc, band, knee, at_k in rows:
        print(f"| {arch} | {k} | {init} | {acc:.3f} | {band} | {knee} | {at_k} |")


if __name__ == "__main__":
    main()
