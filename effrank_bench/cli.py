"""The ``effrank-bench`` command: parse arguments, call the library, turn its errors into exit 2."""
from __future__ import annotations

import argparse
import difflib
import functools
import json
import os
import re
import signal
import sys
import threading
from pathlib import Path
from types import UnionType
from typing import TYPE_CHECKING, Any, Literal, NoReturn, Union, get_args, get_origin

from pydantic.fields import FieldInfo
from rich.console import Console
from rich.table import Table

from effrank_bench import __version__
from effrank_bench.config import MLFLOW_DEFAULT_URI, RunConfig, flag_name, flag_value
from effrank_bench.errors import ConfigError, EffrankError, one_line

if TYPE_CHECKING:
    from effrank_bench.store import RunDir

BAD_INPUT = 2
INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C
TERMINATED = 143  # 128 + SIGTERM
_MAX_ERROR = 1000  # a screenful: an MLflow refusal with its way out, after a long --mlflow URI, runs past 600
# Latency batches beyond this are a typo: the example input alone would need gigabytes.
MAX_MEASURE_BATCH = 65_536

# The groups of `run --help`, in order, and the fields in each; a field named in none is listed
# under "other options" (it still gets its flag: a new option is one RunConfig field).
_RUN_GROUPS = {
    "what to sweep": ("arch", "target", "loss", "dataset", "ranks", "seeds", "search", "tolerance"),
    "data": ("data_root", "download", "tokenizer", "augment", "val_fraction", "batch_size", "workers",
             "limit_batches"),
    "teacher": ("teacher_seed", "teacher_epochs", "teacher_batch_size", "teacher_lr", "teacher_optimizer",
                "teacher_weight_decay", "teacher_warmup", "teacher_schedule", "label_smoothing", "pretrained",
                "teacher_checkpoint"),
    "students": ("epochs", "lr", "weight_decay", "schedule", "select", "init", "qkv", "kd_temperature",
                 "kd_alpha"),
    "read-off": ("thresholds", "knee_axis", "monotone", "bootstrap_resamples", "spectrum_samples"),
    "cost": ("latency_batch_size", "latency_repeats"),
    "run": ("device", "amp", "executor", "group", "memory_fraction", "compile", "checkpoint_every", "out", "mlflow"),
    "ray executor": ("ray_address", "gpus_per_trial", "cpus_per_trial", "max_retries"),
}
# Where the type's own metavar (N, X, NAME, PATH, {choices}) would not say what to type.
_METAVARS = {"ranks": "2,4,8", "seeds": "0,1,2", "thresholds": "LOW,HIGH", "data_root": "DIR", "out": "DIR",
             "tokenizer": "NAME_OR_PATH", "group": "N|auto", "tolerance": "P%|N|grid",
             "ray_address": "auto|ADDRESS", "mlflow": "URI"}
_TYPE_METAVARS = {int: "N", float: "X", str: "NAME", Path: "PATH"}
# Flags whose value may be left out: given alone, they take this value.
_BARE_VALUES = {"mlflow": MLFLOW_DEFAULT_URI}
# The run options `spectrum` takes (a run's --config is its config) but does not read, named where typed as flags:
# the others choose its teacher (the teacher's options, and the sweep's, whose run directory may hold it), time it
# or say what is measured.
_SPECTRUM_UNREAD = ("ranks", "search", "tolerance", "thresholds", "knee_axis", "monotone", "bootstrap_resamples",
                    "executor", "group", "memory_fraction", "compile", "checkpoint_every", "mlflow", "ray_address",
                    "gpus_per_trial", "cpus_per_trial", "max_retries")


class Terminated(KeyboardInterrupt):
    """SIGTERM (a batch scheduler's, `timeout`'s, Kubernetes'), raised where the process is so that a run stops
    as Ctrl-C stops it: finished trials kept and said, the lock released, MLflow told, exit 143."""


def _raise_terminated(signum: int, frame: Any) -> NoReturn:
    raise Terminated


def _stopped(stop: KeyboardInterrupt) -> int:
    """The exit code of a run stopped by Ctrl-C or SIGTERM."""
    return TERMINATED if isinstance(stop, Terminated) else INTERRUPTED


def _stop_word(stop: KeyboardInterrupt) -> str:
    """How the log says a run stopped: by SIGTERM (a scheduler's, ``timeout``'s) or by Ctrl-C."""
    return "terminated (SIGTERM)" if isinstance(stop, Terminated) else "interrupted"


