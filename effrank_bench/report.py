"""Tables, summary files (JSON, CSV, Markdown) and the curve plot of a run directory."""
from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from rich.table import Table

from effrank_bench.analysis import CurveAnalysis, analyze_curve
from effrank_bench.config import RunConfig
from effrank_bench.environment import environment
from effrank_bench.store import SCHEMA_VERSION, RunDir


@dataclass(frozen=True)
class Row:
    """One line of the cost/accuracy table: the teacher (rank None) or a student."""

    rank: int | None
    status: str
    accuracy: float | None
    normalized: float | None
    params: int | None
    compression: float | None
    macs: int | None
    latency_ms: float | None
    error: str | None = None


@dataclass(frozen=True)
class Report:
    config: RunConfig
    teacher: dict
    rows: list[Row]
    analysis: CurveAnalysis | None
    note: str | None  # why there is no analysis yet

    def to_dict(self) -> dict:
        return {
            "schema_version": SCHEMA_VERSION,
            "environment": self.teacher.get("environment") or environment("cpu"),
            "config": self.config.model_dump(mode="json"),
            "teacher": {k: self.teacher.get(k) for k in ("val_accuracy", "test_accuracy", "source", "cost", "key")},
            "trials": [asdict(row) for row in self.rows],
            "analysis": self.analysis.to_dict() if self.analysis else None,
            "analysis_note": self.note,
        }


def build_report(run: RunDir) -> Report:
    """Read a finished or partial run and analyse what it holds (test accuracy, as reported)."""
    config, teacher = run.config(), run.teacher()
    t_acc, t_cost = teacher["test_accuracy"], teacher["cost"]
    rows = [Row(None, "teacher", t_acc, 1.0, t_cost["params"], 1.0, t_cost["macs"], t_cost["latency_ms"])]
    records = sorted(run.records(), key=lambda r: (r.rank, r.seed))
    for r in records:
        if r.status == "ok":
            rows.append(Row(r.rank, "ok", r.test_accuracy, r.test_accuracy / t_acc, r.cost["params"],
                            t_cost["params"] / r.cost["params"], r.cost["macs"], r.cost["latency_ms"]))
        else:
            rows.append(Row(r.rank, "failed", None, None, None, None, None, None, error=r.error))
    ok = [r for r in records if r.status == "ok"]
    analysis, note = None, None
    if len({r.rank for r in ok}) < 2:
        note = f"{len(ok)} finished rank(s); the region and knee need at least 2"
    else:
        analysis = analyze_curve([r.rank for r in ok], [r.test_accuracy for r in ok], t_acc,
                                 thresholds=config.thresholds, knee_axis=config.knee_axis)
    return Report(config=config, teacher=teacher, rows=rows, analysis=analysis, note=note)


def _fmt(value, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def _cells(row: Row) -> list[str]:
    if row.status == "failed":
        return [str(row.rank), f"failed: {row.error}", "", "", "", "", ""]
    return [
        "teacher" if row.rank is None else str(row.rank),
        _fmt(row.accuracy, ".4f"), _fmt(row.normalized, ".3f"), _fmt(row.params, ","),
        _fmt(row.compression, ".2f") + "×", _fmt(row.macs / 1e6 if row.macs is not None else None, ",.2f"),
        _fmt(row.latency_ms, ".3f"),
    ]


_HEADER = ["rank", "accuracy", "normalized", "params", "compression", "MMACs", "latency ms"]


def region_lines(analysis: CurveAnalysis | None, note: str | None) -> list[str]:
    if analysis is None:
        return [f"effective rank: not yet ({note})"]
    region, (t0, t1) = analysis.region, analysis.region.thresholds
    low = "not reached" if region.low is None else f"{region.low:.2f}"
    high = "not reached" if region.high is None else f"{region.high:.2f}"
    band = f" → band [{region.band[0]}, {region.band[1]}]" if region.band else ""
    return [
        f"effective-rank region: {t0:.0%} at rank {low}, {t1:.0%} at rank {high}{band}",
        f"effective knee: rank {analysis.knee:.2f} ({analysis.knee_axis} axis)",
    ]


def render_table(report: Report) -> Table:
    c = report.config
    table = Table(title=f"{c.arch} · {c.target} · {c.loss} · {c.dataset}")
    for name in _HEADER:
        table.add_column(name, justify="left" if name == "rank" else "right")
    for row in report.rows:
        table.add_row(*_cells(row))
    return table


def _markdown(report: Report) -> str:
    c = report.config
    lines = [f"# {c.arch} · {c.target} · {c.loss} · {c.dataset}", "",
             "| " + " | ".join(_HEADER) + " |", "|" + "---|" * len(_HEADER)]
    lines += ["| " + " | ".join(_cells(row)) + " |" for row in report.rows]
    lines += [""] + [f"- {line}" for line in region_lines(report.analysis, report.note)]
    return "\n".join(lines) + "\n"


def _csv(report: Report, path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        fields = list(Row.__dataclass_fields__)
        writer.writerow(fields)
        for row in report.rows:
            writer.writerow(["teacher" if row.rank is None and name == "rank" else getattr(row, name)
                             for name in fields])


def plot_curve(report: Report, path: Path) -> None:
    """Normalized accuracy vs rank: points, PCHIP fit, the threshold band shaded, the knee marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    a = report.analysis
    ax.plot(a.ranks, a.normalized, "o", color="C0", label="students (test)")
    dense = np.linspace(a.ranks[0], a.ranks[-1], 512)
    ax.plot(dense, a.fit(dense), "-", color="C0", alpha=0.7, label="monotone PCHIP fit")
    t0, t1 = a.region.thresholds
    for t in (t0, t1):
        ax.axhline(t, color="grey", lw=0.8, ls=":")
    if a.region.low is not None and a.region.high is not None:
        ax.axvspan(a.region.low, a.region.high, color="C2", alpha=0.2,
                   label=f"{t0:.0%}–{t1:.0%} region [{a.region.band[0]}, {a.region.band[1]}]")
    ax.axvline(a.knee, color="C3", ls="--", lw=1, label=f"knee ≈ {a.knee:.1f}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("rank")
    ax.set_ylabel("accuracy / teacher accuracy")
    c = report.config
    ax.set_title(f"{c.arch} · {c.target} · {c.loss} · {c.dataset}")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(run: RunDir, report: Report) -> list[Path]:
    """Write summary.json, summary.csv, summary.md and (with an analysis) curve.png; return their paths."""
    paths = [run.path / name for name in ("summary.json", "summary.csv", "summary.md")]
    paths[0].write_text(json.dumps(report.to_dict(), indent=2))
    _csv(report, paths[1])
    paths[2].write_text(_markdown(report))
    if report.analysis is not None:
        paths.append(run.path / "curve.png")
        plot_curve(report, paths[-1])
    return paths
