"""Whether a server answers at an address, asked once and briefly before any work depends on it."""
from __future__ import annotations

import socket

from effrank_bench.errors import ConfigError, one_line


def check_answers(host: str, port: int, what: str, hint: str, timeout: float = 5.0) -> None:
    """Refuse ``what`` (the option and its value, as the user typed them) in one line when nothing accepts a
    connection at ``host``:``port`` within ``timeout`` seconds: clients such as Ray's and MLflow's retry
    for minutes before they give up, and a sweep should not train for hours towards a server that is down.
    ``hint`` says what to do about it."""
    try:
        socket.create_connection((host.strip("[]"), port), timeout=timeout).close()
    except (OSError, OverflowError, ValueError) as err:
        raise ConfigError(f"{what}: nothing answers there ({one_line(err)}); {hint}") from None
