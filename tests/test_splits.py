"""The seeded splits: draw for draw what scikit-learn's train_test_split gives, without importing it to split."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from effrank_bench.errors import DataError
from effrank_bench_plugins.datasets import digits
from effrank_bench_plugins.splits import seeded_split, stratified_split


def train_test_split(*args, **kwargs):
    from sklearn.model_selection import train_test_split  # imported by the worker that runs these tests only

    return train_test_split(*args, **kwargs)


def _sklearn(labels, n_test, stratify):
    return train_test_split(np.arange(len(labels)), test_size=n_test, random_state=0,
                            stratify=labels if stratify else None)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_seeded_split_draws_what_train_test_split_draws(data):
    n_classes = data.draw(st.integers(1, 8))
    labels = np.array(data.draw(st.lists(st.integers(0, n_classes - 1), min_size=2, max_size=300)))
    n_test = data.draw(st.integers(1, len(labels) - 1))
    counts = np.unique(labels, return_counts=True)[1]
    possible = counts.min() >= 2 and len(counts) <= min(n_test, len(labels) - n_test)
    stratify = possible and data.draw(st.booleans())
    train, test = seeded_split(labels, n_test, stratify)
    want_train, want_test = _sklearn(labels, n_test, stratify)
    assert np.array_equal(train, want_train) and np.array_equal(test, want_test)


def test_the_digits_split_is_the_one_train_test_split_made():
    _, labels = digits()
    train, rest = _sklearn(labels, 0.3, True)
    val, test = train_test_split(rest, test_size=0.5, stratify=labels[rest], random_state=0)
    mine = stratified_split(labels)
    assert [len(part) for part in mine] == [1257, 270, 270]
    assert all(np.array_equal(a, b) for a, b in zip(mine, (train, val, test)))


def test_a_split_that_cannot_be_stratified_says_why():
    with pytest.raises(DataError, match=r"cannot stratify 5 examples of 2 classes \(1 in the smallest\) into 3 and 2"):
        seeded_split(np.array([0, 0, 0, 0, 1]), 2, stratify=True)


@pytest.mark.parametrize("n_test", [0, 3])
def test_a_split_with_an_empty_side_is_refused(n_test):
    # held_out_val(labels, 0.9) on three examples asks for ceil(2.7) = 3 of them: no training data left.
    with pytest.raises(DataError, match=f"cannot split 3 examples into {3 - n_test} and {n_test}"):
        seeded_split(np.array([0, 1, 2]), n_test, stratify=False)
