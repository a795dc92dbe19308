"""Rank search: the grid in one round; the adaptive search brackets the crossings and the knee in fewer trials."""
from __future__ import annotations

import json
import math

import pytest

from effrank_bench.analysis import analyze_curve
from effrank_bench.errors import ConfigError
from effrank_bench.search import (MAX_ROUNDS, ON_GRID, AdaptiveSearch, GridSearch, Tolerance, make_search,
                                  parse_tolerance)

PAPER_GRID = (2, 4, 8, 16, 24, 32, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256)
DENSE = range(2, 257)

# Logistic in log2(rank) through 85% at rank 21.4 and 95% at rank 37.4 (off the integers, so no
# band end sits on a knife's edge): logit(0.85) = 1.7346 and logit(0.95) = 2.9444.
_SLOPE = (math.log(0.95 / 0.05) - math.log(0.85 / 0.15)) / math.log2(37.4 / 21.4)
_MIDDLE = math.log2(21.4) - math.log(0.85 / 0.15) / _SLOPE


def logistic(rank):
    return 1 / (1 + math.exp(-_SLOPE * (math.log2(rank) - _MIDDLE)))


def step(rank):
    """Chance-level 0.3 until a jump to 1.0 four ranks wide around rank 60: 85% at 61.9, 95% at 63.8."""
    return 0.3 + 0.7 / (1 + math.exp(-(rank - 60) / 1.5))


def slow_ramp(rank):
    """1 - exp(-r/60): 85% at 60·ln(1/0.15) = 113.8, 95% at 60·ln 20 = 179.7."""
    return 1 - math.exp(-rank / 60)


def search_rounds(searcher, curve):
    """Drive ``searcher`` as the sweep does, ``curve`` answering for each rank asked."""
    measured, rounds = {}, []
    while ranks := searcher.next_ranks(measured):
        rounds.append(ranks)
        measured.update({rank: curve(rank) for rank in ranks})
    return rounds, measured


def band(ranks, curve):
    return analyze_curve(list(ranks), [curve(r) for r in ranks], 1.0).region.band


def test_grid_search_asks_for_every_rank_not_yet_measured_in_one_round():
    search = GridSearch(PAPER_GRID)
    assert search.next_ranks({}) == list(PAPER_GRID)
    assert search.next_ranks({2: 0.1, 256: 1.0}, failed={4}) == list(PAPER_GRID[2:-1])
    rounds, measured = search_rounds(GridSearch(PAPER_GRID), logistic)
    assert rounds == [list(PAPER_GRID)] and sorted(measured) == list(PAPER_GRID)


def test_adaptive_search_starts_with_five_log_spaced_ranks_between_the_grid_ends():
    # 2 · (256/2)^(k/4) = 2, 6.73, 22.6, 76.1, 256; only the ends of the grid matter.
    assert AdaptiveSearch(PAPER_GRID).next_ranks({}) == [2, 7, 23, 76, 256]
    assert AdaptiveSearch((2, 256)).next_ranks({}) == [2, 7, 23, 76, 256]
    assert AdaptiveSearch((3, 5)).next_ranks({}) == [3, 4, 5]


@pytest.mark.parametrize("curve, expected_band, max_trials", [
    (logistic, (22, 38), 11),
    (step, (62, 64), 11),
    (slow_ramp, (114, 180), 13),
])
def test_adaptive_search_finds_the_dense_band_in_fewer_trials_than_the_paper_grid(curve, expected_band, max_trials):
    rounds, measured = search_rounds(AdaptiveSearch(PAPER_GRID), curve)
    assert len(measured) <= max_trials < len(PAPER_GRID)
    assert band(DENSE, curve) == expected_band  # every integer rank measured: the truth
    found = band(sorted(measured), curve)
    assert all(abs(a - b) <= 1 for a, b in zip(found, expected_band))
    if curve is not step:  # the paper grid measures nothing between 48 and 64, where the step is
        assert all(abs(a - b) <= 1 for a, b in zip(found, band(PAPER_GRID, curve)))
    assert all(2 <= r <= 256 for r in measured)
    # What stopped it: each crossing lies between measured ranks at most 10% of it (or 1) apart.
    ranks = sorted(measured)
    for crossing in analyze_curve(ranks, [measured[r] for r in ranks], 1.0).region.low, \
            analyze_curve(ranks, [measured[r] for r in ranks], 1.0).region.high:
        below = max(r for r in ranks if r < crossing)
        above = min(r for r in ranks if r >= crossing)
        assert above - below <= max(1, 0.1 * crossing)


