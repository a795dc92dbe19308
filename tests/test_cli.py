"""The command line: exit codes, one-line errors, JSON contracts and the run/report round trip."""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from typing import Literal, get_args, get_origin

import pytest

from effrank_bench.config import RunConfig, load_config
from effrank_bench.errors import ConfigError
from effrank_bench.store import RunDir


def write_curve(path, rows, header="rank,accuracy"):
    path.write_text(header + "\n" + "".join(f"{r},{a}\n" for r, a in rows))
    return path


def test_analyze_json_reports_region_and_knee(tmp_path, run_cli):
    # Teacher 80 (percent), students linear in rank: 85% of 80 = 68 at rank 85, 95% = 76 at rank 95.
    csv = write_curve(tmp_path / "c.csv", [(r, 0.8 * r) for r in (1, 25, 50, 75, 100)])
    code, out, err = run_cli("analyze", str(csv), "--teacher-acc", "80", "--json")
    assert code == 0 and err == ""
    result = json.loads(out)
    assert result["teacher_accuracy"] == 80
    assert result["region"]["low"] == pytest.approx(85)
    assert result["region"]["high"] == pytest.approx(95)
    assert result["region"]["band"] == [85, 95]
    assert result["region"]["thresholds"] == [0.85, 0.95]
    assert 1 <= result["knee"] <= 100


def test_analyze_options_change_thresholds_and_knee_axis(tmp_path, run_cli):
    csv = write_curve(tmp_path / "c.csv", [(r, r / 100) for r in (1, 25, 50, 75, 100)])
    code, out, _ = run_cli("analyze", str(csv), "--teacher-acc", "1", "--json",
                           "--thresholds", "0.8,0.9", "--knee-axis", "log2")
    result = json.loads(out)
    assert code == 0 and result["region"]["band"] == [80, 90] and result["knee_axis"] == "log2"
    # A straight line's log2 knee is where its slope equals the secant's in log space: 99 / ln(100).
    assert result["knee"] == pytest.approx(99 / 4.605170185988092, rel=1e-4)


def test_analyze_notes_a_knee_where_the_curve_bends_upward(tmp_path, run_cli):
    csv = write_curve(tmp_path / "c.csv", [(1, 0.1), (2, 0.1), (4, 0.12), (8, 0.15), (16, 0.3), (32, 0.8)])
    code, out, _ = run_cli("analyze", str(csv), "--teacher-acc", "1")
    assert code == 0
    assert "note: the curve bends upward at its knee" in out and "larger ranks would show" in out
    assert json.loads(run_cli("analyze", str(csv), "--teacher-acc", "1", "--json")[1])["knee_bends_up"] is True
    code, out, _ = run_cli("analyze", str(write_curve(tmp_path / "d.csv", [(1, 0.3), (4, 0.85), (32, 0.99)])),
                           "--teacher-acc", "1")
    assert code == 0 and "bends upward" not in out
    # S-shaped on the log2 axis, levelled at the teacher's accuracy: its knee is the S's lower bend.
    s_shape = write_curve(tmp_path / "s.csv", [(1, 0.5), (2, 0.55), (4, 0.6), (8, 0.7), (16, 0.85), (32, 0.97),
                                               (64, 1.0)])
    code, out, _ = run_cli("analyze", str(s_shape), "--teacher-acc", "1", "--knee-axis", "log2")
    assert code == 0 and "(the lower bend of an S-shaped curve)" in out and "larger ranks" not in out


@pytest.mark.parametrize("content, message", [
    ("rank,acc\n1,0.5\n2,0.6\n", "accuracy"),
    ("rank,accuracy\n1,0.5\n2,high\n", "line 3"),
    ("rank,accuracy\n1,0.5\n", "at least 2"),
])
def test_a_bad_curve_csv_exits_2_with_one_line(tmp_path, run_cli, content, message):
    csv = tmp_path / "c.csv"
    csv.write_text(content)
    code, out, err = run_cli("analyze", str(csv), "--teacher-acc", "1")
    assert code == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err
    assert "Traceback" not in err


@pytest.mark.parametrize("argv, message", [
    (["--arch", "vit_b23"], "unknown architecture 'vit_b23'; did you mean 'vit_b32'? (valid: "),
    (["--target", "heads"], "unknown target 'heads'"),
    (["--loss", "kl"], "unknown loss 'kl'"),
    (["--dataset", "mnist"], "unknown dataset 'mnist'"),
    (["--ranks", "0,2"], "ranks must be positive"),
    (["--ranks", "65"], "rank 65 exceeds every targeted layer of micro_vit (the largest has full rank 64)"),
    (["--teacher-checkpoint", "/no/such/teacher.pt"], "teacher checkpoint not found: /no/such/teacher.pt"),
    (["--device", "tpu"], "device"),
])
def test_bad_run_input_exits_2_with_one_line(tmp_path, run_cli, argv, message):
    code, out, err = run_cli("run", "--out", str(tmp_path / "run"), *argv)
    assert code == 2
    assert err.count("\n") == 1 and message in err, err


def test_a_malformed_or_unknown_config_file_exits_2(tmp_path, run_cli):
    bad = tmp_path / "bad.toml"
    bad.write_text("arch = \n")
    assert run_cli("run", "--config", str(bad))[0] == 2
    unknown = tmp_path / "unknown.toml"
    unknown.write_text('arch = "micro_vit"\nepoch = 3\n')
    code, _, err = run_cli("run", "--config", str(unknown))
    assert code == 2 and err == f"error: {unknown}: unknown key 'epoch' (did you mean 'epochs'?)\n"


