"""The bootstrap over seeds: point estimates off the seed-mean curve, percentile intervals, the band."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest

from effrank_bench.analysis import _crossings, _knees, _pchip, analyze_curve, bootstrap_curve
from effrank_bench.errors import AnalysisError

RANKS = np.arange(1, 101, dtype=float)
PAPER_GRID = np.array([2, 4, 8, 16, 24, 32, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256], dtype=float)


def points(curves: dict[int, np.ndarray], ranks: np.ndarray = RANKS):
    """Flat (ranks, accuracies, seeds) from one accuracy curve per seed."""
    flat = [(r, a, s) for s, curve in curves.items() for r, a in zip(ranks, curve)]
    return [p[0] for p in flat], [p[1] for p in flat], [p[2] for p in flat]


def shifted_lines(crossings=(70, 80, 90), slope=0.005) -> dict[int, np.ndarray]:
    """Seed s: a straight line through (crossings[s], 0.85) exactly, so seed s crosses 0.85 there."""
    return {s: 0.85 + (RANKS - c) * slope for s, c in enumerate(crossings)}


def test_identical_seeds_collapse_every_interval_to_the_point_estimate():
    curve = np.minimum(RANKS / 20, 1.0)
    u = bootstrap_curve(*points({0: curve, 1: curve, 2: curve}), teacher_accuracy=1.0, resamples=200)
    single = analyze_curve(RANKS, curve, 1.0)
    assert u.resamples == 200 and u.seeds == (0, 1, 2)
    for estimate, value in ((u.low, single.region.low), (u.high, single.region.high), (u.knee, single.knee)):
        assert estimate.mean == pytest.approx(value, rel=1e-12)  # mean of three equal curves, up to round-off
        assert estimate.ci_low == pytest.approx(value, abs=1e-6)
        assert estimate.ci_high == pytest.approx(value, abs=1e-6)
    assert u.low.unreached == 0.0 and u.high.unreached == 0.0 and u.knee.unreached is None
    # Every resample is the same curve, so the band of fits has no width and is the fit itself.
    band = u.band
    assert np.allclose(band.low, band.high, atol=1e-12)
    assert np.allclose(band.low, single.fit(band.ranks), atol=1e-12)


def test_interval_of_a_crossing_lies_between_the_per_seed_crossings():
    # Seeds cross 0.85 at ranks 70, 80, 90 exactly; the mean line crosses at 80. Each rank of a
    # resample averages draws of those seeds, so it lies between the highest and lowest line and
    # every resampled crossing lies in [70, 90].
    u = bootstrap_curve(*points(shifted_lines()), teacher_accuracy=1.0, resamples=1000)
    assert u.low.mean == pytest.approx(80, abs=1e-9)
    # (1e-6: a mean of three draws at rank 70 may round just below 0.85.)
    assert 70 - 1e-6 <= u.low.ci_low < 80 < u.low.ci_high <= 90 + 1e-6
    # The first crossing is a minimum over ranks: one rank drawn high is enough to cross early, so the
    # interval reaches down to the earliest seed (all three draws at rank 70 are seed 0 with p = 1/27 >
    # 2.5%) but not up to the latest one (that needs every rank before 90 drawn low).
    assert u.low.ci_low == pytest.approx(70, abs=1e-6)
    assert u.low.ci_high < 85
    assert u.low.unreached == 0.0
    # 0.95 is 20 ranks past 0.85 on every line: the mean crosses at 100 and only some resamples
    # reach it by rank 100 (the lowest line ends at 0.9).
    assert u.high.mean == pytest.approx(100, abs=1e-9)
    assert 0 < u.high.unreached < 1


def test_band_of_fits_lies_between_the_lowest_and_highest_seed():
    lines = shifted_lines()
    u = bootstrap_curve(*points(lines), teacher_accuracy=1.0, resamples=300)
    band_ranks = np.array(u.band.ranks)
    measured = np.isin(band_ranks, RANKS)
    highest, lowest = lines[0], lines[2]
    assert np.all(np.array(u.band.high)[measured] <= highest + 1e-12)
    assert np.all(np.array(u.band.low)[measured] >= lowest - 1e-12)
    mean_fit = analyze_curve(*points(lines)[:2], 1.0).fit(band_ranks)
    assert np.all(np.array(u.band.low) <= mean_fit + 1e-12) and np.all(mean_fit <= np.array(u.band.high) + 1e-12)
    assert band_ranks[0] == 1 and band_ranks[-1] == 100


def test_percentiles_of_a_hand_computed_bootstrap_distribution():
    # Rank 1: one seed at 0.5 (no spread). Rank 2: seeds at 0.8 and 1.0, so a resample's mean there
    # is 0.8, 0.9 or 1.0 with probability 1/4, 1/2, 1/4. Two points: the fit is a straight line.
    #   0.8 -> 0.85 is never reached; 0.9 -> crosses at 1 + 0.35/0.4 = 1.875; 1.0 -> 1 + 0.35/0.5 = 1.7.
    u = bootstrap_curve([1, 2, 2], [0.5, 0.8, 1.0], [0, 0, 1], teacher_accuracy=1.0, resamples=4000, rng_seed=7)
    assert u.seeds_per_rank == (1, 2)
    assert u.low.mean == pytest.approx(1.875)  # off the mean curve: 0.9 at rank 2
    assert u.low.unreached == pytest.approx(0.25, abs=0.03)
    assert (u.low.ci_low, u.low.ci_high) == (pytest.approx(1.7), pytest.approx(1.875))
    # 0.95 is reached only when both draws are 1.0 (1/4 < 1/2): no interval, and the mean curve misses it.
    assert u.high.mean is None and u.high.ci_low is None and u.high.ci_high is None
    assert u.high.unreached == pytest.approx(0.75, abs=0.03)
    # Two ranks carry no bend: the knee is where the fit reaches its maximum, rank 2, in every resample.
    assert (u.knee.mean, u.knee.ci_low, u.knee.ci_high) == (2.0, 2.0, 2.0)


def test_same_rng_seed_same_result_and_another_seed_another_interval():
    args = points(shifted_lines())
    first = bootstrap_curve(*args, teacher_accuracy=1.0, resamples=250, rng_seed=3)
    assert bootstrap_curve(*args, teacher_accuracy=1.0, resamples=250, rng_seed=3) == first
    other = bootstrap_curve(*args, teacher_accuracy=1.0, resamples=250, rng_seed=4)
    assert other.low.mean == first.low.mean  # the point estimate does not depend on the draws
    assert (other.low.ci_low, other.low.ci_high) != (first.low.ci_low, first.low.ci_high)


def test_to_dict_states_the_resamples_and_is_json_ready():
    u = bootstrap_curve(*points(shifted_lines()), teacher_accuracy=1.0, resamples=123, rng_seed=5)
    data = json.loads(json.dumps(u.to_dict()))
    assert data["resamples"] == 123 and data["rng_seed"] == 5 and data["confidence"] == 0.95
    assert data["seeds"] == [0, 1, 2] and data["seeds_per_rank"]["70"] == 3
    assert set(data["low"]) == {"mean", "ci_low", "ci_high", "unreached"}
    assert data["knee"]["unreached"] is None
    assert "band" not in data
    assert len(u.to_dict(band=True)["band"]["ranks"]) == len(u.band.ranks)


def test_one_seed_per_rank_has_nothing_to_resample():
    curve = np.minimum(RANKS / 20, 1.0)
    u = bootstrap_curve(*points({4: curve}), teacher_accuracy=1.0)
    single = analyze_curve(RANKS, curve, 1.0)
    assert u.resamples == 0 and u.band is None and "one seed" in u.note
    assert (u.low.mean, u.high.mean, u.knee.mean) == (single.region.low, single.region.high, single.knee)
    assert all(e.ci_low is None and e.ci_high is None for e in (u.low, u.high, u.knee))


def test_repeated_points_of_one_seed_count_as_one_draw():
    # Seed 0 measured twice at rank 2 (0.6, 1.0 -> 0.8) and seed 1 once (0.8): every draw averages 0.8.
    u = bootstrap_curve([1, 2, 2, 2, 1], [0.5, 0.6, 1.0, 0.8, 0.5], [0, 0, 0, 1, 1], 1.0, resamples=100)
    assert u.seeds_per_rank == (2, 2)
    assert u.low.ci_low == pytest.approx(u.low.mean) == pytest.approx(u.low.ci_high)


@pytest.mark.parametrize("axis", ["linear", "log2"])
def test_each_resample_is_read_off_exactly_as_analyze_curve_reads_a_curve(axis):
    rng = np.random.default_rng(0)
    curves = np.clip(1 - np.exp(-PAPER_GRID / 30)[:, None] + rng.normal(0, 0.05, (PAPER_GRID.size, 60)), 0, None)
    monotone = np.maximum.accumulate(curves, axis=0)
    fit = _pchip(PAPER_GRID, monotone)
    crossings, knees = _crossings(PAPER_GRID, monotone, fit, 0.85), _knees(PAPER_GRID, monotone, fit, axis)
    for j in range(curves.shape[1]):
        single = analyze_curve(PAPER_GRID, curves[:, j], 1.0, knee_axis=axis)
        if single.region.low is None:
            assert np.isnan(crossings[j])
        else:
            assert crossings[j] == pytest.approx(single.region.low, abs=1e-9)
        assert knees[j] == pytest.approx(single.knee, abs=1e-4)


def test_a_straight_and_a_flat_resample_take_the_plateau_knee():
    ranks = np.array([1.0, 2.0, 3.0, 4.0])
    monotone = np.stack([ranks / 4, np.full(4, 0.7)], axis=1)
    assert _knees(ranks, monotone, _pchip(ranks, monotone), "linear").tolist() == [4.0, 1.0]


def test_a_thousand_resamples_of_the_paper_grid_take_well_under_two_seconds():
    rng = np.random.default_rng(1)
    curves = {s: np.clip(1 - np.exp(-PAPER_GRID / 30) + rng.normal(0, 0.02, PAPER_GRID.size), 0, 1) for s in range(3)}
    start = time.perf_counter()
    u = bootstrap_curve(*points(curves, PAPER_GRID), teacher_accuracy=1.0, resamples=1000)
    assert time.perf_counter() - start < 2.0
    assert u.resamples == 1000 and u.low.ci_low <= u.low.mean <= u.low.ci_high


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"seeds": [0, 1]}, "must pair up"),
    ({"seeds": [0, 0.5, 1]}, "seeds must be integers"),
    ({"resamples": 0}, "resamples must be a positive integer"),
    ({"resamples": 2.5}, "resamples must be a positive integer"),
    ({"knee_axis": "log10"}, "knee axis"),
    ({"thresholds": (0.9, 0.8)}, "0 < t0 < t1"),
    ({"teacher_accuracy": 0}, "teacher accuracy"),
])
def test_invalid_input_raises_analysis_error(kwargs, message):
    arguments = {"ranks": [1, 2, 4], "accuracies": [0.5, 0.8, 0.9], "seeds": [0, 0, 0], "teacher_accuracy": 1.0,
                 **kwargs}
    with pytest.raises(AnalysisError, match=message):
        bootstrap_curve(**arguments)
