"""sst2 / ag_news: local copies in the teacher's tokens, padded with 0; clear errors when offline."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from effrank_bench.errors import DataError
from effrank_bench.registry import default_registry
from effrank_bench.specs import DataRequest

# datasets and transformers are imported where used, not at collection: every test process collects
# this module, and test_real_data_runs borrows its helpers for image runs that need neither.
pytestmark = pytest.mark.skipif(importlib.util.find_spec("datasets") is None,
                                reason="needs the text extra: pip install -e '.[text]'")

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = ["a", "good", "bad", "great", "movie", "film", "sports", "win", "market", "stocks", "science", "world"]
ID = {token: i for i, token in enumerate(SPECIALS + WORDS)}  # [PAD] 0, [CLS] 2, [SEP] 3, "a" 5, ...
TOPICS = ["world", "sports win", "market stocks", "science"]


def write_tokenizer(folder: Path, tokens: list[str]) -> str:
    from transformers import BertTokenizerFast

    folder.mkdir(parents=True)
    (folder / "vocab.txt").write_text("\n".join(tokens) + "\n")
    # Positional: the vocab file is `vocab_file` in transformers 4 and `vocab` (path or dict) in 5.
    BertTokenizerFast(str(folder / "vocab.txt")).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory) -> str:
    return write_tokenizer(tmp_path_factory.mktemp("tok") / "bert", SPECIALS + WORDS)


def sst2_rows(n: int, label=None) -> dict[str, list]:
    sentences = ["a good movie" if i % 2 else "Bad film" for i in range(n)]
    return {"sentence": sentences, "label": [i % 2 if label is None else label for i in range(n)],
            "idx": list(range(n))}


def save_sst2(folder: Path) -> None:
    """GLUE's shape: train, validation, and a test split whose labels are all -1."""
    import datasets

    validation = sst2_rows(6)
    validation["sentence"][0] = "a great great movie , a great film"  # longer than 8 tokens
    datasets.DatasetDict({
        "train": datasets.Dataset.from_dict(sst2_rows(20)),
        "validation": datasets.Dataset.from_dict(validation),
        "test": datasets.Dataset.from_dict(sst2_rows(4, label=-1)),
    }).save_to_disk(str(folder))


def load(name: str, **request):
    return default_registry().dataset(name).load(DataRequest(**request))


def test_sst2_from_save_to_disk_reports_on_validation(tmp_path, tokenizer):
    save_sst2(tmp_path / "sst2")
    splits = load("sst2", root=tmp_path / "sst2", tokenizer=tokenizer, input_size=8)
    assert (splits.modality, splits.input_size, splits.in_chans) == ("tokens", 8, 1)
    assert (splits.num_classes, splits.vocab_size) == (2, len(SPECIALS + WORDS))
    # 20 training rows, ceil(10%) = 2 held out (one per class); the 6 validation rows are the test split.
    assert (len(splits.train), len(splits.val), len(splits.test)) == (18, 2, 6)
    assert sorted(splits.val.tensors[1].tolist()) == [0, 1]
    ids, labels = splits.test.tensors
    assert ids.dtype == labels.dtype == torch.int64 and ids.shape == (6, 8)
    assert labels.tolist() == [0, 1, 0, 1, 0, 1]  # not GLUE's unlabelled test split (-1)
    g, a = ID["great"], ID["a"]
    # Truncated to 8 tokens, still ending in [SEP]; an unknown "," is [UNK].
    assert ids[0].tolist() == [ID["[CLS]"], a, g, g, ID["movie"], ID["[UNK]"], a, ID["[SEP]"]]
    assert ids[1].tolist() == [ID["[CLS]"], a, ID["good"], ID["movie"], ID["[SEP]"], 0, 0, 0]
    assert ids[2].tolist() == [ID["[CLS]"], ID["bad"], ID["film"], ID["[SEP]"], 0, 0, 0, 0]  # lower-cased
    train_ids, train_labels = splits.train.tensors
    assert (train_ids[:, 0] == ID["[CLS]"]).all() and train_ids.shape == (18, 8)
    # Each training label still sits with its own sentence: "a good movie" is 1, "bad film" 0.
    assert ((train_ids[:, 2] == ID["good"]) == (train_labels == 1)).all()