def test_pretrained_weights_that_cannot_be_fetched_say_how_to_pass_a_file(tmp_path, run_cli):
    # Every timm preset builds through one builder; ResNet-18's 12M weights initialise quickest.
    code, _, err = run_cli("run", "--arch", "resnet18", "--pretrained", "--ranks", "8",
                           "--out", str(tmp_path / "run"))
    assert code == 2 and err.count("\n") == 1
    assert "cannot fetch timm's pretrained weights for resnet18" in err and "--teacher-checkpoint PATH" in err


def test_measure_json_gives_teacher_and_students(run_cli):
    code, out, _ = run_cli("measure", "--arch", "micro_vit", "--target", "joint", "--ranks", "2,64",
                           "--repeats", "2", "--warmup", "1", "--json")
    result = json.loads(out)
    assert code == 0
    teacher, (r2, r64) = result["teacher"], result["students"]
    assert teacher["params"] == 136_138
    # Native input of micro_vit: 1×8×8, 10 classes; see test_sweep for the rank-2 arithmetic.
    assert (r2["rank"], r2["params"], r2["factorized_params"]) == (2, 12_234, 8_960)
    assert r2["compression"] == pytest.approx(136_138 / 12_234)
    assert r2["macs"] < r64["macs"] and r64["params"] > teacher["params"]  # full-rank factors cost more
    assert all(s["latency_ms"] > 0 and s["latency_iqr_ms"] >= 0 for s in result["students"])  # two timed passes


def test_measure_refuses_data_flags_without_a_data_set(run_cli, tmp_path):
    code, out, err = run_cli("measure", "--ranks", "2", "--data-root", tmp_path, "--tokenizer", "bert-base-uncased")
    assert code == 2 and out == ""
    assert err == ("error: --data-root and --tokenizer describe the data set of --dataset, and none is given: "
                   "without it, measure takes the architecture's native input (add --dataset NAME, or drop them)\n")


@pytest.mark.parametrize(("target", "qkv"), [("mlp", "split"), ("attention", "fused")])
def test_measure_says_when_fused_qkv_measures_the_split_students(run_cli, target, qkv):
    code, out, err = run_cli("measure", "--target", target, "--qkv", "fused", "--ranks", "2", "--repeats", "1",
                             "--warmup", "0", "--json")
    assert code == 0 and json.loads(out)["qkv"] == qkv
    split_note = f"note: --qkv fused: the {target} target of micro_vit has no fused projection, so its students " \
                 "are those of --qkv split\n"
    assert err == (split_note if qkv == "split" else "")


def test_measure_prints_a_micro_models_macs_in_millions(run_cli):
    code, out, _ = run_cli("measure", "--arch", "micro_vit", "--target", "joint", "--ranks", "2",
                           "--repeats", "1", "--warmup", "0", "--device", "cpu")
    assert code == 0 and "MMACs" in out and "GMACs" not in out and "┃ IQR ms ┃" in out
    teacher = next(line for line in out.splitlines() if "teacher" in line)
    assert "│ 2.381 │" in teacher  # micro_vit: 2,380,928 MACs per 8×8 image
    assert teacher.split("│")[-3].strip() == "–"  # one timed pass: no spread


def test_measure_vit_b32_matches_timms_published_macs(measure_json):
    teacher, (student,) = measure_json("vit_b32", "joint", "32")
    assert teacher["macs"] == pytest.approx(4.41e9, rel=0.01)
    # 1000 classes: 88,224,232 − 12 × (7,084,800 − 449,280) factorized at rank 32.
    assert student["params"] == 8_597_992
    assert student["macs"] < teacher["macs"] / 10


def test_list_shows_every_kind_with_its_plugin(run_cli):
    code, out, _ = run_cli("list")
    assert code == 0
    for name in ("micro_vit", "vit_b32", "attention", "mlp", "joint", "geometric", "logit", "kd", "digits"):
        assert name in out
    assert "vit (effrank-bench)" in out and "losses (effrank-bench)" in out
    code, out, _ = run_cli("list", "--json")
    listed = json.loads(out)
    assert code == 0 and list(listed) == ["architecture", "target", "loss", "dataset", "executor"]
    micro_vit = next(a for a in listed["architecture"] if a["name"] == "micro_vit")
    assert micro_vit["plugin"] == "vit (effrank-bench)" and micro_vit["targets"] == ["attention", "mlp", "joint"]
    digits = next(d for d in listed["dataset"] if d["name"] == "digits")
    assert digits["plugin"] == "datasets (effrank-bench)" and "targets" not in digits


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, run_cli, tiny):
    """`effrank-bench run` of the tiny recipe, once for the module: (its run directory, what it printed).

    Tests read it; a test that changes a run works on a copy.
    """
    out_dir = tmp_path_factory.mktemp("tiny") / "run"
    code, out, err = run_cli("run", *tiny.args(), "--out", out_dir)
    assert code == 0, err
    return out_dir, out


