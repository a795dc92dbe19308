"""Tables, summary files (JSON, CSV, Markdown) and the curve plot of a run directory."""
from __future__ import annotations

import csv
import json
import statistics
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np
from rich.table import Table

from effrank_bench.analysis import Censoring, CurveAnalysis, analyze_curve
from effrank_bench.atomic import text_writer, write_files
from effrank_bench.bootstrap import ONE_SEED_NOTE, Estimate, Uncertainty, bootstrap_curve
from effrank_bench.config import RunConfig
from effrank_bench.plotting import fixed_margins, log2_scale, pyplot, save_png
from effrank_bench.plan import unfinished_trials
from effrank_bench.records import SCHEMA_VERSION, SpectralEstimates, TeacherRecord, Trial
from effrank_bench.search import parse_tolerance
from effrank_bench.store import RunDir

# The bootstrap of a report is reproducible: the same run directory always gives the same intervals.
BOOTSTRAP_RNG_SEED = 0


@dataclass(frozen=True)
class Row:
    """One line of the cost/accuracy table: the teacher (rank None) or a student of one seed."""

    rank: int | None
    seed: int | None
    status: str
    accuracy: float | None
    normalized: float | None
    params: int | None
    compression: float | None
    macs: int | None
    latency_ms: float | None
    error: str | None = None
    ece: float | None = None  # expected calibration error on the test split (None: not recorded)
    nll: float | None = None  # mean cross-entropy in nats on the test split
    latency_iqr_ms: float | None = None  # the interquartile range of the timed passes (None: not recorded)


@dataclass(frozen=True)
class RankStat:
    """The finished students of one rank, over their seeds (normalized = accuracy / teacher accuracy).

    ``std`` is the sample standard deviation (0 for one seed); ``params``/``macs`` are means over
    the seeds (the same for every seed of a rank, unless the model changed between runs).
    """

    rank: int
    seeds: tuple[int, ...]
    accuracy: float
    normalized: float
    std: float
    min: float
    max: float
    params: float | None
    macs: float | None


@dataclass(frozen=True)
class Report:
    config: RunConfig
    teacher: TeacherRecord
    rows: list[Row]
    analysis: CurveAnalysis | None
    note: str | None  # why there is no analysis yet
    per_rank: tuple[RankStat, ...] = ()
    uncertainty: Uncertainty | None = None
    uncertainty_note: str | None = None  # why there is no interval
    warnings: tuple[str, ...] = ()  # what makes the numbers doubtful (warning_lines)
    spectrum: SpectralEstimates | None = None  # the teacher's spectral estimates (None: not stored)
    search_rounds: tuple[tuple[int, ...], ...] = ()  # the ranks an adaptive search asked for, round by round

    @property
    def title(self) -> str:
        c = self.config
        return f"{c.arch} · {c.target} · {c.loss} · {c.dataset}"

    @property
    def seeds(self) -> tuple[int, ...]:
        """The seeds of the finished students."""
        return tuple(sorted({row.seed for row in self.rows if row.status == "ok" and row.rank is not None}))

    def cost_at(self, rank: float) -> tuple[float | None, float | None]:
        """Student parameters and MACs at a real-valued rank, linearly interpolated between measured ranks.

        Both are linear in the rank of a factorized model, so the interpolation is exact between two
        measured ranks unless a layer reaches its full rank (and stops growing) between them. None
        outside the measured ranks or where a cost is missing.
        """
        stats = [s for s in self.per_rank if s.params is not None and s.macs is not None]
        if len(stats) < 2 or not stats[0].rank <= rank <= stats[-1].rank:
            return None, None
        ranks = [s.rank for s in stats]
        return (float(np.interp(rank, ranks, [s.params for s in stats])),
                float(np.interp(rank, ranks, [s.macs for s in stats])))

    def to_dict(self) -> dict:
        return {
            "schema_version": SCHEMA_VERSION,
            "environment": self.teacher.environment,
            "config": self.config.model_dump(mode="json"),
            "teacher": self.teacher.model_dump(mode="json", include={
                "val_accuracy", "test_accuracy", "test_ece", "test_nll", "source", "cost", "key", "history", "train_seconds"}),
            "trials": [asdict(row) for row in self.rows],
            "per_rank": [asdict(stat) for stat in self.per_rank],
            "analysis": self.analysis.to_dict() if self.analysis else None,
            "analysis_note": self.note,
            "uncertainty": self.uncertainty.to_dict() if self.uncertainty else None,
            "uncertainty_note": self.uncertainty_note,
            "warnings": list(self.warnings),
            "spectrum": self.spectrum.model_dump() if self.spectrum else None,
            "search": None if self.config.search == "grid" else {
                "tolerance": str(parse_tolerance(self.config.tolerance)),
                "rounds": [list(r) for r in self.search_rounds]},
        }


