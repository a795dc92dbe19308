"""Random images in CIFAR-100's python-version files, for timing the real data path on a machine without internet.

Not a data set to estimate a rank on: labels are random, so no model learns them. Usage:
    python benchmarks/synthetic_cifar.py ROOT [--train 5000] [--test 1000]
    effrank-bench run --dataset cifar100 --data-root ROOT ...   # or EFFRANK_BENCH_DATA=ROOT
"""
from __future__ import annotations

import argparse
import pickle
from pathlib import Path

import numpy as np


def write(root: Path, train: int, test: int, seed: int = 0) -> Path:
    """ROOT/cifar-100-python/{train,test,meta} as CIFAR ships them: pickled dicts, 'data' N×3072 uint8 rows."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name, n in (("train", train), ("test", test)):
        batch = {"data": rng.integers(0, 256, (n, 3 * 32 * 32), dtype=np.uint8),
                 "fine_labels": rng.integers(0, 100, n).tolist(), "coarse_labels": rng.integers(0, 20, n).tolist()}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    (folder / "meta").write_bytes(pickle.dumps({"fine_label_names": [f"c{i}" for i in range(100)],
                                                "coarse_label_names": [f"s{i}" for i in range(20)]}))
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--train", type=int, default=5000, help="training images (CIFAR-100 has 50,000)")
    parser.add_argument("--test", type=int, default=1000, help="test images (CIFAR-100 has 10,000)")
    args = parser.parse_args()
    print(f"wrote {write(args.root, args.train, args.test)}")


if __name__ == "__main__":
    main()
