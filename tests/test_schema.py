"""Run directories written by an earlier version (schema 1, a fixture made by that code) still report and resume."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from effrank_bench.records import SCHEMA_VERSION
from effrank_bench.report import build_report
from effrank_bench.store import RunDir
from effrank_bench.sweep import run_sweep

FIXTURE = Path(__file__).parent / "fixtures" / "run_v1"


def test_the_fixture_is_a_schema_1_run():
    lines = (FIXTURE / "trials.jsonl").read_text().splitlines()
    assert {json.loads(line)["schema_version"] for line in lines} == {1}
    assert "schema_version" not in json.loads((FIXTURE / "teacher.json").read_text())


def test_a_schema_1_run_reads_as_typed_records_and_reports(tmp_path):
    shutil.copytree(FIXTURE, tmp_path / "run")
    run = RunDir(tmp_path / "run")
    records = run.records()
    # Version 1 records did not say which init made them: they take the run's, which was svd.
    assert [(r.rank, r.seed, r.init, r.schema_version) for r in records] == [
        (2, 0, "svd", SCHEMA_VERSION), (4, 0, "svd", SCHEMA_VERSION), (2, 1, "svd", SCHEMA_VERSION),
        (4, 1, "svd", SCHEMA_VERSION)]
    assert records[0].cost.params == 12_234 and records[0].history[0].epoch == 1
    teacher = run.teacher()
    assert teacher.cost.params == 136_138 and teacher.recipe["epochs"] == 2
    report = build_report(run)
    assert [row.rank for row in report.rows] == [None, 2, 2, 4, 4]
    assert report.analysis is not None and report.uncertainty is not None  # two seeds: an interval


def test_a_schema_1_run_resumes_with_its_own_teacher_and_keeps_its_lines(tmp_path, monkeypatch, progress_stub):
    monkeypatch.setenv("EFFRANK_BENCH_CACHE", str(tmp_path / "empty-cache"))  # nothing to borrow: its own teacher
    shutil.copytree(FIXTURE, tmp_path / "run")
    run = RunDir(tmp_path / "run")
    before = run.records_path.read_text().splitlines()
    config = run.config().model_copy(update={"ranks": (2, 4, 8), "seeds": (0,), "out": tmp_path / "run"})
    # Rank 8 of seed 0 only (its seed 1 would double the test's time): the directory's sweep made seed 0's.
    run.config_path.write_text(config.model_dump_json())
    notes = progress_stub()
    resumed = run_sweep(config, progress=notes)
    assert any("teacher loaded from the run directory" in n for n in notes.notes)
    after = resumed.records_path.read_text().splitlines()
    assert after[:4] == before  # nothing finished is rewritten
    assert json.loads(after[4])["rank"] == 8 and json.loads(after[4])["schema_version"] == SCHEMA_VERSION
    assert [(r.rank, r.seed) for r in resumed.records()] == [(2, 0), (4, 0), (2, 1), (4, 1), (8, 0)]
    assert resumed.teacher().test_accuracy == json.loads((FIXTURE / "teacher.json").read_text())["test_accuracy"]
