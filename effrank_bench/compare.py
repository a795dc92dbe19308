"""Several run directories side by side: region, knee and cost at the knee; one overlay plot."""
from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from rich import box
from rich.table import Table

from effrank_bench.atomic import text_writer, write_files
from effrank_bench.bootstrap import Estimate
from effrank_bench.errors import ConfigError
from effrank_bench.paths import make_folder
from effrank_bench.plotting import log2_scale, pyplot, save_png
from effrank_bench.records import SpectralEstimates
from effrank_bench.report import Report, build_report, format_estimate, knee_notes, search_lines
from effrank_bench.store import RunDir


@dataclass(frozen=True)
class KneeCost:
    """What a student at the knee rank costs: params and MACs (per sample) interpolated between the
    measured ranks (both are linear in rank), and the teacher's params over the student's."""

    params: float
    macs: float
    compression: float
    compression_ci: tuple[float, float] | None  # at the knee interval's ends (high rank, low rank)


@dataclass(frozen=True)
class ComparedRun:
    """One run directory's read-off, as built by :func:`build_report`."""

    path: Path
    report: Report
    width: int | None  # the target's width (largest full rank of its factorized layers); None: no target.json
    at_knee: KneeCost | None

    @property
    def name(self) -> str:
        return self.path.name or str(self.path)

    @property
    def note(self) -> str | None:
        return self.report.note

    def estimate(self, quantity: str) -> Estimate | None:
        """``low``, ``high`` or ``knee``: value and interval (interval None with one seed)."""
        a, u = self.report.analysis, self.report.uncertainty
        if a is None:
            return None
        if u is not None:
            return getattr(u, quantity)
        return Estimate({"low": a.region.low, "high": a.region.high, "knee": a.knee}[quantity], None, None)

    @property
    def spectrum(self) -> SpectralEstimates | None:
        """The teacher's spectral estimates, where the run stored them."""
        return self.report.spectrum

    @property
    def distilled_high(self) -> float | None:
        """The rank at which the distilled curve reaches the high threshold (r95 by default); None: not reached."""
        a = self.report.analysis
        return a.region.high if a is not None else None

    @property
    def knee_relative(self) -> float | None:
        """The knee as a fraction of the target's width."""
        knee = self.estimate("knee")
        return knee.mean / self.width if knee and self.width else None

    def curve(self) -> list[dict]:
        """Mean normalized accuracy over seeds per finished rank, with rank / width where the width is known."""
        return [{"rank": s.rank, "normalized": s.normalized, "seeds": len(s.seeds),
                 "relative_rank": s.rank / self.width if self.width else None}
                for s in self.report.per_rank]

    def to_dict(self) -> dict:
        r, c, a = self.report, self.report.config, self.report.analysis
        region = None
        if a is not None:
            band = list(a.region.band) if a.region.band else None
            # Censoring of the read-off itself ("left": met at the first rank, at or below it; "right": never
            # reached); the estimates' own fields say how often resamples were.
            region = {"thresholds": list(a.region.thresholds), "low": self.estimate("low").to_dict(),
                      "high": self.estimate("high").to_dict(), "band": band,
                      "low_censored": a.region.low_censored, "high_censored": a.region.high_censored}
        knee = self.estimate("knee")
        at_knee = None
        if self.at_knee is not None:
            k = self.at_knee
            at_knee = {"params": k.params, "macs": k.macs, "compression": k.compression,
                       "compression_ci": list(k.compression_ci) if k.compression_ci else None}
        return {
            "run": str(self.path),
            "name": self.name,
            "arch": c.arch, "target": c.target, "loss": c.loss, "dataset": c.dataset,
            "seeds": list(r.seeds),
            "teacher": {"test_accuracy": r.teacher.test_accuracy, "params": r.teacher.cost.params,
                        "macs": r.teacher.cost.macs},
            "width": self.width,
            "region": region,
            "knee": knee.to_dict() if knee else None,
            "knee_axis": c.knee_axis,
            "knee_relative": self.knee_relative,
            "at_knee": at_knee,
            "spectrum": self.spectrum.model_dump() if self.spectrum else None,
            "resamples": r.uncertainty.resamples if r.uncertainty else 0,
            "curve": self.curve(),
            "note": self.note,
            "warnings": list(r.warnings),
        }


