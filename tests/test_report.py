"""Reports of hand-made run directories: one seed as before, several seeds with bootstrap intervals."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from effrank_bench.analysis import analyze_curve
from effrank_bench.bootstrap import bootstrap_curve
from effrank_bench.report import build_report, region_lines, render_table, write_report
from effrank_bench.store import RunDir

SINGLE = [(2, 0, 0.45), (4, 0, 0.72), (8, 0, 0.81), (16, 0, 0.88), (32, 0, 0.9)]
# Three seeds per rank; teacher 0.9, so normalized = accuracy / 0.9.
MULTI = [(r, s, a) for r, accs in {2: (0.40, 0.45, 0.50), 4: (0.68, 0.72, 0.76), 8: (0.78, 0.81, 0.84),
                                   16: (0.86, 0.88, 0.87), 32: (0.89, 0.90, 0.88)}.items()
         for s, a in enumerate(accs)]


def test_a_single_seed_run_reports_as_before_without_an_interval(make_run, tmp_path):
    run = make_run(tmp_path / "run", SINGLE)
    report = build_report(run)
    expected = analyze_curve([2, 4, 8, 16, 32], [0.45, 0.72, 0.81, 0.88, 0.9], 0.9)
    assert report.analysis == expected
    assert report.uncertainty is None and "one seed" in report.uncertainty_note
    assert region_lines(report.analysis, report.note, report.uncertainty) == region_lines(report.analysis, report.note)
    assert "CI" not in " ".join(region_lines(report.analysis, report.note, report.uncertainty))
    assert [(row.rank, row.seed) for row in report.rows] == [(None, 0), (2, 0), (4, 0), (8, 0), (16, 0), (32, 0)]
    # One seed: the table has no seed column, as before.
    assert [c.header for c in render_table(report).columns][:2] == ["rank", "accuracy"]
    data = json.loads(json.dumps(report.to_dict()))
    assert data["uncertainty"] is None and "nothing to resample" in data["uncertainty_note"]


def test_several_seeds_give_a_bootstrap_interval_with_the_stated_resamples(make_run, tmp_path):
    run = make_run(tmp_path / "run", MULTI, bootstrap_resamples=300)
    report = build_report(run)
    ranks, accs, seeds = zip(*[(r, a, s) for r, s, a in MULTI])
    # The point estimates are read off the seed-mean curve; the interval is that of bootstrap_curve.
    assert report.analysis == analyze_curve(ranks, accs, 0.9)
    assert report.uncertainty == bootstrap_curve(report.analysis, ranks, accs, seeds, resamples=300, rng_seed=0)
    u = report.uncertainty
    assert u.resamples == 300 and u.seeds == (0, 1, 2)
    assert u.low.ci_low <= report.analysis.region.low <= u.low.ci_high
    assert u.knee.ci_low <= report.analysis.knee <= u.knee.ci_high
    region, knee, note = region_lines(report.analysis, report.note, report.uncertainty)
    assert note == f"note: {u.note}" and "under-cover" in note  # 3 seeds per rank
    low = report.analysis.region.low
    assert f"85% at rank {low:.2f} [95% CI {u.low.ci_low:.2f}, {u.low.ci_high:.2f}]" in region
    assert region.endswith("(bootstrap, 300 resamples over 3 seeds)")
    assert f"rank {report.analysis.knee:.2f} [95% CI {u.knee.ci_low:.2f}, {u.knee.ci_high:.2f}]" in knee
    # Several seeds: a seed column; rows per (rank, seed).
    assert [c.header for c in render_table(report).columns][:2] == ["rank", "seed"]
    assert [(row.rank, row.seed) for row in report.rows[1:4]] == [(2, 0), (2, 1), (2, 2)]


def test_per_rank_statistics_over_seeds(make_run, tmp_path):
    report = build_report(make_run(tmp_path / "run", MULTI, bootstrap_resamples=50))
    rank_4 = report.per_rank[1]
    assert rank_4.rank == 4 and rank_4.seeds == (0, 1, 2)
    assert rank_4.accuracy == pytest.approx(0.72)
    assert rank_4.normalized == pytest.approx(0.72 / 0.9)
    assert rank_4.std == pytest.approx(0.04 / 0.9)  # sample std of 0.68, 0.72, 0.76
    assert (rank_4.min, rank_4.max) == (pytest.approx(0.68 / 0.9), pytest.approx(0.76 / 0.9))
    assert rank_4.params == 1400 and rank_4.macs == 140_000


def test_cost_at_a_real_rank_interpolates_between_measured_ranks(make_run, tmp_path):
    # Parameters not linear in rank here, to see which neighbours are used: 8 -> 1064, 16 -> 1256.
    report = build_report(make_run(tmp_path / "run", SINGLE, params=lambda r: 1000 + r * r))
    assert report.cost_at(12.0) == (pytest.approx(1160.0), pytest.approx(116_000.0))
    assert report.cost_at(2.0) == (1004.0, 100_400.0)
    assert report.cost_at(1.5) == (None, None) and report.cost_at(33) == (None, None)


def test_a_failed_seed_is_a_row_but_not_a_point(make_run, tmp_path):
    run = make_run(tmp_path / "run", MULTI, failed=[(64, 0)], bootstrap_resamples=50)
    report = build_report(run)
    assert report.rows[-1].rank == 64 and report.rows[-1].seed == 0 and report.rows[-1].status == "failed"
    assert [s.rank for s in report.per_rank] == [2, 4, 8, 16, 32]
    assert report.analysis.ranks[-1] == 32


def test_a_rank_with_fewer_seeds_still_bootstraps(make_run, tmp_path):
    # Seed 1 finished only ranks 2 and 4: those ranks resample two seeds, the others hold one.
    points = SINGLE + [(2, 1, 0.40), (4, 1, 0.70)]
    report = build_report(make_run(tmp_path / "run", points, bootstrap_resamples=100))
    assert report.uncertainty.seeds_per_rank == (2, 2, 1, 1, 1)
    assert report.uncertainty.resamples == 100


def test_summary_files_carry_the_interval_and_the_teacher_curve(make_run, tmp_path):
    run = make_run(tmp_path / "run", MULTI, bootstrap_resamples=200)
    report = build_report(run)
    paths = write_report(run, report)
    assert [p.name for p in paths] == ["summary.json", "summary.csv", "summary.md", "region.csv", "curve.png"]
    summary = json.loads((run.path / "summary.json").read_text())
    u = summary["uncertainty"]
    assert u["resamples"] == 200 and u["seeds"] == [0, 1, 2] and u["confidence"] == 0.95
    assert u["low"]["mean"] == summary["analysis"]["region"]["low"]
    assert u["low"]["ci_low"] <= u["low"]["mean"] <= u["low"]["ci_high"]
    assert set(u["knee"]) == {"mean", "ci_low", "ci_high", "unreached", "ci_low_censored", "ci_high_censored",
                              "met_at_first"}
    assert summary["teacher"]["test_accuracy"] == 0.9
    assert [h["loss"] for h in summary["teacher"]["history"]] == [2.0, 1.0]
    assert [p["rank"] for p in summary["per_rank"]] == [2, 4, 8, 16, 32]

    with open(run.path / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["rank"] == "teacher" and [r["seed"] for r in rows[1:4]] == ["0", "1", "2"]
    with open(run.path / "region.csv") as f:
        region = {r["quantity"]: r for r in csv.DictReader(f)}
    assert float(region["low"]["ci_low"]) == pytest.approx(u["low"]["ci_low"])
    assert region["knee"]["resamples"] == "200" and region["high"]["threshold"] == "0.95"

    markdown = (run.path / "summary.md").read_text()
    assert "[95% CI " in markdown and "(bootstrap, 200 resamples over 3 seeds)" in markdown
    assert "| 4 | 3 | 0.800 | 0.044 | 0.756 | 0.844 |" in markdown  # per-rank table over seeds
    assert (run.path / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_latency_comes_with_its_spread_in_every_summary(make_run, tmp_path):
    run = make_run(tmp_path / "run", SINGLE)  # students recorded before the spread was kept: none
    teacher = run.teacher()
    run.teacher_info.write_text(teacher.model_copy(update={"cost": teacher.cost.model_copy(
        update={"latency_iqr_ms": 0.25})}).model_dump_json())
    write_report(run, build_report(run))
    summary = json.loads((run.path / "summary.json").read_text())
    assert [t["latency_iqr_ms"] for t in summary["trials"]] == [0.25] + [None] * len(SINGLE)
    with open(run.path / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["latency_iqr_ms"] for r in rows] == ["0.25"] + [""] * len(SINGLE)
    markdown = (run.path / "summary.md").read_text()
    assert "| latency ms | IQR ms |" in markdown and "| 1.000 | 0.250 |" in markdown and "| 0.500 | – |" in markdown


def test_a_single_seed_region_csv_has_no_interval(make_run, tmp_path):
    run = make_run(tmp_path / "run", SINGLE)
    write_report(run, build_report(run))
    with open(run.path / "region.csv") as f:
        region = {r["quantity"]: r for r in csv.DictReader(f)}
    assert region["low"]["ci_low"] == "" and region["low"]["resamples"] == "0" and region["low"]["seeds"] == "1"
    assert region["low"]["ci_low_censored"] == region["knee"]["ci_high_censored"] == ""  # no interval to censor
    assert float(region["knee"]["estimate"]) == pytest.approx(build_report(run).analysis.knee)


def test_a_threshold_missed_by_some_resamples_says_how_often():
    # Rank 2 seeds at 0.8 and 1.0: 0.95 is reached only when both draws are 1.0 (about 1/4), at 1.9;
    # the others lie beyond rank 2, and so does the upper bound.
    analysis = analyze_curve([1, 2, 2], [0.5, 0.8, 1.0], 1.0)
    u = bootstrap_curve(analysis, [1, 2, 2], [0.5, 0.8, 1.0], [0, 0, 1], resamples=1000)
    region, _, no_bend, _ = region_lines(analysis, None, u)  # two ranks: no bend to put a knee at
    assert no_bend.startswith("note: the curve rises without a bend (only 2 ranks)")
    percent = round(100 * u.high.unreached)
    assert 65 <= percent <= 85
    assert f"95% not reached by rank 2 [95% CI 1.90, >2.00; not reached in {percent}% of resamples]" in region
    low_missed = round(100 * u.low.unreached)
    assert f"[95% CI 1.70, >2.00; not reached in {low_missed}% of resamples]" in region
    # Seeds at 0.8 and 0.9 at rank 2: no resample reaches 0.95, so the whole interval lies beyond rank 2.
    analysis = analyze_curve([1, 2, 2], [0.5, 0.8, 0.9], 1.0)
    u = bootstrap_curve(analysis, [1, 2, 2], [0.5, 0.8, 0.9], [0, 0, 1], resamples=200)
    assert "95% not reached by rank 2 [95% CI >2.00; not reached in 100% of resamples]" in region_lines(
        analysis, None, u)[0]


def test_too_few_ranks_has_no_analysis_and_no_interval(make_run, tmp_path):
    report = build_report(make_run(tmp_path / "run", [(4, 0, 0.7), (4, 1, 0.8)]))
    assert report.analysis is None and report.uncertainty is None
    # The sweep holds that rank alone: nothing left to train would give a curve.
    assert report.note == ("1 finished rank(s); the region and knee need at least 2, and the sweep has no more: "
                           "add ranks with --ranks")
    failed = build_report(make_run(tmp_path / "failed", [(4, 0, 0.7)], failed=[(8, 0)]))
    assert failed.note == ("1 finished rank(s); the region and knee need at least 2, and rank(s) 8 failed (their "
                           "errors are in the table; a rerun keeps a failure, another --out trains it again)")  # not more ranks: the failure is what to look at
    paths = write_report(RunDir(tmp_path / "run"), report)
    assert [p.name for p in paths] == ["summary.json", "summary.csv", "summary.md"]
    assert np.isclose(report.per_rank[0].normalized, 0.75 / 0.9)


def test_the_terminal_shows_the_bracketed_interval_notes_as_text(make_run, tmp_path, capsys):
    # Rich would read "[95% CI …]" as a style tag and drop it; the report command prints it verbatim.
    from effrank_bench.cli import main

    run = make_run(tmp_path / "run", [(1, 0, 0.5), (1, 1, 0.5), (2, 0, 0.72), (2, 1, 0.9)],
                   teacher_accuracy=0.9, bootstrap_resamples=200)
    assert main(["report", str(run.path)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    # 95% of the teacher is reached only when both draws at rank 2 are 0.9 / 0.9: at 1 + (0.95 - 5/9) / (4/9).
    assert f"95% not reached by rank 2 [95% CI {1 + (0.95 - 5 / 9) / (4 / 9):.2f}, >2.00; not reached in" in out


def test_reading_and_reporting_a_run_directory_imports_no_torch():
    # analyze, replay, report and compare start in about a second instead of several: torch (and the
    # plugins' timm and scikit-learn) load only for commands that build models or load data.
    import subprocess
    import sys

    code = ("import sys; import effrank_bench.cli, effrank_bench.report, effrank_bench.compare, effrank_bench.search; "
            "heavy = sorted({'torch', 'timm', 'sklearn'} & set(sys.modules)); print(heavy); sys.exit(bool(heavy))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_report_of_a_run_in_progress_is_printed_and_its_files_left_to_the_run(make_run, run_cli, tmp_path):
    from effrank_bench.lock import run_lock

    run = make_run(tmp_path / "run", [(2, 0, 0.5), (4, 0, 0.8), (8, 0, 0.9)])
    with run_lock(run.path):  # as a sweep holds it while it trains
        code, out, err = run_cli("report", run.path)
    assert code == 0 and "effective knee" in out and err == ""
    assert "report files not written: " in out and "is in use by another run" in out
    assert not (run.path / "summary.json").exists()
    assert run_cli("report", run.path)[0] == 0 and (run.path / "summary.json").is_file()
    assert run_cli("report", tmp_path / "nothing")[0] == 2 and not (tmp_path / "nothing").exists()


def test_an_adaptive_runs_report_says_how_its_search_chose_the_ranks(make_run, tmp_path):
    from effrank_bench.report import search_lines

    run = make_run(tmp_path / "run", [(2, 0, 0.5), (8, 0, 0.8), (32, 0, 0.88)], search="adaptive", tolerance="grid")
    run = RunDir.open(run.path, run.config().model_copy(update={"ranks": (2, 4, 8, 16, 32)}))  # its --ranks
    run.store_search_rounds([[2, 32], [8], [4]], 3)
    report = build_report(run)
    assert search_lines(report) == ["adaptive search, tolerance adjacent ranks of the grid: rank(s) measured: 3 of the "
                                    "5 of --ranks, in 3 round(s)"]
    assert report.to_dict()["search"] == {"tolerance": "adjacent ranks of the grid", "rounds": [[2, 32], [8], [4]]}
    # Rank 4, asked for and not trained: the search may ask for more once it is.
    assert [w for w in report.warnings if w.startswith("the sweep is not finished: at least 1 trial(s) still to "
                                                       "train (rank 4)")]
    grid = make_run(tmp_path / "grid", [(2, 0, 0.5), (8, 0, 0.8)])
    assert search_lines(build_report(grid)) == [] and build_report(grid).to_dict()["search"] is None


def test_rank_axes_read_as_plain_numbers_and_fractions_below_one():
    from effrank_bench.plotting import power_of_two

    assert [power_of_two(v) for v in (1 / 128, 1 / 64, 0.25, 0.5, 1, 2, 64, 0.3)] == [
        "1/128", "1/64", "1/4", "1/2", "1", "2", "64", "0.3"]  # 0.0078125 and 0.015625 ran into each other


def test_students_at_one_ece_get_short_ticks_that_leave_room_for_the_label(make_run, tmp_path, monkeypatch):
    from effrank_bench import report as reporting
    from effrank_bench.records import TrialRecord

    run = make_run(tmp_path / "run", [(2, 0, 0.5), (4, 0, 0.8), (8, 0, 0.9)])
    records = [r.model_copy(update={"test_ece": ece}) for r, ece in zip(run.records(), (0.49650, 0.49655, 0.49661))]
    run.records_path.write_text("".join(r.model_dump_json() + "\n" for r in records))
    figures = []
    monkeypatch.setattr(reporting, "save_png", lambda fig, path: figures.append(fig))
    reporting.plot_curve(build_report(run), tmp_path / "curve.png")
    ece_axis = figures[0].axes[1]
    figures[0].canvas.draw()
    labels = [t.get_text() for t in ece_axis.get_yticklabels() if t.get_text()]
    assert labels and all(len(label) <= 5 for label in labels)  # 0.495, 0.497, ...: not 0.49650
    assert TrialRecord.model_validate_json(run.records_path.read_text().splitlines()[2]).test_ece == 0.49661
