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
from effrank_bench.specs import DataRequest, DatasetSpec, DataSplits, Preprocess
from effrank_bench_plugins.imaging import Normalize, train_augment
from effrank_bench_plugins.splits import held_out_val

_EXTENSIONS = (".png", ".jpg", ".jpeg")
_LAYOUT = "DIR/train/CLASS/*.png|jpg|jpeg and DIR/val/CLASS/... (val is the reported test split)"
# The images the data set's own mean and std are taken from, evenly spread over the training split.
_STATISTICS_SAMPLE = 1000


def read_image(path: Path, side: int, preprocess: Preprocess | None = None) -> torch.Tensor:
    """An image file as uint8 RGB 3×side×side.

    With a ``preprocess`` that resizes first, the way its weights were evaluated (torchvision's and
    timm's Resize + CenterCrop on PIL images): the shorter edge to ``resize`` (in proportion when
    ``side`` is not its ``crop``), then the center square. Otherwise squashed to the square with a
    bilinear resize when its size differs.
    """
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
    except OSError as err:  # PIL's UnidentifiedImageError and truncated files are OSErrors
        raise DataError(f"cannot read image {path} ({one_line(err)})") from err
    if preprocess is not None and preprocess.resize is not None:
        w, h = image.size
        # torchvision's Resize(int): the shorter edge exactly, the longer one scaled and truncated.
        short = round(preprocess.resize * side / preprocess.crop)  # = resize at the crop the weights expect
        size = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
        resample = Image.Resampling.BICUBIC if preprocess.interpolation == "bicubic" else Image.Resampling.BILINEAR
        image = image.resize(size, resample)
        left, top = int(round((size[0] - side) / 2.0)), int(round((size[1] - side) / 2.0))
        image = image.crop((left, top, left + side, top + side))
    elif image.size != (side, side):
        image = image.resize((side, side), Image.Resampling.BILINEAR)
    return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).contiguous()


class ImageFiles(Dataset):
    """Images decoded from disk per item (a folder may not fit in memory); normalized, augmented when asked."""

    def __init__(self, files: list[Path], labels: list[int], side: int, normalize: Normalize,
                 preprocess: Preprocess | None = None, augment: Callable[[torch.Tensor], torch.Tensor] | None = None):
        self.files, self.labels, self.side, self.augment = files, labels, side, augment
        self.normalize, self.preprocess = normalize, preprocess

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image = read_image(self.files[i], self.side, self.preprocess)
        if self.augment is not None:
            image = self.augment(image)
        return self.normalize(image), self.labels[i]


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


def _own_statistics(files: list[Path], side: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of the training images as read (at most 1,000 of them, evenly spread)."""
    step = max(1, len(files) // _STATISTICS_SAMPLE)
    pixels = torch.stack([read_image(path, side) for path in files[::step][:_STATISTICS_SAMPLE]])
    pixels = pixels.permute(1, 0, 2, 3).reshape(3, -1).double() / 255
    # A channel that never varies (a folder of pure colours) is left unscaled rather than divided by zero.
    std = pixels.std(dim=1, unbiased=False)
    return tuple(pixels.mean(dim=1).tolist()), tuple(torch.where(std > 1e-6, std, 1.0).tolist())


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
    train, val = held_out_val(np.array(labels), request.val_fraction)
    augment = train_augment(side) if request.augment else None
    train_files = [files[i] for i in train]
    preprocess = request.preprocess
    normalize = (Normalize.expected_by(preprocess, 3) if preprocess is not None
                 else Normalize(*_own_statistics(train_files, side)))
    return DataSplits(
        train=ImageFiles(train_files, [labels[i] for i in train], side, normalize, preprocess, augment),
        val=ImageFiles([files[i] for i in val], [labels[i] for i in val], side, normalize, preprocess),
        test=ImageFiles(test_files, test_labels, side, normalize, preprocess),
        num_classes=len(classes), modality="image", input_size=side, in_chans=3,
    )


@hookimpl
def register_datasets(register):
    register(DatasetSpec(
        name="imagefolder", load=load_imagefolder,
        description="your images: --data-root DIR with DIR/{train,val}/CLASS/*.png|jpg; val is the reported split, "
                    "10% of train held out for model selection",
    ))
