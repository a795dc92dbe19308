"""The teacher's spectrum: the `spectrum` command, the copy a run keeps, calibration of every student,
and the spectral estimates in reports and comparisons."""
from __future__ import annotations

import csv
import dataclasses
import json
import shutil
import statistics

import pytest
from safetensors.torch import load_file, save_file

from effrank_bench import teacher_spectrum
from effrank_bench.compare import CSV_FIELDS, compare_runs, render_comparison, write_comparison
from effrank_bench.records import SpectralEstimates
from effrank_bench.report import build_report, write_report
from effrank_bench.setup import prepare
from effrank_bench.store import RunDir
from effrank_bench.sweep import run_sweep
from effrank_bench.teacher import obtain_teacher
from effrank_bench.teacher_spectrum import CachedSpectrum, ModelSpectrum, model_spectrum, obtain_spectrum

PNG = b"\x89PNG\r\n\x1a\n"
SAMPLES = 16


@pytest.fixture(scope="module")
def spectrum_command(run_cli, tiny, tmp_path_factory):
    """`spectrum --json --out DIR` on the tiny teacher (trained once here, then cached), from an empty folder,
    with plots, and a rank no layer of micro_vit has: a run's sweep options are taken and unused."""
    folder = tmp_path_factory.mktemp("spectrum")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)  # the default run directory lies under it, and is never written
        code, out, err = run_cli("spectrum", *tiny.args(plot=True, ranks=(1000,)), "--samples", SAMPLES, "--json",
                                 "--out", folder / "out")
    assert code == 0, err
    return json.loads(out), folder / "out"


def test_every_weight_and_branch_rank_lies_between_1_and_its_width(spectrum_command):
    data, _ = spectrum_command
    weights, features = data["weights"], data["features"]
    # micro_vit's joint target: 4 blocks of a split qkv (3 matrices), proj, fc1 and fc2.
    assert len(weights) == 4 * 6
    assert {"blocks.0.attn.qkv.q", "blocks.0.attn.qkv.k", "blocks.0.attn.qkv.v", "blocks.3.mlp.fc2"} <= {
        w["name"] for w in weights}
    for w in weights:
        width = min(w["shape"])
        assert all(1 <= k <= width for k in w["energy_ranks"].values())
        assert w["energy_ranks"]["0.9"] <= w["energy_ranks"]["0.95"] <= w["energy_ranks"]["0.99"]
        assert 1 <= w["stable_rank"] <= w["effective_rank"] <= width
    assert len(features) == 8  # an attention and an MLP branch per block
    for f in features:
        assert f["inputs"] == SAMPLES
        assert 1 <= f["input_rank_min"] <= f["input_rank_mean"] <= f["input_rank_max"] <= f["channels"]
        assert 1 <= f["pooled_rank"] <= f["channels"] and 0 <= f["rotation_deg"] <= 90
    # The estimates a run keeps are the medians over layers.
    estimates = data["estimates"]
    assert estimates["samples"] == SAMPLES
    assert estimates["weight_r95"] == statistics.median(w["energy_ranks"]["0.95"] for w in weights)
    assert estimates["feature_r99"] == statistics.median(f["pooled_rank"] for f in features)


def test_out_holds_the_same_json_a_csv_row_per_matrix_and_branch_and_plots(spectrum_command):
    data, out = spectrum_command
    assert json.loads((out / "spectrum.json").read_text()) == data
    with open(out / "spectrum.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["kind"] for r in rows] == ["weight"] * 24 + ["feature"] * 8
    assert rows[0]["r95"] == str(data["weights"][0]["energy_ranks"]["0.95"])
    for name in ("spectrum-depth.png", "spectrum-energy.png"):
        assert (out / name).read_bytes()[:8] == PNG


def test_no_plot_writes_none_and_removes_an_earlier_spectrums(spectrum_command, run_cli, tiny, tmp_path):
    _, first = spectrum_command
    out = tmp_path / "out"
    shutil.copytree(first, out)
    (out / "config.json").write_text('{"model_type": "bert"}')  # another tool's: no run directory
    code, _, err = run_cli("spectrum", *tiny.args(), "--samples", SAMPLES, "--out", out)  # tiny: --no-plot
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "spectrum.csv", "spectrum.json"]


