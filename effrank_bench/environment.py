"""What a result was computed with: package versions and the device, stored in every record."""
from __future__ import annotations

import platform
from functools import cache
from importlib.metadata import PackageNotFoundError, version

import torch

from effrank_bench import __version__
from effrank_bench.errors import ConfigError


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


@cache
def environment(device: str) -> dict:
    dev = torch.device(device)
    return {
        "effrank_bench": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": _version("timm"),
        "transformers": _version("transformers"),
        "platform": platform.platform(),
        "device": device,
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or "cpu",
    }


def resolve_device(requested: str) -> str:
    """``auto`` is CUDA when available; asking for CUDA without it is an error a user can fix."""
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but torch sees no CUDA device; use --device cpu or auto")
    return requested
