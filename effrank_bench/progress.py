"""How long work reports its progress: a silent default for the library, rich bars for the CLI."""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Protocol

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