def build_report(run: RunDir) -> Report:
    """Read a finished or partial run and analyse what it holds (test accuracy, as reported).

    The region and knee are read off the mean over seeds at each rank; when some rank has more
    than one seed, a bootstrap over seeds (``config.bootstrap_resamples``) gives their 95% intervals.
    """
    config, teacher, (asked, spent) = run.config(), run.teacher(), run.search_log()
    t_acc, t_cost = teacher.test_accuracy, teacher.cost
    rows = [Row(None, config.teacher_seed, "teacher", t_acc, 1.0 if t_acc > 0 else None, t_cost.params, 1.0,
                t_cost.macs, t_cost.latency_ms, ece=teacher.test_ece, nll=teacher.test_nll,
                latency_iqr_ms=t_cost.latency_iqr_ms)]
    records = sorted(run.records(), key=lambda r: (r.rank, r.seed))
    for r in records:
        if r.status == "ok":
            cost = r.cost
            rows.append(Row(r.rank, r.seed, "ok", r.test_accuracy, r.test_accuracy / t_acc if t_acc > 0 else None,
                            cost and cost.params, cost and t_cost.params / cost.params, cost and cost.macs,
                            cost and cost.latency_ms, ece=r.test_ece, nll=r.test_nll,
                            latency_iqr_ms=cost and cost.latency_iqr_ms))
        else:
            rows.append(Row(r.rank, r.seed, "failed", None, None, None, None, None, None, error=r.error))
    ok = [r for r in records if r.status == "ok"]
    per_rank = _per_rank(ok, t_acc) if t_acc > 0 else ()
    analysis, note, uncertainty, u_note = None, None, None, None
    unfinished = unfinished_trials(config, records, asked, spent, t_acc)
    if t_acc <= 0:
        note = ("the teacher's test accuracy is 0: there is nothing to normalize the students by; "
                "train it longer (--teacher-epochs) or start from trained weights")
        u_note = "no analysis"
    elif len(per_rank) < 2:
        failed = sorted({r.rank for r in records if r.status == "failed"} - {stat.rank for stat in per_rank})
        more = ("" if unfinished else
                f", and rank(s) {', '.join(map(str, failed))} failed (their errors are in the table; a rerun keeps "
                "a failure, another --out trains it again)" if failed else
                ", and the sweep has no more: add ranks with --ranks")
        note = f"{len(per_rank)} finished rank(s); the region and knee need at least 2{more}"
        u_note = "no analysis yet"
    else:
        points = ([r.rank for r in ok], [r.test_accuracy for r in ok])
        analysis = analyze_curve(*points, t_acc, thresholds=config.thresholds, knee_axis=config.knee_axis,
                                 monotone=config.monotone)
        if max(len(stat.seeds) for stat in per_rank) > 1:
            uncertainty = bootstrap_curve(analysis, *points, [r.seed for r in ok],
                                          resamples=config.bootstrap_resamples, rng_seed=BOOTSTRAP_RNG_SEED)
        else:
            u_note = ONE_SEED_NOTE
    return Report(config=config, teacher=teacher, rows=rows, analysis=analysis, note=note,
                  per_rank=per_rank, uncertainty=uncertainty, uncertainty_note=u_note,
                  warnings=tuple(_warnings(config, teacher, ok, unfinished)),
                  spectrum=run.spectrum(),
                  search_rounds=() if config.search == "grid" else tuple(map(tuple, asked)))


