"""How many trials the adaptive rank search trains against the paper's grid, on smooth curves.

Not a test: no training, each curve answers the searcher by its value at the rank asked (as
`effrank-bench replay` does with a measured curve). Prints, per curve, the trials of the full
paper grid (2, 4, ..., 256) and of the adaptive search, and the band each reads off against the
band of every integer rank measured (the truth). Trials do not cost alike: the last column is the
search's training compute against the grid's for ViT-B/32's joint target, each student's forward and
backward (3x its forward MACs, linear in its rank) per image plus one teacher forward per round (a
round's students train as one group, the grid's sixteen as one). Usage:
    python benchmarks/search_trials.py                     # the default tolerance
    python benchmarks/search_trials.py --tolerance 30%     # or 4 (ranks), as --tolerance takes it
    python benchmarks/search_trials.py --tolerance grid    # only ranks of the paper grid (half its trials)
"""
from __future__ import annotations

import argparse
import math

from effrank_bench.analysis import analyze_curve
from effrank_bench.search import make_search

PAPER_GRID = (2, 4, 8, 16, 24, 32, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256)
EVERY_RANK = tuple(range(2, 257))
# ViT-B/32 at 224, joint target, q, k and v as three maps: forward MACs per image, from
# `effrank-bench measure --arch vit_b32 --target joint --ranks 2,256 --json` (179,042,304 at rank 2,
# 2,285,819,904 at rank 256: exactly linear, 13,824 MACs per rank per token in each of 12 blocks × 50 tokens).
TEACHER_MACS = 4_409_186_304
STUDENT_MACS_BASE, STUDENT_MACS_PER_RANK = 162_453_504, 8_294_400


def training_macs(ranks, rounds: int) -> int:
    """Per training image: every student's forward and backward (3x its forward), one teacher pass per round."""
    return sum(3 * (STUDENT_MACS_BASE + STUDENT_MACS_PER_RANK * r) for r in ranks) + rounds * TEACHER_MACS


def logistic(r85: float, r95: float):
    """Logistic in log2(rank) through 85% at ``r85`` and 95% at ``r95``."""
    slope = (math.log(0.95 / 0.05) - math.log(0.85 / 0.15)) / math.log2(r95 / r85)
    middle = math.log2(r85) - math.log(0.85 / 0.15) / slope
    return lambda rank: 1 / (1 + math.exp(-slope * (math.log2(rank) - middle)))


CURVES = {
    "logistic 5-9": logistic(5.3, 9.4),
    "logistic 3-30": logistic(3.4, 30.5),
    "logistic 12-70": logistic(12.2, 70.6),
    "logistic 20-29": logistic(20.3, 28.6),
    "logistic 21-37": logistic(21.4, 37.4),
    "logistic 40-90": logistic(40.5, 90.3),
    "logistic 60-76": logistic(60.2, 75.5),
    "logistic 100-200": logistic(100.4, 200.6),
    "step at 60": lambda rank: 0.3 + 0.7 / (1 + math.exp(-(rank - 60) / 1.5)),
    "ramp 1-exp(-r/60)": lambda rank: 1 - math.exp(-rank / 60),
}


def band(ranks, curve) -> tuple[int, int] | None:
    return analyze_curve(list(ranks), [curve(r) for r in ranks], 1.0).region.band


def within_one(band_a, band_b) -> bool:
    return all(abs(a - b) <= 1 for a, b in zip(band_a, band_b))


def searched(curve, tolerance: str | None) -> tuple[list[int], int]:
    """The ranks the adaptive search trains on ``curve``, over the paper grid's ends, and its rounds."""
    searcher, measured, rounds = make_search("adaptive", PAPER_GRID, tolerance=tolerance), {}, 0
    while ranks := searcher.next_ranks(measured):
        measured.update({rank: curve(rank) for rank in ranks})
        rounds += 1
    return sorted(measured), rounds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tolerance", default=None,
                        help="as run's --tolerance: P%%, N or grid (default: 10%%, at least 1 rank)")
    args = parser.parse_args()
    print(f"{'curve':18s} {'truth':>10s} {'grid':>10s} {'adaptive':>10s}  trials (grid {len(PAPER_GRID)})  "
          "ViT-B/32 MACs")
    total = near_grid = near_truth = 0
    grid_macs, macs = training_macs(PAPER_GRID, 1), []
    for name, curve in CURVES.items():
        ranks, rounds = searched(curve, args.tolerance)
        truth, grid, found = band(EVERY_RANK, curve), band(PAPER_GRID, curve), band(ranks, curve)
        grid_close, truth_close = within_one(found, grid), within_one(found, truth)
        total, near_grid, near_truth = total + len(ranks), near_grid + grid_close, near_truth + truth_close
        macs.append(training_macs(ranks, rounds) / grid_macs)
        notes = [what for what, close in (("grid's", grid_close), ("truth", truth_close)) if not close]
        far = f"  (more than 1 rank from the {' and the '.join(notes)})" if notes else ""
        print(f"{name:18s} {str(list(truth)):>10s} {str(list(grid)):>10s} {str(list(found)):>10s}  {len(ranks):2d}"
              f"{'':16s}{macs[-1]:4.0%}{far}")
    print(f"adaptive: {total} trials against the grid's {len(PAPER_GRID) * len(CURVES)} "
          f"({total / (len(PAPER_GRID) * len(CURVES)):.0%}); band within 1 rank of the grid's on {near_grid} of "
          f"{len(CURVES)} curves, of the truth on {near_truth}; ViT-B/32 training MACs {min(macs):.0%} to "
          f"{max(macs):.0%} of the grid's ({sum(macs) / len(macs):.0%} on average)")


if __name__ == "__main__":
    main()