#: The spectral estimates compared with the distilled rank, by name: what each reads off a run's spectrum.
SPECTRAL_ESTIMATES = {"weight r95": lambda e: e.weight_r95, "feature r99": lambda e: e.feature_r99}
# Fewer runs than this give no rank correlation worth printing.
MIN_CORRELATED = 3


@dataclass(frozen=True)
class SpectralCorrelation:
    """Spearman's rank correlation between one spectral estimate and the distilled high crossing, over the
    ``n`` runs that have both (``rho`` None with fewer than 3, or when either side is constant)."""

    estimate: str
    n: int
    rho: float | None
    p_value: float | None
    points: tuple[tuple[str, float, float], ...]  # (run name, estimate, distilled rank)

    def to_dict(self) -> dict:
        return {"estimate": self.estimate, "n": self.n, "rho": self.rho, "p_value": self.p_value}

    def text(self) -> str:
        if self.rho is None:
            return f"{self.estimate}: no rank correlation (n = {self.n})"
        return f"{self.estimate}: Spearman ρ = {self.rho:.2f} (n = {self.n}, p = {self.p_value:.2g})"


def spectral_correlation(runs: Sequence[ComparedRun], estimate: str) -> SpectralCorrelation:
    """How well ``estimate`` orders the runs as their distilled high crossing does (Spearman's ρ, its p-value by
    :func:`spearman_p`)."""
    from scipy.stats import spearmanr

    points = tuple((run.name, SPECTRAL_ESTIMATES[estimate](run.spectrum), run.distilled_high) for run in runs
                   if run.spectrum is not None and SPECTRAL_ESTIMATES[estimate](run.spectrum) is not None
                   and run.distilled_high is not None)
    x, y = [p[1] for p in points], [p[2] for p in points]
    if len(points) < MIN_CORRELATED or len(set(x)) == 1 or len(set(y)) == 1:  # a constant side has no ranking
        return SpectralCorrelation(estimate, len(points), None, None, points)
    return SpectralCorrelation(estimate, len(points), float(spearmanr(x, y).statistic), spearman_p(x, y), points)


# Up to this many runs the p-value counts every pairing (8! = 40,320); past it, scipy's t approximation.
EXACT_P_UP_TO = 8


def spearman_p(x: Sequence[float], y: Sequence[float]) -> float:
    """The two-sided p-value of Spearman's ρ between ``x`` and ``y``: exact, over every pairing of them, up to
    EXACT_P_UP_TO points (scipy's t approximation, meant for hundreds, gives p = 0 for three points in order,
    where the truth is 1/3); the t approximation past it."""
    from scipy.stats import permutation_test, rankdata, spearmanr

    if len(x) > EXACT_P_UP_TO:
        return float(spearmanr(x, y).pvalue)
    ry = rankdata(y) - (len(y) + 1) / 2

    def rho(xs: np.ndarray, axis: int) -> np.ndarray:  # Pearson's r of the ranks, for a batch of pairings
        rx = rankdata(np.moveaxis(xs, axis, -1), axis=-1) - (len(y) + 1) / 2
        return (rx * ry).sum(-1) / np.sqrt((rx ** 2).sum(-1) * (ry ** 2).sum())

    test = permutation_test((np.asarray(x, dtype=float),), rho, permutation_type="pairings", vectorized=True,
                            n_resamples=np.inf, alternative="two-sided")
    return float(test.pvalue)