def test_the_logistic_rounds_are_the_fitted_locations_then_their_other_sides():
    # Round 2: 21 (85% fitted between 7 and 23: with 23, within 10%), 33 (the knee), 45 (95%, fitted
    # from the coarse points); round 3: the knee's other side and 95% refitted, round 4: its other side.
    rounds, _ = search_rounds(AdaptiveSearch(PAPER_GRID), logistic)
    assert rounds == [[2, 7, 23, 76, 256], [21, 33, 45], [32, 37], [38]]


def test_a_looser_tolerance_trades_precision_for_trials():
    rounds, measured = search_rounds(AdaptiveSearch(PAPER_GRID, tolerance=parse_tolerance("70%")), logistic)
    assert len(measured) == 8 and len(rounds) == 2
    assert band(sorted(measured), logistic) == band(PAPER_GRID, logistic) == (22, 38)


@pytest.mark.parametrize("curve, rounds", [
    (logistic, [[2, 8, 24, 80, 256], [16, 32, 48]]),
    (step, [[2, 8, 24, 80, 256], [64], [48]]),
    (slow_ramp, [[2, 8, 24, 80, 256], [64, 128, 192], [96, 112, 160]]),
])
def test_on_the_grid_the_search_reads_off_the_grids_band_from_a_subset_of_its_ranks(curve, rounds):
    found, measured = search_rounds(AdaptiveSearch(PAPER_GRID, tolerance=ON_GRID), curve)
    assert found == rounds  # the coarse round: the grid's ranks nearest 2, 6.7, 22.6, 76.1, 256 on a log scale
    ranks = sorted(measured)
    assert set(ranks) <= set(PAPER_GRID)
    assert band(ranks, curve) == band(PAPER_GRID, curve)
    # What stopped it: each crossing and the knee lie between measured ranks with no grid rank between them.
    analysis = analyze_curve(ranks, [measured[r] for r in ranks], 1.0)
    for target in analysis.region.low, analysis.region.high, analysis.knee:
        below, above = max(r for r in ranks if r < target), min(r for r in ranks if r >= target)
        assert not [r for r in PAPER_GRID if below < r < above]


def test_on_a_small_grid_the_coarse_round_is_its_ranks_nearest_the_log_spaced_points():
    assert AdaptiveSearch((2, 4, 8, 16, 32, 64, 128, 256, 512), tolerance=ON_GRID).coarse() == [2, 8, 32, 128, 512]
    assert AdaptiveSearch((3, 5), tolerance=ON_GRID).coarse() == [3, 5]
    search = AdaptiveSearch((2, 4, 8, 16), tolerance=ON_GRID)
    assert search.next_ranks({}) == [2, 4, 8, 16] and search.next_ranks({r: logistic(r) for r in (2, 4, 8, 16)}) == []


def test_the_search_is_deterministic_and_depends_only_on_what_was_measured():
    first, _ = search_rounds(AdaptiveSearch(PAPER_GRID), slow_ramp)
    second, _ = search_rounds(AdaptiveSearch(PAPER_GRID), slow_ramp)
    assert first == second
    measured = {r: slow_ramp(r) for r in first[0]}
    assert AdaptiveSearch(PAPER_GRID).next_ranks(measured) == first[1]  # a resumed sweep picks up here


def test_a_failed_rank_is_never_asked_for_again():
    search = AdaptiveSearch(PAPER_GRID)
    measured = {r: logistic(r) for r in (2, 7, 23, 76, 256)}
    # The coarse fit puts 85% at 21.12: 21 is nearest, 22 the next (20 is 1.12 away).
    assert search.next_ranks(measured) == [21, 33, 45]
    assert search.next_ranks(measured, failed={21}) == [22, 33, 45]
    assert 7 not in AdaptiveSearch(PAPER_GRID).next_ranks({}, failed={7})


def test_a_crossing_met_at_the_first_rank_or_never_needs_no_refinement():
    # A straight line from 0.1 to 0.5 never reaches 85% and has no bend: the coarse round is all.
    rounds, _ = search_rounds(AdaptiveSearch(PAPER_GRID), lambda r: 0.1 + 0.4 * (r - 2) / 254)
    assert rounds == [[2, 7, 23, 76, 256]]
    # Already at 96% at rank 2: both crossings are left-censored, only the knee is refined.
    rounds, measured = search_rounds(AdaptiveSearch(PAPER_GRID), lambda r: 1 - 0.04 * 2 / r)
    analysis = analyze_curve(sorted(measured), [measured[r] for r in sorted(measured)], 1.0)
    assert analysis.region.low_censored == analysis.region.high_censored == "left"


