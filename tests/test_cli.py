"""The command line: exit codes, one-line errors, JSON contracts and the run/report round trip."""
from __future__ import annotations

import json

import pytest

from effrank_bench.cli import main


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def write_curve(path, rows, header="rank,accuracy"):
    path.write_text(header + "\n" + "".join(f"{r},{a}\n" for r, a in rows))
    return path


def test_analyze_json_reports_region_and_knee(tmp_path, capsys):
    # Teacher 80 (percent), students linear in rank: 85% of 80 = 68 at rank 85, 95% = 76 at rank 95.
    csv = write_curve(tmp_path / "c.csv", [(r, 0.8 * r) for r in (1, 25, 50, 75, 100)])
    code, out, err = run_cli(capsys, "analyze", str(csv), "--teacher-acc", "80", "--json")
    assert code == 0 and err == ""
    result = json.loads(out)
    assert result["teacher_accuracy"] == 80
    assert result["region"]["low"] == pytest.approx(85)
    assert result["region"]["high"] == pytest.approx(95)
    assert result["region"]["band"] == [85, 95]
    assert result["region"]["thresholds"] == [0.85, 0.95]
    assert 1 <= result["knee"] <= 100


def test_analyze_options_change_thresholds_and_knee_axis(tmp_path, capsys):
    csv = write_curve(tmp_path / "c.csv", [(r, r / 100) for r in (1, 25, 50, 75, 100)])
    code, out, _ = run_cli(capsys, "analyze", str(csv), "--teacher-acc", "1", "--json",
                           "--thresholds", "0.8,0.9", "--knee-axis", "log2")
    result = json.loads(out)
    assert code == 0 and result["region"]["band"] == [80, 90] and result["knee_axis"] == "log2"
    # A straight line's log2 knee is where its slope equals the secant's in log space: 99 / ln(100).
    assert result["knee"] == pytest.approx(99 / 4.605170185988092, rel=1e-4)


@pytest.mark.parametrize("content, message", [
    ("rank,acc\n1,0.5\n2,0.6\n", "accuracy"),
    ("rank,accuracy\n1,0.5\n2,high\n", "line 3"),
    ("rank,accuracy\n1,0.5\n", "at least 2"),
])
def test_a_bad_curve_csv_exits_2_with_one_line(tmp_path, capsys, content, message):
    csv = tmp_path / "c.csv"
    csv.write_text(content)
    code, out, err = run_cli(capsys, "analyze", str(csv), "--teacher-acc", "1")
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
def test_bad_run_input_exits_2_with_one_line(tmp_path, capsys, argv, message):
    code, out, err = run_cli(capsys, "run", "--out", str(tmp_path / "run"), *argv)
    assert code == 2
    assert err.count("\n") == 1 and message in err, err


def test_a_malformed_or_unknown_config_file_exits_2(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("arch = \n")
    assert run_cli(capsys, "run", "--config", str(bad))[0] == 2
    unknown = tmp_path / "unknown.toml"
    unknown.write_text('arch = "micro_vit"\nepoch = 3\n')
    code, _, err = run_cli(capsys, "run", "--config", str(unknown))
    assert code == 2 and f"{unknown}: unknown key 'epoch'" in err


def test_pretrained_weights_that_cannot_be_fetched_say_how_to_pass_a_file(tmp_path, capsys):
    code, _, err = run_cli(capsys, "run", "--arch", "vit_b32", "--pretrained", "--ranks", "8",
                           "--out", str(tmp_path / "run"))
    assert code == 2 and err.count("\n") == 1
    assert "cannot fetch timm's pretrained weights" in err and "--teacher-checkpoint PATH" in err


def test_measure_json_gives_teacher_and_students(capsys):
    code, out, _ = run_cli(capsys, "measure", "--arch", "micro_vit", "--target", "joint", "--ranks", "2,64",
                           "--repeats", "2", "--warmup", "1", "--json")
    result = json.loads(out)
    assert code == 0
    teacher, (r2, r64) = result["teacher"], result["students"]
    assert teacher["params"] == 136_138
    # Native input of micro_vit: 1×8×8, 10 classes; see test_sweep for the rank-2 arithmetic.
    assert (r2["rank"], r2["params"], r2["factorized_params"]) == (2, 12_234, 8_960)
    assert r2["compression"] == pytest.approx(136_138 / 12_234)
    assert r2["macs"] < r64["macs"] and r64["params"] > teacher["params"]  # full-rank factors cost more
    assert all(s["latency_ms"] > 0 for s in result["students"])


def test_measure_vit_b32_matches_timms_published_macs(capsys):
    code, out, _ = run_cli(capsys, "measure", "--arch", "vit_b32", "--target", "joint", "--ranks", "32",
                           "--repeats", "1", "--warmup", "0", "--json")
    result = json.loads(out)
    assert code == 0
    assert result["teacher"]["macs"] == pytest.approx(4.41e9, rel=0.01)
    (student,) = result["students"]
    # 1000 classes: 88,224,232 − 12 × (7,084,800 − 449,280) factorized at rank 32.
    assert student["params"] == 8_597_992
    assert student["macs"] < result["teacher"]["macs"] / 10


def test_list_shows_every_kind_with_its_plugin(capsys):
    code, out, _ = run_cli(capsys, "list")
    assert code == 0
    for name in ("micro_vit", "vit_b32", "attention", "mlp", "joint", "geometric", "logit", "kd", "digits"):
        assert name in out
    assert "vit (effrank-bench)" in out and "losses (effrank-bench)" in out


def test_run_then_report_rerenders_the_same_table(tmp_path, capsys):
    out_dir = tmp_path / "run"
    code, out, _ = run_cli(capsys, "run", "--ranks", "2,4", "--epochs", "1", "--teacher-epochs", "2",
                           "--batch-size", "128", "--latency-repeats", "2", "--device", "cpu", "--out", str(out_dir))
    assert code == 0
    assert "effective-rank region" in out and "effective knee" in out
    (out_dir / "curve.png").unlink()
    code, again, _ = run_cli(capsys, "report", str(out_dir))
    assert code == 0 and (out_dir / "curve.png").is_file()
    assert again.splitlines()[:10] == out.splitlines()[:10]


def test_ctrl_c_during_a_run_exits_130_and_says_how_to_resume(tmp_path, capsys, monkeypatch):
    from effrank_bench.sweep import Sweep

    def interrupt(self, trial):
        raise KeyboardInterrupt

    monkeypatch.setattr(Sweep, "run_trial", interrupt)
    code, _, err = run_cli(capsys, "run", "--ranks", "2", "--epochs", "1", "--teacher-epochs", "1",
                           "--device", "cpu", "--out", str(tmp_path / "run"))
    assert code == 130
    assert "interrupted: 0 finished trial(s)" in err and "run the same command again to resume" in err


def test_report_of_a_directory_that_is_not_a_run_exits_2(tmp_path, capsys):
    code, _, err = run_cli(capsys, "report", str(tmp_path))
    assert code == 2 and "is not a run directory" in err
