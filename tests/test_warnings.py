"""Warnings after a report: a sweep not finished, data cut to a few batches, a teacher near chance, a student beating its teacher, a loaded teacher's new head."""
from __future__ import annotations

import json

from effrank_bench.cli import main
from effrank_bench.config import RunConfig
from effrank_bench.records import TeacherRecord, TrialRecord
from effrank_bench.report import build_report, warning_lines, write_report
from effrank_bench.store import RunDir

COST = {"params": 1000, "factorized_params": 800, "macs": 10_000, "latency_ms": 1.0, "peak_memory_mb": None}


def _run(path, teacher_accuracy, students, *, num_classes=10, skipped=(), ranks=None, **config):
    """A run directory with a teacher of ``teacher_accuracy`` and one student (seed 0) per (rank, test accuracy);
    its config asks for ``ranks`` (default: the students')."""
    run = RunDir.open(path, RunConfig(ranks=ranks or [r for r, _ in students], **config))
    run.teacher_info.write_text(TeacherRecord(
        key="k", source="pretrained", skipped_keys=list(skipped), recipe={}, val_accuracy=teacher_accuracy,
        test_accuracy=teacher_accuracy, num_classes=num_classes, environment={"device": "cpu"}, cost=COST,
    ).model_dump_json())
    for rank, accuracy in students:
        run.append(TrialRecord(status="ok", arch="micro_vit", target="joint", loss="geometric", dataset="digits",
                               rank=rank, seed=0, init="svd", test_accuracy=accuracy, cost=COST,
                               environment={"device": "cpu"}))
    return run


def test_a_teacher_under_twice_chance_is_flagged(tmp_path):
    # 10 classes: chance 0.1, so 0.19 is under 2× chance and 0.21 is not.
    low = build_report(_run(tmp_path / "low", 0.19, [(2, 0.1), (4, 0.15)]))
    assert len(low.warnings) == 1 and "near chance" in low.warnings[0] and "twice chance (2/10) = 0.2000" in \
        low.warnings[0]
    assert build_report(_run(tmp_path / "ok", 0.21, [(2, 0.1), (4, 0.2)])).warnings == ()
    # 2 classes: twice chance would be perfect; under 0.75, halfway from chance to 1, is near chance.
    binary = build_report(_run(tmp_path / "binary", 0.74, [(2, 0.6), (4, 0.7)], num_classes=2))
    assert len(binary.warnings) == 1 and "under halfway from chance (1/2) to 1 = 0.7500" in binary.warnings[0]
    assert build_report(_run(tmp_path / "good", 0.99, [(2, 0.9), (4, 0.95)], num_classes=2)).warnings == ()
    unknown = build_report(_run(tmp_path / "old", 0.19, [(2, 0.1), (4, 0.15)], num_classes=None))
    assert unknown.warnings == ()  # a record written before it knew its classes: nothing to compare


def test_a_student_more_than_5_percent_above_the_teacher_is_flagged(tmp_path):
    above = build_report(_run(tmp_path / "above", 0.8, [(2, 0.5), (4, 0.85)]))  # 0.85 / 0.8 = 1.0625
    assert len(above.warnings) == 1
    assert "rank 4" in above.warnings[0] and "1.062" in above.warnings[0] and "under-trained" in above.warnings[0]
    assert build_report(_run(tmp_path / "near", 0.8, [(2, 0.5), (4, 0.84)])).warnings == ()  # 1.05 exactly


def test_a_teacher_used_as_loaded_with_a_new_head_is_flagged(tmp_path):
    head = ["head.weight", "head.bias"]
    flagged = build_report(_run(tmp_path / "new", 0.9, [(2, 0.5), (4, 0.8)], skipped=head, pretrained=True,
                                teacher_epochs=0))
    assert len(flagged.warnings) == 1 and "--teacher-epochs 0" in flagged.warnings[0]
    assert "head.weight" in flagged.warnings[0]
    fine_tuned = _run(tmp_path / "tuned", 0.9, [(2, 0.5), (4, 0.8)], skipped=head, pretrained=True, teacher_epochs=3)
    assert build_report(fine_tuned).warnings == ()  # the new head was trained


