"""How data plugins quote the failure underneath a DataError: one short line, whatever raised it."""
from __future__ import annotations


def one_line(err: BaseException) -> str:
    """An exception as a short single line, for DataError messages."""
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text[:200]}" if text else type(err).__name__
