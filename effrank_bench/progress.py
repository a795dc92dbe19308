"""How long work reports its progress: a silent default for the library; for the CLI, rich bars on a
terminal and plain timestamped lines in a log."""
from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Protocol, TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichBars, TextColumn, TimeElapsedColumn, \
    TimeRemainingColumn


class Progress(Protocol):
    def task(self, description: str, total: int) -> contextlib.AbstractContextManager[Callable[[int], None]]:
        """A unit of work of ``total`` steps; the context yields ``advance(n)``."""

    def note(self, message: str) -> None:
        """A one-line status message (teacher loaded from cache, trial skipped, ...)."""


class NullProgress:
    @contextlib.contextmanager
    def task(self, description: str, total: int) -> Iterator[Callable[[int], None]]:
        yield lambda n: None

    def note(self, message: str) -> None:
        pass


class RichProgress:
    """Rich progress bars on stderr, one per running task, with an overall bar kept on top."""

    def __init__(self, console: Console | None = None):
        self.console = console or Console(stderr=True)
        self._started = False
        self._bars = RichBars(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=self.console, transient=True,
        )

    def __enter__(self) -> RichProgress:
        return self

    def __exit__(self, *exc) -> None:
        if self._started:
            self._bars.stop()

    @contextlib.contextmanager
    def task(self, description: str, total: int) -> Iterator[Callable[[int], None]]:
        # Started with the first bar, so an error before any work prints nothing but itself.
        if not self._started:
            self._bars.start()
            self._started = True
        task_id = self._bars.add_task(description, total=total)
        try:
            yield lambda n: self._bars.advance(task_id, n)
        finally:
            self._bars.update(task_id, completed=total, visible=False)
            self._bars.remove_task(task_id)

    def note(self, message: str) -> None:
        self._bars.console.print(message, soft_wrap=True, highlight=False)


class LogProgress:
    """Progress as plain timestamped lines, for a log (a batch job, ``nohup``, a pipe), where bars draw nothing.

    A task prints a line when it starts and when it ends, and in between at most one per ``interval``
    seconds with the steps done and an estimate of the time left: a day-long sweep writes a line a minute.
    """

    def __init__(self, stream: TextIO, interval: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self.stream, self.interval, self.clock = stream, interval, clock

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc) -> None:
        pass

    @contextlib.contextmanager
    def task(self, description: str, total: int) -> Iterator[Callable[[int], None]]:
        start = self.clock()
        done, since = 0, None  # since: (time, steps done) the speed is measured from

        def line(what: str) -> None:
            self._print(f"{description}: {what} ({_duration(self.clock() - start)})")

        def advance(n: int) -> None:
            nonlocal done, since
            done += n
            now = self.clock()
            if since is None:  # the first call: a resumed task skips its finished steps here, in no time
                since = (now, done)
            elif done < total and now - since[0] >= self.interval and now > since[0]:
                speed = (done - since[1]) / (now - since[0])
                left = f", about {_duration((total - done) / speed)} left" if speed > 0 else ""
                line(f"{done} of {total}{left}")
                since = (now, done)

        self._print(f"{description}: started, {total} step{'' if total == 1 else 's'}")
        try:
            yield advance
        finally:
            line(f"{done} of {total} done" if done >= total else f"stopped at {done} of {total}")

    def note(self, message: str) -> None:
        from rich.text import Text

        self._print(Text.from_markup(message).plain)  # the bars' notes carry rich markup

    def _print(self, text: str) -> None:
        print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}", file=self.stream, flush=True)  # a day-long log


def _duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``2h07m``."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def cli_progress(console: Console | None = None) -> RichProgress | LogProgress:
    """Bars where stderr is a terminal that draws them, timestamped lines elsewhere (a log, ``TERM=dumb``)."""
    console = console or Console(stderr=True)
    return RichProgress(console) if console.is_interactive else LogProgress(console.file)
