"""The run directory: append-only records, resume with more ranks, torn last lines, and the plan."""
from __future__ import annotations

import json

import pytest

from effrank_bench.config import RunConfig
from effrank_bench.errors import ConfigError
from effrank_bench.records import Cost
from effrank_bench.plan import plan_trials
from effrank_bench.records import SCHEMA_VERSION, Trial, TrialRecord
from effrank_bench.store import RunDir


def record(rank: int, *, seed: int = 0, accuracy: float = 0.5, target: str = "joint", loss: str = "geometric",
           status: str = "ok") -> TrialRecord:
    return TrialRecord(status=status, arch="micro_vit", target=target, loss=loss, dataset="digits", rank=rank,
                       seed=seed, init="svd", val_accuracy=accuracy, test_accuracy=accuracy,
                       environment={"device": "cpu"}, history=[{"epoch": 1, "loss": 0.25, "val_accuracy": accuracy}],
                       cost=Cost(params=1000 + rank, factorized_params=rank, macs=10 * rank, latency_ms=None,
                                 peak_memory_mb=None))


def test_append_and_records_round_trip(tmp_path):
    run = RunDir.open(tmp_path / "run", RunConfig(ranks=(2, 8)))
    assert run.records() == []
    first, second = record(2, accuracy=0.75), record(8, accuracy=0.875)
    run.append(first)
    run.append(second)
    assert run.records() == [first, second]
    # One JSON object a line, each with the schema version.
    lines = run.records_path.read_text().splitlines()
    assert len(lines) == 2
    assert json.loads(lines[1])["schema_version"] == SCHEMA_VERSION == 2
    assert json.loads(lines[1])["val_accuracy"] == 0.875
    # A fresh handle on the same folder reads the same records and the same config.
    again = RunDir(tmp_path / "run")
    assert [r.trial for r in again.records()] == [Trial("joint", "geometric", 2, 0), Trial("joint", "geometric", 8, 0)]
    assert again.config() == RunConfig(ranks=(2, 8))


def test_reopening_with_more_ranks_merges_them(tmp_path):
    path = tmp_path / "run"
    run = RunDir.open(path, RunConfig(ranks=(1, 2, 4)))
    run.append(record(1))
    reopened = RunDir.open(path, RunConfig(ranks=(4, 16), device="cpu"))
    assert reopened.config().ranks == (1, 2, 4, 16)
    assert reopened.config().device == "cpu"  # not part of the sweep: the new value is kept
    assert [r.rank for r in reopened.records()] == [1]  # nothing finished is lost


def test_reopening_with_other_epochs_is_refused(tmp_path):
    path = tmp_path / "run"
    RunDir.open(path, RunConfig(epochs=12)).append(record(1))
    with pytest.raises(ConfigError, match=r"differs in: epochs\);") as err:
        RunDir.open(path, RunConfig(epochs=3, ranks=(64,)))
    assert str(path) in str(err.value)
    # The refused open changed nothing on disk.
    assert RunDir(path).config().epochs == 12
    assert RunDir(path).config().ranks == (1, 2, 4, 8, 16, 32)
    assert len(RunDir(path).records()) == 1


def test_reopening_names_every_changed_field(tmp_path):
    path = tmp_path / "run"
    RunDir.open(path, RunConfig())
    with pytest.raises(ConfigError, match=r"differs in: loss, teacher_seed\);"):
        RunDir.open(path, RunConfig(loss="kd", seed=3))


def test_reopening_with_more_seeds_extends_the_sweep(tmp_path):
    path = tmp_path / "run"
    RunDir.open(path, RunConfig(seeds=(0, 1), ranks=(2, 4)))
    reopened = RunDir.open(path, RunConfig(seeds=(0, 2), ranks=(8,)))
    assert reopened.config().seeds == (0, 1, 2) and reopened.config().ranks == (2, 4, 8)


@pytest.mark.parametrize("tail", [
    record(2).model_dump_json()[:40].encode(),  # a process killed in the middle of writing the next record
    b'{"schema_version": 2, "status": "ok"}\n',  # whole lines that are no record: kept, each would sit
    b'{"schema_version": 2, "sta\n',              # before the next record appended, a bad line before the
    b"\n",                                        # last, which no reader accepts
], ids=["torn", "no-record", "half-with-newline", "blank"])
def test_a_last_line_that_is_no_record_is_ignored_then_cut(tmp_path, tail):
    path, config = tmp_path / "run", RunConfig(ranks=(1, 2, 4))
    run = RunDir.open(path, config)
    run.append(record(1))
    intact = run.records_path.read_bytes()
    with open(run.records_path, "ab") as f:
        f.write(tail)
    assert [r.rank for r in run.records()] == [1]
    # Reopening cuts it back to the last complete line ...
    run = RunDir.open(path, config)
    assert run.records_path.read_bytes() == intact
    # ... so the next append starts on a line of its own and is read back.
    run.append(record(2))
    assert [r.rank for r in run.records()] == [1, 2]
    assert len(run.records_path.read_text().splitlines()) == 2
    assert not RunDir.open(path, config).repair_torn_tail()  # whole records stay as they are


def test_an_unreadable_config_is_an_error_and_cuts_no_record(tmp_path):
    run = RunDir.open(tmp_path / "run", RunConfig())
    run.append(record(1))
    intact = run.records_path.read_bytes()
    run.config_path.write_text('{"arch": ')
    with pytest.raises(ConfigError, match="config.json"):
        run.repair_torn_tail()
    assert run.records_path.read_bytes() == intact


