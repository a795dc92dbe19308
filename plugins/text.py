"""Hugging Face text classification sets (SST-2, AG News), from the hub or a local copy, in the teacher's tokens."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from effrank_bench import hookimpl
from effrank_bench.errors import DataError, one_line
from effrank_bench.specs import DataRequest, DatasetSpec, DataSplits
from effrank_bench_plugins.hub import cache_only_when_offline, why_it_failed
from effrank_bench_plugins.splits import held_out_val

_FORMATS = {".csv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}


@dataclass(frozen=True)
class _TextSet:
    name: str
    hub: str
    config: str | None
    text: str
    label: str
    num_classes: int
    reported: str  # the labelled split the paper-style number is read on; model selection holds out train


# GLUE's SST-2 test split is unlabelled (-1), so its validation split is the reported one.
_SST2 = _TextSet("sst2", "nyu-mll/glue", "sst2", "sentence", "label", 2, "validation")
_AG_NEWS = _TextSet("ag_news", "fancyzhx/ag_news", None, "text", "label", 4, "test")


def _require_datasets():
    try:
        import datasets
    except ImportError as err:
        raise DataError(f"text data sets need the 'datasets' package ({one_line(err)}); "
                        "pip install 'effrank-bench[text]'") from err
    return datasets


def load_tokenizer(name: str | None, dataset: str):
    """The teacher's tokenizer for ``dataset``; the core masks id 0 as padding, so the tokenizer must pad with 0."""
    if name is None:
        raise DataError(f"{dataset} is text, and this architecture names no tokenizer (ArchitectureSpec.tokenizer) "
                        "to encode it with; pass --tokenizer NAME_OR_PATH")
    from transformers import AutoTokenizer

    path = Path(name).expanduser()
    if (path.is_absolute() or name.startswith((".", "~"))) and not path.is_dir():
        raise DataError(f"tokenizer folder {path} does not exist; pass --tokenizer with a folder written by "
                        "save_pretrained or a Hugging Face name")
    offline = None
    try:
        if path.is_dir():
            tokenizer = AutoTokenizer.from_pretrained(str(path))
        else:
            with cache_only_when_offline() as offline:
                tokenizer = AutoTokenizer.from_pretrained(name)
    except Exception as err:  # hub, network and file-format failures all end the same way for the user
        raise DataError(f"cannot load tokenizer '{name}' ({why_it_failed(offline, err)}); where the hub "
                        "is unreachable, run "
                        f"AutoTokenizer.from_pretrained('{name}').save_pretrained(DIR) elsewhere "
                        "and pass --tokenizer DIR") from err
    if tokenizer.pad_token_id != 0:
        pads = "has no pad token" if tokenizer.pad_token_id is None else f"pads with id {tokenizer.pad_token_id}"
        raise DataError(f"tokenizer '{name}' {pads}, but the models here treat id 0 as padding (BERT's [PAD]); "
                        "use a tokenizer whose pad token has id 0")
    return tokenizer


def _local_copy(root: Path, name: str) -> Path | None:
    """ROOT or ROOT/NAME when it holds a save_to_disk DatasetDict or {train,validation,test}.* split files."""
    for folder in (root, root / name):
        if (folder / "dataset_dict.json").is_file():
            return folder
        if any((folder / f"{split}{ext}").is_file() for split in ("train", "validation", "test") for ext in _FORMATS):
            return folder
    return None


def _read_split_file(folder: Path, split: str, spec: _TextSet):
    import pandas as pd

    found = [folder / f"{split}{ext}" for ext in _FORMATS if (folder / f"{split}{ext}").is_file()]
    if not found:
        raise DataError(f"{spec.name}: {folder} has no {split} split file ({split}.csv, .json, .jsonl or .parquet)")
    path = found[0]
    try:
        if path.suffix == ".csv":
            return pd.read_csv(path, keep_default_na=False)  # an empty text stays "", not NaN
        if path.suffix == ".parquet":
            return pd.read_parquet(path)
        try:  # datasets' to_json writes JSON lines even under .json
            return pd.read_json(path, lines=True)
        except ValueError:
            return pd.read_json(path)
    except Exception as err:  # pandas raises many types for a malformed file
        raise DataError(f"cannot read {path} ({one_line(err)})") from err


def _fetch(spec: _TextSet, root: Path | None):
    """The hub copy, cached under ROOT/huggingface when a root is given."""
    datasets = _require_datasets()
    cache = str(root / "huggingface") if root is not None else None
    try:
        with cache_only_when_offline() as offline:
            return datasets.load_dataset(spec.hub, spec.config, cache_dir=cache)
    except Exception as err:  # offline, missing, rate-limited: the fix is the same local copy
        source = f"{spec.hub} ({spec.config})" if spec.config else spec.hub
        args = ", ".join(repr(a) for a in (spec.hub, spec.config) if a)
        raise DataError(
            f"could not fetch {spec.name} from the Hugging Face hub: {source} "
            f"({why_it_failed(offline, err)}); where you have "
            f"network access run datasets.load_dataset({args}).save_to_disk(DIR), copy DIR here "
            "and pass --data-root DIR") from err