def test_analyze_and_replay_of_a_runs_curve_give_its_reports_warnings(tiny_run, run_cli, tmp_path):
    finished, _ = tiny_run
    run = shutil.copytree(finished, tmp_path / "run")
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps(config | {"ranks": [*config["ranks"], 64]}))  # one rank more
    assert run_cli("report", str(run))[0] == 0
    warnings = [f"warning: {run}: {w}" for w in json.loads((run / "summary.json").read_text())["warnings"]]
    assert warnings[0] == (f"warning: {run}: the sweep is not finished: 1 trial(s) still to train (rank 64); the "
                           "region and knee are read off what is recorded (a sweep that was stopped finishes when "
                           "its command runs again)")
    for command in (["analyze", str(run)], ["replay", str(run / "summary.csv")]):
        code, _, err = run_cli(*command)
        assert code == 0 and err.splitlines() == warnings  # the tiny recipe's cut batches and weak teacher too
    code, _, err = run_cli("analyze", str(finished))
    assert code == 0 and err.splitlines() == [w.replace(str(run), str(finished)) for w in warnings[1:]]  # finished


def test_analyze_of_a_run_with_seeds_says_report_gives_their_intervals(make_run, run_cli, tmp_path):
    from effrank_bench.report import build_report, write_report

    run = make_run(tmp_path / "seeds", [(2, 0, 0.5), (2, 1, 0.6), (4, 0, 0.8), (4, 1, 0.85), (8, 0, 0.88),
                                        (8, 1, 0.9)], teacher_accuracy=0.9)
    write_report(run, build_report(run))
    code, out, err = run_cli("analyze", run.path)
    assert code == 0 and "CI" not in out  # the mean curve's read-off: report's intervals need the trials
    assert err == (f"note: {run.path} has several seeds at a rank: analyze reads off their mean curve; "
                   f"`effrank-bench report {run.path}` gives the intervals over seeds\n")


def test_analyze_reads_a_runs_summary_csv_with_its_teacher_and_skips_failed_rows(tiny_run, run_cli, tmp_path):
    finished, _ = tiny_run
    summary = json.loads((finished / "summary.json").read_text())
    code, out, err = run_cli("analyze", str(finished / "summary.csv"), "--json")  # no --teacher-acc: its row
    assert code == 0, err
    analysis = json.loads(out)
    assert analysis["teacher_accuracy"] == summary["teacher"]["test_accuracy"]
    assert (analysis["region"], analysis["knee"]) == (summary["analysis"]["region"], summary["analysis"]["knee"])
    with_failed = tmp_path / "summary.csv"
    with_failed.write_text((finished / "summary.csv").read_text() + "16,0,failed,,,,,,,nan loss,,,\n")
    assert json.loads(run_cli("analyze", str(with_failed), "--json")[1]) == analysis
    code, _, err = run_cli("analyze", str(write_curve(tmp_path / "c.csv", [(1, 0.5), (2, 0.6)])))
    assert code == 2 and err == ("error: " + str(tmp_path / "c.csv") + " has no teacher row (a 'status' column marking "
                                 "it 'teacher', as a run's summary.csv has): give --teacher-acc X\n")
    # The run directory itself stands for its summary.csv; a folder that is none is named as such.
    code, out, err = run_cli("analyze", str(finished), "--json")
    assert out == json.dumps(analysis) + "\n" and all(line.startswith("warning: ") for line in err.splitlines())
    stale = shutil.copytree(finished, tmp_path / "stale")
    os.utime(stale / "trials.jsonl", (time.time() + 5, time.time() + 5))  # a trial recorded after the report
    code, out, err = run_cli("analyze", str(stale), "--json")
    assert json.loads(out) == analysis
    assert err.startswith(f"warning: {stale / 'summary.csv'} is older than the trials recorded since: effrank-bench "
                          f"report {stale} brings it up to date\nwarning: {stale}: ")  # then the report's warnings
    unreported = tmp_path / "unreported"
    unreported.mkdir()
    (unreported / "config.json").write_text((finished / "config.json").read_text())
    assert run_cli("analyze", str(unreported))[::2] == (
        2, f"error: {unreported} has no report yet: write it with effrank-bench report {unreported}\n")
    assert run_cli("replay", str(tmp_path), "--teacher-acc", "1")[::2] == (0, "")  # the summary.csv written above
    (tmp_path / "empty").mkdir()
    assert run_cli("replay", str(tmp_path / "empty"), "--teacher-acc", "1")[::2] == (
        2, f"error: {tmp_path / 'empty'} is a folder, neither a curve CSV nor a run directory\n")