@pytest.mark.parametrize("ext", ["csv", "jsonl", "parquet"])
def test_ag_news_from_split_files_in_root_slash_name(tmp_path, tokenizer, ext):
    import datasets

    folder = tmp_path / "ag_news"
    folder.mkdir()
    for split, n in (("train", 40), ("test", 8)):
        table = datasets.Dataset.from_dict({"text": [TOPICS[i % 4] for i in range(n)],
                                            "label": [i % 4 for i in range(n)]})
        getattr(table, {"csv": "to_csv", "jsonl": "to_json", "parquet": "to_parquet"}[ext])(
            str(folder / f"{split}.{ext}"), **({"index": False} if ext == "csv" else {}))
    splits = load("ag_news", root=tmp_path, tokenizer=tokenizer, input_size=6)
    assert splits.num_classes == 4 and (len(splits.train), len(splits.val), len(splits.test)) == (36, 4, 8)
    assert sorted(splits.val.tensors[1].tolist()) == [0, 1, 2, 3]
    ids, labels = splits.test.tensors
    assert labels.tolist() == [0, 1, 2, 3] * 2
    assert ids[1].tolist() == [ID["[CLS]"], ID["sports"], ID["win"], ID["[SEP]"], 0, 0]


def test_text_needs_a_tokenizer_that_loads_and_pads_with_zero(tmp_path, tokenizer):
    save_sst2(tmp_path)
    with pytest.raises(DataError, match=r"^sst2 is text, and this architecture names no tokenizer \(ArchitectureSpec.tokenizer\) to encode it with; pass --tokenizer NAME_OR_PATH$"):
        load("sst2", root=tmp_path, input_size=8)
    with pytest.raises(DataError, match=f"tokenizer folder {tmp_path / 'nowhere'} does not exist"):
        load("sst2", root=tmp_path, tokenizer=str(tmp_path / "nowhere"), input_size=8)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=rf"cannot load tokenizer '{tmp_path / 'empty'}' \(.*--tokenizer DIR$"):
        load("sst2", root=tmp_path, tokenizer=str(tmp_path / "empty"), input_size=8)
    pad_one = write_tokenizer(tmp_path / "pad1", ["[UNK]", "[PAD]", "[CLS]", "[SEP]", "[MASK]"] + WORDS)
    with pytest.raises(DataError, match=r"pads with id 1, but the models here treat id 0 as padding"):
        load("sst2", root=tmp_path, tokenizer=pad_one, input_size=8)


def test_run_with_an_architecture_that_names_no_tokenizer_asks_for_one(tmp_path, run_cli):
    empty = tmp_path / "data"
    empty.mkdir()
    code, out, err = run_cli("run", "--dataset", "sst2", "--arch", "micro_bert", "--data-root", str(empty),
                             "--ranks", "2", "--device", "cpu", "--out", str(tmp_path / "run"))
    # The tokenizer is checked before the data set is looked for, so the empty root is never reached.
    assert (code, out) == (2, "")
    assert err == ("error: sst2 is text, and this architecture names no tokenizer (ArchitectureSpec.tokenizer) to "
                   "encode it with; pass --tokenizer NAME_OR_PATH\n")


def test_offline_hub_says_what_failed_and_how_to_use_a_local_copy(tmp_path, tokenizer, monkeypatch):
    import datasets

    # An empty datasets cache, so a copy cached on this machine cannot make the hub look reachable.
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    with pytest.raises(DataError) as err:
        load("sst2", tokenizer=tokenizer, input_size=8)
    message = str(err.value)
    assert message.startswith("could not fetch sst2 from the Hugging Face hub: nyu-mll/glue (sst2)")
    assert "save_to_disk(DIR)" in message and "--data-root DIR" in message
    with pytest.raises(DataError, match="could not fetch ag_news from the Hugging Face hub: fancyzhx/ag_news"):
        load("ag_news", root=tmp_path / "empty", tokenizer=tokenizer, input_size=8)


