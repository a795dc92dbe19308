"""What a data set's ``load`` returns, checked before anything trains: the contract of :class:`DataSplits`, so
that a plugin's mistake is one line naming the data set, not a traceback from inside torch after a teacher has
trained (float labels, channels other than declared, a label past the class count, float64 or NaN images)."""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

from effrank_bench.errors import DataError, shown
from effrank_bench.specs import DatasetSpec, DataSplits


def checked_splits(spec: DatasetSpec, splits: object) -> DataSplits:
    """``splits`` as ``spec.load`` returned them, if they keep the contract; else a DataError naming ``spec``.

    The first item of each split is checked (an image: finite float32 C×H×W of ``in_chans`` channels, of any
    side, since the core resizes each batch to the architecture's; tokens: a 1-D integer tensor of
    ``input_size`` ids below ``vocab_size``; a label: an int64 below ``num_classes``), and every label of a
    split held as tensors (TensorDataset), which costs one comparison; items past the first of other data sets
    are read only as they train.
    """
    where = f"data set '{spec.name}'"
    if not isinstance(splits, DataSplits):
        raise DataError(f"{where}: load() returned {type(splits).__name__}; it returns DataSplits(train=..., "
                        "val=..., test=..., num_classes=..., modality=..., input_size=...)")
    if splits.modality != spec.modality:
        raise DataError(f"{where}: declares {spec.modality} (DatasetSpec.modality) but load() gave "
                        f"{splits.modality} (DataSplits.modality); the two must agree")
    if splits.num_classes < 1:
        raise DataError(f"{where}: num_classes is {splits.num_classes}; a classification set has at least one")
    for name in ("train", "val", "test"):
        split: Dataset = getattr(splits, name)
        if len(split) == 0:
            continue
        item = split[0]
        if not (isinstance(item, tuple | list) and len(item) == 2):
            raise DataError(f"{where}: an item of its {name} split is {_kind(item)}; items are (input, label)")
        x, y = item
        problem = _input_problem(splits, x) or _label_problem(splits, y)
        if problem is not None:
            raise DataError(f"{where}: the first item of its {name} split {problem}")
        if isinstance(split, TensorDataset) and len(split.tensors) == 2 and split.tensors[1].numel():
            labels = split.tensors[1]
            outside = labels[(labels < 0) | (labels >= splits.num_classes)]
            if outside.numel():
                raise DataError(f"{where}: its {name} split holds label {outside[0].item()}, outside "
                                f"0..{splits.num_classes - 1} (num_classes {splits.num_classes})")
    return splits


def _input_problem(splits: DataSplits, x: object) -> str | None:
    if not isinstance(x, torch.Tensor):
        return f"has an input of type {type(x).__name__}; inputs are tensors"
    if splits.modality == "image":
        if x.dtype != torch.float32:
            return f"is an image of {x.dtype}; images are torch.float32 (normalized)"
        if x.dim() != 3 or x.shape[0] != splits.in_chans:
            return (f"is an image of shape {tuple(x.shape)}; images are C×H×W with C = in_chans "
                    f"({splits.in_chans})")
        if not torch.isfinite(x).all():
            return "is an image holding NaN or infinite values"
        return None
    if x.dim() != 1 or x.dtype.is_floating_point or x.dtype == torch.bool:
        return f"is a {x.dtype} tensor of shape {tuple(x.shape)}; token inputs are 1-D integer ids"
    if x.shape[0] != splits.input_size:
        return f"has {x.shape[0]} tokens; input_size says {splits.input_size}"
    if x.numel() and x.min() < 0:
        return f"holds token id {x.min().item()}; ids are 0 (padding) or above"
    if x.numel() and splits.vocab_size is not None and x.max() >= splits.vocab_size:
        return f"holds token id {x.max().item()}, not below vocab_size ({splits.vocab_size})"
    return None


def _label_problem(splits: DataSplits, y: object) -> str | None:
    """A label collates into the int64 (or uint8) tensor cross-entropy takes: a Python int, a numpy or 0-d torch
    integer of those types."""
    wanted = "a label is one int64 class index (a Python int, numpy.int64 or a 0-d torch.int64 tensor)"
    if isinstance(y, torch.Tensor):
        if y.dim() != 0 or y.dtype not in (torch.int64, torch.uint8):
            return f"has a label of {y.dtype} and shape {tuple(y.shape)}; {wanted}"
        y = y.item()
    elif isinstance(y, np.integer):
        if y.dtype not in (np.int64, np.uint8):
            return f"has a label of numpy.{y.dtype}; {wanted}"
        y = int(y)
    elif isinstance(y, bool) or not isinstance(y, int):
        return f"has a label {shown(repr(y))} of type {type(y).__name__}; {wanted}"
    if not 0 <= y < splits.num_classes:
        return f"has label {y}, outside 0..{splits.num_classes - 1} (num_classes {splits.num_classes})"
    return None


def _kind(item: object) -> str:
    return f"a {type(item).__name__} of {len(item)}" if isinstance(item, tuple | list) else f"a {type(item).__name__}"