# A student this much better than its teacher (normalized accuracy above it) means the teacher is weak.
BEATS_TEACHER = 1.05


def _warnings(config: RunConfig, teacher: TeacherRecord, ok: list, unfinished: list[Trial]) -> list[str]:
    """What makes a run's numbers doubtful: a sweep not finished (stopped, or still training), data cut to a
    few batches, a teacher near chance, students beating it, a teacher used as loaded with a head that was not."""
    warnings = []
    if unfinished:
        shown = ", ".join(t.label(len(config.seeds)) for t in unfinished[:4]) + (", ..." if len(unfinished) > 4 else "")
        read = "the region and knee are read off what is recorded" if ok else "no trial is recorded yet"
        count = f"{len(unfinished)}" if config.search == "grid" else f"at least {len(unfinished)}"  # more rounds
        warnings.append(f"the sweep is not finished: {count} trial(s) still to train ({shown}); {read} (a "
                        "sweep that was stopped finishes when its command runs again)")
    if config.limit_batches is not None:
        warnings.append(f"every split was cut to {config.limit_batches} batch(es) per pass (--limit-batches): "
                        "this run checks that the setup works end to end, its numbers measure nothing")
    t_acc = teacher.test_accuracy
    if teacher.num_classes:
        # Twice chance, or for few classes (two: twice chance is perfect) halfway from chance to perfect.
        chance = 1 / teacher.num_classes
        near, rule = min((2 * chance, f"twice chance (2/{teacher.num_classes})"),
                         ((1 + chance) / 2, f"halfway from chance (1/{teacher.num_classes}) to 1"))
        if 0 < t_acc < near:  # at 0 the report's note says it, and that nothing is normalized
            warnings.append(f"the teacher is near chance: test accuracy {t_acc:.4f}, under {rule} = {near:.4f}; "
                            "accuracies normalized by it mean little: train it longer (--teacher-epochs) or start "
                            "from trained weights")
    best = max(ok, key=lambda r: r.test_accuracy, default=None)
    if best is not None and t_acc > 0 and best.test_accuracy / t_acc > BEATS_TEACHER:
        warnings.append(f"a student beats the teacher by more than {BEATS_TEACHER - 1:.0%} (rank {best.rank}, "
                        f"seed {best.seed}: normalized {best.test_accuracy / t_acc:.3f}): the teacher is "
                        "probably under-trained (--teacher-epochs, --teacher-lr)")
    if config.teacher_epochs == 0 and teacher.skipped_keys:
        shown = ", ".join(teacher.skipped_keys[:3]) + (", ..." if len(teacher.skipped_keys) > 3 else "")
        warnings.append(f"the teacher is used as loaded (--teacher-epochs 0) but its head is new, not loaded "
                        f"({shown}): an untrained head; fine-tune it with --teacher-epochs N")
    return warnings


def warning_lines(report: Report) -> list[str]:
    """The report's warnings, one line each."""
    return [f"warning: {warning}" for warning in report.warnings]


def _per_rank(ok: list, teacher_accuracy: float) -> tuple[RankStat, ...]:
    stats = []
    for rank in sorted({r.rank for r in ok}):
        at_rank = [r for r in ok if r.rank == rank]
        normalized = [r.test_accuracy / teacher_accuracy for r in at_rank]
        params = [r.cost and r.cost.params for r in at_rank]
        macs = [r.cost and r.cost.macs for r in at_rank]
        stats.append(RankStat(
            rank=rank, seeds=tuple(sorted({r.seed for r in at_rank})),
            accuracy=statistics.fmean(r.test_accuracy for r in at_rank),
            normalized=statistics.fmean(normalized),
            std=statistics.stdev(normalized) if len(normalized) > 1 else 0.0,
            min=min(normalized), max=max(normalized),
            params=None if None in params else statistics.fmean(params),
            macs=None if None in macs else statistics.fmean(macs),
        ))
    return tuple(stats)


