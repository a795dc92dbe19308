"""A data set's load() is checked against the DataSplits contract before anything trains: a plugin's mistake
is one line naming the data set, where it was a traceback from inside torch once the teacher had trained."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from effrank_bench import hookimpl
from effrank_bench.data_contract import checked_splits
from effrank_bench.errors import DataError
from effrank_bench.registry import Registry
from effrank_bench.setup import prepare
from effrank_bench.specs import DatasetSpec, DataSplits


def images(n=6, chans=1, side=8, dtype=torch.float32, labels=None):
    x = torch.randn(n, chans, side, side).to(dtype)
    return TensorDataset(x, torch.arange(n) % 3 if labels is None else labels)


def splits(train=None, **changes):
    good = DataSplits(train=train or images(), val=images(), test=images(), num_classes=3, modality="image",
                      input_size=8)
    return dataclasses.replace(good, **changes)


def tokens(ids):
    return TensorDataset(ids, torch.zeros(len(ids), dtype=torch.int64))


SPEC = DatasetSpec(name="theirs", description="a plugin's data set", load=lambda request: splits())
TOKENS = SPEC.model_copy(update={"modality": "tokens"})
TOKEN_SPLITS = dict(modality="tokens", input_size=4, vocab_size=10)
LABEL = "a label is one int64 class index (a Python int, numpy.int64 or a 0-d torch.int64 tensor)"


def test_splits_that_keep_the_contract_pass_through():
    good = splits()
    assert checked_splits(SPEC, good) is good
    # Labels as a plugin's __getitem__ returns them (numpy, Python), images of another side than declared: the
    # core resizes each batch, and torch's collation makes int64 labels of these.
    native = splits(train=[(torch.randn(1, 12, 12), np.int64(2))], val=[(torch.randn(1, 8, 8), 1)],
                    test=[(torch.randn(1, 8, 8), torch.tensor(0, dtype=torch.uint8))])
    assert checked_splits(SPEC, native) is native
    text = splits(train=tokens(torch.tensor([[1, 2, 3, 0]])), val=tokens(torch.zeros(0, 4, dtype=torch.int64)),
                  test=tokens(torch.tensor([[9, 0, 0, 0]])), **TOKEN_SPLITS)
    assert checked_splits(TOKENS, text) is text  # an empty split has nothing to check


@pytest.mark.parametrize(("spec", "made", "message"), [
    (SPEC, (images(),) * 3, "load() returned tuple; it returns DataSplits(train=..., val=..., test=..., "
                            "num_classes=..., modality=..., input_size=...)"),
    (SPEC, splits(modality="tokens"), "declares image (DatasetSpec.modality) but load() gave tokens "
                                      "(DataSplits.modality); the two must agree"),
    (SPEC, splits(train=TensorDataset(torch.randn(6, 8, 8), torch.zeros(6, dtype=torch.int64))),
     "the first item of its train split is an image of shape (8, 8); images are C×H×W with C = in_chans (1)"),
    (SPEC, splits(train=images(chans=3)),
     "the first item of its train split is an image of shape (3, 8, 8); images are C×H×W with C = in_chans (1)"),
    (SPEC, splits(train=images(dtype=torch.float64)),
     "the first item of its train split is an image of torch.float64; images are torch.float32 (normalized)"),
    (SPEC, splits(val=TensorDataset(torch.full((2, 1, 8, 8), float("nan")), torch.zeros(2, dtype=torch.int64))),
     "the first item of its val split is an image holding NaN or infinite values"),
    (SPEC, splits(train=images(labels=torch.zeros(6))), f"the first item of its train split has a label of "
                                                        f"torch.float32 and shape (); {LABEL}"),
    (SPEC, splits(train=images(labels=torch.zeros(6, 1, dtype=torch.int64))),
     f"the first item of its train split has a label of torch.int64 and shape (1,); {LABEL}"),
    (SPEC, splits(train=images(labels=torch.zeros(6, dtype=torch.int32))),  # cross-entropy takes no int32 target
     f"the first item of its train split has a label of torch.int32 and shape (); {LABEL}"),
    (SPEC, splits(test=[(torch.randn(1, 8, 8), np.int32(1))]),
     f"the first item of its test split has a label of numpy.int32; {LABEL}"),
    (SPEC, splits(test=[(torch.randn(1, 8, 8), 1.0)]),
     f"the first item of its test split has a label 1.0 of type float; {LABEL}"),
    (SPEC, splits(train=images(labels=torch.tensor([0, 1, 2, 0, 8, 1]))),
     "its train split holds label 8, outside 0..2 (num_classes 3)"),
    (SPEC, splits(test=[(torch.randn(1, 8, 8), 5)]), "the first item of its test split has label 5, outside 0..2 "
                                                     "(num_classes 3)"),
    (SPEC, splits(val=[torch.randn(1, 8, 8)]), "an item of its val split is a Tensor; items are (input, label)"),
    (TOKENS, splits(train=tokens(torch.tensor([[1, 2, 3]])), **TOKEN_SPLITS),
     "the first item of its train split has 3 tokens; input_size says 4"),
    (TOKENS, splits(train=tokens(torch.tensor([[1, 2, 30, 0]])), **TOKEN_SPLITS),
     "the first item of its train split holds token id 30, not below vocab_size (10)"),
    (TOKENS, splits(train=tokens(torch.rand(1, 4)), **TOKEN_SPLITS),
     "the first item of its train split is a torch.float32 tensor of shape (4,); token inputs are 1-D integer ids"),
])
def test_a_broken_load_is_one_line_naming_the_data_set(spec, made, message):
    with pytest.raises(DataError) as err:
        checked_splits(spec, made)
    assert str(err.value) == f"data set '{spec.name}': {message}"


def test_a_run_on_a_broken_data_set_stops_before_its_teacher_trains(tiny, tmp_path):
    broken = SPEC.model_copy(update={"load": lambda request: splits(train=images(labels=torch.zeros(6)))})

    class Theirs:
        @hookimpl
        def register_datasets(self, register):
            register(broken)

    with pytest.raises(DataError, match="^data set 'theirs': the first item of its train split has a label of "):
        prepare(tiny.config(tmp_path / "run", dataset="theirs"), Registry(plugins=[("theirs", Theirs())]))
