"""Suites: matrix expansion, the shipped suite files, and the smoke suite run end to end."""
from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from pathlib import Path

import pytest

from effrank_bench.config import RunConfig, load_suite
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
     "block 1: micro_vit-mlp-kd-digits twice: its lists name a value twice; give each once"),
    ('[[matrix]]\narch = "micro_vit"\ntarget = "mlp"\nloss = "kd"\ndataset = "digits"\n' * 2,
     "block 2: micro_vit-mlp-kd-digits is already in the suite (block 1); give one of the two blocks a 'tag' to "
     "keep both"),
    ('[[matrix]]\narch = "micro_vit"\ntarget = "mlp"\nloss = "kd"\ndataset = "digits"\ntag = "a"\n' * 2,
     "micro_vit-mlp-kd-digits-a is already in the suite (block 1); give one of the two blocks another 'tag' to "
     "keep both"),
    ('[defaults]\nout = "x"\n[[matrix]]\narch = "micro_vit"\ntarget = "mlp"\nloss = "kd"\ndataset = "digits"\n',
     "[defaults]: 'out' is the suite's own"),
    ('[[matrix]]\narch = "micro_vit"\ntarget = "mlp"\nloss = "kd"\ndataset = "digits"\ntag = "a/b"\n',
     "tag must be letters, digits"),
    ('defaults = 3\n[[matrix]]\narch = "micro_vit"\ntarget = "mlp"\nloss = "kd"\ndataset = "digits"\n',
     "[defaults]: expected a table of run options, got 3"),
    # An unknown key is blamed on the table it is in, not on the first block it was merged into.
    ('[defaults]\nepoch = 1\n[[matrix]]\narch = "micro_vit"\ntarget = "mlp"\nloss = "kd"\ndataset = "digits"\n',
     "s.toml [defaults]: unknown key 'epoch' (did you mean 'epochs'?)"),
    ('[[matrix]]\narch = "micro_vit"\ntarget = "mlp"\nloss = "kd"\ndataset = "digits"\nrnaks = [2]\n',
     "s.toml [[matrix]] block 1: unknown key 'rnaks' (did you mean 'ranks'?)"),
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


def test_a_suite_refuses_a_folder_of_other_files_and_resumes_its_own(tmp_path):
    text = '[[matrix]]\narch = "micro_vit"\ntarget = "mlp"\nloss = "logit"\ndataset = "digits"\n'
    out = tmp_path / "photos"
    out.mkdir()
    (out / "cat.png").write_bytes(b"")
    suite = load_suite(write(tmp_path / "s.toml", text), {"out": out})
    with pytest.raises(ConfigError, match=r"photos is a folder that holds files \(cat.png\) but is not a suite "
                                          r"directory \(no suite.json\); give an empty or new folder"):
        check_suite(suite, default_registry())
    (out / "suite.json").write_text("{}")  # a suite's own folder, resumed
    check_suite(suite, default_registry())
    run = tmp_path / "a-run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"a-run is a run directory, not a suite directory: give the suite a folder "
                                          r"of its own$"):
        check_suite(load_suite(write(tmp_path / "s.toml", text), {"out": run}), default_registry())


def test_an_architectures_recipe_sits_below_the_suites_defaults_and_blocks(tmp_path):
    path = write(tmp_path / "s.toml", '[defaults]\nepochs = 5\n[[matrix]]\narch = ["vit_b32", "micro_vit"]\n'
                                      'target = "mlp"\nloss = "kd"\ndataset = "digits"\nteacher_lr = 0.03\n')
    recipe = {"epochs": 15, "teacher_lr": 0.01, "lr": 1e-4}
    vit, micro = load_suite(path, {"batch_size": 8}, recipes=lambda arch: recipe if arch == "vit_b32" else {}).runs
    assert (vit.epochs, vit.teacher_lr, vit.lr, vit.batch_size) == (5, 0.03, 1e-4, 8)
    assert (micro.epochs, micro.teacher_lr, micro.lr, micro.batch_size) == (5, 0.03, RunConfig().lr, 8)


@pytest.mark.parametrize("name", ["paper_vit_b32_cifar100.toml", "vit_b32_cifar100_fast.toml"])
def test_the_shipped_vit_b32_suites_set_every_option_the_recipe_would(name):
    # What `effrank-bench run --suite` loads (with the built-in recipes) is what the file says.
    path = BENCHMARKS / name
    assert load_suite(path, recipes=default_registry().recipe) == load_suite(path)


