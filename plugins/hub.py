"""The Hugging Face hub, asked only when it answers: unreachable, its clients (huggingface_hub, transformers,
datasets) retry for half a minute to a minute per file before they fail."""
from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from urllib.parse import urlsplit

from effrank_bench.errors import one_line
from effrank_bench.network import unanswered, url_port


def why_offline(timeout: float = 3.0) -> str | None:
    """Why the hub cannot be asked now; None where it answers a TCP connection within ``timeout`` (or a proxy
    is set, which we cannot probe)."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return "the hub's offline mode is on (HF_HUB_OFFLINE)"
    if any(os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None
    url = urlsplit(constants.ENDPOINT)
    try:
        down = unanswered(url.hostname or "", url_port(url), timeout)
    except ValueError:  # a port that is not a number
        down = "bad port"
    return "no network: the Hugging Face hub cannot be reached" if down else None


@contextlib.contextmanager
def hub_offline() -> Iterator[None]:
    """The hub's offline mode for a moment (its local cache only): huggingface_hub's, which transformers reads
    at each call, and datasets' own where it is loaded."""
    from huggingface_hub import constants

    flags = [constants] + ([sys.modules["datasets"].config] if "datasets" in sys.modules else [])
    before = [flag.HF_HUB_OFFLINE for flag in flags]
    for flag in flags:
        flag.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        for flag, value in zip(flags, before):
            flag.HF_HUB_OFFLINE = value


@contextlib.contextmanager
def cache_only_when_offline() -> Iterator[str | None]:
    """Yields :func:`why_offline`; where the hub cannot be asked, the block runs in its offline mode, so that a
    file in the local cache still loads and a missing one fails at once."""
    offline = why_offline()
    with hub_offline() if offline else contextlib.nullcontext():
        yield offline


def missed_the_cache(err: BaseException) -> bool:
    """Whether ``err`` (or an exception it was raised from) says a file was not in the local cache and could not
    be fetched: what the hub's clients raise in its offline mode. huggingface_hub and transformers raise
    LocalEntryNotFoundError (transformers wraps it in an OSError); datasets raises a ConnectionError."""
    from huggingface_hub.utils import LocalEntryNotFoundError, OfflineModeIsEnabled

    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, (LocalEntryNotFoundError, OfflineModeIsEnabled, ConnectionError)):
            return True
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return False


def why_it_failed(offline: str | None, err: BaseException) -> str:
    """The reason a load from the hub failed, for a message: the hub being unreachable (``offline``, from
    :func:`cache_only_when_offline`) where the file was not in the local cache, else the error itself (a
    cached file that does not load, a bad name), which the offline reason would hide."""
    return offline if offline and missed_the_cache(err) else one_line(err)
