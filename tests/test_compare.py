"""Runs side by side: read-offs, cost at the knee, rank / width, files and the `compare` command."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from effrank_bench.analysis import analyze_curve
from effrank_bench.compare import CSV_FIELDS, compare_runs, render_comparison, write_comparison
from effrank_bench.errors import ConfigError

TEACHER_PARAMS = 10_000  # each hand-made run's teacher (make_run, conftest); MACs are 100 × parameters


RANKS = list(range(1, 101))
RAMP = [(r, 0, min(r / 20, 1.0)) for r in RANKS]  # knee just below 20 (see test_analysis)
THREE_SEEDS = [(r, s, a) for r, accs in {2: (0.40, 0.45, 0.50), 4: (0.68, 0.72, 0.76), 8: (0.78, 0.81, 0.84),
                                         16: (0.86, 0.88, 0.87), 32: (0.89, 0.90, 0.88)}.items()
               for s, a in enumerate(accs)]


@pytest.fixture
def two_runs(make_run, tmp_path):
    ramp = make_run(tmp_path / "ramp", RAMP, teacher_accuracy=1.0, teacher_params=TEACHER_PARAMS,
                    params=lambda r: 500 + r * r, width=128)
    seeds = make_run(tmp_path / "seeds", THREE_SEEDS, teacher_accuracy=0.9, teacher_params=TEACHER_PARAMS, loss="kd",
                     width=64, bootstrap_resamples=200)
    return ramp.path, seeds.path


def test_compression_at_the_knee_interpolates_the_neighbouring_measured_ranks(two_runs):
    ramp, _ = compare_runs(two_runs).runs
    knee = analyze_curve(RANKS, [a for _, _, a in RAMP], 1.0).knee
    assert 19 < knee < 20
    # Parameters 500 + r² are measured at 19 (861) and 20 (900); between them the cost is a straight line.
    params = 861 + (knee - 19) * (900 - 861)
    assert ramp.at_knee.params == pytest.approx(params)
    assert ramp.at_knee.macs == pytest.approx(100 * params)
    assert ramp.at_knee.compression == pytest.approx(TEACHER_PARAMS / params)
    assert ramp.at_knee.compression_ci is None  # one seed


def test_a_multi_seed_run_shows_its_intervals(two_runs, tmp_path):
    comparison = compare_runs(two_runs)
    data = comparison.to_dict()
    ramp, seeds = data["runs"]
    assert ramp["region"]["low"]["ci_low"] is None and ramp["resamples"] == 0
    assert seeds["seeds"] == [0, 1, 2] and seeds["resamples"] == 200 and seeds["loss"] == "kd"
    low = seeds["region"]["low"]
    assert low["ci_low"] <= low["mean"] <= low["ci_high"]
    knee = seeds["knee"]
    # More rank costs more: the interval's ends compress most at its low rank.
    lo, hi = seeds["at_knee"]["compression_ci"]
    assert lo == pytest.approx(TEACHER_PARAMS / (1000 + 100 * knee["ci_high"]))
    assert hi == pytest.approx(TEACHER_PARAMS / (1000 + 100 * knee["ci_low"]))
    assert lo <= seeds["at_knee"]["compression"] <= hi
    cells = [cell for column in render_comparison(comparison).columns for cell in column._cells]
    assert f"{low['mean']:.2f}\n[{low['ci_low']:.2f}, {low['ci_high']:.2f}]" in cells  # interval under value
    markdown = write_comparison(comparison, tmp_path / "out")[2].read_text()
    markdown_row = [line for line in markdown.splitlines() if line.startswith("| seeds")][0]
    assert f"| {low['mean']:.2f} [{low['ci_low']:.2f}, {low['ci_high']:.2f}] |" in markdown_row


def test_rank_over_width_uses_the_targets_largest_full_rank(make_run, two_runs, tmp_path):
    bare = make_run(tmp_path / "bare", [(4, 0, 0.5), (8, 0, 0.9)], teacher_accuracy=1.0)  # written before target.json existed
    comparison = compare_runs([*two_runs, bare.path])
    ramp, seeds, no_width = comparison.runs
    assert ramp.width == 128 and seeds.width == 64 and no_width.width is None
    assert [p["relative_rank"] for p in seeds.curve()] == [2 / 64, 4 / 64, 8 / 64, 16 / 64, 32 / 64]
    assert [p["normalized"] for p in seeds.curve()] == pytest.approx([0.5, 0.8, 0.9, 29 / 30, 89 / 90])
    assert all(p["relative_rank"] is None for p in no_width.curve())
    assert comparison.to_dict()["runs"][1]["knee_relative"] == pytest.approx(seeds.report.analysis.knee / 64)
    assert comparison.notes == [  # the run's own report's note on its knee, and what the panel leaves out
        "bare: the curve rises without a bend (only 2 ranks): it has no knee (the one shown is where it reaches its "
        "top); ranks between 4 and 8 would show where it bends",
        "bare: no target.json (width unknown), left out of the rank / width panel"]


def test_a_run_with_too_few_ranks_is_kept_with_a_note(make_run, two_runs, tmp_path):
    short = make_run(tmp_path / "short", [(8, 0, 0.9), (8, 1, 0.92)], teacher_accuracy=1.0, width=64)
    comparison = compare_runs([*two_runs, short.path])
    entry = comparison.to_dict()["runs"][2]
    assert entry["region"] is None and entry["knee"] is None and entry["at_knee"] is None
    assert "1 finished rank(s)" in entry["note"]
    assert any(note.startswith("short: 1 finished rank(s)") for note in comparison.notes)
    row = [column._cells[2] for column in render_comparison(comparison).columns]
    assert row[0] == "micro_vit · joint · geometric · digits (short)" and row[3:] == ["–"] * 6


def test_a_crossing_never_reached_shows_beyond_the_last_rank_not_a_dash(make_run, two_runs, tmp_path):
    # 85% is reached between ranks 2 and 4, 95% never: "–" would read as "no analysis", like a run too short.
    low = make_run(tmp_path / "low", [(2, 0, 0.6), (4, 0, 0.8), (8, 0, 0.81)], teacher_accuracy=0.9, width=64)
    comparison = compare_runs([*two_runs, low.path])
    row = [column._cells[2] for column in render_comparison(comparison).columns]
    assert row[3] == "3.32" and row[4] == ">8.00" and row[5] == "–"  # low, high, band (none: 95% not reached)
    markdown = write_comparison(comparison, tmp_path / "out")[2].read_text()
    assert "| 3.32 | >8.00 | – |" in markdown


def test_runs_without_a_curve_compare_and_plot_without_failing(make_run, tmp_path):
    # A suite's first offline check (a few random test images, a teacher at 0) ended in a matplotlib traceback:
    # a log axis of no data. The plot says there is nothing to draw; the table keeps the runs.
    chance = [make_run(tmp_path / name, [(2, 0, 0.0)], teacher_accuracy=0.0, width=64) for name in ("a", "b")]
    comparison = compare_runs([run.path for run in chance])
    paths = write_comparison(comparison, tmp_path / "out")
    assert (tmp_path / "out" / "comparison.png") in paths and (tmp_path / "out" / "comparison.png").stat().st_size
    assert [entry["seeds"] for entry in comparison.to_dict()["runs"]] == [[0], [0]]


def test_a_runs_warnings_are_notes_of_the_comparison_and_in_its_json(make_run, two_runs, tmp_path):
    # A sweep asked for ranks 2-16 and stopped after 4 reads like a finished one in the table: its warning says not.
    partial = make_run(tmp_path / "partial", [(2, 0, 0.5), (4, 0, 0.8)], teacher_accuracy=0.9, width=64)
    config = json.loads((partial.path / "config.json").read_text())
    (partial.path / "config.json").write_text(json.dumps({**config, "ranks": [2, 4, 8, 16]}))
    comparison = compare_runs([*two_runs, partial.path])
    assert [note for note in comparison.notes if "warning" in note] == [
        "partial: warning: the sweep is not finished: 2 trial(s) still to train (rank 8, rank 16); the region and "
        "knee are read off what is recorded (a sweep that was stopped finishes when its command runs again)"]
    runs = comparison.to_dict()["runs"]
    assert runs[0]["warnings"] == [] and runs[2]["warnings"] == [comparison.notes[-1].split(": warning: ")[1]]


def test_a_run_given_twice_is_compared_once_where_it_first_comes(two_runs, tmp_path, monkeypatch):
    ramp, seeds = two_runs
    monkeypatch.chdir(ramp.parent)
    comparison = compare_runs([seeds, ramp, Path(ramp.name), seeds])  # the same runs, one by another spelling
    assert [run.path for run in comparison.runs] == [seeds, ramp]


def test_json_and_csv_say_which_crossings_are_only_bounded(make_run, tmp_path):
    # Met at the first measured rank (at or below it) and never reached: the table shows ≤2.00 and "not
    # reached"; the files must say so too, not give 2.0 as if measured and null as if missing.
    early = make_run(tmp_path / "early", [(2, 0, 0.9), (4, 0, 0.92), (8, 0, 0.93)], teacher_accuracy=1.0)
    comparison = compare_runs([early.path])
    region = comparison.to_dict()["runs"][0]["region"]
    assert (region["low"]["mean"], region["low_censored"]) == (2.0, "left")
    assert (region["high"]["mean"], region["high_censored"]) == (None, "right")
    write_comparison(comparison, tmp_path / "out", plot=False)
    with open(tmp_path / "out" / "comparison.csv") as f:
        (row,) = csv.DictReader(f)
    assert (row["low"], row["low_censored"], row["high"], row["high_censored"]) == ("2.0", "left", "", "right")


def test_runs_read_at_other_thresholds_or_knee_axes_are_noted_as_not_comparable(make_run, two_runs, tmp_path):
    assert not any("thresholds or knee axes" in note for note in compare_runs(two_runs).notes)
    other = make_run(tmp_path / "other", RAMP, teacher_accuracy=1.0, thresholds=(0.8, 0.9), knee_axis="log2")
    (note,) = [n for n in compare_runs([*two_runs, other.path]).notes if "thresholds or knee axes" in n]
    assert note.endswith(": ramp 0.85 / 0.95, linear knee, seeds 0.85 / 0.95, linear knee, other 0.8 / 0.9, "
                         "log2 knee")


def test_a_missing_or_non_run_directory_is_a_config_error(two_runs, tmp_path):
    with pytest.raises(ConfigError, match="no such run directory"):
        compare_runs([two_runs[0], tmp_path / "nope"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="is not a run directory"):
        compare_runs([tmp_path / "empty"])
    with pytest.raises(ConfigError, match="at least one"):
        compare_runs([])


def test_write_comparison_writes_json_csv_markdown_and_plot(two_runs, tmp_path):
    comparison = compare_runs(two_runs)
    paths = write_comparison(comparison, tmp_path / "out")
    assert [p.name for p in paths] == ["comparison.json", "comparison.csv", "comparison.md", "comparison.png"]
    assert json.loads(paths[0].read_text()) == json.loads(json.dumps(comparison.to_dict()))
    with open(paths[1]) as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert reader.fieldnames == CSV_FIELDS and [r["run"] for r in rows] == [str(p) for p in two_runs]
    ramp = comparison.runs[0]
    assert float(rows[0]["compression_at_knee"]) == pytest.approx(ramp.at_knee.compression)
    assert rows[0]["width"] == "128" and rows[1]["seeds"] == "3"
    assert "| ramp | micro_vit | joint | geometric | digits | 1 | 1.0000 |" in paths[2].read_text()
    assert paths[3].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The run directories themselves are only read.
    assert not (two_runs[0] / "summary.json").exists()


def test_a_comparison_without_a_plot_removes_the_plot_of_other_runs(two_runs, tmp_path):
    out = tmp_path / "out"
    write_comparison(compare_runs(two_runs), out)
    paths = write_comparison(compare_runs(two_runs[:1]), out, plot=False)
    assert [p.name for p in paths] == ["comparison.json", "comparison.csv", "comparison.md"]
    assert sorted(p.name for p in out.iterdir()) == ["comparison.csv", "comparison.json", "comparison.md"]
    assert ".png" not in paths[2].read_text()  # no link to a plot that is not there


def test_compare_command_json(two_runs, run_cli):
    code, out, err = run_cli("compare", *two_runs, "--json")
    assert code == 0 and err == ""
    data = json.loads(out)
    assert [r["name"] for r in data["runs"]] == ["ramp", "seeds"]
    assert data["runs"][0]["knee"]["mean"] == pytest.approx(
        analyze_curve(RANKS, [a for _, _, a in RAMP], 1.0).knee)


def test_compare_command_table_and_out(two_runs, tmp_path, run_cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # rich sizes the table to the terminal; 80 columns would fold it
    code, out, _ = run_cli("compare", *two_runs, "--out", tmp_path / "cmp")
    assert code == 0
    lines = out.splitlines()
    ramp = next(line for line in lines if "· geometric ·" in line)
    assert "micro_vit · joint" in ramp and "[17, 19]" in ramp and "11.14×" in ramp
    lo, hi = json.loads((tmp_path / "cmp" / "comparison.json").read_text())["runs"][1]["at_knee"]["compression_ci"]
    seeds = [i for i, line in enumerate(lines) if "· kd ·" in line][0]
    assert f"[{lo:.2f}, {hi:.2f}]" in lines[seeds + 1]  # the interval under its value
    assert lines[-1] == f"comparison written to {tmp_path / 'cmp'}"
    assert sorted(p.name for p in (tmp_path / "cmp").iterdir()) == [
        "comparison.csv", "comparison.json", "comparison.md", "comparison.png"]


def test_compare_command_on_a_non_run_directory_exits_2_with_one_line(two_runs, tmp_path, run_cli):
    code, out, err = run_cli("compare", two_runs[0], tmp_path)
    assert code == 2 and out == ""
    assert err == f"error: {tmp_path} is not a run directory (no config.json)\n"


def test_relative_ranks_in_json_match_the_target(two_runs, run_cli):
    _, out, _ = run_cli("compare", *two_runs, "--json")
    ramp = json.loads(out)["runs"][0]
    assert ramp["width"] == 128
    assert np.allclose([p["relative_rank"] for p in ramp["curve"]], np.array(RANKS) / 128)


def test_an_adaptive_runs_search_is_a_note_of_the_comparison(make_run, two_runs, tmp_path):
    searched = make_run(tmp_path / "searched", [(2, 0, 0.5), (8, 0, 0.8), (32, 0, 0.88)], teacher_accuracy=0.9,
                        width=64, search="adaptive", tolerance="grid")
    searched.store_search_rounds([[2, 8, 32]], 1)
    notes = compare_runs([*two_runs, searched.path]).notes
    assert "searched: adaptive search, tolerance adjacent ranks of the grid: rank(s) measured: 3 of the 3 of --ranks, " \
           "in 1 round(s)" in notes
    assert not [note for note in notes if "adaptive search" in note and not note.startswith("searched: ")]
