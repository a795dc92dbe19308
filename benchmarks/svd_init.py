"""SVD initialisation of a sweep's students: one SVD per student and layer, against one per layer shared by all.

Not a test. Every student of a run is a copy of one teacher, so each of its targeted layers holds the teacher's
weights when it is factorized; a run keeps the teacher's SVD (effrank_bench.factorize.TeacherSVD) and each
student takes its first r factors. Times, in one process, factorizing the students of ``--ranks`` from copies of
the same (randomly initialised) teacher, alone and sharing, and checks that both give the same weights.
Usage: python benchmarks/svd_init.py [--arch vit_b32] [--target joint] [--ranks 8,16,32] [--device cpu]
"""
from __future__ import annotations

import argparse
import copy
import time

import torch

from effrank_bench.factorize import TeacherSVD, factorize
from effrank_bench.registry import default_registry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="vit_b32")
    parser.add_argument("--target", default="joint")
    parser.add_argument("--ranks", default="8,16,32")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    ranks = [int(r) for r in args.ranks.split(",")]
    spec = default_registry().architecture(args.arch)
    torch.manual_seed(0)
    teacher = spec.build(spec.native_request()).to(args.device).eval()
    sites = spec.targets[args.target](teacher)

    def students(svd: TeacherSVD | None) -> tuple[float, list[torch.nn.Module]]:
        made, start = [], time.perf_counter()
        for rank in ranks:
            student = copy.deepcopy(teacher)
            factorize(student, sites, rank, svd=svd)
            made.append(student)
        if args.device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start, made

    torch.linalg.svd(teacher.get_submodule(sites[0].path).weight.double())  # the solver's start-up, outside the times
    alone, own = students(None)
    shared, reused = students(TeacherSVD(keep=max(ranks)))
    same = all(torch.equal(a.state_dict()[k], v) for a, b in zip(own, reused) for k, v in b.state_dict().items())
    print(f"{args.arch} {args.target}, {len(sites)} sites, ranks {ranks} on {args.device}: "
          f"one SVD per student {alone:.1f} s, shared {shared:.1f} s ({alone / shared:.2f}×); same weights: {same}")


if __name__ == "__main__":
    main()