def test_a_sweep_not_finished_is_flagged_naming_what_it_lacks(tmp_path):
    # Stopped (or still training) after ranks 2 and 4 of 2, 4, 8, 16: its read-off would pass for a whole one.
    partial = build_report(_run(tmp_path / "grid", 0.9, [(2, 0.5), (4, 0.8)], ranks=[2, 4, 8, 16]))
    assert partial.warnings == ("the sweep is not finished: 2 trial(s) still to train (rank 8, rank 16); the region "
                                "and knee are read off what is recorded (a sweep that was stopped finishes when its "
                                "command runs again)",)
    nothing = build_report(_run(tmp_path / "none", 0.9, [], ranks=[2, 4]))
    assert nothing.warnings[0].startswith("the sweep is not finished: 2 trial(s) still to train (rank 2, rank 4); "
                                          "no trial is recorded yet (")
    seeds = build_report(_run(tmp_path / "seeds", 0.9, [(2, 0.5), (4, 0.8)], seeds=[0, 1]))
    assert "2 trial(s) still to train (rank 2 seed 1, rank 4 seed 1)" in seeds.warnings[0]
    # An adaptive search asks for its coarse round first (2, 7, 23, 76, 256), then where the fit needs ranks.
    adaptive = build_report(_run(tmp_path / "adaptive", 0.9, [(2, 0.5), (256, 0.9)], search="adaptive"))
    assert "3 trial(s) still to train (rank 7, rank 23, rank 76)" in adaptive.warnings[0]
    coarse = [(2, 0.3), (7, 0.6), (23, 0.8), (76, 0.88), (256, 0.9)]  # 85% of 0.9 = 0.765: crossed in (7, 23)
    refined = build_report(_run(tmp_path / "coarse", 0.9, coarse, search="adaptive"))
    assert "3 trial(s) still to train (rank 17, rank 34, rank 47)" in refined.warnings[0]
    finished = _run(tmp_path / "finished", 0.9, [(2, 0.5), (4, 0.8)], ranks=[2, 4])
    assert build_report(finished).warnings == ()


def test_a_run_on_data_cut_to_a_few_batches_is_flagged(tmp_path):
    cut = build_report(_run(tmp_path / "cut", 0.9, [(2, 0.5), (4, 0.8)], limit_batches=3))
    assert len(cut.warnings) == 1 and "cut to 3 batch(es)" in cut.warnings[0]
    assert "measure nothing" in cut.warnings[0]


def test_warnings_are_in_summary_json_and_printed_after_the_report(tmp_path, capsys):
    run = _run(tmp_path / "run", 0.15, [(2, 0.1), (4, 0.17)])
    report = build_report(run)
    write_report(run, report)
    assert json.loads((run.path / "summary.json").read_text())["warnings"] == list(report.warnings)
    assert len(report.warnings) == 2  # near chance, and rank 4 beats it
    assert main(["report", str(run.path)]) == 0
    out = capsys.readouterr().out
    assert all(line in " ".join(out.split()) for line in warning_lines(report))
    assert out.index("warning:") > out.index("effective")


def test_a_teacher_at_zero_accuracy_reports_without_an_analysis(tmp_path, make_run):
    from effrank_bench.report import build_report

    run = make_run(tmp_path / "run", [(2, 0, 0.1), (4, 0, 0.2)], teacher_accuracy=0.0)
    teacher = json.loads(run.teacher_info.read_text())
    run.teacher_info.write_text(json.dumps(teacher | {"num_classes": 10}))  # so that chance is known
    report = build_report(run)
    assert report.analysis is None and "teacher's test accuracy is 0" in report.note
    assert [row.normalized for row in report.rows] == [None, None, None]  # the teacher's 0/0 too, not 1.000
    assert report.seeds == (0,)  # its students were trained, with seed 0, whatever they are normalized by
    assert not [w for w in report.warnings if "near chance" in w]  # the note says it once
    # A region and a curve of an earlier report (another teacher) would contradict these tables: removed.
    for name in ("region.csv", "curve.png"):
        (run.path / name).write_text("of an earlier report")
    assert [p.name for p in write_report(run, report)] == ["summary.json", "summary.csv", "summary.md"]
    assert not (run.path / "region.csv").exists() and not (run.path / "curve.png").exists()
