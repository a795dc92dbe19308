"""CIFAR-10 and CIFAR-100 from their "python version" files, normalized the architecture's way or their own."""
from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from effrank_bench import hookimpl
from effrank_bench.errors import DataError, one_line
from effrank_bench.paths import cache_dir
from effrank_bench.specs import DataRequest, DatasetSpec, DataSplits
from effrank_bench_plugins.imaging import Normalize, train_augment
from effrank_bench_plugins.splits import held_out_val


def default_data_root() -> Path:
    """``$EFFRANK_BENCH_DATA``, else ``data`` in effrank-bench's cache (``~/.cache/effrank-bench/data``)."""
    if "EFFRANK_BENCH_DATA" in os.environ:
        return Path(os.environ["EFFRANK_BENCH_DATA"]).expanduser()
    return cache_dir() / "data"


class ImageTensors(Dataset):
    """uint8 images N×3×H×W held in memory; items are normalized float images, augmented when asked."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, normalize: Normalize,
                 augment: Callable[[torch.Tensor], torch.Tensor] | None = None):
        self.images, self.labels, self.normalize, self.augment = images, labels, normalize, augment

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image = self.images[i]
        if self.augment is not None:
            image = self.augment(image)  # on uint8, so crop padding is black as in the usual recipe
        return self.normalize(image), int(self.labels[i])


@dataclass(frozen=True)
class _Cifar:
    name: str
    title: str
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    label_key: str
    num_classes: int
    torchvision_class: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


# mean and std: per channel over every pixel of the 50,000 training images, for models trained from scratch.
_CIFAR10 = _Cifar("cifar10", "CIFAR-10", "cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)),
                  ("test_batch",), "labels", 10, "CIFAR10",
                  mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616))
_CIFAR100 = _Cifar("cifar100", "CIFAR-100", "cifar-100-python", ("train",), ("test",), "fine_labels", 100, "CIFAR100",
                   mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762))


class _NumpyOnly(pickle.Unpickler):
    """CIFAR's files are pickles: let through only what numpy arrays need, so a planted file cannot run code."""

    _ALLOWED = {
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def read_batch(path: Path, label_key: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """One python-version batch file -> (uint8 N×3×32×32, int64 labels)."""
    try:
        with open(path, "rb") as f:
            batch = _NumpyOnly(f, encoding="latin1").load()
        # Python 2 pickles decode their keys to str under latin1; files written from bytes keep bytes keys.
        fields = [batch.get(key, batch.get(key.encode())) for key in ("data", label_key)]
        if any(field is None for field in fields):
            raise KeyError(f"no 'data' and '{label_key}' entries")
        images = np.asarray(fields[0], dtype=np.uint8).reshape(-1, 3, 32, 32)  # rows are R, G, B planes
        labels = np.asarray(fields[1], dtype=np.int64)
    except (OSError, EOFError, pickle.UnpicklingError, AttributeError, KeyError, IndexError, TypeError,
            ValueError) as err:
        raise DataError(f"cannot read {path} as a CIFAR python-version batch ({one_line(err)})") from err
    if len(labels) != len(images) or labels.min(initial=0) < 0 or labels.max(initial=0) >= num_classes:
        raise DataError(f"{path}: expected one '{label_key}' in 0..{num_classes - 1} per image, "
                        f"got {len(labels)} labels for {len(images)} images")
    return images, labels


def _download(cifar: _Cifar, root: Path) -> None:
    import torchvision.datasets

    dataset = getattr(torchvision.datasets, cifar.torchvision_class)
    try:
        for train in (True, False):  # the second call finds the archive already verified and extracted
            dataset(str(root), train=train, download=True)
    except Exception as err:  # network, disk and checksum failures all end the same way for the user
        raise DataError(f"could not download {cifar.title} into {root} ({one_line(err)}); fetch the python "
                        "version from https://www.cs.toronto.edu/~kriz/cifar.html elsewhere and extract it "
                        f"into {root}") from err


def _load(cifar: _Cifar, request: DataRequest) -> DataSplits:
    root = request.root.expanduser() if request.root is not None else default_data_root()
    folder = root / cifar.folder
    files = cifar.train_files + cifar.test_files

    def missing() -> list[str]:
        return [name for name in files if not (folder / name).is_file()]

    if missing() and request.download:
        _download(cifar, root)
    if absent := missing():
        which = "none of them is there" if len(absent) == len(files) else f"missing: {', '.join(absent)}"
        raise DataError(f"{cifar.title} not found: expected {folder} with {', '.join(files)} ({which}); "
                        f"pass --download to fetch it there, or --data-root DIR where DIR/{cifar.folder} "
                        "holds the python-version files")

    def read(names: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        parts = [read_batch(folder / name, cifar.label_key, cifar.num_classes) for name in names]
        return (torch.from_numpy(np.concatenate([p[0] for p in parts])),
                torch.from_numpy(np.concatenate([p[1] for p in parts])))

    images, labels = read(cifar.train_files)
    test_images, test_labels = read(cifar.test_files)
    train, val = held_out_val(labels.numpy(), request.val_fraction)
    augment = train_augment(32) if request.augment else None
    normalize = (Normalize.expected_by(request.preprocess, 3) if request.preprocess is not None
                 else Normalize(cifar.mean, cifar.std))
    return DataSplits(
        train=ImageTensors(images[train], labels[train], normalize, augment),
        val=ImageTensors(images[val], labels[val], normalize),
        test=ImageTensors(test_images, test_labels, normalize),
        num_classes=cifar.num_classes, modality="image", input_size=32, in_chans=3,
    )


def load_cifar10(request: DataRequest) -> DataSplits:
    return _load(_CIFAR10, request)


def load_cifar100(request: DataRequest) -> DataSplits:
    return _load(_CIFAR100, request)


@hookimpl
def register_datasets(register):
    register(DatasetSpec(
        name="cifar10", load=load_cifar10,
        description="CIFAR-10 (32×32, 10 classes): 45,000 train / 5,000 val held out of train / 10,000 test",
    ))
    register(DatasetSpec(
        name="cifar100", load=load_cifar100,
        description="CIFAR-100, fine labels (32×32, 100 classes): 45,000 train / 5,000 val held out / 10,000 test",
    ))