def _kept_checkpoints(run: RunDir) -> str:
    """", and the checkpoints of 2 unfinished groups (…)" where a stopped run left some, else ""."""
    from effrank_bench.checkpoint import saved_groups

    groups = len(saved_groups(run.checkpoints_path))
    if not groups:
        return ""
    plural = "s" if groups > 1 else ""
    return f", and the checkpoint{plural} of {groups} unfinished group{plural} (resumed from there)"


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors raised as ours (one line, exit 2), negative numbers read as values, and no
    abbreviated options: a typo that is the start of a flag (``--tol``, ``--grou``) would be taken for it, and a
    flag added later would change what an abbreviation in a user's script meant."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **{"allow_abbrev": False, **kwargs})
        # argparse takes "-1" and "-.5" for values but "-inf", "-1e-3" and "-1,0.5" for options, so
        # "--lr -1e-3" would stop before the validator could explain it. No option of ours looks like these.
        self._negative_number_matcher = re.compile(r"^-(\.?\d|inf\b)", re.IGNORECASE)

    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{message} (see `{self.prog} --help`)")

    def commands(self) -> dict[str, argparse.ArgumentParser]:
        return {name: sub for action in self._actions if isinstance(action, argparse._SubParsersAction)
                for name, sub in action.choices.items()}

    def parse_command(self, argv: list[str] | None) -> argparse.Namespace:
        """``parse_args``, where an unknown flag is answered with the flag of its command it most looks like, or
        with the commands that have it (argparse reports a command's unknown flag from this parser, which knows
        none of the command's own)."""
        args, unknown = self.parse_known_args(argv)
        if not unknown:
            return args
        message = f"unrecognized arguments: {' '.join(unknown)}"
        typed = next((arg.split("=")[0] for arg in unknown if arg.startswith("--")), None)
        if typed is not None:
            name, commands = args.command or "run", self.commands()
            if own := _closest_flag(typed, _long_flags(commands[name])):
                message += f"; did you mean {own}?"
            else:
                other = {command: flag for command, sub in commands.items()
                         if (flag := _closest_flag(typed, _long_flags(sub)))}
                if other:
                    flag = min(other.values(), key=lambda f: (f != typed, f))
                    having = [command for command, f in other.items() if f == flag]
                    message += f"; {flag} is an option of {', '.join(having)}, not of {name}"
        self.error(message)


def _long_flags(parser: argparse.ArgumentParser) -> list[str]:
    return sorted(flag for action in parser._actions for flag in action.option_strings if flag.startswith("--"))


def _closest_flag(typed: str, flags: list[str]) -> str | None:
    """``typed`` itself, the one flag it begins, or the flag it most looks like, among ``flags``; None if none."""
    starting = [flag for flag in flags if flag.startswith(typed)]
    close = starting if len(starting) == 1 else difflib.get_close_matches(typed, flags, n=1, cutoff=0.75)
    return close[0] if close else None


def _run_fields() -> dict[str, FieldInfo]:
    """The RunConfig fields that are flags of ``run``."""
    return {name: field for name, field in RunConfig.model_fields.items()
            if not (isinstance(field.json_schema_extra, dict) and field.json_schema_extra.get("cli") is False)}


def _flag_kind(name: str, annotation: Any) -> dict[str, Any]:
    """argparse's type and metavar, or choices, or action, for a field's annotation."""
    if get_origin(annotation) in (Union, UnionType):  # `Path | None`: None is the parser's "not given"
        kinds = [a for a in get_args(annotation) if a is not type(None)]
        if len(kinds) > 1:  # `int | Literal["auto"]`: the config's validator reads the text
            return {"type": str, "metavar": _METAVARS.get(name, "VALUE")}
        (annotation,) = kinds
    if annotation is bool:
        return {"action": argparse.BooleanOptionalAction}
    if get_origin(annotation) is Literal:
        choices = get_args(annotation)
        return {"type": type(choices[0]), "choices": choices}
    if get_origin(annotation) is tuple:  # "2,4,8": the config's validator splits it, as it does in a file
        return {"type": str, "metavar": _METAVARS.get(name, "A,B,...")}
    if annotation in _TYPE_METAVARS:
        return {"type": annotation, "metavar": _METAVARS.get(name, _TYPE_METAVARS[annotation])}
    raise TypeError(f"RunConfig.{name}: no flag for {annotation!r}; give it json_schema_extra={{'cli': False}}")


def _flag_help(field: FieldInfo) -> str:
    text = field.description or ""
    default = field.default
    if default is not None and "default" not in text:
        shown = ("on" if default else "off") if isinstance(default, bool) else flag_value(default)
        text = f"{text[:-1]}; default: {shown})" if text.endswith(")") else f"{text} (default: {shown})"
    return text.replace("%", "%%")  # argparse %-formats help texts


def _add_run_flags(run: argparse.ArgumentParser, exclude: tuple[str, ...] = ()) -> None:
    """One flag per RunConfig field (but ``exclude``), typed by its annotation; ``None`` defaults leave a
    file's values alone."""
    fields = {name: field for name, field in _run_fields().items() if name not in exclude}
    grouped = [(title, [name for name in names if name in fields]) for title, names in _RUN_GROUPS.items()]
    named = {name for _, names in grouped for name in names}
    grouped.append(("other options", [name for name in fields if name not in named]))
    for title, names in grouped:
        if not names:
            continue
        group = run.add_argument_group(title)
        for name in names:
            bare = {"nargs": "?", "const": _BARE_VALUES[name]} if name in _BARE_VALUES else {}
            group.add_argument(flag_name(name), dest=name, default=None,
                               help=_flag_help(fields[name]), **_flag_kind(name, fields[name].annotation), **bare)
            if name == "seeds":  # its one-seed alias, which the config reads as `seed = N`
                group.add_argument("--seed", type=int, metavar="N", default=None,
                                   help="one seed for teacher and students (same as --seeds N)")


