"""Progress in a log: plain timestamped lines, a task's start and end, at most one line a minute in between."""
from __future__ import annotations

import io
import re

import pytest

from effrank_bench.progress import LogProgress

STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d ")


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def logged(stream: io.StringIO) -> list[str]:
    lines = stream.getvalue().splitlines()
    assert all(STAMP.match(line) for line in lines), lines
    return [STAMP.sub("", line) for line in lines]


def test_a_task_logs_its_start_a_line_a_minute_with_the_time_left_and_its_end():
    stream, clock = io.StringIO(), Clock()
    progress = LogProgress(stream, interval=60, clock=clock)
    with progress.task("rank 8", total=100) as advance:
        for _ in range(100):  # one step every 2 s
            advance(1)
            clock.now += 2
    assert logged(stream) == [
        "rank 8: started, 100 steps",
        # Speed from the first step on: 30 steps in 60 s, 40 steps left.
        "rank 8: 31 of 100, about 2m18s left (1m00s)",
        "rank 8: 61 of 100, about 1m18s left (2m00s)",
        "rank 8: 91 of 100, about 18s left (3m00s)",
        "rank 8: 100 of 100 done (3m20s)",
    ]


def test_a_resumed_task_measures_its_speed_without_the_steps_it_skipped():
    stream, clock = io.StringIO(), Clock()
    with LogProgress(stream, interval=60, clock=clock).task("teacher", total=1000) as advance:
        advance(900)  # finished before the interruption: counted, not timed
        for _ in range(40):
            clock.now += 3
            advance(1)
    assert logged(stream)[1] == "teacher: 920 of 1000, about 4m00s left (1m00s)"  # 20 steps a minute, 80 left


def test_an_interrupted_task_says_where_it_stopped():
    stream, clock = io.StringIO(), Clock()
    with pytest.raises(KeyboardInterrupt), LogProgress(stream, clock=clock).task("sweep", total=6) as advance:
        advance(2)
        clock.now += 4000
        raise KeyboardInterrupt
    assert logged(stream)[-1] == "sweep: stopped at 2 of 6 (1h06m)"


def test_notes_lose_the_bars_markup_but_keep_escaped_text():
    from rich.markup import escape

    stream = io.StringIO()
    LogProgress(stream).note(f"[red]rank 2 failed: {escape('loss [nan] in epoch 1')}")
    assert logged(stream) == ["rank 2 failed: loss [nan] in epoch 1"]


def test_a_run_logged_to_a_file_says_each_trials_accuracy_as_it_finishes(run_cli, tiny, tmp_path):
    code, _, err = run_cli("run", *tiny.args(), "--out", tmp_path / "run")  # stderr is no terminal here
    assert code == 0, err
    lines = logged(io.StringIO(err))
    accuracies = [line for line in lines if re.fullmatch(r"rank [24]: test accuracy \d\.\d{4}", line)]
    assert len(accuracies) == 2
    assert lines.index("sweep: started, 2 steps") < lines.index(accuracies[0])
    assert re.fullmatch(r"sweep: 2 of 2 done \(\d+s\)", lines[-1])
