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
    counts = np.unique(labels, return_counts=True)[1]
    train, val = seeded_split(labels, n_val, stratify=can_stratify(counts, n_val))
    return np.sort(train), np.sort(val)


def stratified_split(labels: np.ndarray, val_fraction: float | None = None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row indices of a fixed stratified 70/15/15 train/val/test split, for sets that ship as one pool (digits).

    With ``val_fraction``, the test 15% stays the same and validation is that fraction of the other
    85% (:func:`held_out_val`; 0: none), so that every choice is scored on the same test rows.
    """
    train, rest = seeded_split(labels, math.ceil(0.3 * len(labels)), stratify=True)
    val, test = seeded_split(labels[rest], math.ceil(0.5 * len(rest)), stratify=True)
    val, test = rest[val], rest[test]
    if val_fraction is None:
        return train, val, test
    pool = np.sort(np.concatenate([train, val]))
    train, val = held_out_val(labels[pool], val_fraction)
    return pool[train], pool[val], test


def seeded_split(labels: np.ndarray, n_test: int, stratify: bool) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) positions, ``n_test`` of them test, exactly as scikit-learn's ``train_test_split`` of
    ``arange(len(labels))`` draws them with ``random_state=0`` (and ``stratify=labels`` when asked), which
    this project's splits were first made with. Written out so that the splits stay those whatever
    scikit-learn's version, and a run need not import scikit-learn (1.8 s) to split.

    Stratifying needs two examples of every class and at least one of each on both sides.
    """
    if not 0 < n_test < len(labels):
        raise DataError(f"cannot split {len(labels)} examples into {len(labels) - n_test} and {n_test}: "
                        "both parts need one at least")
    rng = np.random.RandomState(_SPLIT_SEED)
    if not stratify:
        order = rng.permutation(len(labels))
        return order[n_test:], order[:n_test]
    _, classes, counts = np.unique(labels, return_inverse=True, return_counts=True)
    if not can_stratify(counts, n_test):
        raise DataError(f"cannot stratify {len(labels)} examples of {len(counts)} classes ({counts.min()} in the "
                        f"smallest) into {len(labels) - n_test} and {n_test}")
    members = np.split(np.argsort(classes, kind="stable"), np.cumsum(counts)[:-1])
    train_counts = _apportion(counts, len(labels) - n_test, rng)
    test_counts = _apportion(counts - train_counts, n_test, rng)
    train: list[int] = []
    test: list[int] = []
    for rows, n_train_i, n_test_i in zip(members, train_counts, test_counts):
        shuffled = rows[rng.permutation(len(rows))]
        train.extend(shuffled[:n_train_i])
        test.extend(shuffled[n_train_i:n_train_i + n_test_i])
    return rng.permutation(train), rng.permutation(test)


def can_stratify(counts: np.ndarray, n_test: int) -> bool:
    """Whether ``n_test`` of examples with these class ``counts`` can be drawn stratified: two of every class
    at least, and room for one of each on both sides."""
    return counts.min() >= 2 and len(counts) <= min(n_test, counts.sum() - n_test)


def _apportion(counts: np.ndarray, draws: int, rng: np.random.RandomState) -> np.ndarray:
    """``draws`` shared among classes in proportion to ``counts``: each its floor, then one more to the
    largest remainders, ties broken at random (scikit-learn's ``_approximate_mode``, draw for draw)."""
    share = counts / counts.sum() * draws
    given = np.floor(share)
    missing = int(draws - given.sum())
    remainder = share - given
    for value in np.sort(np.unique(remainder))[::-1]:
        if missing == 0:
            break
        (tied,) = np.where(remainder == value)
        now = min(len(tied), missing)
        given[rng.choice(tied, size=now, replace=False)] += 1
        missing -= now
    return given.astype(int)