def test_analyze_and_replay_of_a_run_directory_read_off_as_its_report_does(tiny_run, run_cli, tmp_path):
    finished, _ = tiny_run
    run = shutil.copytree(finished, tmp_path / "run")
    config = json.loads((run / "config.json").read_text())
    own = {"thresholds": [0.6, 0.9], "knee_axis": "log2", "monotone": "isotonic"}
    (run / "config.json").write_text(json.dumps(config | own))
    assert run_cli("report", str(run))[0] == 0
    reported = json.loads((run / "summary.json").read_text())["analysis"]
    analysis = json.loads(run_cli("analyze", str(run), "--json")[1])
    assert (analysis["region"], analysis["knee"], analysis["knee_axis"]) == (
        reported["region"], reported["knee"], "log2")
    assert analysis["region"]["thresholds"] == [0.6, 0.9]
    replayed = json.loads(run_cli("replay", str(run), "--search", "grid", "--json")[1])["grid"]
    assert (replayed["region"], replayed["knee"]) == (reported["region"], reported["knee"])
    # An adaptive run's replay searches with its tolerance.
    (run / "config.json").write_text(json.dumps(config | own | {"search": "adaptive", "tolerance": "3"}))
    code, out, err = run_cli("replay", str(run), "--json")
    assert code == 0 and json.loads(out)["tolerance"]["ranks"] == 3, err
    (run / "config.json").write_text(json.dumps(config | own))
    # A flag still wins; a CSV of no run reads off with run's defaults.
    flagged = json.loads(run_cli("analyze", str(run), "--thresholds", "0.85,0.95", "--json")[1])
    assert flagged["region"]["thresholds"] == [0.85, 0.95] and flagged["knee_axis"] == "log2"
    plain = tmp_path / "curve.csv"
    plain.write_text((run / "summary.csv").read_text())
    default = json.loads(run_cli("analyze", str(plain), "--json")[1])
    assert (default["region"]["thresholds"], default["knee_axis"]) == ([0.85, 0.95], "linear")
    # A config.json that is no run's (damaged, or another tool's): the defaults, and a warning that names it.
    (run / "config.json").write_text(json.dumps(config | {"thresholds": [0.9]}))
    code, out, err = run_cli("analyze", str(run), "--json")
    assert code == 0 and json.loads(out)["region"]["thresholds"] == [0.85, 0.95]
    assert f"{run / 'config.json'}" in err and f"{run / 'summary.csv'} is read off with run's defaults" in err


