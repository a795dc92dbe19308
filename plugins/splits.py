"""The fixed, seeded splits data sets carve out: the same for every run and seed, so curves compare."""
from __future__ import annotations

import math

import numpy as np

from effrank_bench.errors import DataError

# Model selection uses a fixed, seeded 10% of the training data; the test split is never looked at.
VAL_FRACTION = 0.1
_SPLIT_SEED = 0


def held_out_val(labels: np.ndarray, fraction: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, val) row indices: a fixed, seeded hold-out of ``fraction`` (None: 10%), stratified
    when possible; ``fraction`` 0 holds out nothing (every row trains, val is empty).

    Stratifying needs two examples of every class and room for each in both parts;
    sets too small for that (toy folders) get a plain seeded hold-out instead.
    """
    fraction = VAL_FRACTION if fraction is None else fraction
    n = len(labels)
    if fraction == 0:
        return np.arange(n), np.arange(0)
    if n < 2:
        raise DataError(f"a validation split is held out of the training data, which needs 2 examples; it has {n}")
    n_val = math.ceil(fraction * n)
    _, counts = np.unique(labels, return_counts=True)
    can_stratify = counts.min() >= 2 and len(counts) <= min(n_val, n - n_val)
    from sklearn.model_selection import train_test_split  # seconds to import: only when splitting

    train, val = train_test_split(np.arange(n), test_size=n_val, random_state=_SPLIT_SEED,
                                  stratify=labels if can_stratify else None)
    return np.sort(train), np.sort(val)


def stratified_split(labels: np.ndarray, val_fraction: float | None = None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row indices of a fixed stratified 70/15/15 train/val/test split, for sets that ship as one pool (digits).

    With ``val_fraction``, the test 15% stays the same and validation is that fraction of the other
    85% (:func:`held_out_val`; 0: none), so that every choice is scored on the same test rows.
    """
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    train, rest = train_test_split(idx, test_size=0.3, stratify=labels, random_state=_SPLIT_SEED)
    val, test = train_test_split(rest, test_size=0.5, stratify=labels[rest], random_state=_SPLIT_SEED)
    if val_fraction is None:
        return train, val, test
    pool = np.sort(np.concatenate([train, val]))
    train, val = held_out_val(labels[pool], val_fraction)
    return pool[train], pool[val], test