@dataclass(frozen=True)
class Comparison:
    runs: tuple[ComparedRun, ...]

    @property
    def has_spectra(self) -> bool:
        return any(run.spectrum is not None for run in self.runs)

    def correlations(self) -> list[SpectralCorrelation]:
        """Each spectral estimate against the distilled high crossing; empty when no run stored a spectrum."""
        return [spectral_correlation(self.runs, name) for name in SPECTRAL_ESTIMATES] if self.has_spectra else []

    @property
    def notes(self) -> list[str]:
        """What the table and plot leave out, and why, how an adaptive run's search chose its ranks, and what
        makes a run's numbers doubtful (its report's warnings: a sweep not finished, a teacher near chance,
        ...), one line each."""
        notes = [f"{run.name}: {run.note}" for run in self.runs if run.note]
        notes += [f"{run.name}: {line}" for run in self.runs if run.report.analysis is not None
                  for line in knee_notes(run.report.analysis)]
        notes += [f"{run.name}: {line}" for run in self.runs for line in search_lines(run.report)]
        notes += [f"{run.name}: warning: {warning}" for run in self.runs for warning in run.report.warnings]
        notes += [f"{run.name}: no target.json (width unknown), left out of the rank / width panel"
                  for run in self.runs if run.width is None]
        notes += [f"{c.estimate} against the distilled rank: {c.n} run(s) have both, a rank correlation needs "
                  f"{MIN_CORRELATED}" for c in self.correlations() if c.n < MIN_CORRELATED]
        censored = [run.name for run in self.runs if run.spectrum is not None and run.distilled_high is not None
                    and run.report.analysis.region.high_censored == "left"]
        if censored:  # an upper bound ranked as a value: a run whose grid started higher ranks higher
            notes.append(f"{', '.join(censored)}: the high crossing is at or below the first rank measured (≤), "
                         "and the rank correlations take it as that rank")
        readings = {run.name: (run.report.config.thresholds, run.report.config.knee_axis) for run in self.runs}
        if len(set(readings.values())) > 1:
            notes.append("the runs are read at other thresholds or knee axes, so their low, high and knee do not "
                         "compare (the plot marks the first run's thresholds): " + ", ".join(
                             f"{name} {' / '.join(f'{t:g}' for t in thresholds)}, {axis} knee"
                             for name, (thresholds, axis) in readings.items()))
        return notes

    def to_dict(self) -> dict:
        return {"runs": [run.to_dict() for run in self.runs], "notes": self.notes,
                "spectral_correlation": [c.to_dict() for c in self.correlations()]}


def compare_runs(paths: Sequence[Path]) -> Comparison:
    """Read every run directory (nothing is written into them) and put their read-offs side by side.

    A suite's directory stands for its runs, in the suite's order; a run given twice (itself and
    through its suite, or by two spellings of its path) is compared once, where it first comes. A path
    that does not exist or is not a run directory is a ConfigError; a run with fewer than two finished
    ranks is kept, with no region or knee and a note.
    """
    if not paths:
        raise ConfigError("give at least one run directory to compare")
    given: dict[Path, Path] = {}
    for run in (run for path in map(Path, paths) for run in _runs_of(path)):
        given.setdefault(run.resolve(), run)
    runs = []
    for path in given.values():
        if not path.exists():
            raise ConfigError(f"{path}: no such run directory")
        if not path.is_dir():
            raise ConfigError(f"{path} is not a run directory (not a directory)")
        run = RunDir(path)
        report = build_report(run)
        target = run.target_info()
        width = target.max_rank if target else None
        runs.append(ComparedRun(path=path, report=report, width=width, at_knee=_cost_at_knee(report)))
    return Comparison(tuple(runs))


def _runs_of(path: Path) -> list[Path]:
    """``[path]``, or the run directories of a suite directory (one with suite.json) that exist so far."""
    manifest = path / "suite.json"
    if not manifest.is_file():
        return [path]
    try:
        names = [Path(run["out"]).name for run in json.loads(manifest.read_text())["runs"]]
    except (ValueError, KeyError, TypeError):
        raise ConfigError(f"{manifest} is not a suite manifest written by effrank-bench") from None
    runs = [path / name for name in names if (path / name / "config.json").is_file()]
    if not runs:
        raise ConfigError(f"{path}: this suite has no run directory yet")
    return runs


def _cost_at_knee(report: Report) -> KneeCost | None:
    a = report.analysis
    teacher_params = report.teacher.cost.params
    if a is None or not teacher_params:
        return None
    params, macs = report.cost_at(a.knee)
    if params is None:
        return None
    interval = None
    u = report.uncertainty
    if u is not None and u.knee.ci_low is not None:
        # More rank, more parameters: the high end of the knee's interval compresses least.
        ends = (report.cost_at(u.knee.ci_high)[0], report.cost_at(u.knee.ci_low)[0])
        if None not in ends:
            interval = (teacher_params / ends[0], teacher_params / ends[1])
    return KneeCost(params=params, macs=macs, compression=teacher_params / params, compression_ci=interval)