def test_run_then_report_rerenders_the_same_table_and_draws_the_plot(tiny_run, run_cli, tmp_path):
    finished, out = tiny_run
    out_dir = shutil.copytree(finished, tmp_path / "run")
    assert "effective-rank region" in out and "effective knee" in out
    assert (out_dir / "summary.md").is_file() and not (out_dir / "curve.png").exists()  # the recipe's --no-plot
    code, again, _ = run_cli("report", str(out_dir))
    assert code == 0 and (out_dir / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert again.splitlines()[:10] == out.splitlines()[:10]


def test_a_run_without_a_plot_removes_the_curve_of_fewer_trials(tiny_run, run_cli, tiny, tmp_path):
    out_dir = shutil.copytree(tiny_run[0], tmp_path / "run")
    code, _, err = run_cli("run", *tiny.args(plot=True), "--out", out_dir)  # resumes: nothing left to train
    assert code == 0 and (out_dir / "curve.png").is_file(), err
    code, _, err = run_cli("run", *tiny.args(ranks=(2, 4, 8)), "--out", out_dir)  # one more rank, no plot
    assert code == 0, err
    assert [r.rank for r in RunDir(out_dir).records()] == [2, 4, 8] and not (out_dir / "curve.png").exists()


def test_ctrl_c_during_a_run_exits_130_and_says_how_to_resume(tiny, tmp_path, run_cli, monkeypatch):
    import effrank_bench_plugins.executors as executors

    def interrupt(setup, teacher, trials, record, progress):
        from effrank_bench.checkpoint import Checkpoints, FitState

        Checkpoints(setup.run.checkpoints_path / Checkpoints.name(trials), trials, None).save(
            FitState(1, 0.0, {}, {}))  # as a group interrupted mid-fit leaves it
        raise KeyboardInterrupt

    monkeypatch.setattr(executors, "run_group", interrupt)
    code, _, err = run_cli("run", *tiny.args(ranks=(2,)), "--out", str(tmp_path / "run"))
    assert code == 130
    assert (f"interrupted: 0 finished trial(s) are in {tmp_path / 'run'}, and the checkpoint of 1 unfinished group "
            "(resumed from there); run the same command again to resume") in " ".join(err.split())


def test_sigterm_during_a_run_stops_it_as_ctrl_c_does_and_exits_143(tiny, tmp_path, run_cli, monkeypatch):
    # What a batch scheduler, `timeout` or Kubernetes sends: it used to kill the run silently, lock left behind.
    import os
    import signal
    import time

    import effrank_bench_plugins.executors as executors

    def terminated(setup, teacher, trials, record, progress):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises long before this ends
        raise AssertionError("SIGTERM did not stop the run")

    monkeypatch.setattr(executors, "run_group", terminated)
    before = signal.getsignal(signal.SIGTERM)
    code, _, err = run_cli("run", *tiny.args(ranks=(2,)), "--out", str(tmp_path / "run"))
    assert code == 143 and "terminated (SIGTERM): 0 finished trial(s)" in err  # not Ctrl-C's "interrupted"
    assert not (tmp_path / "run" / "run.lock").exists()
    assert signal.getsignal(signal.SIGTERM) is before  # the caller's handler is back


def test_report_json_prints_what_summary_json_holds(tiny_run, run_cli, tmp_path):
    out_dir = shutil.copytree(tiny_run[0], tmp_path / "run")
    code, out, err = run_cli("report", out_dir, "--json")
    assert code == 0 and err == ""
    assert json.loads(out) == json.loads((out_dir / "summary.json").read_text())
    assert [row["rank"] for row in json.loads(out)["per_rank"]] == [2, 4]


def test_report_of_a_directory_that_is_not_a_run_exits_2(tmp_path, run_cli):
    code, _, err = run_cli("report", str(tmp_path))
    assert code == 2 and "is not a run directory" in err


# --- run: seeds, options, suites and data sets ----------------------------------------------------------

def records(run_dir):
    return [json.loads(line) for line in (run_dir / "trials.jsonl").read_text().splitlines()]


def one_line_error(err):
    return err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err


def test_two_seeds_train_every_rank_twice_and_report_bootstrap_intervals(tiny, tmp_path, run_cli):
    out_dir = tmp_path / "run"
    code, out, _ = run_cli("run", *tiny.args(), "--seeds", "0,1", "--bootstrap-resamples", "50",
                           "--out", str(out_dir))
    assert code == 0
    # Seed by seed, smallest rank first: a stopped sweep still holds whole curves.
    assert [(r["seed"], r["rank"]) for r in records(out_dir)] == [(0, 2), (0, 4), (1, 2), (1, 4)]
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["config"]["seeds"] == [0, 1] and summary["config"]["teacher_seed"] == 0
    assert summary["uncertainty"]["resamples"] == 50 and summary["uncertainty"]["seeds"] == [0, 1]
    assert summary["uncertainty"]["seeds_per_rank"] == {"2": 2, "4": 2}
    assert [stat["seeds"] for stat in summary["per_rank"]] == [[0, 1], [0, 1]]
    # Rich wraps long lines at the console width; the words are what the user reads.
    assert "(bootstrap, 50 resamples over 2 seeds)" in " ".join(out.split())


def test_teacher_recipe_flags_reach_the_config_and_the_teacher(tiny, tmp_path, run_cli):
    out_dir = tmp_path / "run"
    code, _, _ = run_cli("run", *tiny.args(ranks=(2,)), "--no-augment", "--teacher-optimizer", "sgd",
                         "--label-smoothing", "0.1", "--teacher-seed", "3", "--teacher-warmup", "0.2",
                         "--workers", "0", "--out", str(out_dir))
    assert code == 0
    config = json.loads((out_dir / "config.json").read_text())
    assert (config["augment"], config["teacher_optimizer"], config["label_smoothing"]) == (False, "sgd", 0.1)
    assert (config["teacher_seed"], config["seeds"], config["teacher_warmup"], config["workers"]) == (3, [0], 0.2, 0)
    # The teacher was trained with that recipe, not merely configured with it.
    recipe = json.loads((out_dir / "teacher.json").read_text())["recipe"]
    assert (recipe["optimizer"], recipe["label_smoothing"], recipe["warmup_fraction"]) == ("sgd", 0.1, 0.2)
    assert [r["seed"] for r in records(out_dir)] == [0]


def test_seed_and_seeds_together_exit_2_with_one_line(tmp_path, run_cli):
    code, out, err = run_cli("run", "--seed", "1", "--seeds", "0,1", "--out", str(tmp_path / "run"))
    assert code == 2 and out == "" and one_line_error(err)
    assert "give seed or seeds, not both" in err
    assert not (tmp_path / "run").exists()


def test_config_and_suite_are_mutually_exclusive(tmp_path, run_cli):
    code, out, err = run_cli("run", "--config", str(tmp_path / "a.toml"), "--suite", str(tmp_path / "b.toml"))
    assert code == 2 and out == "" and one_line_error(err)
    assert "argument --suite: not allowed with argument --config" in err


PAIR = '''
[[matrix]]
arch = "micro_vit"
target = ["attention", "mlp"]
loss = "logit"
dataset = "digits"
'''
TWO_RUN_SUITE = 'name = "pair"\n' + PAIR


def write_suite(path, text=TWO_RUN_SUITE):
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, extra, message", [
    (None, [], "config file not found: {dir}/missing.toml"),
    ("epochs = 1\n" + TWO_RUN_SUITE, [], "unknown key(s) epochs; a suite has defaults, description, matrix"),
    (TWO_RUN_SUITE, ["--arch", "micro_vit"], "--arch cannot be combined with --suite"),
    (TWO_RUN_SUITE, ["--dataset", "cifar10"], "--dataset cannot be combined with --suite"),
])
def test_a_bad_suite_exits_2_with_one_line(tmp_path, run_cli, text, extra, message):
    path = write_suite(tmp_path / "s.toml", text) if text is not None else tmp_path / "missing.toml"
    code, out, err = run_cli("run", "--suite", str(path), *extra, "--out", str(tmp_path / "suite"))
    assert code == 2 and out == "" and one_line_error(err)
    assert message.format(dir=tmp_path) in err, err
    assert not (tmp_path / "suite").exists()


def test_a_suite_runs_every_combination_and_compares_them(tiny, tmp_path, run_cli):
    out_dir = tmp_path / "suite"
    code, out, _ = run_cli("run", "--suite", str(write_suite(tmp_path / "s.toml")), *tiny.args(), "--out", str(out_dir))
    assert code == 0
    names = ["micro_vit-attention-logit-digits", "micro_vit-mlp-logit-digits"]
    for name in names:
        assert [r["rank"] for r in records(out_dir / name)] == [2, 4], name
        assert json.loads((out_dir / name / "config.json").read_text())["target"] == name.split("-")[1]
    compared = json.loads((out_dir / "comparison.json").read_text())["runs"]
    assert [row["name"] for row in compared] == names
    # One teacher for both targets: the same cache entry, hard-linked into each run.
    keys = {json.loads((out_dir / name / "teacher.json").read_text())["key"] for name in names}
    assert len(keys) == 1
    # The table names each run by what it is; the folder name only where two runs would read the same.
    assert "micro_vit · attention · logit · digits" in out and "micro_vit · mlp · logit · digits" in out
    assert f"2 runs in {out_dir}; suite summary in {out_dir}/comparison.*" in " ".join(out.split())