def test_the_paper_suite_encodes_the_papers_protocol():
    suite = load_suite(BENCHMARKS / "paper_vit_b32_cifar100.toml")
    check_suite(suite, default_registry())
    main, logit, kd, kd2, kd8 = suite.runs
    assert suite.run_names() == ["vit_b32_tv-joint-geometric-cifar100", "vit_b32_tv-joint-logit-cifar100",
                                 "vit_b32_tv-joint-kd-cifar100", "vit_b32_tv-joint-kd-cifar100-T2",
                                 "vit_b32_tv-joint-kd-cifar100-T8"]
    assert main.ranks == (2, 4, 8, 16, 24, 32, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256)
    # The ablations at rank 34: logit-only and three pure-KD variants (the paper code's T = 4, then 2 and 8).
    assert all(run.ranks == (34,) for run in (logit, kd, kd2, kd8))
    assert [(run.loss, run.kd_temperature, run.kd_alpha) for run in (kd, kd2, kd8)] == [
        ("kd", 4.0, 0.5), ("kd", 2.0, 0.5), ("kd", 8.0, 0.5)]
    for run in suite.runs:
        # torchvision's vit_b_32 IMAGENET1K_V1, crop + flip on the 32×32 images.
        assert (run.arch, run.target, run.dataset, run.pretrained, run.augment, run.qkv) == (
            "vit_b32_tv", "joint", "cifar100", True, True, "split")
        # Teacher: AdamW lr 1e-4, wd 0.01, batch 32, 20 epochs, constant LR.
        assert (run.teacher_optimizer, run.teacher_lr, run.teacher_weight_decay, run.teacher_batch_size,
                run.teacher_epochs, run.teacher_schedule) == ("adamw", 1e-4, 0.01, 32, 20, "constant")
        # Students: paper-rebuild, AdamW lr 1e-4, wd 0.01, batch 24, 200 epochs, constant LR.
        assert (run.init, run.lr, run.weight_decay, run.batch_size, run.epochs, run.schedule) == (
            "paper-rebuild", 1e-4, 0.01, 24, 200, "constant")
        # All 50k training images; test accuracy after the last epoch.
        assert (run.val_fraction, run.select) == (0, "last")
    # One teacher, fine-tuned once, serves every run; its key holds the teacher's batch, not the students'.
    assert len({run.teacher_key() for run in suite.runs}) == 1
    assert main.teacher_key() == main.model_copy(update={"batch_size": 32, "teacher_batch_size": None}).teacher_key()


def test_the_fast_suite_is_the_projects_recipe_not_the_papers():
    path = BENCHMARKS / "vit_b32_cifar100_fast.toml"
    assert "NOT the paper's protocol" in path.read_text().splitlines()[0]
    suite = load_suite(path)
    check_suite(suite, default_registry())
    assert suite.run_names() == ["vit_b32_tv-joint-geometric-cifar100", "vit_b32_tv-joint-logit-cifar100",
                                 "vit_b32_tv-joint-kd-cifar100"]
    main, logit, kd = suite.runs
    assert main.ranks == (2, 4, 8, 16, 24, 32, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256)
    assert logit.ranks == kd.ranks == (34,)
    for run in suite.runs:
        assert (run.arch, run.target, run.dataset, run.pretrained) == ("vit_b32_tv", "joint", "cifar100", True)
        assert (run.init, run.batch_size, run.teacher_batch_size, run.schedule, run.select, run.group) == (
            "svd", 256, None, "cosine", "best", "auto")
        assert run.val_fraction is None and 10 <= run.epochs <= 20
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

# Every test run trains 20 of smoke.toml's 36 runs end to end, on the tiny recipe's budgets (conftest):
# each family with each of its targets under the geometric loss (its branch taps meet the factorized layers
# of some targets: BERT's branches end in them), and the logit and KD losses twice per family, on targets
# chosen so that every pair of family, target and loss is trained (the convnet's conv target under all
# three, so that one student serves three runs). EFFRANK_BENCH_SLOW=1 trains all 36 on smoke.toml's own
# budgets (3 teacher epochs, all of digits' training split), as `effrank-bench run --suite benchmarks/smoke.toml` does.
SLOW = os.environ.get("EFFRANK_BENCH_SLOW") == "1"
FAMILIES = {"micro_vit": ("attention", "mlp", "joint"), "micro_mixer": ("attention", "mlp", "joint"),
            "micro_bert": ("attention", "mlp", "joint"), "micro_convnet": ("conv", "mlp", "joint")}
