"""Where effrank-bench keeps its caches: trained teachers, and data sets fetched without a --data-root."""
from __future__ import annotations

import os
from pathlib import Path

from effrank_bench.errors import ConfigError


# What to do about a cache folder that cannot be made (no permission, a read-only file system).
CACHE_HINT = "; set EFFRANK_BENCH_CACHE to a folder you can write to"


def cache_dir() -> Path:
    """``$EFFRANK_BENCH_CACHE``, else ``$XDG_CACHE_HOME/effrank-bench``, else ``~/.cache/effrank-bench``."""
    if "EFFRANK_BENCH_CACHE" in os.environ:
        return Path(os.environ["EFFRANK_BENCH_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "effrank-bench"


def make_folder(path: Path, hint: str = "") -> None:
    """``path`` and its parents where missing; one that cannot be made (no permission, a read-only or
    virtual file system) is a ConfigError in one line, ``hint`` after the reason."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"cannot create the folder {path}: {err.strerror or err}{hint}") from None