def test_cifar_missing_from_the_data_root_says_where_and_how_to_fetch_it(tmp_path, run_cli):
    empty = tmp_path / "data"
    empty.mkdir()
    code, out, err = run_cli("run", "--dataset", "cifar10", "--data-root", str(empty), "--ranks", "2",
                             "--device", "cpu", "--out", str(tmp_path / "run"))
    assert code == 2 and out == "" and one_line_error(err)
    assert f"expected {empty / 'cifar-10-batches-py'} with data_batch_1" in err and "--download" in err
    assert not (tmp_path / "run").exists()  # refused before the run directory is made


# --- regressions: bugs a review once found, kept fixed -----------------------------------------------------


def test_a_resumed_sweep_trains_the_same_students_as_an_uninterrupted_one(tiny, tmp_path, run_cli):
    # A lone trial (--group 1) is seeded by its (seed, rank) and the teacher comes from the cache, so rank 4
    # must not depend on whether rank 2 ran before it in the same process. It once did: distill() froze
    # the teacher in place and each later student, a deepcopy of it, trained only its factors.
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    assert run_cli("run", *tiny.args(group=1), "--out", str(whole))[0] == 0
    assert run_cli("run", *tiny.args(ranks=(2,), group=1), "--out", str(resumed))[0] == 0
    assert run_cli("run", *tiny.args(group=1), "--out", str(resumed))[0] == 0  # resumes: only rank 4 trains

    def rank_4(run_dir):
        (record,) = [r for r in records(run_dir) if r["rank"] == 4]
        return record["history"], record["test_accuracy"]

    assert rank_4(whole) == rank_4(resumed)


@pytest.mark.parametrize("text, message", [
    ('name = "x"\nmatrix = ["micro_vit"]\n', "[[matrix]]"),
    ('name = "x"\ndefaults = 3\n' + PAIR, "defaults"),
], ids=["matrix-of-strings", "defaults-a-number"])
def test_a_suite_whose_tables_are_not_tables_exits_2_with_one_line(tmp_path, run_cli, text, message):
    # Today: a ValueError / TypeError traceback from dict(...) in load_suite.
    code, out, err = run_cli("run", "--suite", str(write_suite(tmp_path / "s.toml", text)))
    assert code == 2 and one_line_error(err) and message in err, err


def test_a_suite_rerun_with_changed_options_is_refused_before_any_run_trains(tmp_path, run_cli):
    from effrank_bench.config import load_suite

    path, out_dir = write_suite(tmp_path / "s.toml"), tmp_path / "suite"
    first, second = load_suite(path, {"out": out_dir}).runs
    # The second run's directory already holds a sweep with another student recipe.
    RunDir.open(second.out, second.model_copy(update={"epochs": 5}))
    code, _, err = run_cli("run", "--suite", str(path), "--out", str(out_dir))
    assert code == 2 and f"error: {second.out} holds another sweep (differs in: epochs)" in err
    # Today the first run trains (teacher and both ranks) before the second one is found to clash.
    assert not (first.out / "trials.jsonl").exists()


def test_a_checkpoint_torch_refuses_to_unpickle_is_reported_in_one_line(tiny, tmp_path, run_cli):
    import fractions

    import torch

    checkpoint = tmp_path / "teacher.pt"
    torch.save({"weight": fractions.Fraction(1, 3)}, checkpoint)  # a global weights_only=True refuses
    code, _, err = run_cli("run", *tiny.args(), "--teacher-checkpoint", str(checkpoint),
                           "--out", str(tmp_path / "run"))
    # Not torch's multi-line "Weights only load failed ..." text (ANSI bold escapes included), whose first line
    # suggests weights_only=False, which would run the file's code.
    assert code == 2 and f"error: cannot read teacher checkpoint {checkpoint}: UnpicklingError: it holds objects " \
                         "other than tensors" in err
    assert err.count("\n") == 1 and "\x1b[" not in err and "weights_only=False" not in err
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    code, _, err = run_cli("run", *tiny.args(), "--teacher-checkpoint", str(text), "--out", str(tmp_path / "run"))
    assert code == 2 and err == (f"error: cannot read teacher checkpoint {text}: neither a torch.save file nor, by "
                                 "its suffix, safetensors\n")


# --- run's flags are RunConfig's fields -------------------------------------------------------------------


