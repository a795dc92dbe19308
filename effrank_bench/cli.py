"""The ``effrank-bench`` command: parse arguments, call the library, turn its errors into exit 2."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from effrank_bench import __version__
from effrank_bench.errors import EffrankError

BAD_INPUT = 2
INTERRUPTED = 130

# (flag, config field, type, help): every run option, filled from --config first, flags winning.
_RUN_OPTIONS = [
    ("--arch", "arch", str, "architecture (see `effrank-bench list`)"),
    ("--target", "target", str, "factorization target: attention, mlp, joint, ..."),
    ("--loss", "loss", str, "distillation loss: geometric, logit, kd"),
    ("--dataset", "dataset", str, "data set (see `effrank-bench list`)"),
    ("--data-root", "data_root", Path, "where the data set's files are (or go, with --download)"),
    ("--tokenizer", "tokenizer", str, "tokenizer of a text data set, name or path (default: the architecture's)"),
    ("--workers", "workers", int, "DataLoader worker processes (default: 8 on CUDA for per-item data, else 0)"),
    ("--ranks", "ranks", str, "comma-separated ranks, e.g. 2,4,8"),
    ("--seeds", "seeds", str, "comma-separated student seeds, e.g. 0,1,2 (confidence intervals need 2+)"),
    ("--seed", "seed", int, "one seed for teacher and students (same as --seeds N)"),
    ("--teacher-seed", "teacher_seed", int, "seed of the teacher (default: the first seed)"),
    ("--epochs", "epochs", int, "student distillation epochs per rank"),
    ("--lr", "lr", float, "student AdamW learning rate"),
    ("--weight-decay", "weight_decay", float, "student AdamW weight decay"),
    ("--batch-size", "batch_size", int, "training batch size"),
    ("--teacher-epochs", "teacher_epochs", int, "teacher training epochs (0: use the teacher as loaded)"),
    ("--teacher-lr", "teacher_lr", float, "teacher learning rate"),
    ("--teacher-optimizer", "teacher_optimizer", str, "teacher optimizer: adamw or sgd (momentum 0.9, Nesterov)"),
    ("--teacher-weight-decay", "teacher_weight_decay", float, "teacher weight decay"),
    ("--teacher-warmup", "teacher_warmup", float, "fraction of teacher steps of linear warm-up"),
    ("--label-smoothing", "label_smoothing", float, "label smoothing of the teacher's cross-entropy"),
    ("--bootstrap-resamples", "bootstrap_resamples", int, "bootstrap resamples of the confidence intervals"),
    ("--device", "device", str, "auto, cpu or cuda"),
    ("--init", "init", str, "student init: svd (truncated SVD of the teacher) or random"),
    ("--qkv", "qkv", str, "fused qkv: split (rank r each for q, k, v, as in the paper) or fused"),
    ("--teacher-checkpoint", "teacher_checkpoint", Path, "teacher weights: safetensors or .pt/.pth state dict"),
    ("--kd-temperature", "kd_temperature", float, "KD temperature T"),
    ("--kd-alpha", "kd_alpha", float, "KD weight of the KL term (1 - alpha on cross-entropy)"),
    ("--thresholds", "thresholds", str, "region thresholds, e.g. 0.85,0.95"),
    ("--knee-axis", "knee_axis", str, "rank axis of the knee: linear (the paper's) or log2"),
    ("--latency-batch-size", "latency_batch_size", int, "batch size of latency measurements"),
    ("--latency-repeats", "latency_repeats", int, "timed repeats of latency measurements"),
    ("--out", "out", Path, "run directory (default runs/<arch>-<target>-<loss>-<dataset>-<hash>)"),
]


# (flag, config field, help): on/off run options; each also has its --no- form.
_RUN_SWITCHES = [
    ("--pretrained", "pretrained", "start the teacher from the architecture's pretrained weights"),
    ("--download", "download", "fetch the data set into --data-root when it is missing"),
    ("--augment", "augment", "augment the training split (images: random crop and flip; default on)"),
    ("--amp", "amp", "bf16 autocast on CUDA (default on)"),
]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="effrank-bench",
        description="Estimate the effective rank of a network by low-rank factorization and distillation.",
    )
    parser.add_argument("--version", action="version", version=f"effrank-bench {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    commands = parser.add_subparsers(dest="command")

    run = commands.add_parser("run", help="distill a sweep of ranks and report region, knee and costs")
    source = run.add_mutually_exclusive_group()
    source.add_argument("--config", type=Path, help="TOML file with the same fields as the flags")
    source.add_argument("--suite", type=Path, help="TOML suite: a matrix of runs (flags apply to every run)")
    for flag, field, kind, text in _RUN_OPTIONS:
        run.add_argument(flag, dest=field, type=kind, default=None, help=text)
    for flag, field, text in _RUN_SWITCHES:
        run.add_argument(flag, dest=field, action=argparse.BooleanOptionalAction, default=None, help=text)
    run.set_defaults(handler=_run)

    analyze = commands.add_parser("analyze", help="region and knee of an accuracy-vs-rank CSV (rank,accuracy)")
    analyze.add_argument("csv", type=Path)
    analyze.add_argument("--teacher-acc", type=float, required=True, help="teacher accuracy, same units as the CSV")
    analyze.add_argument("--thresholds", default="0.85,0.95")
    analyze.add_argument("--knee-axis", choices=["linear", "log2"], default="linear")
    analyze.add_argument("--json", action="store_true", help="print one JSON object")
    analyze.set_defaults(handler=_analyze)

    measure = commands.add_parser("measure", help="parameters, MACs, latency and memory of teacher and students")
    measure.add_argument("--arch", default="micro_vit")
    measure.add_argument("--target", default="joint")
    measure.add_argument("--ranks", default="8,16,32")
    measure.add_argument("--dataset", help="take classes and channels from this data set "
                                           "(default: the architecture's native input)")
    measure.add_argument("--data-root", type=Path, help="where that data set's files are")
    measure.add_argument("--tokenizer", help="tokenizer of a text data set (default: the architecture's)")
    measure.add_argument("--batch-size", type=int, default=1, help="batch size of the latency runs")
    measure.add_argument("--warmup", type=int, default=5)
    measure.add_argument("--repeats", type=int, default=30)
    measure.add_argument("--qkv", choices=["split", "fused"], default="split")
    measure.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    measure.add_argument("--json", action="store_true", help="print one JSON object")
    measure.set_defaults(handler=_measure)

    listing = commands.add_parser("list", help="registered architectures, targets, losses and data sets")
    listing.set_defaults(handler=_list)

    report = commands.add_parser("report", help="re-render the table, summaries and plot of a run directory")
    report.add_argument("run_dir", type=Path)
    report.set_defaults(handler=_report)

    compare = commands.add_parser("compare", help="put several run directories side by side: region, knee, "
                                                  "cost at the knee, one overlay plot")
    compare.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN_DIR")
    compare.add_argument("--json", action="store_true", help="print one JSON object")
    compare.add_argument("--out", type=Path, help="also write comparison.json, .csv, .md and .png into this folder")
    compare.set_defaults(handler=_compare)
    return parser


def _print_report(run, console: Console) -> None:
    from effrank_bench.report import build_report, region_lines, render_table, write_report

    report = build_report(run)
    write_report(run, report)
    console.print(render_table(report))
    for line in region_lines(report.analysis, report.note, report.uncertainty):
        console.print(line, markup=False, highlight=False)  # "[95% CI …]" is text, not a rich style tag
    console.print(f"results in {run.path}", soft_wrap=True)


def _run(args: argparse.Namespace, console: Console) -> int:
    from effrank_bench.config import load_config
    from effrank_bench.progress import RichProgress
    from effrank_bench.sweep import Sweep

    overrides = {field: getattr(args, field) for _, field, _, _ in _RUN_OPTIONS}
    overrides.update({field: getattr(args, field) for _, field, _ in _RUN_SWITCHES})
    if args.suite is not None:
        return _run_suite(args.suite, overrides, console)
    config = load_config(args.config, overrides)
    progress = RichProgress()
    sweep = Sweep(config, progress=progress)  # bad input fails here, before any bar is drawn
    with progress:
        try:
            run = sweep.execute()
        except KeyboardInterrupt:
            progress.note(f"interrupted: {len(sweep.run.records())} finished trial(s) are in {sweep.run.path}; "
                          "run the same command again to resume")
            return INTERRUPTED
    _print_report(run, console)
    return 0


def _run_suite(path: Path, overrides: dict, console: Console) -> int:
    from effrank_bench.config import load_suite
    from effrank_bench.progress import RichProgress
    from effrank_bench.suite import run_suite

    suite = load_suite(path, overrides)
    progress = RichProgress()  # draws nothing until the first bar: checks that fail print only themselves
    with progress:
        try:
            result = run_suite(suite, progress=progress)
        except KeyboardInterrupt:
            progress.note(f"interrupted: finished trials are kept under {suite.out}; "
                          "run the same command again to resume")
            return INTERRUPTED
    _print_comparison(result.comparison, console)
    console.print(f"{len(result.runs)} runs in {result.out}; suite summary in {result.out}/comparison.*",
                  soft_wrap=True)
    return 0


def _print_comparison(comparison, console: Console) -> None:
    from effrank_bench.compare import render_comparison

    console.print(render_comparison(comparison))
    for note in comparison.notes:
        console.print(f"note: {note}", markup=False, highlight=False, soft_wrap=True)


def _analyze(args: argparse.Namespace, console: Console) -> int:
    from effrank_bench.analysis import analyze_curve, parse_thresholds, read_curve_csv
    from effrank_bench.report import region_lines

    ranks, accuracies = read_curve_csv(args.csv)
    analysis = analyze_curve(ranks, accuracies, args.teacher_acc, thresholds=parse_thresholds(args.thresholds),
                             knee_axis=args.knee_axis)
    if args.json:
        print(json.dumps(analysis.to_dict()))
    else:
        for line in region_lines(analysis, None):
            console.print(line, markup=False, highlight=False)
    return 0


def _measure(args: argparse.Namespace, console: Console) -> int:
    import torch

    from effrank_bench.config import RunConfig, format_validation_error
    from effrank_bench.cost_table import cost_table
    from effrank_bench.environment import resolve_device
    from effrank_bench.errors import ConfigError
    from effrank_bench.registry import default_registry
    from effrank_bench.specs import DataRequest
    from pydantic import ValidationError

    try:
        ranks = RunConfig(ranks=args.ranks).ranks
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, "--ranks")) from None
    registry = default_registry()
    arch = registry.architecture(args.arch)
    registry.target(args.target)
    arch.require_target(args.target)
    request = arch.native_request()
    if args.dataset:
        dataset = registry.dataset(args.dataset)
        dataset.check_architecture(arch)  # before loading: a text set would download and tokenize first
        data = DataRequest(root=args.data_root, input_size=arch.input_size, tokenizer=args.tokenizer or arch.tokenizer)
        request = dataset.load(data).model_request(arch)
    device = torch.device(resolve_device(args.device))
    table = cost_table(arch, args.target, ranks, request, device=device, batch_size=args.batch_size,
                       warmup=args.warmup, repeats=args.repeats, qkv=args.qkv)
    table = {"arch": arch.name, "target": args.target, "device": str(device), "input": request.model_dump(),
             "latency_batch_size": args.batch_size, **table}
    if args.json:
        print(json.dumps(table))
        return 0
    out = Table(title=f"{arch.name} · {args.target} · {request.num_classes} classes · input {request.input_size} "
                      f"· latency at batch {args.batch_size} on {device}")
    for name in ("rank", "params", "factorized", "compression", "GMACs", "latency ms", "peak MiB"):
        out.add_column(name, justify="right")
    for row in [{"rank": "teacher", "compression": 1.0, **table["teacher"]}, *table["students"]]:
        out.add_row(str(row["rank"]), f"{row['params']:,}", f"{row['factorized_params']:,}",
                    f"{row['compression']:.2f}×", f"{row['macs'] / 1e9:.4f}", f"{row['latency_ms']:.3f}",
                    "–" if row["peak_memory_mb"] is None else f"{row['peak_memory_mb']:.1f}")
    console.print(out)
    return 0


_PLURALS = {"architecture": "architectures", "target": "targets", "loss": "losses", "dataset": "data sets"}


def _list(args: argparse.Namespace, console: Console) -> int:
    from effrank_bench.registry import default_registry

    registry = default_registry()
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
    from effrank_bench.store import RunDir

    _print_report(RunDir(args.run_dir), console)
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
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:  # `effrank-bench` alone runs the embedded default, as `effrank-bench run` does
        args = parser.parse_args(["run", *(argv or [])]) if argv is not None else parser.parse_args(["run"])
    # Piped into a log, tables are not bound by a screen: rich's 80-column default would fold them.
    console = Console() if sys.stdout.isatty() else Console(width=160)
    try:
        return args.handler(args, console)
    except KeyboardInterrupt:  # before any work was done (loading data, a download): nothing to resume
        print("interrupted", file=sys.stderr)
        return INTERRUPTED
    except EffrankError as err:
        if args.debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        return BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
