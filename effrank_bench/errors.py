"""The one family of errors the library raises; only the CLI turns them into exit codes."""
from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# An error line names this many problems at most (a list of a thousand bad seeds is one message).
_MAX_PROBLEMS = 5


def one_line(err: BaseException, limit: int = 200, typed: bool = True) -> str:
    """An exception underneath ours as one short line (torch's and the hub's run to many, with colours), its
    text cut to ``limit`` characters with an ellipsis, after its type unless ``typed`` is False (for a message
    that names the failure already)."""
    text = " ".join(_ANSI.sub("", str(err)).split())
    if len(text) > limit:
        text = text[:limit - 1] + "…"
    if not typed and text:
        return text
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def a_type(value: object) -> str:
    """``value``'s type with its article, for a message: "a float", "an int"."""
    name = type(value).__name__
    return ("an " if name[:1].lower() in "aeiou" else "a ") + name


def shown(value: object, limit: int = 80) -> str:
    """A value a user gave, for an error message: its repr, printable, cut to about ``limit`` characters."""
    try:
        text = value if isinstance(value, str) and value.isprintable() else repr(value)
    except ValueError:  # an int too long for str()
        text = f"a {value.bit_length()}-bit number" if isinstance(value, int) else type(value).__name__
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def unknown_key(name: str, known: Iterable[str]) -> str:
    """``unknown key 'name'``, with a "did you mean" where one of ``known`` is close."""
    close = difflib.get_close_matches(name, list(known), n=1)
    return f"unknown key '{name}'" + (f" (did you mean '{close[0]}'?)" if close else "")


def format_validation_error(err: ValidationError, source: str | None, known: Iterable[str] = (),
                            flags: Iterable[str] = ()) -> str:
    """A pydantic error as one line: where each problem is and what it is, each echoed value cut short;
    after ``source: `` (None: the problems alone, for a validator whose field pydantic names anyway).
    An unknown key close to one of ``known`` (the model's fields) gets a "did you mean". A problem with one
    of ``flags`` (fields a command-line flag set) names the flag, ``--checkpoint-every``, and an item of a
    list its place; the flags' problems come first, then ``source`` and the others."""
    flags, flagged, others = set(flags), [], []
    for e in err.errors()[:_MAX_PROBLEMS]:
        loc = [str(p) for p in e["loc"]]
        if loc and loc[0] in flags:
            entry = next((int(i) + 1 for i in loc[1:] if i.isdigit()), None)  # a list's item, counted from 1
            what = f" (entry {entry}: {shown(e.get('input'))!r})" if entry is not None else ""
            where, problems = f"--{loc[0].replace('_', '-')}{what}", flagged
        else:
            where, problems = shown(".".join(loc)), others
        message = shown(e["msg"].removeprefix("Value error, "), 300)
        if e["type"] == "extra_forbidden":
            problems.append(unknown_key(where, known))
        else:
            problems.append(f"{where}: {message}" if where else message)
    more = err.error_count() - _MAX_PROBLEMS
    rest = [(f"{source}: " if source else "") + "; ".join(others)] if others else []
    return "; ".join(flagged + rest) + (f"; and {more} more" if more > 0 else "")


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


class LockedError(EffrankError):
    """A run directory is in use by another live process (the message names it)."""


class TrialFailed(EffrankError):
    """A trial could not finish (e.g. its loss became NaN); the sweep records it and goes on."""
