"""effrank-bench: how much rank does this network really need?"""
from __future__ import annotations

import pluggy

__version__ = "0.1.0"

#: Decorator for plugin hook implementations (``@hookimpl def register_architectures(register): ...``).
hookimpl = pluggy.HookimplMarker("effrank_bench")

__all__ = ["__version__", "hookimpl"]