def test_the_round_budget_stops_the_search_and_says_what_it_left_open():
    search = AdaptiveSearch(PAPER_GRID, max_rounds=2)
    rounds, measured = search_rounds(search, logistic)
    assert len(rounds) == 2
    assert search.left_open(measured) == ["the 95% crossing (37.4) between ranks 33 and 45",
                                          "the knee (32.9) between ranks 23 and 33"]
    whole = AdaptiveSearch(PAPER_GRID)
    _, measured = search_rounds(whole, logistic)
    assert whole.left_open(measured) == []  # stopped of itself: everything bracketed
    # A resumed sweep's rounds count too: two trained before, none left.
    assert make_search("adaptive", PAPER_GRID, rounds=MAX_ROUNDS).next_ranks({}) == []


@pytest.mark.parametrize("text, tolerance, width_at_12, width_at_37", [
    (None, Tolerance(1, 0.10), 1.2, 3.7),   # integer brackets: adjacent ranks below 20
    ("10%", Tolerance(1, 0.10), 1.2, 3.7),
    ("25%", Tolerance(1, 0.25), 3.0, 9.25),
    ("4", Tolerance(4, 0.0), 4, 4),
    (3, Tolerance(3, 0.0), 3, 3),
    (" Grid", ON_GRID, 0, 0),  # any gap is too wide while a rank of the grid lies in it
])
def test_tolerance_is_a_number_of_ranks_or_a_percentage_with_a_one_rank_floor(text, tolerance, width_at_12,
                                                                                width_at_37):
    parsed = parse_tolerance(text)
    assert parsed == tolerance
    assert parsed.width(12) == pytest.approx(width_at_12) and parsed.width(37) == pytest.approx(width_at_37)


@pytest.mark.parametrize("text", ["abc", "0", "-5%", "inf"])
def test_a_bad_tolerance_is_a_config_error(text):
    with pytest.raises(ConfigError, match="tolerance"):
        parse_tolerance(text)


def test_make_search_is_the_one_door():
    assert isinstance(make_search("grid", PAPER_GRID), GridSearch)
    search = make_search("adaptive", PAPER_GRID, tolerance="20%", knee_axis="log2")
    assert isinstance(search, AdaptiveSearch) and search.tolerance == Tolerance(1, 0.2)
    with pytest.raises(ConfigError, match="search must be one of grid, adaptive"):
        make_search("random", PAPER_GRID)


# --- the replay command ---------------------------------------------------------------------------


@pytest.fixture
def logistic_csv(tmp_path):
    """The logistic measured on the paper grid, in percent, teacher at 90%."""
    path = tmp_path / "curve.csv"
    path.write_text("rank,accuracy\n" + "".join(f"{r},{90 * logistic(r):.6f}\n" for r in PAPER_GRID))
    return path


def test_replay_json_reports_rounds_trials_and_both_read_offs(logistic_csv, run_cli):
    code, out, err = run_cli("replay", logistic_csv, "--teacher-acc", 90, "--json")
    assert code == 0 and err == ""
    result = json.loads(out)
    assert result["search"] == "adaptive" and result["tolerance"] == {"ranks": 1.0, "fraction": 0.1,
                                                                              "grid": False}
    # The curve answers by its PCHIP fit through the 16 grid points, so the search lands as it does
    # on the logistic itself.
    assert result["rounds"] == [[2, 7, 23, 76, 256], [21, 33, 45], [32, 37], [38]]
    assert result["trials"] == 11 and result["grid_trials"] == 16
    assert result["grid"]["region"]["band"] == result["searched"]["region"]["band"] == [22, 38]
    assert result["searched"]["region"]["low"] == pytest.approx(result["grid"]["region"]["low"], abs=0.1)
    assert result["searched"]["teacher_accuracy"] == 90
    assert [p["rank"] for p in result["searched"]["points"]] == sorted(sum(result["rounds"], []))


def test_replay_grid_search_and_a_smaller_grid(logistic_csv, run_cli):
    code, out, _ = run_cli("replay", logistic_csv, "--teacher-acc", 90, "--json", "--search", "grid",
                           "--ranks", "4,8,16,32,64")
    result = json.loads(out)
    assert code == 0 and result["rounds"] == [[4, 8, 16, 32, 64]] and result["tolerance"] is None
    assert result["trials"] == result["grid_trials"] == 5 and result["grid"] == result["searched"]