def run_parser():
    from effrank_bench.cli import _parser

    (commands,) = [a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return commands.choices["run"]


def test_every_run_config_field_is_a_flag_described_by_the_field():
    flags = {action.dest: action for action in run_parser()._actions}
    # Nothing restated by hand: the fields, the --seed alias, the two sources and --help.
    assert set(flags) == set(RunConfig.model_fields) | {"seed", "config", "suite", "help"}
    for name, field in RunConfig.model_fields.items():
        flag = flags[name]
        assert field.description and flag.help.startswith(field.description.removesuffix(")")), name
        assert flag.option_strings[0] == "--" + name.replace("_", "-")
        assert flag.default is None, name  # a flag not given leaves the config file's value alone
        if field.annotation is bool:
            assert flag.option_strings == ["--" + name.replace("_", "-"), "--no-" + name.replace("_", "-")]
        if get_origin(field.annotation) is Literal:
            assert tuple(flag.choices) == get_args(field.annotation), name
    assert flags["ranks"].metavar == "2,4,8" and flags["epochs"].metavar == "N"
    assert "(default: 1,2,4,8,16,32)" in flags["ranks"].help and "default: on)" in flags["augment"].help


def test_each_commands_help_opens_with_what_it_does():
    from effrank_bench.cli import _parser

    (commands,) = [a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction)]
    listed = {choice.dest: choice.help for choice in commands._choices_actions}
    assert set(listed) == set(commands.choices) and len(listed) == 8
    for name, command in commands.choices.items():  # as the top-level --help lists it, capitalized
        assert command.description == listed[name][:1].upper() + listed[name][1:] + ".", name
        assert command.format_help().split("\n\n")[1].replace("\n", " ").startswith(command.description[:40])


def test_the_help_groups_name_only_real_fields():
    from effrank_bench.cli import _RUN_GROUPS

    assert {name for names in _RUN_GROUPS.values() for name in names} <= set(RunConfig.model_fields)


def config_of(monkeypatch, run_cli, *argv):
    """The RunConfig that `effrank-bench run ARGV` resolves; stopped right after, before anything is built."""
    import effrank_bench.config

    resolved = []

    def load_and_stop(path=None, overrides=None, recipes=None):
        resolved.append(load_config(path, overrides, recipes))
        raise ConfigError("stopped")

    monkeypatch.setattr(effrank_bench.config, "load_config", load_and_stop)
    code, _, err = run_cli("run", *argv)
    assert (code, err) == (2, "error: stopped\n"), err
    return resolved[0]


def test_flags_round_trip_into_the_config(tmp_path, run_cli, monkeypatch):
    checkpoint = tmp_path / "teacher.pt"
    checkpoint.write_bytes(b"")  # only its existence is checked before the run starts
    config = config_of(monkeypatch, run_cli, "--knee-axis", "log2", "--no-augment", "--teacher-checkpoint",
                       str(checkpoint), "--ranks", "8,2", "--thresholds", "0.5,0.9", "--seed", "3", "--lr", "1e-3",
                       "--teacher-optimizer", "sgd", "--workers", "0", "--data-root", str(tmp_path))
    assert (config.knee_axis, config.augment, config.teacher_checkpoint) == ("log2", False, checkpoint)
    assert (config.ranks, config.thresholds, config.seeds, config.teacher_seed) == ((2, 8), (0.5, 0.9), (3,), 3)
    assert (config.lr, config.teacher_optimizer, config.workers, config.data_root) == (1e-3, "sgd", 0, tmp_path)


def test_flags_override_the_config_file_and_only_the_flags_given(tmp_path, run_cli, monkeypatch):
    path = tmp_path / "run.toml"
    path.write_text('epochs = 3\naugment = false\nknee_axis = "log2"\nseeds = [4, 5]\n')
    config = config_of(monkeypatch, run_cli, "--config", str(path), "--epochs", "5", "--amp")
    assert (config.epochs, config.augment, config.knee_axis, config.seeds) == (5, False, "log2", (4, 5))
    assert config.amp is True
    assert config_of(monkeypatch, run_cli, "--config", str(path), "--augment").augment is True


@pytest.mark.parametrize("argv, message", [
    (["run", "--knee-axis", "log3"], "argument --knee-axis: invalid choice: 'log3' (choose from 'linear', 'log2')"),
    (["run", "--teacher-optimizer", "adam"], "argument --teacher-optimizer: invalid choice: 'adam'"),
    (["run", "--epochs", "1.5"], "argument --epochs: invalid int value: '1.5'"),
    (["run", "--arch"], "argument --arch: expected one argument"),
    (["analyze", "c.csv", "--teacher-acc", "1", "--knee-axis", "x"], "argument --knee-axis: invalid choice: 'x'"),
])
def test_a_bad_flag_exits_2_with_one_line_and_points_at_the_help(tmp_path, run_cli, argv, message):
    code, out, err = run_cli(*argv)
    assert code == 2 and out == "" and one_line_error(err)
    assert message in err and f"(see `effrank-bench {argv[0]} --help`)" in err, err


@pytest.mark.parametrize("argv, message", [
    (["run", "--lr", "-1"], "error: --lr: Input should be greater than 0"),
    (["run", "--lr", "-1e-3"], "error: --lr: Input should be greater than 0"),
    (["run", "--kd-alpha", "-.5"], "error: --kd-alpha: Input should be greater than or equal to 0"),
    (["run", "--thresholds", "-1,0.5"], "error: run options: thresholds must satisfy 0 < low < high, got -1.0, 0.5"),
    (["analyze", "{csv}", "--teacher-acc", "-inf"], "error: teacher accuracy must be a positive number, got -inf"),
    (["analyze", "{csv}", "--teacher-acc", "1", "--thresholds", "-1,0.5"],
     "error: thresholds must satisfy 0 < t0 < t1, got (-1, 0.5)"),
    (["analyze", "{csv}", "--teacher-acc", "1", "--thresholds=-1,0.5"],
     "error: thresholds must satisfy 0 < t0 < t1, got (-1, 0.5)"),
])
def test_a_negative_value_is_a_value_the_validators_explain(tmp_path, run_cli, monkeypatch, argv, message):
    # Read as flags, each would stop at argparse's "expected one argument" instead.
    monkeypatch.chdir(tmp_path)  # where a run that got through would put its default runs/...
    csv = write_curve(tmp_path / "c.csv", [(1, 0.1), (50, 0.5), (100, 0.8)])
    code, out, err = run_cli(*[arg.format(csv=csv) for arg in argv])
    assert code == 2 and out == "" and one_line_error(err)
    assert message in err, err
    assert not (tmp_path / "runs").exists()


