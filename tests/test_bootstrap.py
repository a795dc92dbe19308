"""The bootstrap over seeds: point estimates of the point analysis, censored percentile intervals, the band."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest

from effrank_bench.analysis import analyze_curve
from effrank_bench.bootstrap import bootstrap_curve
from effrank_bench.errors import AnalysisError
from effrank_bench.report import region_lines

RANKS = np.arange(1, 101, dtype=float)
PAPER_GRID = np.array([2, 4, 8, 16, 24, 32, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256], dtype=float)


def points(curves: dict[int, np.ndarray], ranks: np.ndarray = RANKS):
    """Flat (ranks, accuracies, seeds) from one accuracy curve per seed."""
    flat = [(r, a, s) for s, curve in curves.items() for r, a in zip(ranks, curve)]
    return [p[0] for p in flat], [p[1] for p in flat], [p[2] for p in flat]


def bootstrap(ranks, accuracies, seeds, teacher_accuracy=1.0, resamples=1000, rng_seed=0, **analysis):
    """The bootstrap of the points around their own point analysis, as build_report runs it."""
    point = analyze_curve(ranks, accuracies, teacher_accuracy, **analysis)
    return bootstrap_curve(point, ranks, accuracies, seeds, resamples=resamples, rng_seed=rng_seed)


def shifted_lines(crossings=(70, 80, 90), slope=0.005) -> dict[int, np.ndarray]:
    """Seed s: a straight line through (crossings[s], 0.85) exactly, so seed s crosses 0.85 there."""
    return {s: 0.85 + (RANKS - c) * slope for s, c in enumerate(crossings)}


def test_identical_seeds_collapse_every_interval_to_the_point_estimate():
    curve = np.minimum(RANKS / 20, 1.0)
    u = bootstrap(*points({0: curve, 1: curve, 2: curve}), teacher_accuracy=1.0, resamples=200)
    single = analyze_curve(RANKS, curve, 1.0)
    assert u.resamples == 200 and u.seeds == (0, 1, 2)
    for estimate, value in ((u.low, single.region.low), (u.high, single.region.high), (u.knee, single.knee)):
        # The mean of three equal curves, up to round-off, which moves a knee (a flat maximum) by about 1e-10.
        assert estimate.mean == pytest.approx(value, rel=1e-9)
        assert estimate.ci_low == pytest.approx(value, abs=1e-6)
        assert estimate.ci_high == pytest.approx(value, abs=1e-6)
    assert u.low.unreached == 0.0 and u.high.unreached == 0.0 and u.knee.unreached is None
    assert not (u.low.ci_low_censored or u.low.ci_high_censored or u.knee.ci_low_censored or u.knee.ci_high_censored)
    # Every resample is the same curve, so the band of fits has no width and is the fit itself.
    band = u.band
    assert np.allclose(band.low, band.high, atol=1e-12)
    assert np.allclose(band.low, single.fit(band.ranks), atol=1e-12)


def test_interval_of_a_crossing_lies_between_the_per_seed_crossings():
    # Seeds cross 0.85 at ranks 70, 80, 90 exactly; the mean line crosses at 80. Each rank of a
    # resample averages draws of those seeds, so it lies between the highest and lowest line and
    # every resampled crossing lies in [70, 90].
    u = bootstrap(*points(shifted_lines()), teacher_accuracy=1.0, resamples=1000)
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
    # reach it by rank 100 (the lowest line ends at 0.9): the upper bound is "beyond rank 100".
    assert u.high.mean == pytest.approx(100, abs=1e-9)
    assert 0.025 < u.high.unreached < 1
    assert u.high.ci_high == 100 and u.high.ci_high_censored and not u.high.ci_low_censored


def test_band_of_fits_lies_between_the_lowest_and_highest_seed():
    lines = shifted_lines()
    u = bootstrap(*points(lines), teacher_accuracy=1.0, resamples=300)
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
    u = bootstrap([1, 2, 2], [0.5, 0.8, 1.0], [0, 0, 1], teacher_accuracy=1.0, resamples=4000, rng_seed=7)
    assert u.seeds_per_rank == (1, 2)
    assert u.low.mean == pytest.approx(1.875)  # off the mean curve: 0.9 at rank 2
    assert u.low.unreached == pytest.approx(0.25, abs=0.03)
    # A quarter of the resamples never reach 0.85: they lie beyond rank 2, and so does the 97.5th percentile.
    assert (u.low.ci_low, u.low.ci_high) == (pytest.approx(1.7), 2.0)
    assert u.low.ci_high_censored and not u.low.ci_low_censored
    # 0.95 is reached only when both draws are 1.0 (at 1 + 0.45/0.5 = 1.9); the mean curve misses it.
    assert u.high.mean is None and u.high.unreached == pytest.approx(0.75, abs=0.03)
    assert (u.high.ci_low, u.high.ci_high, u.high.ci_high_censored) == (pytest.approx(1.9), 2.0, True)
    # Two ranks carry no bend: the knee is where the fit reaches its maximum, rank 2, in every resample.
    assert (u.knee.mean, u.knee.ci_low, u.knee.ci_high) == (2.0, 2.0, 2.0)


def test_same_rng_seed_same_result_and_another_seed_another_interval():
    args = points(shifted_lines())
    first = bootstrap(*args, teacher_accuracy=1.0, resamples=250, rng_seed=3)
    assert bootstrap(*args, teacher_accuracy=1.0, resamples=250, rng_seed=3) == first
    other = bootstrap(*args, teacher_accuracy=1.0, resamples=250, rng_seed=4)
    assert other.low.mean == first.low.mean  # the point estimate does not depend on the draws
    assert (other.low.ci_low, other.low.ci_high) != (first.low.ci_low, first.low.ci_high)


def test_to_dict_states_the_resamples_and_is_json_ready():
    u = bootstrap(*points(shifted_lines()), teacher_accuracy=1.0, resamples=123, rng_seed=5)
    data = json.loads(json.dumps(u.to_dict()))
    assert data["resamples"] == 123 and data["rng_seed"] == 5 and data["confidence"] == 0.95
    assert data["seeds"] == [0, 1, 2] and data["seeds_per_rank"]["70"] == 3
    assert set(data["low"]) == {"mean", "ci_low", "ci_high", "unreached", "ci_low_censored", "ci_high_censored",
                                "met_at_first"}
    assert data["knee"]["unreached"] is None and data["knee"]["ci_high_censored"] is False
    assert data["monotone"] == "running-max" and "under-cover" in data["note"]
    assert "band" not in data
    assert len(u.to_dict(band=True)["band"]["ranks"]) == len(u.band.ranks)


def test_one_seed_per_rank_has_nothing_to_resample():
    curve = np.minimum(RANKS / 20, 1.0)
    u = bootstrap(*points({4: curve}), teacher_accuracy=1.0)
    single = analyze_curve(RANKS, curve, 1.0)
    assert u.resamples == 0 and u.band is None and "one seed" in u.note
    assert (u.low.mean, u.high.mean, u.knee.mean) == (single.region.low, single.region.high, single.knee)
    assert all(e.ci_low is None and e.ci_high is None for e in (u.low, u.high, u.knee))


def test_repeated_points_of_one_seed_count_as_one_draw():
    # Seed 0 measured twice at rank 2 (0.6, 1.0 -> 0.8) and seed 1 once (0.8): every draw averages 0.8,
    # which crosses 0.6 at 1 + 0.1 / 0.3.
    u = bootstrap([1, 2, 2, 2, 1], [0.5, 0.6, 1.0, 0.8, 0.5], [0, 0, 0, 1, 1], 1.0, resamples=100,
                  thresholds=(0.6, 0.95))
    assert u.seeds_per_rank == (2, 2)
    assert u.low.mean == pytest.approx(1 + 1 / 3)
    assert u.low.ci_low == pytest.approx(u.low.mean) == pytest.approx(u.low.ci_high)


def test_a_seed_that_never_reaches_the_threshold_makes_the_upper_bound_censored():
    # Rank 2 holds seeds at 1.0, 1.0 and 0.9 (that seed never reaches 0.95). A resample's mean there
    # is 1 - 0.1 k / 3 for k draws of 0.9, below 0.95 once k >= 2: P = 3 (1/3)^2 (2/3) + (1/3)^3 = 7/27.
    ranks, seeds = [1, 1, 1, 2, 2, 2], [0, 1, 2, 0, 1, 2]
    u = bootstrap(ranks, [0.5, 0.5, 0.5, 1.0, 1.0, 0.9], seeds, resamples=4000, rng_seed=1)
    assert u.high.unreached == pytest.approx(7 / 27, abs=0.03)
    # The mean curve (29/30 at rank 2) crosses at 1 + 0.45 / (29/30 - 0.5) = 1.964...
    assert u.high.mean == pytest.approx(1 + 0.45 / (29 / 30 - 0.5))
    assert (u.high.ci_high, u.high.ci_high_censored) == (2.0, True)
    # k = 0 crosses at 1 + 0.45/0.5 = 1.9, the earliest any resample can: the lower bound, uncensored.
    assert (u.high.ci_low, u.high.ci_low_censored) == (pytest.approx(1.9), False)
    region = region_lines(analyze_curve(ranks, [0.5, 0.5, 0.5, 1.0, 1.0, 0.9], 1.0), None, u)[0]
    assert f"95% at rank {u.high.mean:.2f} [95% CI 1.90, >2.00; not reached in {u.high.unreached:.0%} of" in region


def test_a_few_resamples_beyond_the_last_rank_leave_the_upper_bound_uncensored():
    # Five seeds at rank 2, one at 0.9: a mean of five draws falls below 0.93 only with 4 or 5 draws of
    # it, P = 5 (0.2^4)(0.8) + 0.2^5 = 0.00672 < 2.5%; the 97.5th percentile is then a crossing.
    ranks, seeds = [1] * 5 + [2] * 5, list(range(5)) * 2
    u = bootstrap(ranks, [0.5] * 5 + [1.0, 1.0, 1.0, 1.0, 0.9], seeds, resamples=4000, rng_seed=2,
                  thresholds=(0.85, 0.93))
    assert 0 < u.high.unreached < 0.02
    assert not u.high.ci_high_censored and u.high.ci_high < 2


def test_resamples_already_at_the_threshold_at_the_first_rank_make_the_lower_bound_censored():
    # Rank 1 holds seeds at 0.97, 0.97 and 0.9; rank 2 is 1.0. A resample meets 0.95 at rank 1 only
    # when it draws no 0.9 there: P = (2/3)^3 = 8/27. The mean curve (0.9467 at rank 1) crosses above 1.
    ranks, seeds = [1, 1, 1, 2, 2, 2], [0, 1, 2, 0, 1, 2]
    accuracies = [0.97, 0.97, 0.9, 1.0, 1.0, 1.0]
    u = bootstrap(ranks, accuracies, seeds, resamples=4000, rng_seed=3)
    assert 1 < u.high.mean < 2
    assert u.high.met_at_first == pytest.approx(8 / 27, abs=0.03) and u.high.unreached == 0
    assert (u.high.ci_low, u.high.ci_low_censored) == (1.0, True)
    assert u.high.ci_high > u.high.mean and not u.high.ci_high_censored
    assert u.high.to_dict()["ci_low_censored"] is True
    region = region_lines(analyze_curve(ranks, accuracies, 1.0), None, u)[0]
    assert f"95% at rank {u.high.mean:.2f} [95% CI ≤1.00, {u.high.ci_high:.2f};" in region


def test_a_point_met_at_the_first_rank_is_censored_in_the_interval_too():
    # Every seed is at or above 0.96 at rank 8: each resample meets 95% at rank 8 or below.
    ranks, seeds = [8, 8, 16, 16, 32, 32], [0, 1, 0, 1, 0, 1]
    accuracies = [0.96, 0.97, 0.97, 0.98, 0.98, 0.99]
    u = bootstrap(ranks, accuracies, seeds, resamples=200)
    assert u.high.mean == 8 and u.high.met_at_first == 1.0
    assert (u.high.ci_low, u.high.ci_high, u.high.ci_low_censored, u.high.ci_high_censored) == (8, 8, True, False)
    region = region_lines(analyze_curve(ranks, accuracies, 1.0), None, u)[0]
    assert "95% at rank ≤8.00 [95% CI ≤8.00; met at the first rank in 100% of resamples]" in region
    assert "→ band [≤8, ≤8]" in region


def test_fewer_than_five_seeds_per_rank_carry_a_note_that_intervals_under_cover():
    curves = {s: 0.85 + (RANKS - c) * 0.005 for s, c in enumerate((70, 75, 80, 85, 90))}
    three = bootstrap(*points({s: curves[s] for s in range(3)}), resamples=50)
    five = bootstrap(*points(curves), resamples=50)
    assert "3 seed(s)" in three.note and "under-cover" in three.note
    assert three.to_dict()["note"] == three.note
    analysis = analyze_curve(*points({s: curves[s] for s in range(3)})[:2], 1.0)
    assert region_lines(analysis, None, three)[-1] == f"note: {three.note}"
    assert five.note is None and not any("under-cover" in line for line in region_lines(analysis, None, five))


def test_the_bootstrap_uses_the_point_analysis_monotone_mode():
    # Three identical seeds with a dip: every resample is the curve itself, made monotone the same way.
    curve = np.array([0.5, 0.9, 0.7, 0.95])
    ranks, accuracies, seeds = points({0: curve, 1: curve, 2: curve}, np.arange(1.0, 5.0))
    isotonic = bootstrap(ranks, accuracies, seeds, resamples=100, monotone="isotonic")
    running = bootstrap(ranks, accuracies, seeds, resamples=100)
    assert isotonic.monotone == "isotonic" and isotonic.to_dict()["monotone"] == "isotonic"
    assert 3 < isotonic.low.mean < 4 and 1 < running.low.mean < 2  # 0.85 after the pooled 0.8, or before 0.9
    for u in (isotonic, running):
        assert u.low.ci_low == pytest.approx(u.low.mean, abs=1e-9) == pytest.approx(u.low.ci_high, abs=1e-9)


def test_the_points_must_be_those_of_the_point_analysis():
    point = analyze_curve([1, 2, 4], [0.5, 0.8, 0.9], 1.0)
    with pytest.raises(AnalysisError, match="ranks differ"):
        bootstrap_curve(point, [1, 2, 8], [0.5, 0.8, 0.9], [0, 0, 0])


def test_a_thousand_resamples_of_the_paper_grid_take_well_under_two_seconds():
    rng = np.random.default_rng(1)
    curves = {s: np.clip(1 - np.exp(-PAPER_GRID / 30) + rng.normal(0, 0.02, PAPER_GRID.size), 0, 1) for s in range(3)}
    start = time.perf_counter()
    u = bootstrap(*points(curves, PAPER_GRID), teacher_accuracy=1.0, resamples=1000)
    assert time.perf_counter() - start < 2.0
    assert u.resamples == 1000 and u.low.ci_low <= u.low.mean <= u.low.ci_high


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"seeds": [0, 1]}, "must pair up"),
    ({"seeds": [0, 0.5, 1]}, "seeds must be integers"),
    ({"resamples": 0}, "resamples must be a positive integer"),
    ({"resamples": 2.5}, "resamples must be a positive integer"),
    ({"accuracies": [0.5, 0.8]}, "must pair up"),
])
def test_invalid_input_raises_analysis_error(kwargs, message):
    arguments = {"ranks": [1, 2, 4], "accuracies": [0.5, 0.8, 0.9], "seeds": [0, 0, 0], **kwargs}
    point = analyze_curve([1, 2, 4], [0.5, 0.8, 0.9], 1.0)
    with pytest.raises(AnalysisError, match=message):
        bootstrap_curve(point, **arguments)
