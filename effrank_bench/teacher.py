"""The full-rank teacher: build, load a checkpoint, train, and cache it by what determines it."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from effrank_bench.errors import CheckpointError, one_line


def cache_dir() -> Path:
    """``$EFFRANK_BENCH_CACHE``, else ``$XDG_CACHE_HOME/effrank-bench``, else ``~/.cache/effrank-bench``."""
    if "EFFRANK_BENCH_CACHE" in os.environ:
        return Path(os.environ["EFFRANK_BENCH_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "effrank-bench"


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from safetensors, or from a ``.pt``/``.pth`` file loaded with ``weights_only=True``."""
    if not path.is_file():
        raise CheckpointError(f"teacher checkpoint not found: {path}")
    try:
        if path.suffix == ".safetensors":
            return load_file(path)
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the same user error
        raise CheckpointError(f"cannot read teacher checkpoint {path}: {one_line(err)}") from None
    # Lightning and many training scripts nest the weights.
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors")
    return state


def apply_checkpoint(model: nn.Module, state: dict[str, torch.Tensor], source: Path) -> list[str]:
    """Load ``state`` into ``model``; returns the keys skipped because their shape differs (a new head).

    Any other missing or unexpected key is an error: a checkpoint of another architecture
    must not be half-loaded silently.
    """
    own = model.state_dict()
    skipped = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    result = model.load_state_dict({k: v for k, v in state.items() if k not in skipped}, strict=False)
    missing = [k for k in result.missing_keys if k not in skipped]
    if missing or result.unexpected_keys:
        raise CheckpointError(
            f"{source} does not fit this architecture: {len(missing)} missing keys "
            f"(e.g. {missing[:3]}), {len(result.unexpected_keys)} unexpected (e.g. {result.unexpected_keys[:3]})"
        )
    return skipped


@dataclass(frozen=True)
class CachedTeacher:
    """A teacher's weights and what is known of it, stored under its key."""

    weights: Path
    info: Path

    @classmethod
    def at(cls, key: str, root: Path | None = None) -> CachedTeacher:
        folder = (root or cache_dir()) / "teachers"
        return cls(folder / f"{key}.safetensors", folder / f"{key}.json")

    def exists(self) -> bool:
        return self.weights.is_file() and self.info.is_file()

    def load(self, model: nn.Module) -> dict:
        model.load_state_dict(load_file(self.weights))
        return json.loads(self.info.read_text())

    def save(self, model: nn.Module, info: dict) -> None:
        self.weights.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename, so an interrupted save never leaves a truncated cache entry behind.
        tmp = self.weights.with_suffix(".tmp")
        save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, tmp)
        tmp.replace(self.weights)
        self.info.write_text(json.dumps(info, indent=2))
