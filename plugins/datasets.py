"""scikit-learn's bundled 8×8 digits, as images and as pixel tokens: real data that needs no download."""
from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from effrank_bench import hookimpl
from effrank_bench.specs import DataRequest, DatasetSpec, DataSplits
from effrank_bench_plugins.imaging import Normalize
from effrank_bench_plugins.splits import stratified_split

# digits_tokens ids: 0 is padding (the core's convention, unused here), 1 the CLS token, 2..18 intensities 0..16.
CLS = 1
FIRST_INTENSITY = 2
_INTENSITIES = 17


@functools.cache  # read once per process (25 ms of parsing), read-only: each loader derives its own arrays
def digits() -> tuple[np.ndarray, np.ndarray]:
    """(1,797 images 8×8 of intensities 0..16, their labels) from scikit-learn's bundled file, read as
    ``load_digits`` reads it but without importing scikit-learn (1.5 s of a 30-second default run); through
    ``load_digits`` itself where the file is not where scikit-learn ships it."""
    spec = importlib.util.find_spec("sklearn")  # finds the package without running its __init__
    if spec is not None and spec.submodule_search_locations and (
            bundled := Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz").is_file():
        data = np.loadtxt(bundled, delimiter=",")
        images, target = data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int)
    else:
        from sklearn.datasets import load_digits

        loaded = load_digits()
        images, target = loaded.images, loaded.target
    images.flags.writeable = target.flags.writeable = False
    return images, target


def load_digits_splits(request: DataRequest) -> DataSplits:
    images, target = digits()
    x = images.astype(np.float32) / 16.0
    y = target.astype(np.int64)
    train, val, test = stratified_split(y, request.val_fraction)
    if request.preprocess is not None:  # a pretrained model's statistics, folded to one channel
        normalize = Normalize.expected_by(request.preprocess, channels=1)
        mean, std = normalize.mean[0], normalize.std[0]
    else:
        mean, std = x[train].mean(), x[train].std()

    def subset(rows: np.ndarray) -> TensorDataset:
        images = torch.from_numpy((x[rows] - mean) / std).unsqueeze(1)
        return TensorDataset(images, torch.from_numpy(y[rows]))

    return DataSplits(train=subset(train), val=subset(val), test=subset(test),
                      num_classes=10, modality="image", input_size=8, in_chans=1)


def load_digits_tokens(request: DataRequest) -> DataSplits:
    images, target = digits()
    y = target.astype(np.int64)
    pixels = images.reshape(len(y), -1).astype(np.int64)  # row-major, intensities 0..16
    ids = np.concatenate([np.full((len(y), 1), CLS), pixels + FIRST_INTENSITY], axis=1)

    def subset(rows: np.ndarray) -> TensorDataset:
        return TensorDataset(torch.from_numpy(ids[rows]), torch.from_numpy(y[rows]))

    train, val, test = stratified_split(y, request.val_fraction)
    return DataSplits(train=subset(train), val=subset(val), test=subset(test), num_classes=10,
                      modality="tokens", input_size=ids.shape[1], vocab_size=FIRST_INTENSITY + _INTENSITIES)


@hookimpl
def register_datasets(register):
    register(DatasetSpec(
        name="digits", load=load_digits_splits,
        description="scikit-learn's bundled 8×8 handwritten digits (1,797 images, 10 classes), split 70/15/15",
    ))
    register(DatasetSpec(
        name="digits_tokens", modality="tokens", tokenizes=False, load=load_digits_tokens,
        description="the digits as 65 tokens (CLS, then 64 pixel intensities, row by row; 19 ids), same split",
    ))
