"""What the plots share: rank axes on a log2 scale, labelled 1, 2, 4, ... in plain text."""
from __future__ import annotations

from typing import Any, Literal


def log2_scale(ax: Any, axis: Literal["x", "y"] = "x") -> None:
    """A base-2 log scale on ``ax``'s ``axis`` whose ticks read as numbers (0.5, 1, 2, 4, ...).

    Plain text rather than matplotlib's default 2^k: easier to read as ranks, and mathtext labels are
    parsed again at every draw, which made up a good part of the time a report spent on its plot.
    """
    from matplotlib.ticker import FuncFormatter, NullFormatter

    getattr(ax, f"set_{axis}scale")("log", base=2)
    target = getattr(ax, f"{axis}axis")
    target.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    target.set_minor_formatter(NullFormatter())