def test_the_embedded_default_trains_its_students_one_epoch_and_the_other_micro_families_two(run_cli, monkeypatch,
                                                                                               tmp_path):
    assert config_of(monkeypatch, run_cli, "--out", tmp_path / "run").epochs == 1  # micro_vit's own recipe
    assert config_of(monkeypatch, run_cli, "--arch", "micro_convnet", "--out", tmp_path / "run").epochs == 2
    assert config_of(monkeypatch, run_cli, "--epochs", "3", "--out", tmp_path / "run").epochs == 3  # a flag wins


def test_run_takes_a_paper_size_architectures_own_recipe(tmp_path, run_cli, monkeypatch):
    # A directory holding vit_b32's sweep at RunConfig's (the micro default's) recipe is another sweep than
    # `run --arch vit_b32` means: it takes vit_b32's recipe, and names each option that differs.
    RunDir.open(tmp_path / "run", RunConfig(arch="vit_b32", target="mlp"))
    code, _, err = run_cli("run", "--arch", "vit_b32", "--target", "mlp", "--out", tmp_path / "run")
    assert code == 2
    assert err.strip() == (f"error: {tmp_path / 'run'} holds another sweep (differs in: epochs, teacher_epochs, "
                           "batch_size, lr, teacher_lr, teacher_optimizer, teacher_weight_decay); use another --out "
                           "or the same options to resume it, here --epochs 2 --teacher-epochs 12 --batch-size 64 "
                           "--lr 0.004 --teacher-lr 0.004 --teacher-optimizer adamw --teacher-weight-decay 0.01")
    # Those options do resume it.
    flags = err.strip().split(", here ")[1].split()
    config = config_of(monkeypatch, run_cli, "--arch", "vit_b32", "--target", "mlp", "--out", tmp_path / "run", *flags)
    assert RunDir(tmp_path / "run").check_resumable(config) is not None


def test_spectrum_and_suites_take_an_architectures_recipe_as_run_does(tmp_path, run_cli, monkeypatch):
    import effrank_bench.config
    from effrank_bench.config import load_suite

    resolved = []

    def config_and_stop(path=None, overrides=None, recipes=None):
        resolved.append(load_config(path, overrides, recipes))
        raise ConfigError("stopped")

    def suite_and_stop(path, overrides=None, recipes=None):
        resolved.append(load_suite(path, overrides, recipes).runs[0])
        raise ConfigError("stopped")

    monkeypatch.setattr(effrank_bench.config, "load_config", config_and_stop)
    monkeypatch.setattr(effrank_bench.config, "load_suite", suite_and_stop)
    suite = tmp_path / "s.toml"
    suite.write_text('[[matrix]]\narch = "vit_b32"\ntarget = "mlp"\nloss = "kd"\ndataset = "digits"\n')
    assert run_cli("spectrum", "--arch", "vit_b32")[2] == "error: stopped\n"
    assert run_cli("run", "--suite", suite)[2] == "error: stopped\n"
    assert [(config.arch, config.lr, config.teacher_optimizer) for config in resolved] == [("vit_b32", 1e-4, "sgd")] * 2


def test_a_ctrl_c_while_a_stopped_run_exits_breaks_into_no_exit_handler():
    # A run stopped by Ctrl-C returns 130; a second Ctrl-C during interpreter shutdown (torch's atexit handlers)
    # printed their traceback under the run's last words. Here the second one arrives in an exit handler.
    # It ends the process at once (a shutdown that hangs can be stopped), with no traceback.
    code = ("import atexit, os, signal, time, effrank_bench.cli as cli\n"
            "cli.main = lambda: cli.INTERRUPTED\n"
            "atexit.register(lambda: (os.kill(os.getpid(), signal.SIGINT), time.sleep(60), print('hung on')))\n"
            "cli.entry()\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=50)
    assert (result.returncode, result.stdout, result.stderr) == (-signal.SIGINT, "", "")


def test_python_dash_m_runs_the_command_line():
    # Where the effrank-bench script is not on the path: a venv that sees the project through system site-packages.
    from effrank_bench import __version__

    result = subprocess.run([sys.executable, "-m", "effrank_bench", "--version"], capture_output=True, text=True,
                            timeout=50)
    assert (result.returncode, result.stdout) == (0, f"effrank-bench {__version__}\n")


def test_measure_takes_the_latency_flags_as_run_names_them(run_cli):
    code, out, err = run_cli("measure", "--ranks", "2", "--latency-repeats", "2", "--latency-batch-size", "3",
                             "--warmup", "0", "--json")
    assert (code, err) == (0, "") and json.loads(out)["latency_batch_size"] == 3  # were "not options of measure"
