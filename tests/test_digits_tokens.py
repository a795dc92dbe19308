"""The digits as scikit-learn bundles them, and digits_tokens: CLS + 64 pixel-intensity tokens, on the digits split."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from effrank_bench.registry import default_registry
from effrank_bench.specs import DataRequest
from effrank_bench_plugins.datasets import CLS, FIRST_INTENSITY, digits
from effrank_bench_plugins.splits import stratified_split


@pytest.fixture(scope="module")
def reference():
    """scikit-learn's own load_digits, imported by the worker that runs these tests only."""
    from sklearn.datasets import load_digits

    return load_digits()


@pytest.mark.parametrize("file_found", [True, False])
def test_the_digits_are_load_digits_read_from_the_bundled_file_or_through_it(file_found, monkeypatch, reference):
    if not file_found:  # scikit-learn laid out otherwise: through load_digits itself
        monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    images, target = digits.__wrapped__()  # read now, not the arrays the process has already read
    assert np.array_equal(images, reference.images) and images.dtype == reference.images.dtype
    assert np.array_equal(target, reference.target) and images.shape == (1797, 8, 8)
    assert not images.flags.writeable and not target.flags.writeable  # shared by every load in the process


@pytest.fixture(scope="module")
def tokens():
    return default_registry().dataset("digits_tokens").load(DataRequest())


@pytest.fixture(scope="module")
def images():
    return default_registry().dataset("digits").load(DataRequest())


def split_tensors(splits):
    return {name: getattr(splits, name).tensors for name in ("train", "val", "test")}


def test_describes_itself_as_65_tokens_over_19_ids(tokens):
    assert (tokens.modality, tokens.input_size, tokens.vocab_size, tokens.num_classes) == ("tokens", 65, 19, 10)
    # 1,797 digits: 30% (539.1, rounded up) held out, then halved.
    sizes = {name: len(ids) for name, (ids, _) in split_tensors(tokens).items()}
    assert sizes == {"train": 1257, "val": 270, "test": 270}
    for ids, labels in split_tensors(tokens).values():
        assert ids.dtype == labels.dtype == torch.int64
        assert ids.shape[1] == 65 and labels.min() >= 0 and labels.max() <= 9


def test_every_sequence_is_cls_then_intensities_and_never_padding(tokens):
    for ids, _ in split_tensors(tokens).values():
        assert (ids[:, 0] == CLS).all()
        pixels = ids[:, 1:]
        assert pixels.min() >= FIRST_INTENSITY and pixels.max() <= FIRST_INTENSITY + 16
    train = tokens.train.tensors[0]
    # Both ends of the intensity range occur, so the vocabulary is all used: 1 (CLS) and 2..18.
    assert set(train.unique().tolist()) == set(range(1, 19))


def test_a_sequence_decodes_back_to_its_digits_image(tokens, reference):
    _, _, test_rows = stratified_split(reference.target)
    ids, labels = tokens.test.tensors
    for j in (0, 1, 137, 269):
        image = (ids[j, 1:] - FIRST_INTENSITY).reshape(8, 8).numpy()
        np.testing.assert_array_equal(image, reference.images[test_rows[j]])
        assert labels[j] == reference.target[test_rows[j]]


def test_the_split_is_the_digits_split_row_for_row(tokens, images):
    as_tokens, as_images = split_tensors(tokens), split_tensors(images)
    train_pixels = (as_tokens["train"][0][:, 1:] - FIRST_INTENSITY).double() / 16
    mean, std = train_pixels.mean(), train_pixels.std(unbiased=False)
    for name in ("train", "val", "test"):
        (ids, token_labels), (pictures, image_labels) = as_tokens[name], as_images[name]
        assert torch.equal(token_labels, image_labels)
        # digits standardizes pixels/16 by the train split's mean and std; so standardized, the tokens are its images.
        standardized = ((ids[:, 1:] - FIRST_INTENSITY).double() / 16 - mean) / std
        torch.testing.assert_close(standardized.float(), pictures.flatten(1), rtol=0, atol=1e-5)


def test_the_split_is_stratified_and_fixed(reference):
    y = reference.target
    first, second = stratified_split(y), stratified_split(y)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    train, val, test = first
    assert len(np.intersect1d(train, val)) == len(np.intersect1d(val, test)) == len(np.intersect1d(train, test)) == 0
    # Each class keeps its share: class counts in test differ from 15% of the class by less than one.
    for digit in range(10):
        assert abs((y[test] == digit).sum() - 0.15 * (y == digit).sum()) < 1