def test_an_unreachable_hub_fails_at_once_instead_of_retrying_for_a_minute(tmp_path, tokenizer, monkeypatch):
    import datasets
    import time

    from huggingface_hub import constants

    from effrank_bench import network
    from effrank_bench_plugins import hub
    from effrank_bench_plugins.text import load_tokenizer

    asked = []

    def unreachable(address, timeout):
        asked.append(address)
        raise OSError("Name or service not known")

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # the tests' offline mode off: a network that is down
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(network.socket, "create_connection", unreachable)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    start = time.perf_counter()
    with pytest.raises(DataError, match=r"^cannot load tokenizer 'bert-base-uncased' \(no network: the Hugging Face "
                                        r"hub cannot be reached\); where the hub is unreachable, run "):
        load_tokenizer("bert-base-uncased", "sst2")
    with pytest.raises(DataError, match=r"^could not fetch sst2 from the Hugging Face hub: nyu-mll/glue \(sst2\) "
                                        r"\(no network: the Hugging Face hub cannot be reached\); "):
        load("sst2", tokenizer=tokenizer, input_size=8)
    assert time.perf_counter() - start < 5
    assert not constants.HF_HUB_OFFLINE and not datasets.config.HF_HUB_OFFLINE  # offline only for the moment
    assert asked == [("huggingface.co", 443)] * 2
    monkeypatch.setattr(constants, "ENDPOINT", "http://mirror.internal")  # a mirror over plain HTTP
    assert hub.why_offline() == "no network: the Hugging Face hub cannot be reached"
    assert asked[-1] == ("mirror.internal", 80)


def test_local_copies_are_checked(tmp_path, tokenizer):
    import datasets

    datasets.Dataset.from_dict(sst2_rows(10)).to_csv(str(tmp_path / "train.csv"), index=False)
    with pytest.raises(DataError, match=f"{tmp_path} has no validation split file"):
        load("sst2", root=tmp_path, tokenizer=tokenizer, input_size=8)
    datasets.Dataset.from_dict({"text": ["a"] * 4, "label": [0, 1, 2, 1]}).to_csv(
        str(tmp_path / "validation.csv"), index=False)
    with pytest.raises(DataError, match=r"validation\] has no column 'sentence' \(columns: text, label\)"):
        load("sst2", root=tmp_path, tokenizer=tokenizer, input_size=8)
    datasets.Dataset.from_dict({"sentence": ["a"] * 4, "label": [0, 1, 2, 1]}).to_csv(
        str(tmp_path / "validation.csv"), index=False)
    with pytest.raises(DataError, match=r"column 'label' must hold class ids 0\.\.1, found \[0, 1, 2\]"):
        load("sst2", root=tmp_path, tokenizer=tokenizer, input_size=8)


def _raised(err, cause):
    """``err`` as raised from ``cause`` (``raise err from cause``)."""
    try:
        raise err from cause
    except type(err) as raised:
        return raised


def test_the_offline_reason_is_given_only_where_a_file_missed_the_local_cache():
    from huggingface_hub.utils import LocalEntryNotFoundError

    from effrank_bench_plugins.hub import why_it_failed

    offline = "no network: the Hugging Face hub cannot be reached"
    # transformers wraps the hub's miss in an OSError; datasets raises a ConnectionError of its own.
    wrapped = _raised(OSError("We couldn't connect to 'https://huggingface.co'"), LocalEntryNotFoundError("not cached"))
    assert why_it_failed(offline, wrapped) == offline
    assert why_it_failed(offline, ConnectionError("Couldn't reach 'nyu-mll/glue' on the Hub")) == offline
    # A cached file that does not load is its own error, network or not; online, every error is its own.
    corrupt = ValueError("Unable to parse tokenizer.json: EOF while parsing")
    assert why_it_failed(offline, corrupt) == "ValueError: Unable to parse tokenizer.json: EOF while parsing"
    assert why_it_failed(None, wrapped) == "OSError: We couldn't connect to 'https://huggingface.co'"
