"""Files written whole or not at all: a temporary file beside the target, then one os.replace."""
from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A fresh temporary path beside ``path``; once the block ends without error it replaces ``path``.

    A reader sees the old file or the new one, never half of it: a process killed mid-write leaves
    at most a hidden ``.NAME.*.tmp.EXT`` behind. The temporary name keeps the extension, so writers
    that pick a format by it (matplotlib, safetensors) write the right one.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{secrets.token_hex(4)}.tmp{path.suffix}")
    # Created with O_EXCL and the usual mode (umask applies), unlike mkstemp's 0600.
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield tmp
        with open(tmp, "rb+") as f:  # on disk before the rename makes it visible
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def text_writer(text: str) -> Callable[[Path], None]:
    """A writer of ``text`` (UTF-8), for :func:`write_files`."""
    return lambda path: path.write_text(text, encoding="utf-8")


def write_files(writers: dict[Path, Callable[[Path], None]], stale: Iterable[Path] = ()) -> list[Path]:
    """Each path written whole or not at all by its writer, which is handed a temporary path beside it, in
    order; the paths written. Each of ``stale`` that no writer writes this time is removed first: an earlier
    file of that name would describe something other than the files written now."""
    for path in stale:
        if path not in writers:
            path.unlink(missing_ok=True)
    for path, write in writers.items():
        with atomic_path(path) as tmp:
            write(tmp)
    return list(writers)
