"""`effrank-bench run` end to end on each real data set's on-disk format, made small by the tests."""
from __future__ import annotations

import json

import pytest

from test_cifar import write_cifar10
from test_imagefolder import make_tree
from test_text_data import SPECIALS, WORDS, save_sst2, write_tokenizer


@pytest.fixture
def run(run_cli, tiny):
    """run(out, *args): `effrank-bench run` of the tiny recipe in batches of 16, each data set holding out
    its own validation split; returns (the trial records, the summary)."""

    def run_(out, *args: str) -> tuple[list[dict], dict]:
        code, _, err = run_cli("run", *args, *tiny.args(batch_size=16, val_fraction=None), "--out", out)
        assert code == 0, err
        records = [json.loads(line) for line in (out / "trials.jsonl").read_text().splitlines()]
        return records, json.loads((out / "summary.json").read_text())

    return run_


def test_a_run_on_cifar10_files(tmp_path, run):
    write_cifar10(tmp_path / "data")
    records, summary = run(tmp_path / "run", "--dataset", "cifar10", "--data-root", str(tmp_path / "data"))
    assert [(r["rank"], r["status"], r["dataset"]) for r in records] == [(2, "ok", "cifar10"), (4, "ok", "cifar10")]
    # micro_vit keeps its 8×8 input (CIFAR's 32×32 batches are resized on the device) and takes 3 channels:
    # its 2×2 patch embedding has 64·3·2·2 weights, 512 more than the 136,138 parameters of 1-channel digits.
    assert summary["config"]["augment"] is True
    assert json.loads((tmp_path / "run" / "teacher.json").read_text())["cost"]["params"] == 136_138 + 512


def test_a_run_on_an_image_folder(tmp_path, run):
    make_tree(tmp_path / "images")
    records, summary = run(tmp_path / "run", "--arch", "micro_convnet", "--dataset", "imagefolder",
                           "--data-root", str(tmp_path / "images"))
    assert [r["status"] for r in records] == ["ok", "ok"]
    assert summary["teacher"]["test_accuracy"] in {k / 5 for k in range(6)}  # val/ holds 5 images


def test_a_run_on_a_local_text_set_with_a_local_tokenizer(tmp_path, run):
    pytest.importorskip("datasets")
    save_sst2(tmp_path / "sst2")
    tokenizer = write_tokenizer(tmp_path / "tok", SPECIALS + WORDS)
    records, summary = run(tmp_path / "run", "--arch", "micro_bert", "--dataset", "sst2",
                           "--data-root", str(tmp_path / "sst2"), "--tokenizer", tokenizer)
    assert [r["status"] for r in records] == ["ok", "ok"]
    assert summary["teacher"]["test_accuracy"] in {k / 6 for k in range(7)}  # SST-2's validation: 6 sentences
