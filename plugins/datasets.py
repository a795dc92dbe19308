"""scikit-learn's bundled 8×8 digits: real data that needs no download, for the embedded default."""
from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch.utils.data import TensorDataset

from effrank_bench import hookimpl
from effrank_bench.specs import DataRequest, DatasetSpec, DataSplits

# Fixed, stratified 70/15/15 split: the same for every run and seed, so curves compare.
_SPLIT_SEED = 0


def load_digits_splits(request: DataRequest) -> DataSplits:
    digits = load_digits()
    x = digits.images.astype(np.float32) / 16.0
    y = digits.target.astype(np.int64)
    idx = np.arange(len(y))
    train, rest = train_test_split(idx, test_size=0.3, stratify=y, random_state=_SPLIT_SEED)
    val, test = train_test_split(rest, test_size=0.5, stratify=y[rest], random_state=_SPLIT_SEED)
    mean, std = x[train].mean(), x[train].std()

    def subset(rows: np.ndarray) -> TensorDataset:
        images = torch.from_numpy((x[rows] - mean) / std).unsqueeze(1)
        return TensorDataset(images, torch.from_numpy(y[rows]))

    return DataSplits(train=subset(train), val=subset(val), test=subset(test),
                      num_classes=10, modality="image", input_size=8, in_chans=1)


@hookimpl
def register_datasets(register):
    register(DatasetSpec(
        name="digits", load=load_digits_splits,
        description="scikit-learn's bundled 8×8 handwritten digits (1,797 images, 10 classes), split 70/15/15",
    ))
