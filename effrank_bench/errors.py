"""The one family of errors the library raises; only the CLI turns them into exit codes."""
from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def one_line(err: BaseException) -> str:
    """An exception underneath ours as one short line (torch's and the hub's run to many, with colours)."""
    text = " ".join(_ANSI.sub("", str(err)).split())
    return f"{type(err).__name__}: {text[:200]}" if text else type(err).__name__


def format_validation_error(err: ValidationError, source: str) -> str:
    """A pydantic error as one line: where each problem is and what it is."""
    problems = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"])
        message = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            problems.append(f"unknown key '{where}'")
        else:
            problems.append(f"{where}: {message}" if where else message)
    return f"{source}: " + "; ".join(problems)


class EffrankError(Exception):
    """Base of every error a user can act on; its message is shown as one line."""


class ConfigError(EffrankError):
    """A run, suite or command-line value is invalid."""


class UnknownNameError(EffrankError):
    """A name was asked for that no plugin registered."""


class RegistrationError(EffrankError):
    """A plugin registered something invalid or a name twice."""


class UnsupportedTargetError(EffrankError):
    """An architecture was asked to factorize a target it does not have."""


class RankError(EffrankError):
    """A rank is not positive or exceeds every targeted layer."""


class DataError(EffrankError):
    """A data set or tokenizer cannot be found, fetched or read; the message says where it was looked for."""


class AnalysisError(EffrankError):
    """A curve cannot be analysed (too few points, bad CSV, bad thresholds)."""


class CheckpointError(EffrankError):
    """A teacher checkpoint or pretrained weight file cannot be found or read."""


class LossError(EffrankError):
    """A distillation loss got inputs it cannot compare (e.g. mismatched features)."""


class TrialFailed(EffrankError):
    """A trial could not finish (e.g. its loss became NaN); the sweep records it and goes on."""