def test_replay_prints_rounds_and_a_table(logistic_csv, run_cli):
    code, out, _ = run_cli("replay", logistic_csv, "--teacher-acc", 90)
    assert code == 0
    assert "round 2: 21, 33, 45" in out and "trials: 11 (full grid: 16)" in out
    assert out.count("[22, 38]") == 2
    assert "--search grid costs no more" not in out


def test_replay_on_the_grid_prints_its_tolerance_and_the_grids_band_in_half_the_trials(logistic_csv, run_cli):
    code, out, _ = run_cli("replay", logistic_csv, "--teacher-acc", 90, "--tolerance", "grid")
    assert code == 0
    assert out.startswith("adaptive search over ranks 2..256, tolerance adjacent ranks of the grid\n")
    assert "round 2: 16, 32, 48" in out and "trials: 8 (full grid: 16)" in out and out.count("[22, 38]") == 2


def test_replay_says_when_the_search_cost_more_than_a_small_grid(logistic_csv, run_cli):
    code, out, _ = run_cli("replay", logistic_csv, "--teacher-acc", 90, "--ranks", "8,16,32,64")
    assert code == 0 and "(full grid: 4)" in out
    assert out.rstrip().endswith("the search trained as many ranks as the grid or more: on 4 ranks, --search grid "
                                 "costs no more")


@pytest.mark.parametrize("extra, message", [
    (["--ranks", "2,300"], "cannot answer for rank 300"),
    (["--tolerance", "5x"], "tolerance must be a number of ranks"),
    (["--search", "random"], "invalid choice: 'random'"),
    (["--teacher-acc", "0.9"], "looks like a fraction"),
])
def test_replay_bad_input_exits_2_with_one_line(logistic_csv, run_cli, extra, message):
    code, out, err = run_cli("replay", logistic_csv, "--teacher-acc", 90, *extra)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err


def test_replay_of_an_adaptive_runs_directory_says_its_curve_is_the_searched_ranks(make_run, tmp_path, run_cli):
    from effrank_bench.report import build_report, write_report

    run = make_run(tmp_path / "run", [(2, 0, 0.5), (8, 0, 0.8), (32, 0, 0.88)], search="adaptive", tolerance="grid")
    write_report(run, build_report(run), False)
    code, out, err = run_cli("replay", run.path, "--tolerance", "grid")
    assert code == 0 and "(full grid: 3)" in out
    assert err.startswith(f"warning: {run.path} was swept by an adaptive search: its curve holds only the ranks it "
                          "trained, so the 'full grid' here is those ranks")
    code, _, err = run_cli("replay", run.path / "summary.csv", "--ranks", "2,8,32", "--search", "grid",
                           "--tolerance", "grid")
    assert code == 0 and err == (f"warning: {run.path} was swept by an adaptive search: its curve holds only the ranks "
                                 "it trained; replay a grid sweep's curve to see what a search would have cost\n"
                                 "warning: --tolerance applies to --search adaptive: the grid trains every rank\n")


def test_replay_says_what_a_search_cut_short_by_its_round_budget_left_open(tmp_path, run_cli, monkeypatch):
    from effrank_bench import search

    made = search.make_search

    def two_rounds(*args, **kwargs):
        searcher = made(*args, **kwargs)
        searcher.max_rounds = 2
        return searcher

    monkeypatch.setattr(search, "make_search", two_rounds)
    path = tmp_path / "curve.csv"
    path.write_text("rank,accuracy\n" + "".join(f"{r},{90 * logistic(r):.6f}\n" for r in PAPER_GRID))
    code, out, _ = run_cli("replay", path, "--teacher-acc", 90)
    assert code == 0 and ("the search stopped after its 2 rounds with the 95% crossing (37.5) between ranks 33 and "
                          "45; the knee (32.9) between ranks 23 and 33") in " ".join(out.split())
    code, out, _ = run_cli("replay", path, "--teacher-acc", 90, "--json")
    assert json.loads(out)["left_open"] == ["the 95% crossing (37.5) between ranks 33 and 45",
                                            "the knee (32.9) between ranks 23 and 33"]


def test_replay_of_a_curve_beside_another_tools_config_json_replays(logistic_csv, run_cli):
    (logistic_csv.parent / "config.json").write_text('{"name": "another tool"}')
    summary = logistic_csv.rename(logistic_csv.parent / "summary.csv")
    code, out, err = run_cli("replay", summary, "--teacher-acc", 90)
    assert code == 0 and err == "" and "trials: 11 (full grid: 16)" in out