def test_a_torn_only_line_is_cut_to_an_empty_file(tmp_path):
    path = tmp_path / "run"
    run = RunDir.open(path, RunConfig())
    run.records_path.write_text('{"schema_version": 1, "sta')
    assert run.records() == []
    run = RunDir.open(path, RunConfig())
    assert run.records_path.read_bytes() == b""


def test_a_bad_line_before_the_last_is_an_error(tmp_path):
    run = RunDir.open(tmp_path / "run", RunConfig())
    run.append(record(1))
    with open(run.records_path, "a") as f:
        f.write("not json\n")
    run.append(record(2))
    with pytest.raises(ConfigError, match="line 2 is not a valid trial record"):
        run.records()


def test_a_folder_without_config_is_not_a_run_directory(tmp_path):
    with pytest.raises(ConfigError, match="no config.json"):
        RunDir(tmp_path).config()


# --- the plan -------------------------------------------------------------------------------------


def test_plan_is_every_rank_smallest_first():
    trials = plan_trials(RunConfig(ranks="16,2,4", seed=3, loss="kd"), set())
    assert trials == [Trial("joint", "kd", 2, 3), Trial("joint", "kd", 4, 3), Trial("joint", "kd", 16, 3)]
    assert trials[0].label() == "rank 2"


def test_plan_runs_seed_by_seed_so_early_stops_leave_whole_curves():
    trials = plan_trials(RunConfig(ranks="4,2", seeds="1,0"), {Trial("joint", "geometric", 2, 0)})
    assert [(t.seed, t.rank) for t in trials] == [(1, 2), (1, 4), (0, 4)]
    assert trials[0].label(seeds=2) == "rank 2 seed 1"


def test_plan_skips_recorded_trials(tmp_path):
    config = RunConfig(ranks=(1, 2, 4, 8))
    run = RunDir.open(tmp_path / "run", config)
    run.append(record(2))
    run.append(record(8, status="failed"))  # a failed trial is recorded too, and not rerun
    run.append(record(4, seed=1))  # another seed: does not count for seed 0
    run.append(record(1, loss="kd"))  # another loss: does not count for geometric
    done = {r.trial for r in run.records()}
    assert [t.rank for t in plan_trials(config, done)] == [1, 4]
    assert plan_trials(config, set(plan_trials(config, set()))) == []


def test_a_run_stays_readable_after_its_teacher_checkpoint_is_gone(tmp_path):
    weights = tmp_path / "teacher.safetensors"
    weights.write_text("weights")
    path = tmp_path / "run"
    RunDir.open(path, RunConfig(teacher_checkpoint=weights))
    weights.unlink()
    assert RunDir(path).config().teacher_checkpoint == weights  # `report` still works
    # Every error the library raises is an EffrankError the CLI can show as one line.
    with pytest.raises(ConfigError, match=r"holds another sweep \(differs in: teacher_checkpoint\)"):
        RunDir.open(path, RunConfig())


def test_a_refused_resume_names_every_differing_option_and_the_flags_that_resume(tmp_path):
    path = tmp_path / "run"
    RunDir.open(path, RunConfig(schedule="constant", augment=False, kd_temperature=2.0, data_root=tmp_path / "my data"))
    with pytest.raises(ConfigError) as refused:
        # schedule is keyed only when set: here only the stored run has it.
        RunDir.open(path, RunConfig(teacher_batch_size=32))
    assert str(refused.value) == (
        f"{path} holds another sweep (differs in: data_root, augment, teacher_batch_size, kd_temperature, schedule); "
        "use another --out or the same options to resume it, here "
        f"--data-root '{tmp_path / 'my data'}' --no-augment (no --teacher-batch-size) --kd-temperature 2.0 "
        "--schedule constant")


def test_a_corrupt_config_json_is_a_config_error(tmp_path):
    RunDir.open(tmp_path, RunConfig())
    (tmp_path / "config.json").write_text('{"ranks": [0]}')
    with pytest.raises(ConfigError, match="ranks must be positive"):
        RunDir(tmp_path).config()


def test_the_search_log_keeps_its_rounds_and_the_budget_an_adaptive_search_spent(tmp_path):
    run = RunDir.open(tmp_path / "run", RunConfig(ranks=(2, 8)))
    assert run.search_log() == ([], 0)
    run.store_search_rounds([[2, 8], [4]], 1)  # a grid's round, then an adaptive one
    assert run.search_log() == ([[2, 8], [4]], 1)
    run.search_path.write_text('{"rounds": [[2, 8], [4]]}')  # written before the count was kept: every round
    assert run.search_log()[1] == 2
    for bad in ('{"rounds": [[2, 8]], "adaptive_rounds": "1"}', '{"rounds": [[2.5]]}', '[]'):
        run.search_path.write_text(bad)
        with pytest.raises(ConfigError, match=r"search.json is not a search written by effrank-bench"):
            run.search_log()


def test_resumed_rounds_keep_what_the_search_may_ask_for_and_ranks_every_seed_recorded():
    from effrank_bench.plan import rounds_to_resume
    from effrank_bench.search import ON_GRID, AdaptiveSearch

    on_grid = AdaptiveSearch((2, 4, 8, 16), tolerance=ON_GRID)
    records = [record(5, seed=0), record(5, seed=1), record(11, seed=0)]  # 11: seed 1 still to train
    # Off the grid: 5 is kept (measured under both seeds), 11 and 27 are dropped, and the round of 27 with them.
    assert rounds_to_resume([[2, 5, 11, 16], [27]], on_grid, records, (0, 1)) == [[2, 5, 16]]
    assert rounds_to_resume([[2, 5, 11, 16], [27]], AdaptiveSearch((2, 32)), records, (0, 1)) == [[2, 5, 11, 16],
                                                                                                  [27]]