def _tables(spec: _TextSet, root: Path | None):
    """The set's splits (a DatasetDict or split name -> DataFrame) and where they came from."""
    local = _local_copy(root, spec.name) if root is not None else None
    if local is None:
        return _fetch(spec, root), spec.hub
    if not (local / "dataset_dict.json").is_file():
        return {split: _read_split_file(local, split, spec) for split in ("train", spec.reported)}, str(local)
    try:
        return _require_datasets().load_from_disk(str(local)), str(local)
    except Exception as err:  # a partial or foreign folder fails in many ways inside datasets
        raise DataError(f"cannot load {local} with datasets.load_from_disk ({one_line(err)})") from err


def _splits(spec: _TextSet, root: Path | None) -> dict[str, tuple[list[str], np.ndarray]]:
    """{"train": ..., reported split: ...} as (texts, labels)."""
    tables, where = _tables(spec, root)
    missing = [split for split in ("train", spec.reported) if split not in tables]
    if missing:
        raise DataError(f"{spec.name}: {where} has no {' or '.join(missing)} split (it has: {', '.join(tables)})")
    return {split: _columns(tables[split], spec, f"{where} [{split}]") for split in ("train", spec.reported)}


def _columns(table, spec: _TextSet, where: str) -> tuple[list[str], np.ndarray]:
    """Texts and integer labels of one split (a datasets.Dataset or a pandas DataFrame), checked."""
    names = list(table.column_names if hasattr(table, "column_names") else table.columns)
    absent = [c for c in (spec.text, spec.label) if c not in names]
    if absent:
        raise DataError(f"{where} has no column '{absent[0]}' (columns: {', '.join(names)}); "
                        f"{spec.name} reads text from '{spec.text}' and labels from '{spec.label}'")
    texts = [str(t) for t in table[spec.text]]
    if not texts:
        raise DataError(f"{where} is empty")
    labels = np.asarray(list(table[spec.label]))
    if labels.dtype.kind not in "iu" or labels.min(initial=0) < 0 or labels.max(initial=0) >= spec.num_classes:
        raise DataError(f"{where}: column '{spec.label}' must hold class ids 0..{spec.num_classes - 1}, "
                        f"found {sorted(set(labels.tolist()))[:5]}")
    return texts, labels.astype(np.int64)


def _encode(tokenizer, texts: list[str], length: int) -> torch.Tensor:
    ids = tokenizer(texts, padding="max_length", truncation=True, max_length=length, return_tensors="np",
                    return_attention_mask=False, return_token_type_ids=False)["input_ids"]
    return torch.from_numpy(ids.astype(np.int64))


def _load(spec: _TextSet, request: DataRequest) -> DataSplits:
    _require_datasets()
    if request.input_size is None:
        raise DataError(f"{spec.name} is tokenized to the architecture's sequence length, and none was given")
    tokenizer = load_tokenizer(request.tokenizer, spec.name)  # before any download: a wrong tokenizer fails fast
    root = request.root.expanduser() if request.root is not None else None
    splits = _splits(spec, root)
    (texts, labels), (test_texts, test_labels) = splits["train"], splits[spec.reported]
    ids, test_ids = _encode(tokenizer, texts, request.input_size), _encode(tokenizer, test_texts, request.input_size)
    labels, test_labels = torch.from_numpy(labels), torch.from_numpy(test_labels)
    train, val = held_out_val(labels.numpy(), request.val_fraction)
    return DataSplits(
        train=TensorDataset(ids[train], labels[train]), val=TensorDataset(ids[val], labels[val]),
        test=TensorDataset(test_ids, test_labels), num_classes=spec.num_classes, modality="tokens",
        input_size=request.input_size, in_chans=1, vocab_size=len(tokenizer),
    )


def load_sst2(request: DataRequest) -> DataSplits:
    return _load(_SST2, request)


def load_ag_news(request: DataRequest) -> DataSplits:
    return _load(_AG_NEWS, request)


@hookimpl
def register_datasets(register):
    register(DatasetSpec(
        name="sst2", modality="tokens", load=load_sst2,
        description="GLUE SST-2 sentiment (2 classes; hub or --data-root copy): validation is the reported split, "
                    "10% of train held out",
    ))
    register(DatasetSpec(
        name="ag_news", modality="tokens", load=load_ag_news,
        description="AG News topics (4 classes; hub or --data-root copy): test is the reported split, "
                    "10% of train held out",
    ))