_COLUMNS = ["run", "arch", "target", "loss", "dataset", "seeds", "teacher acc", "region low", "region high", "band",
            "knee", "weight r95", "feature r99", "compression @ knee", "MMACs @ knee"]


# Terminal headers: short, so the values get the width.
_SHORT = {"teacher acc": "teacher", "region low": "low", "region high": "high", "compression @ knee": "× @ knee",
          "weight r95": "W r95", "feature r99": "F r99"}


def _columns(spectra: bool) -> list[str]:
    """The table's columns; the spectral ones only where some run stored a spectrum (the table must fit a terminal)."""
    return [name for name in _COLUMNS if spectra or name not in SPECTRAL_ESTIMATES]


def _cells(run: ComparedRun, separator: str = " ", spectra: bool = True) -> list[str]:
    """One table row; ``separator`` goes between a value and its interval (a newline in the terminal)."""
    r, c, a = run.report, run.report.config, run.report.analysis
    dash = "–"
    low = high = band = knee = compression = macs = dash
    if a is not None:
        low, high = (format_estimate(value, run.estimate(name), separator=separator, censored=censored,
                                     last_rank=a.ranks[-1])
                     for name, value, censored in (("low", a.region.low, a.region.low_censored),
                                                   ("high", a.region.high, a.region.high_censored)))
        band = a.region.band_text() or dash
        knee = format_estimate(a.knee, run.estimate("knee"), separator=separator)
    if run.at_knee is not None:
        k = run.at_knee
        compression = f"{k.compression:.2f}×"
        if k.compression_ci:
            compression += f"{separator}[{k.compression_ci[0]:.2f}, {k.compression_ci[1]:.2f}]"
        macs = f"{k.macs / 1e6:,.2f}"
    spectral = [dash if run.spectrum is None or read(run.spectrum) is None else f"{read(run.spectrum):g}"
                for read in SPECTRAL_ESTIMATES.values()] if spectra else []
    return [run.name, c.arch, c.target, c.loss, c.dataset, str(len(r.seeds)), f"{r.teacher.test_accuracy:.4f}",
            low, high, band, knee, *spectral, compression, macs]


def render_comparison(comparison: Comparison) -> Table:
    """The comparison as a rich table; intervals (95% bootstrap over seeds) in brackets."""
    # The table has to fit a terminal: light borders, and one "run" column (arch · target · loss ·
    # dataset, wrapped between words; the folder name only where those do not tell runs apart).
    table = Table(title="effective rank, side by side (95% bootstrap CI in brackets)", box=box.SIMPLE_HEAD,
                  padding=(0, 1), pad_edge=False)
    table.add_column("run", overflow="fold")
    spectra = comparison.has_spectra
    for name in _columns(spectra)[5:]:
        # Folded, never cut with an ellipsis: a narrow terminal wraps a value, it does not hide it.
        table.add_column(_SHORT.get(name, name), justify="right", overflow="fold")
    for label, run in zip(_labels(comparison), comparison.runs):
        table.add_row(label, *_cells(run, separator="\n", spectra=spectra)[5:])
    return table


CSV_FIELDS = ["run", "arch", "target", "loss", "dataset", "seeds", "teacher_accuracy", "width",
              "low", "low_ci_low", "low_ci_high", "low_unreached", "low_censored",
              "high", "high_ci_low", "high_ci_high", "high_unreached", "high_censored",
              "band_low", "band_high", "knee", "knee_ci_low", "knee_ci_high", "knee_relative",
              "weight_r95", "feature_r99", "params_at_knee", "macs_at_knee", "compression_at_knee", "resamples", "note"]