COVERING = {(arch, target, "geometric") for arch, targets in FAMILIES.items() for target in targets} | {
    ("micro_vit", "attention", "logit"), ("micro_vit", "joint", "kd"),
    ("micro_mixer", "joint", "logit"), ("micro_mixer", "mlp", "kd"),
    ("micro_bert", "mlp", "logit"), ("micro_bert", "attention", "kd"),
    ("micro_convnet", "conv", "logit"), ("micro_convnet", "conv", "kd"),
}


def test_the_tested_smoke_runs_meet_every_pair_of_family_target_and_loss():
    every = {(r.arch, r.target, r.loss) for r in load_suite(BENCHMARKS / "smoke.toml").runs}
    assert COVERING <= every and len(COVERING) == 20
    assert {(arch, target) for arch, target, loss in COVERING if loss == "geometric"} == {
        (arch, target) for arch, target, _ in every}
    for a, b in ((0, 1), (0, 2), (1, 2)):  # family × target, family × loss, target × loss
        assert {(run[a], run[b]) for run in COVERING} == {(run[a], run[b]) for run in every}


@pytest.fixture(scope="module")
def smoke_options(tiny):
    """What every smoke run takes on top of smoke.toml: the tiny recipe, or nothing when slow."""
    return {} if SLOW else dict(tiny.options)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory, smoke_options):
    from effrank_bench.suite import run_suite

    out = tmp_path_factory.mktemp("smoke") / "suite"
    suite = load_suite(BENCHMARKS / "smoke.toml", {**smoke_options, "out": out})
    if not SLOW:
        suite = suite.model_copy(update={"runs": tuple(r for r in suite.runs if (r.arch, r.target, r.loss) in COVERING)})
    return run_suite(suite)


def test_the_smoke_suite_runs_every_combination_to_a_report(smoke):
    assert len(smoke.runs) == (36 if SLOW else len(COVERING))
    for path in smoke.runs:
        records = [json.loads(line) for line in (path / "trials.jsonl").read_text().splitlines()]
        assert [(r["rank"], r["status"]) for r in records] == [(2, "ok"), (4, "ok")], path.name
        summary = json.loads((path / "summary.json").read_text())
        # The tiny recipe draws no plot (--no-plot); smoke.toml's own budgets (EFFRANK_BENCH_SLOW=1) do.
        assert summary["analysis"] is not None and (path / "curve.png").is_file() == SLOW, path.name
    rows = json.loads((smoke.out / "comparison.json").read_text())["runs"]
    assert sorted(row["name"] for row in rows) == sorted(p.name for p in smoke.runs)
    assert all(row["width"] is not None and row["at_knee"]["compression"] > 1 for row in rows)
    assert {p.name for p in smoke.out.iterdir()} >= {"suite.json", "comparison.json", "comparison.csv",
                                                      "comparison.md"}
    assert (smoke.out / "comparison.png").is_file() == SLOW  # --no-plot holds for the suite's plot too


def test_report_on_a_suite_directory_points_to_compare(smoke, run_cli):
    assert run_cli("report", str(smoke.out))[::2] == (
        2, f"error: {smoke.out} is a suite's directory: effrank-bench compare {smoke.out} shows its runs side by side; "
           "report takes one of its runs\n")


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
    # Hard links of one cached file: each family's teacher was trained once and shared by all its runs.
    assert all(len(i) == 1 for i in inodes.values())


def test_a_suite_measures_each_model_once(smoke):
    # Latency is a measurement: two runs recording the same float measured the model once and shared it.
    teachers, students, losses = {}, {}, Counter()
    for path in smoke.runs:
        config = json.loads((path / "config.json").read_text())
        losses[config["arch"], config["target"]] += 1
        teachers.setdefault(config["arch"], set()).add(json.loads((path / "teacher.json").read_text())["cost"]
                                                       ["latency_ms"])
        for line in (path / "trials.jsonl").read_text().splitlines():
            record = json.loads(line)
            students.setdefault((config["arch"], config["target"], record["rank"]), []).append(
                (record["cost"]["latency_ms"], record["cost"]["macs"]))
    assert len(teachers) == 4 and all(len(latencies) == 1 for latencies in teachers.values())
    # A student under several losses (three for the convnet's conv target, all of them when slow): one model,
    # one measurement.
    assert len(students) == 24 and all(len(c) == losses[key[:2]] and len(set(c)) == 1 for key, c in students.items())
    assert losses["micro_convnet", "conv"] == 3
    # Other targets and ranks are other models, each measured on its own.
    assert len({c[0] for c in students.values()}) == 24


