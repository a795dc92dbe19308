"""Whether a server answers at an address, asked once and briefly before any work depends on it."""
from __future__ import annotations

import socket
from urllib.parse import SplitResult

from effrank_bench.errors import ConfigError, one_line


def url_port(url: SplitResult) -> int:
    """The port of an http(s) URL, its scheme's default where it names none; ValueError for a bad one."""
    return url.port or (443 if url.scheme == "https" else 80)


def unanswered(host: str, port: int, timeout: float = 5.0) -> str | None:
    """Why nothing accepts a connection at ``host``:``port`` within ``timeout`` seconds, in one line; None
    where something does."""
    try:
        socket.create_connection((host.strip("[]"), port), timeout=timeout).close()
    except (OSError, OverflowError, ValueError) as err:
        return one_line(err)
    return None


def check_answers(host: str, port: int, what: str, hint: str, timeout: float = 5.0) -> None:
    """Refuse ``what`` (the option and its value, as the user typed them) in one line when nothing accepts a
    connection at ``host``:``port`` within ``timeout`` seconds: clients such as Ray's and MLflow's retry
    for minutes before they give up, and a sweep should not train for hours towards a server that is down.
    ``hint`` says what to do about it."""
    why = unanswered(host, port, timeout)
    if why is not None:
        raise ConfigError(f"{what}: nothing answers there ({why}); {hint}")
