"""Any ROOT/{train,val}/CLASS/*.png|jpg|jpeg tree as a data set; ROOT/val is the reported split."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from effrank_bench import hookimpl
from effrank_bench.errors import DataError, one_line
from effrank_bench.specs import DataRequest, DatasetSpec, DataSplits
from effrank_bench_plugins.imaging import normalize, train_augment
from effrank_bench_plugins.splits import held_out_val

_EXTENSIONS = (".png", ".jpg", ".jpeg")
_LAYOUT = "DIR/train/CLASS/*.png|jpg|jpeg and DIR/val/CLASS/... (val is the reported test split)"


def read_image(path: Path, side: int) -> torch.Tensor:
    """An image file as uint8 RGB 3×side×side (bilinear resize to a square when its size differs)."""
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
    except OSError as err:  # PIL's UnidentifiedImageError and truncated files are OSErrors
        raise DataError(f"cannot read image {path} ({one_line(err)})") from err
    if image.size != (side, side):
        image = image.resize((side, side), Image.Resampling.BILINEAR)
    return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).contiguous()


class ImageFiles(Dataset):
    """Images decoded from disk per item (a folder may not fit in memory); normalized, augmented when asked."""

    def __init__(self, files: list[Path], labels: list[int], side: int,
                 augment: Callable[[torch.Tensor], torch.Tensor] | None = None):
        self.files, self.labels, self.side, self.augment = files, labels, side, augment

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image = read_image(self.files[i], self.side)
        if self.augment is not None:
            image = self.augment(image)
        return normalize(image), self.labels[i]


def _scan(folder: Path) -> dict[str, list[Path]]:
    """Class name -> its sorted image files; hidden folders (.ipynb_checkpoints, ...) are not classes."""
    classes = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(p for p in sub.iterdir() if p.is_file() and p.suffix.lower() in _EXTENSIONS)
        if not files:
            raise DataError(f"imagefolder: {sub} holds no .png/.jpg/.jpeg images; every class needs some")
        classes[sub.name] = files
    if not classes:
        raise DataError(f"imagefolder: {folder} has no class folders; expected {_LAYOUT}")
    return classes


def _native_side(files: list[Path]) -> int:
    """The one square size every training image has; without an input size there is no other to choose."""
    sizes: dict[tuple[int, int], Path] = {}
    for path in files:
        try:
            with Image.open(path) as image:  # reads the header only
                sizes.setdefault(image.size, path)
        except OSError as err:
            raise DataError(f"cannot read image {path} ({one_line(err)})") from err
    (w, h), first = next(iter(sizes.items()))
    if len(sizes) > 1 or w != h:
        shown = ", ".join(f"{path.name} is {w}×{h}" for (w, h), path in list(sizes.items())[:2])
        raise DataError(f"imagefolder: no input size was given and the training images are not all one square "
                        f"size ({shown}); give the architecture's input size to resize them to")
    return w


def load_imagefolder(request: DataRequest) -> DataSplits:
    if request.root is None:
        raise DataError(f"imagefolder needs --data-root DIR with {_LAYOUT}")
    root = request.root.expanduser()
    for part in ("train", "val"):
        if not (root / part).is_dir():
            raise DataError(f"imagefolder: {root / part} is not a folder; expected {_LAYOUT.replace('DIR', str(root))}")
    train_tree, test_tree = _scan(root / "train"), _scan(root / "val")
    if set(train_tree) != set(test_tree):
        only_train, only_val = sorted(set(train_tree) - set(test_tree)), sorted(set(test_tree) - set(train_tree))
        raise DataError(f"imagefolder: {root / 'val'} must have the classes of {root / 'train'}; "
                        f"only in train: {', '.join(only_train) or '-'}; only in val: {', '.join(only_val) or '-'}")
    classes = sorted(train_tree)

    def flat(tree: dict[str, list[Path]]) -> tuple[list[Path], list[int]]:
        pairs = [(path, label) for label, name in enumerate(classes) for path in tree[name]]
        return [p for p, _ in pairs], [y for _, y in pairs]

    files, labels = flat(train_tree)
    test_files, test_labels = flat(test_tree)
    side = request.input_size or _native_side(files)
    train, val = held_out_val(np.array(labels))
    augment = train_augment(side) if request.augment else None
    return DataSplits(
        train=ImageFiles([files[i] for i in train], [labels[i] for i in train], side, augment),
        val=ImageFiles([files[i] for i in val], [labels[i] for i in val], side),
        test=ImageFiles(test_files, test_labels, side),
        num_classes=len(classes), modality="image", input_size=side, in_chans=3,
    )


@hookimpl
def register_datasets(register):
    register(DatasetSpec(
        name="imagefolder", load=load_imagefolder,
        description="your images: --data-root DIR with DIR/{train,val}/CLASS/*.png|jpg; val is the reported split, "
                    "10% of train held out for model selection",
    ))