# Two of the smoke suite's runs, under smoke.toml's name and [defaults]; the second draws no plot.
SMOKE_PAIR = '''
[[matrix]]
arch = "micro_vit"
target = "joint"
loss = "kd"
dataset = "digits"

[[matrix]]
arch = "micro_mixer"
target = "mlp"
loss = "kd"
dataset = "digits"
plot = false
'''


def test_an_interrupted_suite_resumes_losing_nothing_finished(smoke, tiny, run_cli, tmp_path):
    text = (BENCHMARKS / "smoke.toml").read_text()
    pair = write(tmp_path / "pair.toml", text[:text.index("[[matrix]]")] + SMOKE_PAIR)
    out = tmp_path / "suite"
    for name in ("micro_vit-joint-kd-digits", "micro_mixer-mlp-kd-digits"):
        shutil.copytree(smoke.out / name, out / name)
    # As if stopped during the second trial of one run: its first trial is on disk, the second is not.
    cut = out / "micro_mixer-mlp-kd-digits" / "trials.jsonl"
    first_line = cut.read_text().splitlines()[0]
    cut.write_text(first_line + "\n")
    untouched = out / "micro_vit-joint-kd-digits" / "trials.jsonl"
    before = untouched.read_text()

    # Each block's own plot setting (the tiny recipe's --no-plot left out): one run draws its curve, so the
    # suite draws its comparison.
    code, printed, err = run_cli("run", "--suite", pair, *([] if SLOW else tiny.args(plot=None)), "--out", out)
    assert code == 0, err
    lines = cut.read_text().splitlines()
    assert lines[0] == first_line and [json.loads(line)["rank"] for line in lines] == [2, 4]
    assert untouched.read_text() == before
    assert "2 runs in" in printed
    assert [(out / name / "curve.png").is_file() for name in ("micro_vit-joint-kd-digits", "micro_mixer-mlp-kd-digits")
            ] == [True, False]
    assert (out / "comparison.png").read_bytes()[:4] == b"\x89PNG"


def test_a_finished_suite_run_again_on_ray_only_reports_and_starts_no_ray(smoke, smoke_options, tmp_path,
                                                                          monkeypatch):
    from effrank_bench.suite import run_suite
    from effrank_bench_plugins import ray_executor

    text = (BENCHMARKS / "smoke.toml").read_text()
    pair = write(tmp_path / "pair.toml", text[:text.index("[[matrix]]")] + SMOKE_PAIR)
    out = tmp_path / "suite"
    names = ("micro_vit-joint-kd-digits", "micro_mixer-mlp-kd-digits")
    for name in names:
        shutil.copytree(smoke.out / name, out / name)
    kept = {(name, file): (out / name / file).read_bytes()
            for name in names for file in ("teacher.json", "trials.jsonl")}

    def connect(config):
        raise AssertionError("Ray was started for a suite with nothing to train")

    monkeypatch.setattr(ray_executor, "connect", connect)
    result = run_suite(load_suite(pair, {**smoke_options, "out": out, "executor": "ray"}))
    assert [path.name for path in result.runs] == list(names)
    assert {key: (out / key[0] / key[1]).read_bytes() for key in kept} == kept


def test_a_suite_resumed_with_a_run_finished_keeps_one_latency_for_their_teacher(smoke, smoke_options, tmp_path):
    from effrank_bench.suite import run_suite

    text = (BENCHMARKS / "smoke.toml").read_text()
    pair = write(tmp_path / "pair.toml", text[:text.index("[[matrix]]")] + "".join(
        f'[[matrix]]\narch = "micro_vit"\ntarget = "joint"\nloss = "{loss}"\ndataset = "digits"\n'
        for loss in ("geometric", "kd")))
    out = tmp_path / "suite"
    finished, cut = "micro_vit-joint-geometric-digits", "micro_vit-joint-kd-digits"  # one teacher
    for name in (finished, cut):
        shutil.copytree(smoke.out / name, out / name)
    records = out / cut / "trials.jsonl"
    records.write_text(records.read_text().splitlines()[0] + "\n")  # its rank 4 still to train
    result = run_suite(load_suite(pair, {**smoke_options, "out": out}))
    teachers = [json.loads((path / "teacher.json").read_text()) for path in result.runs]
    assert len(records.read_text().splitlines()) == 2
    assert teachers[0]["cost"] == teachers[1]["cost"] == json.loads(
        (smoke.out / finished / "teacher.json").read_text())["cost"]


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
    with pytest.raises(ConfigError, match="micro_vit takes images but data set 'sst2' gives token sequences"):
        check_suite(suite, default_registry())