def _add_curve_options(parser: argparse.ArgumentParser) -> None:
    """An accuracy-vs-rank CSV and how to read it off: analyze's and replay's."""
    parser.add_argument("csv", type=Path, metavar="CURVE", help="a CSV with rank and accuracy columns, or a run "
                                                                "directory (its summary.csv)")
    parser.add_argument("--teacher-acc", type=float, help="teacher accuracy, same units as the CSV (default: the "
                                                           "CSV's teacher row, as a run's summary.csv has)")
    # None: a run directory's own read-off (its report's), else run's defaults.
    parser.add_argument("--thresholds", metavar="LOW,HIGH",
                        help="the region's accuracy thresholds, fractions of the teacher's (default: a run "
                             "directory's own, else 0.85,0.95)")
    parser.add_argument("--knee-axis", choices=["linear", "log2"],
                        help="the axis the knee's distance to the secant is taken on: rank (the paper's) or log2 rank "
                             "(default: a run directory's own, else linear)")
    parser.add_argument("--monotone", choices=["running-max", "isotonic"],
                        help="make the curve non-decreasing by running max (the paper's) or isotonic regression "
                             "(default: a run directory's own, else running-max)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _command(commands: argparse._SubParsersAction, name: str, help: str) -> argparse.ArgumentParser:
    """A command listed with ``help`` in the top-level --help, whose own --help opens with the same line."""
    return commands.add_parser(name, help=help, description=help[:1].upper() + help[1:] + ".")


@functools.cache  # parsing leaves a parser as it was: one per process serves every main() (a notebook's, tests')
def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="effrank-bench",
        description="Estimate the effective rank of a network by low-rank factorization and distillation.",
    )
    parser.add_argument("--version", action="version", version=f"effrank-bench {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    commands = parser.add_subparsers(dest="command")

    run = _command(commands, "run", help="distill a sweep of ranks and report region, knee and costs")
    source = run.add_mutually_exclusive_group()
    source.add_argument("--config", type=Path, metavar="TOML", help="TOML file with the same fields as the flags")
    source.add_argument("--suite", type=Path, metavar="TOML",
                        help="TOML suite: a matrix of runs (flags apply to every run)")
    _add_run_flags(run)
    run.set_defaults(handler=_run, run_flags=tuple(_run_fields()))

    spectrum = _command(commands, "spectrum", help="weight and feature ranks of a run's teacher (trained, "
                                                    "pretrained or cached), with no distillation")
    spectrum.add_argument("--config", type=Path, metavar="TOML", help="TOML file with the same fields as the flags")
    spectrum.add_argument("--samples", type=int, metavar="N",  # None: the run options' spectrum_samples
                          help="test inputs whose branch outputs are measured (default: --spectrum-samples, "
                               "128 unless set, as a run measures its teacher)")
    spectrum.add_argument("--json", action="store_true", help="print one JSON object")
    spectrum.add_argument("--out", type=Path, metavar="DIR",
                          help="also write spectrum.json, spectrum.csv and plots across depth into this folder")
    # The teacher's options are run's, generated from the same fields (a run's command line works here, its
    # sweep options unused); --out is this command's own.
    _add_run_flags(spectrum, exclude=("out",))
    spectrum.set_defaults(handler=_spectrum, run_flags=tuple(name for name in _run_fields() if name != "out"))

    analyze = _command(commands, "analyze", help="region and knee of an accuracy-vs-rank CSV (rank,accuracy)")
    _add_curve_options(analyze)
    analyze.set_defaults(handler=_analyze)

    replay = _command(commands, "replay", help="replay a rank search against an accuracy-vs-rank CSV: the ranks "
                                                "it would train and its read-off against the full grid's")
    _add_curve_options(replay)
    replay.add_argument("--search", choices=["adaptive", "grid"], default="adaptive",
                        help="the search to replay (default: adaptive, the one worth replaying; run's default is grid)")
    replay.add_argument("--ranks", metavar="2,4,8", help="the full grid (default: the CSV's ranks); its ends "
                                                         "bound the adaptive search")
    replay.add_argument("--tolerance", metavar="P%|N|grid",
                        help="adaptive: how far apart the measured ranks around each crossing and the knee may be, "
                             "10%% of the rank (at least 1), a number of ranks, or grid (adjacent ranks of the grid, "
                             "training none off it) (default: an adaptive run directory's own, else 10%%)")
    replay.set_defaults(handler=_replay)

    measure = _command(commands, "measure", help="parameters, MACs, latency and memory of teacher and students")
    # The options a run has too, with its defaults and help texts: one description of each.
    fields = RunConfig.model_fields
    measure.add_argument("--arch", default=fields["arch"].default, help=_flag_help(fields["arch"]))
    measure.add_argument("--target", default=fields["target"].default, help=_flag_help(fields["target"]))
    measure.add_argument("--ranks", default="8,16,32", help="the students' ranks, comma-separated (default: "
                                                            "%(default)s)")
    measure.add_argument("--dataset", help="take classes and channels from this data set "
                                           "(default: the architecture's native input)")
    measure.add_argument("--data-root", type=Path, help="where that data set's files are")
    measure.add_argument("--tokenizer", help=_flag_help(fields["tokenizer"]))
    measure.add_argument("--batch-size", "--latency-batch-size", type=int, default=1,  # the second, as `run` says it
                         help="batch size of the latency runs (default: %(default)s)")
    measure.add_argument("--warmup", type=int, default=5, help="untimed passes before the timed ones (default: "
                                                               "%(default)s)")
    measure.add_argument("--repeats", "--latency-repeats", type=int, default=30,
                         help="timed passes (on one thread on CPU); latency is their median (default: %(default)s)")
    measure.add_argument("--qkv", choices=["split", "fused"], default=fields["qkv"].default,
                         help=_flag_help(fields["qkv"]))
    measure.add_argument("--device", choices=["auto", "cpu", "cuda"], default=fields["device"].default,
                         help="where to measure (auto: CUDA when available; default: auto)")
    measure.add_argument("--json", action="store_true", help="print one JSON object")
    measure.set_defaults(handler=_measure)

    listing = _command(commands, "list", help="registered architectures, targets, losses and data sets")
    listing.add_argument("--json", action="store_true", help="print one JSON object: kind (architecture, target, "
                                                             "loss, dataset, executor) -> [{name, description, plugin}]"
                                                             ", architectures with their targets")
    listing.set_defaults(handler=_list)

    report = _command(commands, "report", help="re-render the table, summaries and plot of a run directory")
    report.add_argument("run_dir", type=Path)
    report.add_argument("--json", action="store_true", help="print one JSON object (what summary.json holds)")
    report.set_defaults(handler=_report)

    compare = _command(commands, "compare", help="put several run directories side by side: region, knee, "
                                                  "cost at the knee, one overlay plot")
    compare.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN_DIR")
    compare.add_argument("--json", action="store_true", help="print one JSON object")
    compare.add_argument("--out", type=Path, help="also write comparison.json, .csv, .md and .png into this folder")
    compare.set_defaults(handler=_compare)
    return parser


def _print_report(run, console: Console, plot: bool = True, write: bool = True, as_json: bool = False):
    """Write the run's report files (curve.png unless ``plot`` is False; none unless ``write``), print its
    table and read-off (or, ``as_json``, the summary as one JSON object); the report, for whoever logs it."""
    from effrank_bench.report import (build_report, region_lines, render_table, search_lines, spectrum_lines,
                                      warning_lines, write_report)

    report = build_report(run)
    if write:
        write_report(run, report, plot)
    if as_json:
        print(json.dumps(report.to_dict()))
        return report
    console.print(render_table(report))
    for line in (region_lines(report.analysis, report.note, report.uncertainty) + search_lines(report)
                 + spectrum_lines(report) + warning_lines(report)):
        console.print(line, markup=False, highlight=False)  # "[95% CI …]" is text, not a rich style tag
    if write:
        console.print(f"results in {run.path}", soft_wrap=True)
    return report


def _recipes(arch: str) -> dict[str, Any]:
    """An architecture's recipe, the plugins loaded only once a config's own values have passed their checks."""
    from effrank_bench.registry import default_registry

    return default_registry().recipe(arch)


def _run(args: argparse.Namespace, console: Console) -> int:
    from effrank_bench.config import load_config
    from effrank_bench.progress import cli_progress
    from effrank_bench.setup import prepare
    from effrank_bench.sweep import execute

    overrides = _overrides(args)
    if args.suite is not None:
        return _run_suite(args.suite, overrides, console)
    config = load_config(args.config, overrides, _recipes)
    if config.mlflow is not None:
        _connect_mlflow([config.mlflow])
    setup = prepare(config)  # bad input fails here, before any bar is drawn
    progress = cli_progress()
    with progress:
        try:
            run = execute(setup, progress)
        except KeyboardInterrupt as stop:
            progress.note(f"{_stop_word(stop)}: {len(setup.run.records())} finished trial(s) are in {setup.run.path}"
                          f"{_kept_checkpoints(setup.run)}; run the same command again to resume")
            if config.mlflow is not None:  # what was finished is browsable too
                _log_mlflow(config.mlflow, setup.run.path, console,
                            lambda log: log.log_run(setup.run, config.mlflow, interrupted=True))
            return _stopped(stop)
    report = _print_report(run, console, config.plot)
    if config.mlflow is not None:
        _log_mlflow(config.mlflow, run.path, console, lambda log: log.log_run(run, config.mlflow, report))
    return 0


def _connect_mlflow(uris) -> None:
    """Check at the edge, before any training, that MLflow is installed and opens every URI."""
    from effrank_bench.mlflow_log import connect

    for uri in dict.fromkeys(uris):
        connect(uri)


def _log_mlflow(uri: str, where: Path, console: Console, log) -> None:
    """``log(mlflow_log)``: a failure is one warning line; the run directory is already complete without it."""
    from effrank_bench import mlflow_log

    try:
        log(mlflow_log)
    except Exception as err:
        print(f"warning: logging to MLflow at {uri} failed ({one_line(err)}); "
              f"records and report are safe in {where}: run the same command again to log them", file=sys.stderr)
        return
    console.print(f"logged to MLflow at {uri}, experiment {mlflow_log.experiment_name()}; "
                  f"{mlflow_log.browse_hint(uri)}", markup=False, highlight=False, soft_wrap=True)


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The RunConfig values given as flags of this command (None: not given)."""
    return {name: getattr(args, name) for name in [*args.run_flags, "seed"]}


def _spectrum(args: argparse.Namespace, console: Console) -> int:
    from effrank_bench.config import load_config
    from effrank_bench.progress import cli_progress
    from effrank_bench.setup import prepare
    from effrank_bench.spectrum_report import check_out, render_tables, summary_lines, write_spectrum
    from effrank_bench.teacher import obtain_teacher
    from effrank_bench.teacher_spectrum import obtain_spectrum

    if args.samples is not None and args.samples < 1:
        raise ConfigError(f"--samples must be at least 1, got {args.samples}")
    if args.out is not None:
        check_out(args.out)
    # The teacher's options as `run` takes them, the architecture's recipe too: the same teacher, from the cache.
    # Bad input fails here; a run's sweep options (ranks, epochs, ...) are taken and unused.
    setup = prepare(load_config(args.config, _overrides(args), _recipes), sweep=False)
    samples = setup.config.spectrum_samples if args.samples is None else args.samples
    if samples < 1:
        raise ConfigError("--spectrum-samples 0 measures no spectrum; give --samples N (at least 1)")
    progress = cli_progress()
    with progress:
        unread = [flag_name(name) for name in _SPECTRUM_UNREAD if getattr(args, name) is not None]
        if unread:
            progress.note(f"[yellow]{', '.join(unread)}: `spectrum` measures the teacher alone (no students, no "
                          f"curve) and does not read {'it' if len(unread) == 1 else 'them'}")
        if args.plot is not None and args.out is None:
            progress.note(f"[yellow]--{'' if args.plot else 'no-'}plot: `spectrum` draws its plots into --out DIR "
                          "only, and without it writes nothing")
        teacher = obtain_teacher(setup, progress, students=False)  # trained (and cached) exactly as `run` would
        spectrum = obtain_spectrum(setup, teacher, samples, progress)
    paths = write_spectrum(spectrum, args.out, plot=setup.config.plot) if args.out is not None else []
    if args.json:
        print(json.dumps(spectrum.to_dict()))
        return 0
    for table in render_tables(spectrum):
        console.print(table)
    for line in summary_lines(spectrum):
        console.print(line, markup=False, highlight=False)
    if paths:
        console.print(f"spectrum written to {args.out}", soft_wrap=True)
    return 0


def _run_suite(path: Path, overrides: dict, console: Console) -> int:
    from effrank_bench.config import load_suite
    from effrank_bench.progress import cli_progress
    from effrank_bench.suite import run_suite

    suite = load_suite(path, overrides, _recipes)
    uris = [config.mlflow for config in suite.runs if config.mlflow is not None]
    _connect_mlflow(uris)
    progress = cli_progress()  # draws nothing until the first bar: checks that fail print only themselves
    with progress:
        try:
            result = run_suite(suite, progress=progress)
        except KeyboardInterrupt as stop:
            progress.note(f"{_stop_word(stop)}: finished trials (and the checkpoints of unfinished groups) are kept "
                          f"under {suite.out}; run the same command again to resume")
            _log_suite_mlflow(suite, uris, console, interrupted=True)
            return _stopped(stop)
    _print_comparison(result.comparison, console)
    console.print(f"{len(result.runs)} runs in {result.out}; suite summary in {result.out}/comparison.*",
                  soft_wrap=True)
    _log_suite_mlflow(suite, uris, console)
    return 0


def _log_suite_mlflow(suite, uris: list[str], console: Console, interrupted: bool = False) -> None:
    """Each run with --mlflow under one parent run per tracking URI; an interrupted suite logs the runs it began."""
    from effrank_bench.store import RunDir

    for uri in dict.fromkeys(uris):
        runs = [RunDir(config.out) for config in suite.runs if config.mlflow == uri]
        runs = [run for run in runs if run.config_path.is_file()]  # begun before an interrupt
        _log_mlflow(uri, suite.out, console,
                    lambda log: log.log_suite(suite.name, suite.out, runs, uri, interrupted=interrupted))


def _print_comparison(comparison, console: Console) -> None:
    from effrank_bench.compare import render_comparison

    console.print(render_comparison(comparison))
    for correlation in comparison.correlations():  # as comparison.md gives them
        console.print(correlation.text(), markup=False, highlight=False, soft_wrap=True)
    for note in comparison.notes:
        console.print(f"note: {note}", markup=False, highlight=False, soft_wrap=True)


def _curve(args: argparse.Namespace) -> tuple[Path, list[float], list[float], float]:
    """The CSV read (a run directory's summary.csv for the directory), its ranks and accuracies, and the
    teacher's accuracy: --teacher-acc, else the CSV's teacher row. The read-off options not given (None) are
    filled in ``args``: a run's own, as its report reads its curve, else run's defaults; and replay's adaptive
    tolerance, an adaptive run's own."""
    from effrank_bench.analysis import check_same_units, read_curve_csv
    from effrank_bench.store import RunDir

    path = args.csv
    if path.is_dir():  # a run directory: its report's curve
        run = RunDir(path)
        if not (path / "summary.csv").is_file():
            raise ConfigError(f"{path} has no report yet: write it with effrank-bench report {path}"
                              if run.config_path.is_file() else f"{path} is a folder, neither a curve CSV nor a run "
                                                                "directory")
        path = path / "summary.csv"
        if run.records_path.is_file() and run.records_path.stat().st_mtime > path.stat().st_mtime:
            print(f"warning: {path} is older than the trials recorded since: effrank-bench report {run.path} "
                  "brings it up to date", file=sys.stderr)
    if path.name == "summary.csv":  # a run's: its report's warnings hold for the curve too
        for warning in _beside(path, "summary.json").get("warnings", []):
            print(f"warning: {path.parent}: {warning}", file=sys.stderr)
    read_as = RunConfig()  # run's defaults, for a CSV of no run
    if path.name == "summary.csv" and (path.parent / "config.json").is_file():
        try:
            read_as = RunDir(path.parent).config()
        except EffrankError as err:  # another tool's config.json, or a damaged run's: the curve is still a curve
            if any((path.parent / name).is_file() for name in ("teacher.json", "trials.jsonl")):  # a run's
                print(f"warning: {_error_line(err)}: {path} is read off with run's defaults", file=sys.stderr)
    for name in ("thresholds", "knee_axis", "monotone"):
        if getattr(args, name) is None:
            setattr(args, name, flag_value(getattr(read_as, name)))
    if getattr(args, "search", None) == read_as.search == "adaptive" and args.tolerance is None:
        args.tolerance = read_as.tolerance  # replay: an adaptive run's search, as it ran
    ranks, accuracies, teacher = read_curve_csv(path)
    teacher = args.teacher_acc if args.teacher_acc is not None else teacher
    if teacher is None:
        raise ConfigError(f"{path} has no teacher row (a 'status' column marking it 'teacher', as a run's "
                          "summary.csv has): give --teacher-acc X")
    check_same_units(teacher, accuracies)
    return path, ranks, accuracies, teacher


def _beside(curve: Path, name: str) -> dict:
    """The JSON object in the file ``name`` beside ``curve`` (a run directory's summary.json or config.json), or
    {} where there is none to read (best effort: another tool's file of that name is no run directory's)."""
    try:
        read = json.loads((curve.parent / name).read_text())
    except (OSError, ValueError):
        return {}
    return read if isinstance(read, dict) else {}


def _analyze(args: argparse.Namespace, console: Console) -> int:
    from effrank_bench.analysis import analyze_curve, parse_thresholds
    from effrank_bench.report import region_lines

    path, ranks, accuracies, teacher = _curve(args)
    analysis = analyze_curve(ranks, accuracies, teacher, thresholds=parse_thresholds(args.thresholds),
                             knee_axis=args.knee_axis, monotone=args.monotone)
    if len(set(ranks)) < len(ranks) and path.name == "summary.csv" and _beside(path, "config.json"):
        print(f"note: {path.parent} has several seeds at a rank: analyze reads off their mean curve; `effrank-bench "
              f"report {path.parent}` gives the intervals over seeds", file=sys.stderr)
    if args.json:
        print(json.dumps(analysis.to_dict()))
    else:
        for line in region_lines(analysis, None):
            console.print(line, markup=False, highlight=False)
    return 0


def _replay(args: argparse.Namespace, console: Console) -> int:
    from effrank_bench.analysis import analyze_curve, parse_thresholds
    from effrank_bench.config import load_config
    from effrank_bench.search import replay

    path, ranks, accuracies, teacher = _curve(args)
    if path.name == "summary.csv" and _beside(path, "config.json").get("search") == "adaptive":
        grid = "" if args.ranks else ", so the 'full grid' here is those ranks"
        print(f"warning: {path.parent} was swept by an adaptive search: its curve holds only the ranks it trained"
              f"{grid}; replay a grid sweep's curve to see what a search would have cost", file=sys.stderr)
    curve = analyze_curve(ranks, accuracies, teacher, thresholds=parse_thresholds(args.thresholds),
                          knee_axis=args.knee_axis, monotone=args.monotone)
    grid = load_config(overrides={"ranks": args.ranks}).ranks if args.ranks else None
    result = replay(curve, args.search, grid, args.tolerance)
    if args.search == "grid" and args.tolerance is not None:
        print("warning: --tolerance applies to --search adaptive: the grid trains every rank", file=sys.stderr)
    if args.json:
        print(json.dumps(result.to_dict()))
        return 0
    bounds = f"ranks {result.grid.ranks[0]:g}..{result.grid.ranks[-1]:g}"
    console.print(f"{args.search} search over {bounds}"
                  + (f", tolerance {result.tolerance}" if result.tolerance is not None else ""),
                  markup=False, highlight=False)
    for number, asked in enumerate(result.rounds, 1):
        console.print(f"round {number}: {', '.join(map(str, asked))}", markup=False, highlight=False)
    t0, t1 = curve.region.thresholds
    table = Table(title=f"trials: {result.trials} (full grid: {len(result.grid.ranks)})")
    for name in ("read-off", "trials", f"{t0:.0%} at", f"{t1:.0%} at", "band", f"knee ({args.knee_axis})"):
        table.add_column(name, justify="left" if name == "read-off" else "right")
    def crossing(rank: float | None, censored: str | None) -> str:  # report's wording, without its slow import
        return "not reached" if rank is None else ("≤" if censored == "left" else "") + f"{rank:.2f}"

    for label, analysis in (("full grid", result.grid), (f"{args.search} search", result.searched)):
        region = analysis.region
        table.add_row(label, str(len(analysis.ranks)), crossing(region.low, region.low_censored),
                      crossing(region.high, region.high_censored), region.band_text() or "–",
                      f"{analysis.knee:.2f}")
    console.print(table)
    if result.left_open:
        console.print(f"the search stopped after its {len(result.rounds)} rounds with {'; '.join(result.left_open)}",
                      markup=False, highlight=False)
    if args.search == "adaptive" and result.trials >= len(result.grid.ranks):
        console.print(f"the search trained as many ranks as the grid or more: on {len(result.grid.ranks)} ranks, "
                      "--search grid costs no more", markup=False, highlight=False)
    return 0


def _measure(args: argparse.Namespace, console: Console) -> int:
    import torch

    from effrank_bench.config import load_config
    from effrank_bench.cost_table import cost_table
    from effrank_bench.environment import resolve_device
    from effrank_bench.registry import default_registry
    from effrank_bench.data_contract import checked_splits
    from effrank_bench.setup import data_request, resolve_architecture, resolve_components

    if not 1 <= args.batch_size <= MAX_MEASURE_BATCH:
        raise ConfigError(f"--batch-size must be between 1 and {MAX_MEASURE_BATCH}, got {args.batch_size}")
    if not 0 <= args.warmup <= 10**6 or not 1 <= args.repeats <= 10**6:
        raise ConfigError(f"--warmup must be 0 to 1000000 and --repeats 1 to 1000000, got {args.warmup} and "
                          f"{args.repeats}")
    registry = default_registry()
    if args.dataset:
        config = load_config(overrides={"arch": args.arch, "target": args.target, "dataset": args.dataset,
                                        "data_root": args.data_root, "tokenizer": args.tokenizer,
                                        "ranks": args.ranks, "qkv": args.qkv})
        arch = resolve_components(config, registry).arch  # before loading: a text set would tokenize first
        dataset = registry.dataset(args.dataset)
        request = checked_splits(dataset, dataset.load(data_request(config, arch))).model_request(arch)
    else:
        given = [flag for flag, value in (("--data-root", args.data_root), ("--tokenizer", args.tokenizer))
                 if value is not None]
        if given:
            raise ConfigError(f"{' and '.join(given)} describe{'s' if len(given) == 1 else ''} the data set of "
                              "--dataset, and none is given: without it, measure takes the architecture's native "
                              "input (add --dataset NAME, or drop them)")
        config = load_config(overrides={"arch": args.arch, "target": args.target, "ranks": args.ranks})
        arch = resolve_architecture(registry, args.arch, args.target)
        request = arch.native_request()
    ranks = config.ranks
    device = torch.device(resolve_device(args.device))
    table = cost_table(arch, args.target, ranks, request, device=device, batch_size=args.batch_size,
                       warmup=args.warmup, repeats=args.repeats, qkv=args.qkv)
    if table["qkv"] != args.qkv:
        print(f"note: --qkv {args.qkv}: the {args.target} target of {arch.name} has no fused projection, so its "
              f"students are those of --qkv {table['qkv']}", file=sys.stderr)
    table = {"arch": arch.name, "target": args.target, "device": str(device), "input": request.model_dump(),
             "latency_batch_size": args.batch_size, **table}
    if args.json:
        print(json.dumps(table))
        return 0
    out = Table(title=f"{arch.name} · {args.target} · {request.num_classes} classes · input {request.input_size} "
                      f"· latency at batch {args.batch_size} on {device}")
    # A paper-size model's MACs read in billions, a micro model's in millions (0.0024 GMACs reads as nothing).
    unit, scale = ("GMACs", 1e9) if table["teacher"]["macs"] >= 1e9 else ("MMACs", 1e6)
    for name in ("rank", "params", "factorized", "compression", unit, "latency ms", "IQR ms", "peak MiB"):
        out.add_column(name, justify="right")
    for row in [{"rank": "teacher", "compression": 1.0, **table["teacher"]}, *table["students"]]:
        out.add_row(str(row["rank"]), f"{row['params']:,}", f"{row['factorized_params']:,}",
                    f"{row['compression']:.2f}×", f"{row['macs'] / scale:.3f}", f"{row['latency_ms']:.3f}",
                    "–" if row["latency_iqr_ms"] is None else f"{row['latency_iqr_ms']:.3f}",
                    "–" if row["peak_memory_mb"] is None else f"{row['peak_memory_mb']:.1f}")
    console.print(out)
    return 0


_PLURALS = {"architecture": "architectures", "target": "targets", "loss": "losses", "dataset": "data sets",
            "executor": "executors"}


def _list(args: argparse.Namespace, console: Console) -> int:
    from effrank_bench.registry import default_registry

    registry = default_registry()
    if args.json:
        print(json.dumps({kind: [
            {"name": name, "description": description, "plugin": plugin}
            | ({"targets": list(registry.architecture(name).targets)} if kind == "architecture" else {})
            for name, description, plugin in items] for kind, items in registry.listing().items()}))
        return 0
    for kind, items in registry.listing().items():
        table = Table(title=_PLURALS[kind], title_justify="left")
        table.add_column("name", style="bold")
        table.add_column("description")
        table.add_column("plugin", no_wrap=True)
        if kind == "architecture":
            table.add_column("targets")
        for name, description, plugin in items:
            extra = [", ".join(registry.architecture(name).targets)] if kind == "architecture" else []
            table.add_row(name, description, plugin, *extra)
        console.print(table)
    return 0


def _report(args: argparse.Namespace, console: Console) -> int:
    from effrank_bench.errors import LockedError
    from effrank_bench.lock import run_lock
    from effrank_bench.store import RunDir

    run = RunDir(args.run_dir)
    if (run.path / "suite.json").is_file() and not run.config_path.is_file():
        raise ConfigError(f"{run.path} is a suite's directory: effrank-bench compare {run.path} shows its runs side by "
                          "side; report takes one of its runs")
    run.config()  # no run directory: said before its lock is taken (which would make the folder)
    try:
        with run_lock(run.path):  # the report's files are the run's: one writer at a time
            _print_report(run, console, as_json=args.json)
    except LockedError as err:  # a sweep in progress: what it has so far, its files left to it
        _print_report(run, console, write=False, as_json=args.json)
        if args.json:  # stdout holds the JSON alone
            print(f"report files not written: {err}", file=sys.stderr)
        else:
            console.print(f"[yellow]report files not written: {err}", soft_wrap=True)
    return 0


def _compare(args: argparse.Namespace, console: Console) -> int:
    from effrank_bench.compare import compare_runs, write_comparison

    comparison = compare_runs(args.run_dirs)
    paths = write_comparison(comparison, args.out) if args.out is not None else []
    if args.json:
        print(json.dumps(comparison.to_dict()))
        return 0
    _print_comparison(comparison, console)
    if paths:
        console.print(f"comparison written to {args.out}", soft_wrap=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    """The command line; SIGTERM stops it as Ctrl-C does while it runs (its own handler is restored after)."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        return _main(argv)
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        return _main(argv)
    finally:
        signal.signal(signal.SIGTERM, previous)


def entry() -> NoReturn:
    """The `effrank-bench` command: :func:`main`, and its exit code for the shell. Once a run has stopped on
    Ctrl-C or SIGTERM (its trials kept, its lock released), another one while the interpreter shuts down ends the
    process at once: raised as an exception, it broke into torch's exit handlers and printed their traceback under
    the run's last words (a double Ctrl-C did); ignored, it could not stop a shutdown that hangs."""
    code = main()
    if code in (INTERRUPTED, TERMINATED):
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    sys.exit(code)


def _main(argv: list[str] | None) -> int:
    parser = _parser()
    args = None
    try:
        args = parser.parse_command(argv)
        if args.command is None:  # `effrank-bench` alone runs the embedded default, as `effrank-bench run` does
            args = parser.parse_args(["run"], namespace=args)
        # Piped into a log, tables are not bound by a screen: rich's 80-column default would fold them.
        console = Console() if sys.stdout.isatty() else Console(width=160)
        code = args.handler(args, console)
        sys.stdout.flush()  # here, where a closed pipe is caught, not at interpreter exit
        return code
    except BrokenPipeError:
        # The reader went away (`... --json | head`): the Python docs' recipe, no traceback at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except KeyboardInterrupt as stop:  # before any work was done (loading data, a download): nothing to resume
        print("interrupted", file=sys.stderr)
        return _stopped(stop)
    except EffrankError as err:
        if args is not None and args.debug:
            raise
        print(f"error: {_error_line(err)}", file=sys.stderr)
        return BAD_INPUT


def _error_line(err: EffrankError) -> str:
    """The message on one line whatever it quotes (a path with a newline, a huge value), cut to a screenful."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in " ".join(str(err).split()))
    return text if len(text) <= _MAX_ERROR else text[: _MAX_ERROR - 1] + "…"


if __name__ == "__main__":
    entry()
