"""What the plots share: rank axes on a log2 scale, labelled 1, 2, 4, ... in plain text; fixed margins; saving."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

# Subplot margins in inches, room for a title, axis labels and plain-number ticks at any figure size:
# fixed rather than tight_layout's, which draws the figure once more only to measure it.
_MARGINS = {"left": 0.8, "right": 0.2, "bottom": 0.55, "top": 0.35}


def fixed_margins(fig: Any, hspace: float = 0.08) -> None:
    """Place ``fig``'s subplots inside the fixed margins (``hspace``: the gap between stacked ones)."""
    width, height = fig.get_size_inches()
    fig.subplots_adjust(left=_MARGINS["left"] / width, right=1 - _MARGINS["right"] / width,
                        bottom=_MARGINS["bottom"] / height, top=1 - _MARGINS["top"] / height, hspace=hspace)


def log2_scale(ax: Any, axis: Literal["x", "y"] = "x") -> None:
    """A base-2 log scale on ``ax``'s ``axis`` whose ticks read as numbers (0.5, 1, 2, 4, ...).

    Plain text rather than matplotlib's default 2^k (fractions below 1: a rank / width axis's ticks ran into
    each other as 0.0078125 and 0.015625): easier to read as ranks, and mathtext labels are
    parsed again at every draw. No minor ticks: unlabelled, they were most of the axis' drawing time.
    """
    from matplotlib.ticker import FuncFormatter, NullLocator

    getattr(ax, f"set_{axis}scale")("log", base=2)
    target = getattr(ax, f"{axis}axis")
    target.set_major_formatter(FuncFormatter(lambda value, _: power_of_two(value)))
    target.set_minor_locator(NullLocator())


def power_of_two(value: float) -> str:
    """A tick of a log2 axis: ``4``, ``1``, ``1/8``: below 1 a fraction, as short as ``0.0078125`` is not."""
    if 0 < value < 1 and (inverse := round(1 / value)) == 1 / value:
        return f"1/{inverse}"
    return f"{value:g}"


def pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend (files, no window), imported when a plot is drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig: Any, path: Path) -> None:
    """Write ``fig`` to ``path`` as a 120 dpi PNG and close it.

    zlib level 1 instead of Pillow's 6: a third less encoding time (about 10 ms of a plot's 200 here)
    for a file about 10% larger.
    """
    fig.savefig(path, dpi=120, pil_kwargs={"compress_level": 1})
    pyplot().close(fig)
