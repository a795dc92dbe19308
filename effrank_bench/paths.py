"""Where effrank-bench keeps its caches: trained teachers, and data sets fetched without a --data-root."""
from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$EFFRANK_BENCH_CACHE``, else ``$XDG_CACHE_HOME/effrank-bench``, else ``~/.cache/effrank-bench``."""
    if "EFFRANK_BENCH_CACHE" in os.environ:
        return Path(os.environ["EFFRANK_BENCH_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "effrank-bench"