def _csv_row(run: ComparedRun) -> dict:
    r, c, a, k = run.report, run.report.config, run.report.analysis, run.at_knee
    row = {"run": str(run.path), "arch": c.arch, "target": c.target, "loss": c.loss, "dataset": c.dataset,
           "seeds": len(r.seeds), "teacher_accuracy": r.teacher.test_accuracy, "width": run.width,
           "knee_relative": run.knee_relative, "resamples": r.uncertainty.resamples if r.uncertainty else 0,
           "note": run.note}
    for quantity in ("low", "high", "knee"):
        e = run.estimate(quantity) or Estimate(None, None, None)
        row.update({quantity: e.mean, f"{quantity}_ci_low": e.ci_low, f"{quantity}_ci_high": e.ci_high})
        if quantity != "knee":
            row[f"{quantity}_unreached"] = e.unreached
    row["band_low"], row["band_high"] = a.region.band if a is not None and a.region.band else (None, None)
    row["low_censored"], row["high_censored"] = (a.region.low_censored, a.region.high_censored) if a else (None, None)
    e = run.spectrum
    row.update(weight_r95=e and e.weight_r95, feature_r99=e and e.feature_r99)
    row.update(params_at_knee=k and k.params, macs_at_knee=k and k.macs, compression_at_knee=k and k.compression)
    return row


def _markdown(comparison: Comparison, plot: bool = True) -> str:
    """comparison.md: the table, notes and correlations, with the plots (when drawn) embedded."""
    lines = ["# Effective rank, side by side", "",
             "Region and knee are read off the mean over seeds; brackets hold 95% percentile-bootstrap "
             "intervals over seeds where a run has several. Compression and MACs at the knee are "
             "interpolated linearly between the measured ranks.", "",
             "| " + " | ".join(_columns(comparison.has_spectra)) + " |",
             "|" + "---|" * len(_columns(comparison.has_spectra))]
    lines += ["| " + " | ".join(_cells(run, spectra=comparison.has_spectra)) + " |" for run in comparison.runs]
    if comparison.notes:
        lines += ["", "Notes:", ""] + [f"- {note}" for note in comparison.notes]
    if plot:
        lines += ["", "![normalized accuracy against rank and rank / width](comparison.png)"]
    if comparison.has_spectra:
        lines += ["", "Spectral estimates of each teacher against its distilled rank:", ""]
        lines += [f"- {c.text()}" for c in comparison.correlations()]
        if plot:
            lines += ["", "![spectral estimates against the distilled rank](comparison-spectra.png)"]
    return "\n".join(lines) + "\n"


def plot_comparison(comparison: Comparison, path: Path) -> None:
    """Two panels: mean normalized accuracy against rank, and against rank / width (log2 axes)."""
    plt = pyplot()
    from matplotlib.lines import Line2D

    n = len(comparison.runs)
    # The legend goes below the panels, where it hides no curve, in as many rows as it needs.
    columns = 1 if n <= 4 else 2 if n <= 12 else 3
    legend_height = 0.18 * math.ceil(n / columns) + 0.2
    fig, (by_rank, by_width) = plt.subplots(1, 2, figsize=(11, 4.4 + legend_height), sharey=True)
    labels, styles = _labels(comparison), _styles(n)
    for i, run in enumerate(comparison.runs):
        (color, line), report = styles[i], run.report
        ranks = np.array([s.rank for s in report.per_rank], dtype=float)
        means = np.array([s.normalized for s in report.per_rank])
        panels = [(by_rank, 1.0)] + ([(by_width, float(run.width))] if run.width else [])
        for ax, scale in panels:
            ax.plot(ranks / scale, means, "o", color=color, ms=4)
            if report.analysis is not None:
                dense = np.geomspace(ranks[0], ranks[-1], 256)
                ax.plot(dense / scale, report.analysis.fit(dense), line, color=color, alpha=0.8)
                band = report.uncertainty.band if report.uncertainty else None
                if band is not None:
                    ax.fill_between(np.array(band.ranks) / scale, band.low, band.high, color=color, alpha=0.12, lw=0)
    thresholds = next((r.report.analysis.region.thresholds for r in comparison.runs if r.report.analysis), None)
    for ax in (by_rank, by_width):
        if not any(run.report.per_rank for run in comparison.runs):  # a log axis of no data cannot be drawn
            ax.text(0.5, 0.5, "no run has a student's normalized accuracy to draw", transform=ax.transAxes,
                    ha="center", va="center", fontsize=9)
            continue
        log2_scale(ax)
        for t in thresholds or ():
            ax.axhline(t, color="grey", lw=0.8, ls=":")
    by_rank.set_xlabel("rank")
    by_rank.set_ylabel("accuracy / teacher accuracy (mean over seeds)")
    by_rank.set_title("against rank")
    by_width.set_xlabel("rank / width (width: largest full rank of the target)")
    by_width.set_title("against rank / width")
    left_out = [run.name for run in comparison.runs if run.width is None]
    if left_out:
        # Top left: low ranks are where curves sit lowest, so the corner is usually empty.
        by_width.text(0.02, 0.98, "left out (no target.json): " + ", ".join(left_out), transform=by_width.transAxes,
                      fontsize=7, va="top", wrap=True)
    # Handles show marker and line style together: beyond 20 runs the style tells runs of one colour apart.
    handles = [Line2D([], [], color=color, linestyle=line, marker="o", ms=4) for color, line in styles]
    fig.legend(handles, labels, loc="lower center", ncol=columns, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, legend_height / (4.4 + legend_height), 1, 1))
    save_png(fig, path)