def test_a_cached_teacher_prints_tables_and_the_estimates(spectrum_command, run_cli, tiny, tmp_path, monkeypatch):
    data, _ = spectrum_command
    monkeypatch.chdir(tmp_path)
    # Without --samples, as many inputs as the run options' --spectrum-samples: what a run measures.
    code, out, err = run_cli("spectrum", *tiny.args(spectrum_samples=SAMPLES))
    assert code == 0, err
    # The tiny recipe's grid is taken, and said to be unread; its teacher's, student and timing options choose or
    # time the teacher (a run directory of those options may hold it); --no-plot would be read with --out.
    err = " ".join(err.split())
    assert "--ranks: `spectrum` measures the teacher alone (no students, no curve) and does not read it" in err
    assert "--epochs" not in err and "--latency-repeats" not in err
    assert "--no-plot: `spectrum` draws its plots into --out DIR only, and without it writes nothing" in err
    assert "blocks.0.attn.qkv.q" in out and f"branch outputs, {SAMPLES} inputs)" in out
    estimates = data["estimates"]
    assert f"spectral estimates: weight r95 {estimates['weight_r95']:g}, feature r99 {estimates['feature_r99']:g}" in out


@pytest.mark.parametrize("argv, message", [
    (["--samples", "0"], "--samples must be at least 1, got 0"),
    (["--spectrum-samples", "0"], "--spectrum-samples 0 measures no spectrum; give --samples N (at least 1)"),
    (["--samples", "many"], "invalid int value: 'many'"),
    (["--arch", "micro_vitt"], "micro_vit"),
    (["--arch", "micro_bert", "--dataset", "digits"], "digits"),
    (["--out", "run"], "--out run is a run directory, whose spectrum.json is its teacher's: write this spectrum to a "
                       "folder of its own"),
])
def test_bad_input_exits_2_with_one_line(run_cli, tmp_path, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text("{}")
    (tmp_path / "run" / "teacher.json").write_text("{}")
    code, out, err = run_cli("spectrum", "--device", "cpu", *argv)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err


@pytest.fixture(scope="module")
def tiny_run(tiny, tmp_path_factory):
    return run_sweep(tiny.config(tmp_path_factory.mktemp("run") / "run", spectrum_samples=16))


def test_every_student_and_the_teacher_record_their_calibration(tiny_run):
    records = tiny_run.records()
    assert [r.status for r in records] == ["ok", "ok"]
    for record in records + [tiny_run.teacher()]:
        assert 0 <= record.test_ece <= 1 and record.test_nll > 0
    report = build_report(tiny_run)
    write_report(tiny_run, report)
    summary = json.loads((tiny_run.path / "summary.json").read_text())
    assert [t["ece"] for t in summary["trials"][1:]] == [r.test_ece for r in records]
    with open(tiny_run.path / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert float(rows[0]["nll"]) == tiny_run.teacher().test_nll


def test_a_run_keeps_its_teachers_spectrum_once(tiny_run, spectrum_command, monkeypatch):
    stored = tiny_run.spectrum()
    assert stored.key == tiny_run.teacher().key
    # The same teacher as the command's: its weights give the same estimate whatever the inputs.
    assert stored.weight_r95 == spectrum_command[0]["estimates"]["weight_r95"]
    assert json.loads((tiny_run.path / "summary.json").read_text())["spectrum"] == stored.model_dump()

    def recompute(*args, **kwargs):
        raise AssertionError("the stored spectrum of this teacher was computed again")

    monkeypatch.setattr("effrank_bench.sweep.obtain_spectrum", recompute)
    run_sweep(RunDir(tiny_run.path).config())  # every trial is done; the teacher and its spectrum are kept


def test_a_teachers_spectrum_is_measured_once_per_target_then_read_from_the_cache(tiny, tmp_path, monkeypatch,
                                                                                  progress_stub):
    setup = prepare(tiny.config(tmp_path / "run"))
    teacher = obtain_teacher(setup)  # from the tests' teacher cache; the spectra below go to a fresh one
    monkeypatch.setenv("EFFRANK_BENCH_CACHE", str(tmp_path / "cache"))
    measured = []
    monkeypatch.setattr(teacher_spectrum, "model_spectrum",
                        lambda *args: measured.append(args[0].config.target) or model_spectrum(*args))
    notes = progress_stub()
    first = obtain_spectrum(setup, teacher, 8, notes)
    again = obtain_spectrum(setup, teacher, 8, notes)  # another loss or rank grid: the same teacher and target
    assert measured == ["joint"] and again == first  # every measure read back as it was measured
    path = CachedSpectrum.of(setup, teacher, 8).path
    assert notes.notes == ["the teacher's spectrum: its weights, and its features on 8 test inputs",
                           f"the teacher's spectrum: from the cache ({path}; delete it to measure it again)"]
    assert obtain_spectrum(setup, teacher, 4).samples == 4  # other inputs: measured
    mlp = prepare(tiny.config(tmp_path / "mlp", target="mlp"))
    assert len(obtain_spectrum(mlp, teacher, 8).weights) == 8  # another target: its own layers, measured
    assert measured == ["joint", "joint", "mlp"]
    path.write_text("{")  # torn: measured again and written over
    assert obtain_spectrum(setup, teacher, 8) == first and measured[-1] == "joint" and len(measured) == 4
    assert ModelSpectrum.from_dict(json.loads(path.read_text())) == first
    # A sweep of another loss, rank grid or seeds reads this entry; another split of a fused qkv does not.
    for changes, same in ((dict(loss="kd", ranks=(8,), seeds=(1,)), True), (dict(qkv="fused"), False)):
        other = prepare(tiny.config(tmp_path / "other", **changes))
        assert (CachedSpectrum.of(other, teacher, 8).path == path) is same
    # Other weights under the same teacher key (trained again, or another machine's): measured anew.
    state = load_file(teacher.weights)
    state["blocks.0.mlp.fc1.weight"] = state["blocks.0.mlp.fc1.weight"] * 2
    save_file(state, tmp_path / "retrained.safetensors")
    retrained = dataclasses.replace(teacher, weights=tmp_path / "retrained.safetensors")
    assert CachedSpectrum.of(setup, retrained, 8).path != path
    obtain_spectrum(setup, retrained, 8)
    assert len(measured) == 5
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("EFFRANK_BENCH_CACHE", str(tmp_path / "file"))  # a cache that cannot be written
    notes = progress_stub()
    assert obtain_spectrum(setup, teacher, 8, notes) == first  # measured all the same, and said
    assert notes.notes[-1].startswith(f"[yellow]the teacher's spectrum is not cached: cannot create the folder "
                                      f"{tmp_path / 'file' / 'spectra'}: ")


def with_spectrum(run: RunDir, weight_r95: float, feature_r99: float) -> RunDir:
    """Give a hand-made run directory its teacher's spectral estimates, as a run stores them."""
    estimates = SpectralEstimates(key="k", samples=512, weight_r95=weight_r95, feature_r99=feature_r99)
    run.spectrum_path.write_text(json.dumps({"estimates": estimates.model_dump()}))
    return run


def ramp(saturation: int) -> list[tuple[int, int, float]]:
    """Accuracy rising linearly to the teacher's at ``saturation``: it reaches 95% at rank 0.95 × saturation."""
    return [(r, 0, min(r / saturation, 1.0)) for r in range(1, 65)]


@pytest.fixture
def three_runs(make_run, tmp_path):
    """Distilled r95 at 19, 38 and 57; weight r95 in the same order, feature r99 not."""
    return [with_spectrum(make_run(tmp_path / name, ramp(saturation), teacher_accuracy=1.0, width=64), w, f).path
            for name, saturation, w, f in (("a", 20, 10, 30), ("b", 40, 20, 10), ("c", 60, 30, 20))]


def test_the_spearman_correlation_of_three_runs(three_runs, tmp_path, run_cli):
    code, out, _ = run_cli("compare", *three_runs)
    assert code == 0 and "weight r95: Spearman ρ = 1.00 (n = 3, p = 0.33)" in out
    comparison = compare_runs(three_runs)
    assert [run.distilled_high for run in comparison.runs] == pytest.approx([19, 38, 57])
    weight, feature = comparison.to_dict()["spectral_correlation"]
    assert weight["estimate"] == "weight r95" and weight["n"] == 3 and weight["rho"] == pytest.approx(1.0)
    # Feature ranks (3, 1, 2) against (1, 2, 3): Σd² = 6, ρ = 1 − 6·6 / (3·(9 − 1)) = −0.5.
    assert feature["n"] == 3 and feature["rho"] == pytest.approx(-0.5)
    # Exact over the 3! pairings: |ρ| = 1 for 2 of 6 (scipy's t approximation said 0), |ρ| ≥ 0.5 for all 6.
    assert (weight["p_value"], feature["p_value"]) == (pytest.approx(1 / 3), pytest.approx(1.0))
    assert not comparison.notes
    paths = write_comparison(comparison, tmp_path / "out")
    assert paths[-1].name == "comparison-spectra.png" and paths[-1].read_bytes()[:8] == PNG
    markdown = paths[2].read_text()
    assert "| knee | weight r95 | feature r99 |" in markdown and "Spearman ρ = 1.00 (n = 3, p = 0.33)" in markdown


def test_a_high_crossing_below_the_first_rank_is_noted_as_ranked_at_that_rank(three_runs, make_run, tmp_path):
    # 95% of the teacher from rank 4 on, the first measured: the crossing is only known to be at most 4.
    early = with_spectrum(make_run(tmp_path / "early", [(r, 0, 1.0) for r in range(4, 65)], teacher_accuracy=1.0,
                                   width=64), 5, 5).path
    comparison = compare_runs([*three_runs, early])
    (weight, _) = comparison.correlations()
    assert weight.n == 4 and ("early", 5, 4.0) in weight.points
    assert ("early: the high crossing is at or below the first rank measured (≤), and the rank correlations take "
            "it as that rank") in comparison.notes
    assert not any("high crossing" in note for note in compare_runs(three_runs).notes)


def test_the_p_value_is_exact_up_to_8_runs_and_scipys_approximation_past_it():
    from scipy.stats import spearmanr

    from effrank_bench.compare import EXACT_P_UP_TO, spearman_p

    # 4 points in order: |ρ| = 1 for 2 of the 24 pairings; 8 in order: 2 of 40,320.
    assert spearman_p([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(2 / 24)
    assert spearman_p(range(8), range(8)) == pytest.approx(2 / 40320)
    x, y = list(range(EXACT_P_UP_TO + 1)), [0, 2, 1, 3, 5, 4, 6, 8, 7]
    assert spearman_p(x, y) == spearmanr(x, y).pvalue


def test_report_and_compare_carry_the_spectral_columns(three_runs, tmp_path):
    comparison = compare_runs(three_runs[:2])
    assert comparison.to_dict()["runs"][0]["spectrum"]["weight_r95"] == 10
    assert [c.rho for c in comparison.correlations()] == [None, None]
    assert any("2 run(s) have both, a rank correlation needs 3" in note for note in comparison.notes)
    headers = [column.header for column in render_comparison(comparison).columns]
    assert "W r95" in headers and "F r99" in headers
    write_comparison(comparison, tmp_path / "out")
    with open(tmp_path / "out" / "comparison.csv") as f:
        rows = list(csv.DictReader(f))
    assert {"weight_r95", "feature_r99"} <= set(CSV_FIELDS)
    assert [(r["weight_r95"], r["feature_r99"]) for r in rows] == [("10.0", "30.0"), ("20.0", "10.0")]

    run = RunDir(three_runs[0])
    report = build_report(run)
    assert report.spectrum.weight_r95 == 10
    names = [p.name for p in write_report(run, report)]
    assert "curve.png" in names
    assert "median weight r95 10, median pooled feature r99 30" in (run.path / "summary.md").read_text()