def _fmt(value, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def format_estimate(value: float | None, estimate: Estimate | None, spec: str = ".2f", separator: str = " ",
                    censored: Censoring = None, last_rank: float | None = None) -> str:
    """``3.21 [2.80, 3.90]`` with an interval (after ``separator``), ``3.21`` without, ``–`` for no value;
    ``≤2.00`` for a left-censored value (met at the first rank), ``>32.00`` for a right-censored one (not
    reached by ``last_rank``, the last rank measured, where given)."""
    if value is None and censored == "right" and last_rank is not None:
        text = ">" + format(last_rank, spec)
    else:
        text = ("≤" if censored == "left" and value is not None else "") + _fmt(value, spec)
    if estimate is not None and estimate.ci_low is not None:
        text += f"{separator}[{_interval(estimate, spec)}]"
    return text


def _interval(estimate: Estimate, spec: str) -> str:
    """``2.80, 3.90``; ``≤2.00`` / ``>32.00`` at an end that enough resamples lie beyond (censored); the
    end alone, ``>32.00``, when both bounds lie beyond it (no resample met the threshold by the last rank)."""
    if estimate.ci_low == estimate.ci_high and (estimate.ci_low_censored or estimate.ci_high_censored):
        return ("≤" if estimate.ci_low_censored else ">") + format(estimate.ci_low, spec)
    low = ("≤" if estimate.ci_low_censored else "") + format(estimate.ci_low, spec)
    high = (">" if estimate.ci_high_censored else "") + format(estimate.ci_high, spec)
    return f"{low}, {high}"


def _show_seed(report: Report) -> bool:
    return len(report.config.seeds) > 1 or len(report.seeds) > 1


def _cells(row: Row, with_seed: bool) -> list[str]:
    seed = [_fmt(row.seed, "d")] if with_seed else []
    if row.status == "failed":
        return [str(row.rank), *seed, f"failed: {row.error}", "", "", "", "", "", ""]
    return [
        "teacher" if row.rank is None else str(row.rank), *seed,
        _fmt(row.accuracy, ".4f"), _fmt(row.normalized, ".3f"), _fmt(row.params, ","),
        _fmt(row.compression, ".2f") + "×", _fmt(row.macs / 1e6 if row.macs is not None else None, ",.2f"),
        _fmt(row.latency_ms, ".3f"), _fmt(row.latency_iqr_ms, ".3f"),
    ]


def _header(with_seed: bool) -> list[str]:
    return ["rank", *(["seed"] if with_seed else []), "accuracy", "normalized", "params", "compression", "MMACs",
            "latency ms", "IQR ms"]


def _ci(estimate: Estimate, spec: str = ".2f") -> str:
    """The bracket after a read-off value: the interval, and how often the threshold was missed or
    already met at the first rank."""
    if estimate.ci_low is None:
        return ""
    missed, met = estimate.unreached or 0.0, estimate.met_at_first or 0.0
    tail = f"; not reached in {missed:.0%} of resamples" if missed > 0 else ""
    tail += f"; met at the first rank in {met:.0%} of resamples" if met > 0 else ""
    return f" [95% CI {_interval(estimate, spec)}{tail}]"


def region_lines(analysis: CurveAnalysis | None, note: str | None,
                 uncertainty: Uncertainty | None = None) -> list[str]:
    """The region and knee in words; with ``uncertainty``, each with its bootstrap interval."""
    if analysis is None:
        return [f"effective rank: not yet ({note})"]
    region, (t0, t1) = analysis.region, analysis.region.thresholds
    low, high = (f"{t:.0%} not reached by rank {analysis.ranks[-1]:g}" if value is None
                 else f"{t:.0%} at rank {format_estimate(value, None, censored=censored)}"
                 for t, value, censored in ((t0, region.low, region.low_censored),
                                            (t1, region.high, region.high_censored)))
    band = f" → band {region.band_text()}" if region.band else ""
    knee = f"{analysis.knee:.2f}"
    source = ""
    if uncertainty is not None and uncertainty.resamples > 0:
        low += _ci(uncertainty.low)
        high += _ci(uncertainty.high)
        knee += _ci(uncertainty.knee)
        source = f" (bootstrap, {uncertainty.resamples} resamples over {len(uncertainty.seeds)} seeds)"
    lines = [
        f"effective-rank region: {low}, {high}{band}{source}",
        f"effective knee: rank {knee} ({analysis.knee_axis} axis)",
    ]
    lines += [f"note: {line}" for line in knee_notes(analysis)]
    if source and uncertainty.note:
        lines.append(f"note: {uncertainty.note}")
    return lines


def knee_notes(analysis: CurveAnalysis) -> list[str]:
    """Why a curve's knee is no place where more rank stops paying off, where it is not: a flat curve, one
    that rises without a bend, one that bends upward there."""
    region, (t0, t1) = analysis.region, analysis.region.thresholds
    notes = []
    if analysis.flat:
        level = analysis.monotone[0]
        more = (": smaller ranks would show where it falls" if level >= t1 else
                ": larger ranks, or a longer recipe, would show where it rises" if level < t0 else "")
        notes.append(f"the curve is flat, at {level:.2f} of the teacher from rank {analysis.ranks[0]:g} on: "
                     f"it has no knee (the one shown is its first rank){more}")
    if analysis.no_bend:
        first, last = analysis.ranks[0], analysis.ranks[-1]
        why, more = ((f"only {len(analysis.ranks)} ranks", f"ranks between {first:g} and {last:g} would show where "
                      "it bends") if len(analysis.ranks) < 3 else
                     ("its points lie on one line", "larger ranks would show where it levels off"))
        notes.append(f"the curve rises without a bend ({why}): it has no knee (the one shown is where it reaches "
                     f"its top); {more}")
    if analysis.knee_bends_up:
        more = ("; larger ranks would show where the curve levels off" if region.high is None else
                " (the lower bend of an S-shaped curve)")
        notes.append("the curve bends upward at its knee (the fit lies below the line through its end "
                     f"points): the knee marks where more rank starts to pay off, not where it stops{more}")
    return notes


def search_lines(report: Report) -> list[str]:
    """How an adaptive search chose the ranks: its tolerance, the ranks trained against the grid, its rounds;
    none for a grid sweep."""
    c, rounds = report.config, report.search_rounds
    if c.search == "grid" or not rounds:
        return []
    measured = {stat.rank for stat in report.per_rank}
    tolerance = parse_tolerance(c.tolerance)
    if tolerance.on_grid:
        off = len(measured - set(c.ranks))
        among = f"{len(measured & set(c.ranks))} of the {len(c.ranks)} of --ranks" + (
            f" (and {off} off it, from another --tolerance or --ranks)" if off else "")
    else:
        among = f"{len(measured)} between {c.ranks[0]} and {c.ranks[-1]} (--ranks has {len(c.ranks)})"
    return [f"adaptive search, tolerance {tolerance}: rank(s) measured: {among}, in {len(rounds)} round(s)"]


def spectrum_lines(report: Report) -> list[str]:
    """The teacher's spectral estimates in words, beside the distilled region; none when not stored."""
    e = report.spectrum
    if e is None:
        return []
    feature = "–" if e.feature_r99 is None else f"{e.feature_r99:g}"
    return [f"spectral estimates of the teacher: median weight r95 {e.weight_r95:g}, median pooled feature r99 "
            f"{feature} ({e.samples} test inputs)"]


def render_table(report: Report) -> Table:
    with_seed = _show_seed(report)
    table = Table(title=report.title)
    for name in _header(with_seed):
        table.add_column(name, justify="left" if name == "rank" else "right")
    for row in report.rows:
        table.add_row(*_cells(row, with_seed))
    return table


def _markdown(report: Report) -> str:
    with_seed = _show_seed(report)
    header = _header(with_seed)
    lines = [f"# {report.title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cells(row, with_seed)) + " |" for row in report.rows]
    if with_seed and report.per_rank:
        lines += ["", "## Per rank, over seeds (normalized accuracy)", "",
                  "| rank | seeds | mean | std | min | max |", "|---|---|---|---|---|---|"]
        lines += [f"| {s.rank} | {len(s.seeds)} | {s.normalized:.3f} | {s.std:.3f} | {s.min:.3f} | {s.max:.3f} |"
                  for s in report.per_rank]
    lines += [""] + [f"- {line}" for line in region_lines(report.analysis, report.note, report.uncertainty)]
    if report.uncertainty_note and report.analysis is not None:
        lines.append(f"- {report.uncertainty_note}")
    lines += [f"- {line}" for line in search_lines(report) + spectrum_lines(report) + warning_lines(report)]
    return "\n".join(lines) + "\n"


def _csv(report: Report, path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        fields = list(Row.__dataclass_fields__)
        writer.writerow(fields)
        for row in report.rows:
            writer.writerow(["teacher" if row.rank is None and name == "rank" else getattr(row, name)
                             for name in fields])


REGION_FIELDS = ["quantity", "threshold", "estimate", "ci_low", "ci_high", "unreached", "resamples", "seeds",
                 "censored", "ci_low_censored", "ci_high_censored", "met_at_first"]


def _region_csv(report: Report, path: Path) -> None:
    """The read-off quantities, one per line: value on the seed-mean curve and its interval (if any)."""
    a, u = report.analysis, report.uncertainty
    t0, t1 = a.region.thresholds
    quantities = [("low", t0, a.region.low, a.region.low_censored), ("high", t1, a.region.high, a.region.high_censored),
                  ("knee", None, a.knee, None)]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(REGION_FIELDS)
        for name, threshold, value, censored in quantities:
            e = getattr(u, name) if u is not None else Estimate(value, None, None)
            interval = e.ci_low is not None  # the interval's censoring is empty where there is no interval
            writer.writerow([name, threshold, value, e.ci_low, e.ci_high, e.unreached,
                             u.resamples if u else 0, len(report.seeds), censored,
                             e.ci_low_censored if interval else None, e.ci_high_censored if interval else None,
                             e.met_at_first])


def plot_curve(report: Report, path: Path) -> None:
    """Normalized accuracy vs rank: points (mean ± spread over seeds), PCHIP fit, bootstrap band,
    the threshold region shaded, the knee and the teacher's spectral estimates marked; below it, when
    the trials recorded it, their expected calibration error against rank."""
    plt = pyplot()
    from matplotlib.ticker import FormatStrFormatter

    calibrated = [row for row in report.rows if row.status == "ok" and row.rank is not None and row.ece is not None]
    if calibrated:
        fig, (ax, ece_ax) = plt.subplots(2, 1, figsize=(6.4, 6.6), sharex=True, height_ratios=(2, 1))
    else:
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
    a, u = report.analysis, report.uncertainty
    several = len(report.seeds) > 1
    if several:
        stats = report.per_rank
        ranks = [s.rank for s in stats]
        means = np.array([s.normalized for s in stats])
        spread = [means - [s.min for s in stats], np.array([s.max for s in stats]) - means]
        ax.errorbar(ranks, means, yerr=spread, fmt="o", color="C0", capsize=3, ms=4,
                    label=f"students: mean of {len(report.seeds)} seeds (bars: min–max)")
    else:
        ax.plot(a.ranks, a.normalized, "o", color="C0", label="students (test)")
    if u is not None and u.band is not None:
        ax.fill_between(u.band.ranks, u.band.low, u.band.high, color="C0", alpha=0.15, lw=0,
                        label=f"95% bootstrap band of fits ({u.resamples} resamples)")
    dense = np.linspace(a.ranks[0], a.ranks[-1], 512)
    ax.plot(dense, a.fit(dense), "-", color="C0", alpha=0.7,
            label="monotone PCHIP fit" + (" of the mean" if several else ""))
    t0, t1 = a.region.thresholds
    for t in (t0, t1):
        ax.axhline(t, color="grey", lw=0.8, ls=":")
    if a.region.low is not None and a.region.high is not None:
        ax.axvspan(a.region.low, a.region.high, color="C2", alpha=0.2,
                   label=f"{t0:.0%}–{t1:.0%} region {a.region.band_text()}")
    knee = f"knee ≈ {a.knee:.1f}"
    if u is not None and u.knee.ci_low is not None:
        knee += f" [{u.knee.ci_low:.1f}, {u.knee.ci_high:.1f}]"
        ax.axvspan(u.knee.ci_low, u.knee.ci_high, color="C3", alpha=0.08)
    ax.axvline(a.knee, color="C3", ls="--", lw=1, label=knee)
    e = report.spectrum
    if e is not None:
        marks = [("median weight r95", e.weight_r95, "C4", "v"), ("median pooled feature r99", e.feature_r99, "C1", "^")]
        for label, value, color, marker in marks:
            if value is not None and value > 0:
                ax.axvline(value, color=color, ls="-.", lw=1)
                ax.plot([value], [1.0], marker, color=color, ms=6, label=f"spectral: {label} = {value:g}")
    log2_scale(ax)
    ax.set_ylabel("accuracy / teacher accuracy")
    ax.set_title(report.title)
    ax.legend(loc="lower right", fontsize=7)
    if calibrated:
        ece_ax.plot([row.rank for row in calibrated], [row.ece for row in calibrated], "o", color="C0", ms=4,
                    label="students (test)")
        if report.teacher.test_ece is not None:
            ece_ax.axhline(report.teacher.test_ece, color="grey", lw=1, ls="--",
                           label=f"teacher {report.teacher.test_ece:.3f}")
        ece_ax.set_ylabel("ECE (15 bins)")
        # Three decimals, no offset: students at one ECE gave ticks like 0.49650, whose width pushed the label out.
        ece_ax.yaxis.set_major_formatter(FormatStrFormatter("%.3f"))
        low, high = ece_ax.get_ylim()
        if high - low < 0.01:  # a range the three decimals can tell apart
            middle = (low + high) / 2
            ece_ax.set_ylim(middle - 0.005, middle + 0.005)
        ece_ax.legend(loc="upper right", fontsize=7)
        log2_scale(ece_ax)
    (ece_ax if calibrated else ax).set_xlabel("rank")
    fixed_margins(fig)
    save_png(fig, path)


def write_report(run: RunDir, report: Report, plot: bool = True) -> list[Path]:
    """Write summary.json, summary.csv, summary.md and, with an analysis, region.csv and (unless ``plot`` is
    False) curve.png. An earlier region.csv or curve.png this report does not rewrite is removed: it would
    describe other trials than the tables.
    """
    # Each file whole or not at all (temporary name, then rename): a reader never sees half a summary.
    writers = {run.path / "summary.json": text_writer(json.dumps(report.to_dict(), indent=2)),
               run.path / "summary.csv": partial(_csv, report),
               run.path / "summary.md": text_writer(_markdown(report))}
    if report.analysis is not None:
        writers[run.path / "region.csv"] = partial(_region_csv, report)
        if plot:
            writers[run.path / "curve.png"] = partial(plot_curve, report)
    return write_files(writers, stale=(run.path / "region.csv", run.path / "curve.png"))