def plot_spectra(comparison: Comparison, path: Path) -> None:
    """Each run's spectral estimates against its distilled high crossing, with Spearman's ρ per estimate."""
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    threshold = next((r.report.analysis.region.thresholds[1] for r in comparison.runs if r.report.analysis), 0.95)
    values = []
    for (c, marker, color) in zip(comparison.correlations(), ("o", "^"), ("C4", "C1")):
        if c.points:
            x, y = [p[1] for p in c.points], [p[2] for p in c.points]
            values += x + y
            ax.plot(x, y, marker, color=color, ms=6, label=c.text())
            for name, px, py in c.points:
                ax.annotate(name, (px, py), fontsize=6, xytext=(3, 3), textcoords="offset points")
    if values:
        low, high = min(values), max(values)
        ax.plot([low, high], [low, high], color="grey", lw=0.8, ls=":", label="spectral = distilled")
        log2_scale(ax, "x")
        log2_scale(ax, "y")
        ax.legend(loc="upper left", fontsize=7)
    else:
        ax.text(0.5, 0.5, "no run has both a spectrum and a distilled crossing", transform=ax.transAxes,
                ha="center", fontsize=8)
    ax.set_xlabel("spectral estimate of the teacher (rank)")
    ax.set_ylabel(f"distilled rank at {threshold:.0%} of teacher accuracy")
    ax.set_title("spectral estimate against distilled rank")
    fig.tight_layout()
    save_png(fig, path)


def _styles(n: int) -> list[tuple[object, str]]:
    """(color, line style) per run, all distinct: tab10, then tab20, then a colormap with 3 line styles."""
    import matplotlib

    if n <= 10:
        return [(f"C{i}", "-") for i in range(n)]
    if n <= 20:
        return [(matplotlib.colormaps["tab20"](i), "-") for i in range(n)]
    cmap = matplotlib.colormaps["turbo"]
    return [(cmap(i / (n - 1)), ("-", "--", ":")[i % 3]) for i in range(n)]


def _labels(comparison: Comparison) -> list[str]:
    """``arch · target · loss · dataset``, with the run's name where two runs would read the same."""
    titles = [run.report.title for run in comparison.runs]
    return [t if titles.count(t) == 1 else f"{t} ({run.name})" for t, run in zip(titles, comparison.runs)]


def write_comparison(comparison: Comparison, out_dir: Path, plot: bool = True) -> list[Path]:
    """Write comparison.json, comparison.csv, comparison.md and (unless ``plot`` is False) comparison.png
    into ``out_dir``, and comparison-spectra.png where any run stored its teacher's spectrum. An earlier
    plot this comparison does not redraw is removed: it would show other runs than the tables."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"{out_dir} exists and is not a directory")
    make_folder(out_dir)
    # Each file whole or not at all (temporary name, then rename): a reader never sees half a comparison.
    writers = {out_dir / "comparison.json": text_writer(json.dumps(comparison.to_dict(), indent=2)),
               out_dir / "comparison.csv": partial(_csv, comparison),
               out_dir / "comparison.md": text_writer(_markdown(comparison, plot))}
    if plot:
        writers[out_dir / "comparison.png"] = partial(plot_comparison, comparison)
        if comparison.has_spectra:
            writers[out_dir / "comparison-spectra.png"] = partial(plot_spectra, comparison)
    return write_files(writers, stale=(out_dir / "comparison.png", out_dir / "comparison-spectra.png"))


def _csv(comparison: Comparison, path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows(_csv_row(run) for run in comparison.runs)
