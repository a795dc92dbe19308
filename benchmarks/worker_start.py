"""Seconds per pass of DataLoader workers started by fork (the engine's on Linux) against forkserver and spawn.

Workers start anew each pass (so a resumed fit shuffles and augments as an uninterrupted one), so how a
worker starts is paid every epoch. Python 3.14 made forkserver the default on Linux: its workers import
torch and unpickle the data set before their first item. Measured on synthetic CIFAR-100 files (random
pixels, CIFAR's format and per-item augmentation), all three in one process, one warm-up pass each:
    python benchmarks/worker_start.py [--train 5000] [--workers 2] [--passes 3]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

import effrank_bench.data as data
from effrank_bench.data import Batches
from effrank_bench.registry import default_registry
from effrank_bench.specs import DataRequest
from synthetic_cifar import write  # beside this file, which Python puts first on the path


def seconds_per_pass(dataset, start: str, workers: int, passes: int) -> float:
    data.WORKER_START = start
    batches = Batches(dataset, batch_size=256, modality="image", input_size=32, device=torch.device("cpu"),
                      shuffle=True, workers=workers)
    sum(len(y) for _, y in batches)  # warm-up: first-pass costs (page cache, the forkserver's own start)
    began = time.perf_counter()
    for _ in range(passes):
        sum(len(y) for _, y in batches)
    return (time.perf_counter() - began) / passes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=5000, help="training images (CIFAR-100 has 50,000)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--passes", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        write(Path(root), args.train, 100)
        splits = default_registry().dataset("cifar100").load(DataRequest(root=root, augment=True))
        times = {start: seconds_per_pass(splits.train, start, args.workers, args.passes)
                 for start in ("fork", "forkserver", "spawn")}
    print(f"{len(splits.train)} training items, {args.workers} workers, batch 256, mean of {args.passes} passes")
    for start, seconds in times.items():
        print(f"{start:10s} {seconds:6.2f} s a pass  ({seconds / times['fork']:.1f}x fork's)")


if __name__ == "__main__":
    main()
