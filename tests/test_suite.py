"""Suites: matrix expansion, the shipped suite files, and the smoke suite run end to end."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from effrank_bench.config import load_suite
from effrank_bench.errors import ConfigError, UnsupportedTargetError
from effrank_bench.registry import default_registry
from effrank_bench.suite import check_suite

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


MATRIX = '''
name = "tiny"
[defaults]
epochs = 2
ranks = [2, 4]
[[matrix]]
arch = "micro_vit"
target = ["attention", "mlp"]
loss = ["logit", "kd"]
dataset = "digits"
epochs = 3
[[matrix]]
arch = "micro_mixer"
target = "joint"
loss = "geometric"
dataset = "digits"
ranks = [8]
tag = "r8"
data_root = "data"
'''


def test_a_matrix_expands_to_one_run_per_combination(tmp_path):
    suite = load_suite(write(tmp_path / "s.toml", MATRIX))
    assert suite.name == "tiny" and suite.out == Path("runs/suite-tiny")
    assert suite.run_names() == [
        "micro_vit-attention-logit-digits", "micro_vit-attention-kd-digits",
        "micro_vit-mlp-logit-digits", "micro_vit-mlp-kd-digits", "micro_mixer-joint-geometric-digits-r8",
    ]
    vit, mixer = suite.runs[0], suite.runs[-1]
    assert (vit.epochs, vit.ranks, mixer.epochs, mixer.ranks) == (3, (2, 4), 2, (8,))  # block beats defaults
    assert mixer.data_root == tmp_path / "data"  # relative to the suite file
    assert vit.out == Path("runs/suite-tiny/micro_vit-attention-logit-digits")


def test_flags_override_every_run_of_a_suite(tmp_path):
    suite = load_suite(write(tmp_path / "s.toml", MATRIX),
                       {"epochs": 1, "seeds": "0,1", "out": tmp_path / "elsewhere", "lr": None})
    assert {run.epochs for run in suite.runs} == {1}
    assert {run.seeds for run in suite.runs} == {(0, 1)}
    assert suite.out == tmp_path / "elsewhere" and suite.runs[0].out.parent == tmp_path / "elsewhere"


@pytest.mark.parametrize("text, message", [
    ("epochs = 1\n" + MATRIX, "unknown key(s) epochs"),
    ('name = "x"\n', "needs at least one [[matrix]] block"),
    ('[[matrix]]\narch = "micro_vit"\ntarget = "mlp"\nloss = "kd"\n', "block 1: missing 'dataset'"),
    ('[[matrix]]\narch = []\ntarget = "mlp"\nloss = "kd"\ndataset = "digits"\n',
     "'arch' must be a name or a non-empty list"),
    ('[[matrix]]\narch = "micro_vit"\ntarget = "mlp"\nloss = "kd"\ndataset = "digits"\nepochs = 0\n',
     "block 1 (micro_vit-mlp-kd-digits): epochs: Input should be greater than or equal to 1"),
    ('[[matrix]]\narch = "micro_vit"\ntarget = "mlp"\nloss = ["kd", "kd"]\ndataset = "digits"\n',
     "micro_vit-mlp-kd-digits is already in the suite; give one block a 'tag'"),
    ('[defaults]\nout = "x"\n[[matrix]]\narch = "micro_vit"\ntarget = "mlp"\nloss = "kd"\ndataset = "digits"\n',
     "[defaults]: 'out' is the suite's own"),
    ('[[matrix]]\narch = "micro_vit"\ntarget = "mlp"\nloss = "kd"\ndataset = "digits"\ntag = "a/b"\n',
     "tag must be letters, digits"),
    ('defaults = 3\n[[matrix]]\narch = "micro_vit"\ntarget = "mlp"\nloss = "kd"\ndataset = "digits"\n',
     "[defaults]: expected a table of run options, got 3"),
])
def test_a_bad_suite_is_refused_with_a_message_that_says_where(tmp_path, text, message):
    with pytest.raises(ConfigError) as err:
        load_suite(write(tmp_path / "s.toml", text))
    assert message in str(err.value)


def test_a_blocks_seeds_replace_the_defaults_seed(tmp_path):
    text = ('[defaults]\nseed = 3\n[[matrix]]\narch = "micro_vit"\ntarget = "mlp"\nloss = "kd"\n'
            'dataset = "digits"\nseeds = [0, 1]\n')
    (run,) = load_suite(write(tmp_path / "s.toml", text)).runs
    assert run.seeds == (0, 1) and run.teacher_seed == 0


def test_an_axis_flag_cannot_override_the_matrix(tmp_path):
    with pytest.raises(ConfigError, match="--arch cannot be combined with --suite"):
        load_suite(write(tmp_path / "s.toml", MATRIX), {"arch": "micro_bert"})


def test_a_combination_an_architecture_lacks_is_refused_before_anything_runs(tmp_path):
    text = '[[matrix]]\narch = ["micro_vit", "micro_convnet"]\ntarget = "attention"\nloss = "kd"\ndataset = "digits"\n'
    suite = load_suite(write(tmp_path / "s.toml", text))
    with pytest.raises(UnsupportedTargetError, match="micro_convnet does not support target 'attention'"):
        check_suite(suite, default_registry())


def test_the_paper_suite_encodes_the_papers_protocol():
    suite = load_suite(BENCHMARKS / "paper_vit_b32_cifar100.toml")
    check_suite(suite, default_registry())
    main, logit, kd = suite.runs
    assert suite.run_names() == ["vit_b32-joint-geometric-cifar100", "vit_b32-joint-logit-cifar100",
                                 "vit_b32-joint-kd-cifar100"]
    assert main.ranks == (2, 4, 8, 16, 24, 32, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256)
    assert logit.ranks == kd.ranks == (32,)
    for run in suite.runs:
        assert (run.arch, run.target, run.dataset, run.pretrained) == ("vit_b32", "joint", "cifar100", True)
        assert (run.lr, run.weight_decay, run.epochs, run.qkv, run.init) == (1e-4, 0.01, 200, "split", "svd")
    # One teacher, fine-tuned once, serves all three runs.
    assert len({run.teacher_key() for run in suite.runs}) == 1


def test_the_smoke_suite_covers_every_family_target_and_loss():
    suite = load_suite(BENCHMARKS / "smoke.toml")
    check_suite(suite, default_registry())
    registry = default_registry()
    micro = ["micro_vit", "micro_convnet", "micro_mixer", "micro_bert"]
    expected = {(arch, target, loss) for arch in micro for target in registry.architecture(arch).targets
                for loss in ("geometric", "logit", "kd")}
    assert {(r.arch, r.target, r.loss) for r in suite.runs} == expected
    assert len(expected) == 36
    # One teacher per family.
    assert len({r.teacher_key() for r in suite.runs}) == 4


# --- the smoke suite, run whole --------------------------------------------------------------------


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    from effrank_bench.suite import run_suite

    out = tmp_path_factory.mktemp("smoke") / "suite"
    return run_suite(load_suite(BENCHMARKS / "smoke.toml", {"out": out}))


def test_the_smoke_suite_runs_every_combination_to_a_report(smoke):
    assert len(smoke.runs) == 36
    for path in smoke.runs:
        records = [json.loads(line) for line in (path / "trials.jsonl").read_text().splitlines()]
        assert [(r["rank"], r["status"]) for r in records] == [(2, "ok"), (4, "ok")], path.name
        summary = json.loads((path / "summary.json").read_text())
        assert summary["analysis"] is not None and (path / "curve.png").is_file(), path.name
    rows = json.loads((smoke.out / "comparison.json").read_text())["runs"]
    assert sorted(row["name"] for row in rows) == sorted(p.name for p in smoke.runs)
    assert all(row["width"] is not None and row["at_knee"]["compression"] > 1 for row in rows)
    assert {p.name for p in smoke.out.iterdir()} >= {"suite.json", "comparison.json", "comparison.csv",
                                                      "comparison.md", "comparison.png"}


def test_compare_takes_a_suite_directory_for_its_runs_in_suite_order(smoke):
    from effrank_bench.compare import compare_runs

    assert [run.path for run in compare_runs([smoke.out]).runs] == smoke.runs


def test_the_smoke_suite_trains_one_teacher_per_family(smoke):
    keys, inodes = {}, {}
    for path in smoke.runs:
        arch = json.loads((path / "config.json").read_text())["arch"]
        keys.setdefault(arch, set()).add(json.loads((path / "teacher.json").read_text())["key"])
        inodes.setdefault(arch, set()).add((path / "teacher.safetensors").stat().st_ino)
    assert sorted(keys) == ["micro_bert", "micro_convnet", "micro_mixer", "micro_vit"]
    assert all(len(k) == 1 for k in keys.values())
    # Hard links of one cached file: each family's teacher was trained once and shared by its 9 runs.
    assert all(len(i) == 1 for i in inodes.values())


def test_an_interrupted_suite_resumes_losing_nothing_finished(smoke, tmp_path, capsys):
    from effrank_bench.cli import main

    out = tmp_path / "suite"
    shutil.copytree(smoke.out, out)
    # As if stopped during the second trial of one run: its first trial is on disk, the second is not.
    cut = out / "micro_mixer-mlp-kd-digits" / "trials.jsonl"
    first_line = cut.read_text().splitlines()[0]
    cut.write_text(first_line + "\n")
    untouched = out / "micro_vit-joint-geometric-digits" / "trials.jsonl"
    before = untouched.read_text()

    assert main(["run", "--suite", str(BENCHMARKS / "smoke.toml"), "--out", str(out)]) == 0
    lines = cut.read_text().splitlines()
    assert lines[0] == first_line and [json.loads(line)["rank"] for line in lines] == [2, 4]
    assert untouched.read_text() == before
    assert "36 runs in" in capsys.readouterr().out


def test_a_rank_beyond_a_later_runs_model_is_refused_before_the_first_run_trains(tmp_path):
    from effrank_bench.errors import RankError
    from effrank_bench.suite import run_suite

    text = ('[defaults]\nepochs = 1\nteacher_epochs = 1\n'
            '[[matrix]]\narch = "micro_vit"\ntarget = "mlp"\nloss = "logit"\ndataset = "digits"\nranks = [2]\n'
            '[[matrix]]\narch = "micro_mixer"\ntarget = "mlp"\nloss = "logit"\ndataset = "digits"\nranks = [500]\n')
    suite = load_suite(write(tmp_path / "s.toml", text), {"out": tmp_path / "suite"})
    with pytest.raises(RankError, match="rank 500 exceeds every targeted layer of micro_mixer"):
        run_suite(suite)
    assert not suite.runs[0].out.exists()


def test_a_data_set_of_the_other_modality_is_refused_before_loading(tmp_path):
    text = '[[matrix]]\narch = "micro_vit"\ntarget = "mlp"\nloss = "logit"\ndataset = "sst2"\n'
    suite = load_suite(write(tmp_path / "s.toml", text))
    with pytest.raises(ConfigError, match="micro_vit takes image inputs but data set 'sst2' gives tokens"):
        check_suite(suite, default_registry())
