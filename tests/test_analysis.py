"""Region, knee, monotone fit and CSV reading of effrank_bench.analysis, checked against hand-computed numbers."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from effrank_bench.analysis import (CurveAnalysis, analyze_curve, check_same_units, make_monotone, parse_thresholds,
                                    read_curve_csv, read_off)
from effrank_bench.cli import main
from effrank_bench.errors import AnalysisError
from effrank_bench.report import knee_notes, region_lines

RANKS_1_TO_100 = np.arange(1, 101, dtype=float)
PAPER_GRID = np.array([2, 4, 8, 16, 24, 32, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256], dtype=float)


def linear_curve() -> CurveAnalysis:
    """a(r) = r/100 at ranks 1..100; PCHIP reproduces straight data exactly."""
    return analyze_curve(RANKS_1_TO_100, RANKS_1_TO_100 / 100, teacher_accuracy=1.0)


# --- region ---------------------------------------------------------------------------------


def test_linear_curve_crosses_at_85_and_95():
    region = linear_curve().region
    assert region.low == pytest.approx(85, abs=1e-9)
    assert region.high == pytest.approx(95, abs=1e-9)
    assert region.band == (85, 95)
    assert region.thresholds == (0.85, 0.95)


def test_fit_of_linear_curve_is_the_line_and_nan_outside_measured_range():
    fit = linear_curve().fit([1.0, 12.5, 99.25, 100.0, 0.5, 101.0])
    assert fit[:4] == pytest.approx([0.01, 0.125, 0.9925, 1.0], abs=1e-12)
    assert np.isnan(fit[4:]).all()


def test_crossing_between_two_points_solves_fit_equal_threshold():
    # Straight 0.1/rank slope up to (1, 0.5) ... then a jump to 0.9 at rank 2, then flat.
    ranks = [0.25, 0.5, 1.0, 2.0, 3.0, 4.0]
    accuracies = [0.425, 0.45, 0.5, 0.9, 0.9, 0.9]
    curve = analyze_curve(ranks, accuracies, teacher_accuracy=1.0, thresholds=(0.85, 0.9))
    low = curve.region.low
    assert 1 < low < 2
    assert float(curve.fit(low)) == pytest.approx(0.85, abs=1e-9)
    # The data point at rank 2 sits exactly on the threshold: the crossing is that rank, not an ulp below.
    assert curve.region.high == 2.0
    assert curve.region.band == (2, 2)
    assert curve.region.low_censored is None and curve.region.high_censored is None


def test_crossing_is_where_the_fit_first_reaches_the_threshold_to_float_resolution():
    rng = np.random.default_rng(0)
    for _ in range(40):
        noisy = np.clip(1 - np.exp(-PAPER_GRID / 30) + rng.normal(0, 0.05, PAPER_GRID.size), 0, None)
        curve = analyze_curve(PAPER_GRID, noisy, 1.0)
        low = curve.region.low
        if low is None or curve.region.low_censored:
            continue
        assert float(curve.fit(low)) == pytest.approx(0.85, abs=1e-12)
        assert float(curve.fit(low * (1 - 1e-9))) < 0.85 < float(curve.fit(low * (1 + 1e-9)))


def test_dip_after_reaching_threshold_does_not_move_crossing():
    ranks = [1, 2, 3, 4, 5, 6]
    steady = analyze_curve(ranks, [0.5, 0.96, 0.97, 0.98, 0.985, 0.99], 1.0)
    # PCHIP slopes at a node depend on both neighbours, so a dip two intervals past the
    # crossing interval [1, 2] cannot reach it: the region is identical.
    dipped = analyze_curve(ranks, [0.5, 0.96, 0.97, 0.70, 0.985, 0.99], 1.0)
    assert dipped.region == steady.region
    assert 1 < dipped.region.low < dipped.region.high < 2
    # The measured dip is kept as measured; only the fitted (monotone) values hide it.
    assert dipped.normalized[3] == 0.70
    assert dipped.monotone == (0.5, 0.96, 0.97, 0.97, 0.985, 0.99)


def test_dip_is_fitted_as_if_measured_at_the_running_max():
    ranks = [1, 2, 3, 4]
    dipped = analyze_curve(ranks, [0.5, 0.96, 0.70, 0.99], 1.0)
    flat = analyze_curve(ranks, [0.5, 0.96, 0.96, 0.99], 1.0)
    assert dipped.region == flat.region
    assert dipped.knee == flat.knee


def test_early_spike_counts_from_its_rank_on():
    # Running max: once a rank-2 student reached 0.9, every larger rank is credited with 0.9.
    curve = analyze_curve([1, 2, 3, 4], [0.5, 0.9, 0.6, 0.7], 1.0)
    assert curve.monotone == (0.5, 0.9, 0.9, 0.9)
    assert 1 < curve.region.low < 2
    assert curve.region.high is None


def test_threshold_never_reached_is_right_censored_with_no_band():
    region = analyze_curve([1, 2, 4], [0.5, 0.8, 0.9], 1.0).region
    assert 2 < region.low < 4 and region.low_censored is None
    assert region.high is None and region.high_censored == "right"
    assert region.band is None and region.band_text() is None


def test_threshold_met_by_the_first_point_is_left_censored_at_the_first_rank():
    # No extrapolation below rank 8: the curve reaches 95% at rank 8 or earlier, not at 8.
    curve = analyze_curve([8, 16, 32], [0.96, 0.97, 0.98], 1.0)
    region = curve.region
    assert (region.low, region.high, region.band) == (8.0, 8.0, (8, 8))
    assert region.low_censored == region.high_censored == "left"
    assert region.band_text() == "[≤8, ≤8]"
    assert region_lines(curve, None)[0] == "effective-rank region: 85% at rank ≤8.00, 95% at rank ≤8.00 → band [≤8, ≤8]"


def test_only_the_low_threshold_met_at_the_first_rank_shows_in_the_band():
    # 0.9 at rank 2 already meets 85%; 95% is crossed between ranks 4 (0.93) and 8 (0.99).
    region = analyze_curve([2, 4, 8], [0.9, 0.93, 0.99], 1.0).region
    assert (region.low, region.low_censored) == (2.0, "left")
    assert 4 < region.high < 8 and region.high_censored is None
    assert region.band_text() == f"[≤2, {math.ceil(region.high)}]"


def test_duplicates_of_a_rank_are_averaged():
    curve = analyze_curve([2, 1, 2, 4], [0.8, 0.4, 0.9, 1.0], 1.0)
    assert curve.ranks == (1.0, 2.0, 4.0)
    assert curve.normalized == pytest.approx((0.4, 0.85, 1.0))


def test_percent_and_fraction_give_the_same_region():
    ranks = [1, 2, 4, 8, 16, 32]
    fraction = [0.30, 0.55, 0.72, 0.86, 0.91, 0.93]
    in_fraction = analyze_curve(ranks, fraction, teacher_accuracy=0.94)
    in_percent = analyze_curve(ranks, [100 * a for a in fraction], teacher_accuracy=94.0)
    assert in_percent.region.low == pytest.approx(in_fraction.region.low, rel=1e-12)
    assert in_percent.region.high == pytest.approx(in_fraction.region.high, rel=1e-12)
    assert in_percent.region.band == in_fraction.region.band


# --- monotone: running max or isotonic --------------------------------------------------------


def test_isotonic_pools_a_dip_where_running_max_keeps_the_peak():
    # Running max credits rank 3 with rank 2's 0.9; isotonic least squares pools 0.9 and 0.7 into 0.8.
    accuracies = [0.5, 0.9, 0.7, 0.95]
    running = analyze_curve([1, 2, 3, 4], accuracies, 1.0)
    isotonic = analyze_curve([1, 2, 3, 4], accuracies, 1.0, monotone="isotonic")
    assert running.monotone == pytest.approx((0.5, 0.9, 0.9, 0.95), abs=1e-15)
    assert isotonic.monotone == pytest.approx((0.5, 0.8, 0.8, 0.95), abs=1e-15)
    assert running.monotone_mode == "running-max" and isotonic.monotone_mode == "isotonic"
    assert isotonic.normalized == running.normalized  # the measured points are kept as measured
    # 85%: running max crosses inside [1, 2] (0.5 -> 0.9); isotonic only inside [3, 4] (0.8 -> 0.95).
    assert 1 < running.region.low < 2 and 3 < isotonic.region.low < 4
    assert isotonic.to_dict()["monotone"] == "isotonic"


def test_isotonic_weighs_each_rank_by_its_number_of_points():
    # Rank 3 is measured twice (0.6, 0.8 -> 0.7, weight 2): pooled with rank 2's 0.9 (weight 1),
    # the least-squares level is (0.9 + 2 * 0.7) / 3.
    curve = analyze_curve([1, 2, 3, 3], [0.5, 0.9, 0.6, 0.8], 1.0, monotone="isotonic")
    assert curve.monotone == pytest.approx((0.5, 2.3 / 3, 2.3 / 3), abs=1e-15)


def test_a_non_decreasing_curve_is_the_same_under_both_modes():
    ranks, accuracies = [1, 2, 4, 8], [0.3, 0.6, 0.9, 0.97]
    running, isotonic = (analyze_curve(ranks, accuracies, 1.0, monotone=m) for m in ("running-max", "isotonic"))
    assert running.monotone == isotonic.monotone == tuple(accuracies)
    assert running.region == isotonic.region and running.knee == isotonic.knee


# --- many curves at once ----------------------------------------------------------------------


@pytest.mark.parametrize("axis", ["linear", "log2"])
@pytest.mark.parametrize("mode", ["running-max", "isotonic"])
def test_curves_read_off_together_are_read_as_each_alone(axis, mode):
    # The bootstrap reads its resamples as columns of one array: no column may see another.
    rng = np.random.default_rng(0)
    curves = np.clip(1 - np.exp(-PAPER_GRID / 30)[:, None] + rng.normal(0, 0.05, (PAPER_GRID.size, 20)), 0, None)
    monotone = make_monotone(curves, np.ones(PAPER_GRID.size), mode)
    read = read_off(PAPER_GRID, monotone, (0.85, 0.95), axis)
    (low, low_side), (high, high_side) = read.crossings
    for j in range(curves.shape[1]):
        single = analyze_curve(PAPER_GRID, curves[:, j], 1.0, knee_axis=axis, monotone=mode)
        assert single.monotone == tuple(monotone[:, j])
        assert (single.region.low, single.region.low_censored) == (
            None if low_side[j] == 1 else low[j], {-1: "left", 0: None, 1: "right"}[low_side[j]])
        assert single.region.high == (None if high_side[j] == 1 else high[j])
        assert single.knee == read.knee[j]


def test_a_straight_and_a_flat_curve_read_together_take_the_plateau_knee():
    ranks = np.array([1.0, 2.0, 3.0, 4.0])
    curves = np.stack([ranks / 4, np.full(4, 0.7)], axis=1)
    assert read_off(ranks, curves, (0.85, 0.95), "linear").knee.tolist() == [4.0, 1.0]


# --- knee -----------------------------------------------------------------------------------


def test_knee_of_ramp_then_plateau_is_just_below_the_corner():
    # a(r) = min(r/20, 1) at ranks 1..100. On [19, 20] PCHIP has end slopes 0.05 and 0, so with
    # t = r - 19 its slope is 0.05 (1 + 3t)(1 - t); the distance to the secant (slope 0.95/99)
    # peaks where the two slopes are equal: (1 + 3t)(1 - t) = k, k = 0.95 / 99 / 0.05.
    k = 0.95 / 99 / 0.05
    expected = 19 + (1 + math.sqrt(1 + 3 * (1 - k))) / 3
    knee = analyze_curve(RANKS_1_TO_100, np.minimum(RANKS_1_TO_100 / 20, 1), 1.0).knee
    assert knee == pytest.approx(20, abs=0.06)
    assert knee == pytest.approx(expected, abs=1e-6)


def test_log2_knee_of_a_straight_line_is_the_logarithmic_mean():
    # Fit a = s r over u = log2 r: the distance to the secant peaks where da/du = s r ln 2 equals
    # the secant slope s (r1 - r0) / log2(r1 / r0), i.e. at r = (r1 - r0) / ln(r1 / r0).
    curve = analyze_curve(RANKS_1_TO_100, RANKS_1_TO_100 / 100, 1.0, knee_axis="log2")
    assert curve.knee == pytest.approx(99 / math.log(100), abs=1e-5)
    assert curve.knee_axis == "log2"


def test_log2_and_linear_axes_pick_different_corners():
    # Piecewise-linear through (1, 0), (4, 0.5), (64, 0.9), (256, 1). Distance to the secant is
    # largest at a corner (each segment is straight in r, convex in log2 r).
    # Linear axis: 0.5 - 3/255 = 0.49 at r=4 < 0.9 - 63/255 = 0.65 at r=64 -> knee near 64.
    # log2 axis:   0.5 - 2/8  = 0.25 at r=4 > 0.9 - 6/8    = 0.15 at r=64 -> knee near 4.
    ranks = np.arange(1, 257, dtype=float)
    accuracies = np.interp(ranks, [1, 4, 64, 256], [0, 0.5, 0.9, 1.0])
    assert 63 < analyze_curve(ranks, accuracies, 1.0).knee <= 64
    assert 3 < analyze_curve(ranks, accuracies, 1.0, knee_axis="log2").knee <= 4


@pytest.mark.parametrize("knee_axis", ["linear", "log2"])
@pytest.mark.parametrize("scale", [0.01, 0.37, 1.0, 100.0])
def test_knee_does_not_depend_on_teacher_accuracy_scale(knee_axis, scale):
    ranks = [1, 2, 3, 5, 8, 13, 21, 34, 55, 89]
    accuracies = [0.2, 0.35, 0.5, 0.66, 0.78, 0.86, 0.9, 0.92, 0.93, 0.935]
    reference = analyze_curve(ranks, accuracies, 1.0, knee_axis=knee_axis).knee
    scaled = analyze_curve(ranks, accuracies, 1.0 / scale, knee_axis=knee_axis).knee
    assert scaled == pytest.approx(reference, rel=1e-6)


def test_knee_without_a_bend_is_the_first_rank_at_the_maximum():
    # Convention: no bend to find -> first rank where the fit reaches its maximum.
    assert linear_curve().knee == 100.0  # rising straight line: never stopped paying off
    assert analyze_curve([1, 2, 3], [0.7, 0.7, 0.7], 1.0).knee == 1.0  # flat: saturated at once
    assert analyze_curve([4, 8], [0.5, 0.9], 1.0).knee == 8.0  # two points: no shape
    assert analyze_curve([4, 8], [0.5, 0.9], 1.0, knee_axis="log2").knee == 8.0
    assert analyze_curve([4, 8], [0.9, 0.5], 1.0).knee == 4.0  # running max makes it flat


@pytest.mark.parametrize(("accuracies", "more"), [
    ([0.3, 0.3, 0.3], ": larger ranks, or a longer recipe, would show where it rises"),
    ([0.9, 0.9, 0.9], ""),
    ([1.0, 1.0, 1.0], ": smaller ranks would show where it falls"),
    ([1.0, 0.8, 0.9], ": smaller ranks would show where it falls"),  # flat once made monotone
])
def test_a_flat_curve_is_said_to_have_no_knee(accuracies, more):
    curve = analyze_curve([2, 4, 8], accuracies, 1.0)
    assert curve.flat and curve.to_dict()["flat"] is True and curve.knee == 2.0
    assert region_lines(curve, None)[2] == (f"note: the curve is flat, at {accuracies[0]:.2f} of the teacher from "
                                            f"rank 2 on: it has no knee (the one shown is its first rank){more}")
    rising = analyze_curve([2, 4, 8], [0.3, 0.5, 0.55], 1.0)
    assert not rising.flat and len(region_lines(rising, None)) == 2


def test_a_curve_flat_but_for_the_round_off_of_means_over_seeds_has_its_first_rank_as_knee():
    # Three seeds' accuracies shuffled between ranks: the means differ in the last bit, which the knee's search
    # would otherwise read as a bend (rank 2.75, "bends upward").
    a, b, c = 0.7083, 0.6814, 0.183
    curve = analyze_curve([2] * 3 + [4] * 3 + [8] * 3 + [16] * 3, [a, b, c, c, b, a, b, c, a, c, a, b], 0.9)
    assert curve.monotone[0] != curve.monotone[-1] and curve.flat
    assert curve.knee == 2.0 and not curve.knee_bends_up
    assert analyze_curve([2, 4], [0.5, 0.5 + 1e-16], 1.0).knee == 2.0  # two ranks: the first, too


def test_a_knee_where_the_curve_bends_upward_is_told_apart():
    rises_late = analyze_curve([1, 2, 4, 8, 16, 32], [0.1, 0.1, 0.12, 0.15, 0.3, 0.8], 1.0)
    assert rises_late.fit(rises_late.knee) < 0.1 + 0.7 * (rises_late.knee - 1) / 31  # below the secant
    assert rises_late.knee_bends_up
    assert not analyze_curve([1, 2, 4, 8, 16, 32], [0.3, 0.6, 0.85, 0.95, 0.98, 0.99], 1.0).knee_bends_up
    assert not linear_curve().knee_bends_up and not analyze_curve([4, 8], [0.5, 0.9], 1.0).knee_bends_up
    # A straight line in rank bends upward on the log2 axis.
    assert analyze_curve(RANKS_1_TO_100, RANKS_1_TO_100 / 100, 1.0, knee_axis="log2").knee_bends_up


# --- validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ranks": [1, 1], "accuracies": [0.5, 0.6]}, "at least 2 distinct ranks"),
        ({"ranks": [1], "accuracies": [0.5]}, "at least 2 distinct ranks"),
        ({"ranks": [1, 2], "accuracies": [0.5]}, "must pair up"),
        ({"ranks": [0, 2], "accuracies": [0.5, 0.6]}, "ranks must be positive"),
        ({"ranks": [-1, 2], "accuracies": [0.5, 0.6]}, "ranks must be positive"),
        ({"ranks": [1, math.inf], "accuracies": [0.5, 0.6]}, "ranks must be finite"),
        ({"ranks": [1, 2], "accuracies": [0.5, math.nan]}, "accuracies must be finite"),
        ({"ranks": [1, 2], "accuracies": [-0.1, 0.6]}, "accuracies must be >= 0"),
        ({"ranks": [1, "x"], "accuracies": [0.5, 0.6]}, "ranks must be numbers"),
        ({"teacher_accuracy": 0.0}, "teacher accuracy must be a positive number"),
        ({"teacher_accuracy": math.nan}, "teacher accuracy must be a positive number"),
        ({"thresholds": (0.95, 0.85)}, "0 < t0 < t1"),
        ({"thresholds": (0.0, 0.85)}, "0 < t0 < t1"),
        ({"thresholds": (0.9,)}, "two numbers"),
        ({"knee_axis": "log10"}, "knee axis must be one of linear, log2"),
        ({"monotone": "cummax"}, "monotone must be one of running-max, isotonic"),
    ],
)
def test_invalid_input_raises_analysis_error(kwargs, message):
    arguments = {"ranks": [1, 2, 3], "accuracies": [0.5, 0.8, 0.9], "teacher_accuracy": 1.0, **kwargs}
    with pytest.raises(AnalysisError, match=message) as raised:
        analyze_curve(**arguments)
    assert "\n" not in str(raised.value)


def test_parse_thresholds():
    assert parse_thresholds("0.8,0.9") == (0.8, 0.9)
    assert parse_thresholds(" 0.9 , 1.02 ") == (0.9, 1.02)  # above 1: student beats teacher


@pytest.mark.parametrize("text", ["0.9", "0.8,0.9,0.95", "a,0.9", "0.9,0.8", "0,0.9", "0.8,0.8", "nan,0.9"])
def test_parse_thresholds_rejects(text):
    with pytest.raises(AnalysisError, match="thresholds"):
        parse_thresholds(text)


# --- CSV ------------------------------------------------------------------------------------


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "curve.csv"
    path.write_text(text)
    return path


def test_read_curve_csv_good_file(tmp_path):
    text = " seed , rank ,accuracy , loss\n0, 4, 0.61 ,1.2\n\n0,8,0.75,0.9\n1, 16 , 0.8, 0.7\n"
    path = write(tmp_path, text)
    assert read_curve_csv(path) == ([4.0, 8.0, 16.0], [0.61, 0.75, 0.8], None)  # no teacher row


def test_read_curve_csv_refuses_a_second_teacher_row(tmp_path):
    path = write(tmp_path, "rank,accuracy,status\n0,0.9,teacher\n2,0.5,ok\n4,0.8,ok\n0,0.95,teacher\n")
    with pytest.raises(AnalysisError, match=r"curve\.csv, line 5: a second teacher row \(the first is on line 2\): "
                                            r"keep one$"):
        read_curve_csv(path)


def test_read_curve_csv_missing_file(tmp_path):
    with pytest.raises(AnalysisError, match=r"nope\.csv: curve file not found"):
        read_curve_csv(tmp_path / "nope.csv")


def test_read_curve_csv_missing_column_names_it_and_lists_header(tmp_path):
    path = write(tmp_path, "rank,acc\n1,0.5\n2,0.6\n")
    expected = r"curve\.csv: missing column 'accuracy' \(header has: rank, acc\)"
    with pytest.raises(AnalysisError, match=expected):
        read_curve_csv(path)


def test_read_curve_csv_non_numeric_value_names_line(tmp_path):
    path = write(tmp_path, "rank,accuracy\n1,0.5\n2,high\n")
    with pytest.raises(AnalysisError, match=r"curve\.csv, line 3: 'accuracy' value 'high' is not a number"):
        read_curve_csv(path)


def test_read_curve_csv_non_finite_and_missing_values_name_line(tmp_path):
    with pytest.raises(AnalysisError, match=r"line 2: 'rank' value 'inf' is not a finite number"):
        read_curve_csv(write(tmp_path, "rank,accuracy\ninf,0.5\n2,0.6\n"))
    with pytest.raises(AnalysisError, match=r"line 3: missing 'accuracy' value"):
        read_curve_csv(write(tmp_path, "rank,accuracy\n1,0.5\n2\n"))


def test_read_curve_csv_needs_two_points(tmp_path):
    with pytest.raises(AnalysisError, match=r"curve\.csv: has 1 data row\(s\), a curve needs at least 2$"):
        read_curve_csv(write(tmp_path, "rank,accuracy\n1,0.5\n"))
    with pytest.raises(AnalysisError, match="file is empty"):
        read_curve_csv(write(tmp_path, ""))


# --- serialization --------------------------------------------------------------------------


def test_to_dict_is_json_ready_with_exact_keys():
    data = json.loads(json.dumps(linear_curve().to_dict()))
    assert set(data) == {"teacher_accuracy", "region", "knee", "knee_axis", "knee_bends_up", "flat", "no_bend",
                         "monotone", "points"}
    assert data["region"] == {"low": 85.0, "high": 95.0, "band": [85, 95], "thresholds": [0.85, 0.95],
                              "low_censored": None, "high_censored": None}
    assert data["monotone"] == "running-max"
    assert data["teacher_accuracy"] == 1.0
    assert data["knee"] == 100.0
    assert data["knee_axis"] == "linear" and data["knee_bends_up"] is False
    assert data["no_bend"] is True  # a straight line: its knee is its top, the last rank
    assert len(data["points"]) == 100
    assert data["points"][0] == {"rank": 1.0, "normalized": 0.01}


def test_to_dict_band_is_none_when_a_threshold_is_missed():
    data = analyze_curve([1, 2], [0.5, 0.9], 1.0).to_dict()
    assert data["region"]["band"] is None
    assert data["region"]["high"] is None and data["region"]["high_censored"] == "right"
    json.dumps(data)


# --- units ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("teacher", "accuracies", "message"), [
    (94.0, [0.3, 0.8, 0.93], "looks like a percentage"),
    (0.94, [30.0, 80.0, 93.0], "looks like a fraction"),
])
def test_a_teacher_and_a_curve_in_different_units_are_refused(teacher, accuracies, message):
    with pytest.raises(AnalysisError, match=message):
        check_same_units(teacher, accuracies)


@pytest.mark.parametrize(("teacher", "accuracies"), [(0.94, [0.3, 0.93]), (94.0, [30.0, 93.0]), (1.2, [0.5, 1.1])])
def test_a_teacher_and_a_curve_in_the_same_units_pass(teacher, accuracies):
    check_same_units(teacher, accuracies)


def test_the_analyze_command_exits_2_on_mixed_units(tmp_path, capsys):
    path = write(tmp_path, "rank,accuracy\n1,0.3\n2,0.8\n4,0.93\n")
    assert main(["analyze", str(path), "--teacher-acc", "94"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: teacher accuracy 94 looks like a percentage") and err.count("\n") == 1


def test_the_analyze_command_takes_the_monotone_mode(tmp_path, capsys):
    path = write(tmp_path, "rank,accuracy\n1,0.5\n2,0.9\n3,0.7\n4,0.95\n")
    assert main(["analyze", str(path), "--teacher-acc", "1", "--monotone", "isotonic", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["monotone"] == "isotonic" and 3 < data["region"]["low"] < 4


def test_a_rising_curve_without_a_bend_says_its_knee_is_only_its_top():
    line = analyze_curve([2, 4, 6, 8], [0.2, 0.4, 0.6, 0.8], 0.9)
    two = analyze_curve([8, 64], [0.5, 0.7], 0.9)
    bent = analyze_curve([2, 4, 6, 8], [0.2, 0.7, 0.8, 0.8], 0.9)
    flat = analyze_curve([2, 4, 6], [0.5, 0.5, 0.5], 0.9)
    assert (line.knee, line.no_bend, two.knee, two.no_bend) == (8.0, True, 64.0, True)
    assert not bent.no_bend and 2 < bent.knee < 8
    assert not flat.no_bend and flat.flat  # a flat curve has its own note
    assert knee_notes(line) == ["the curve rises without a bend (its points lie on one line): it has no knee (the one "
                                "shown is where it reaches its top); larger ranks would show where it levels off"]
    assert knee_notes(bent) == []
