"""A teacher's spectrum as tables, summary lines, spectrum.json/.csv and plots across depth."""
from __future__ import annotations

import csv
import json
from functools import partial
from pathlib import Path

from rich.table import Table

from effrank_bench.atomic import text_writer, write_files
from effrank_bench.errors import ConfigError
from effrank_bench.paths import make_folder
from effrank_bench.plotting import pyplot, save_png
from effrank_bench.teacher_spectrum import FEATURE_Q, ModelSpectrum

# The weight energy fractions shown, by their column name.
_ENERGY = {0.90: "r90", 0.95: "r95", 0.99: "r99"}


def render_tables(spectrum: ModelSpectrum) -> list[Table]:
    """One table of the weight matrices and, where the architecture has branches, one of its branch outputs."""
    title = f"{spectrum.arch} · {spectrum.target} · {spectrum.dataset}"
    weights = Table(title=f"{title}: weights")
    for name in ("layer", "shape", "width", "eff. rank", "stable rank", "r90", "r95", "r99"):
        weights.add_column(name, justify="left" if name == "layer" else "right")
    for w in spectrum.weights:
        m = w.measures
        weights.add_row(w.name, "×".join(map(str, m.shape)), str(m.width), f"{m.effective_rank:.1f}",
                        f"{m.stable_rank:.2f}", *(str(m.energy_ranks[q]) for q in _ENERGY))
    tables = [weights]
    if spectrum.features:
        features = Table(title=f"{title}: branch outputs on {spectrum.samples} test inputs")
        for name in ("branch", "width", f"r{FEATURE_Q * 100:g} per input", f"pooled r{FEATURE_Q * 100:g}",
                     "rotation °"):
            features.add_column(name, justify="left" if name == "branch" else "right")
        for f in spectrum.features:
            m = f.measures
            rotation = "–" if m.rotation_deg is None else f"{m.rotation_deg:.1f}"
            features.add_row(f.name, str(m.channels), f"{m.input_rank_mean:.1f} ± {m.input_rank_std:.1f}",
                             str(m.pooled_rank), rotation)
        tables.append(features)
    return tables


def summary_lines(spectrum: ModelSpectrum) -> list[str]:
    """Medians over layers, absolute and per width, and the two estimates a run keeps."""
    w = spectrum.weight_summary
    lines = [f"weights ({w.layers} matrices): median effective rank {w.median['effective_rank']:.1f}, "
             f"stable rank {w.median['stable_rank']:.2f}, r95 {w.median['energy_rank_0.95']:g} "
             f"({w.median_per_width['energy_rank_0.95']:.0%} of width), r99 {w.median['energy_rank_0.99']:g} "
             f"({w.median_per_width['energy_rank_0.99']:.0%} of width)"]
    f = spectrum.feature_summary
    if f is not None:
        rotation = f", rotation {f.median['rotation_deg']:.1f}°" if "rotation_deg" in f.median else ""
        lines.append(f"features ({f.layers} branch outputs, {spectrum.samples} inputs): median per-input r99 "
                     f"{f.median['input_rank_mean']:.1f} ({f.median_per_width['input_rank_mean']:.0%} of width), "
                     f"pooled r99 {f.median['pooled_rank']:g} ({f.median_per_width['pooled_rank']:.0%} of width)"
                     + rotation)
    e = spectrum.estimates
    feature = "–" if e.feature_r99 is None else f"{e.feature_r99:g}"
    lines.append(f"spectral estimates: weight r95 {e.weight_r95:g}, feature r99 {feature}")
    return lines


CSV_FIELDS = ["kind", "name", "shape", "width", "effective_rank", "stable_rank", "r90", "r95", "r99",
              "input_rank_mean", "input_rank_std", "pooled_rank", "rotation_deg"]


def _csv(spectrum: ModelSpectrum, path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS, restval="")
        writer.writeheader()
        for w in spectrum.weights:
            m = w.measures
            writer.writerow({"kind": "weight", "name": w.name, "shape": "x".join(map(str, m.shape)), "width": m.width,
                             "effective_rank": m.effective_rank, "stable_rank": m.stable_rank,
                             **{name: m.energy_ranks[q] for q, name in _ENERGY.items()}})
        for feature in spectrum.features:
            m = feature.measures
            writer.writerow({"kind": "feature", "name": feature.name, "width": m.channels,
                             "input_rank_mean": m.input_rank_mean, "input_rank_std": m.input_rank_std,
                             "pooled_rank": m.pooled_rank, "rotation_deg": m.rotation_deg})


def plot_depth(spectrum: ModelSpectrum, path: Path) -> None:
    """Ranks across depth: each weight matrix's energy ranks, and each branch output's feature ranks."""
    plt = pyplot()

    panels = 2 if spectrum.features else 1
    fig, axes = plt.subplots(1, panels, figsize=(5.6 * panels, 4.2), squeeze=False)
    ax = axes[0][0]
    index = range(len(spectrum.weights))
    for (q, name), style in zip(_ENERGY.items(), ("o-", "s-", "^-")):
        ax.plot(index, [w.measures.energy_ranks[q] for w in spectrum.weights], style, ms=3, label=f"{name} (energy)")
    ax.plot(index, [w.measures.effective_rank for w in spectrum.weights], "--", label="effective rank")
    ax.plot(index, [w.measures.stable_rank for w in spectrum.weights], ":", label="stable rank")
    ax.plot(index, [w.measures.width for w in spectrum.weights], color="grey", lw=0.8, label="width")
    ax.set_xlabel("targeted weight matrix (the target's order)")
    ax.set_ylabel("rank")
    ax.set_title("weights")
    ax.legend(fontsize=7)
    if spectrum.features:
        ax = axes[0][1]
        index = range(len(spectrum.features))
        measures = [f.measures for f in spectrum.features]
        ax.errorbar(index, [m.input_rank_mean for m in measures], yerr=[m.input_rank_std for m in measures],
                    fmt="o-", ms=3, capsize=2, label="r99 per input (mean ± std)")
        ax.plot(index, [m.pooled_rank for m in measures], "s-", ms=3, label="pooled r99 (PCA)")
        ax.plot(index, [m.channels for m in measures], color="grey", lw=0.8, label="width")
        ax.set_xlabel("branch output (model order)")
        ax.set_title(f"features on {spectrum.samples} test inputs")
        ax.legend(fontsize=7)
    fig.suptitle(f"{spectrum.arch} · {spectrum.target} · {spectrum.dataset}")
    fig.tight_layout()
    save_png(fig, path)


def plot_energy(spectrum: ModelSpectrum, path: Path) -> None:
    """The spectral energy pattern of each branch output: mean cumulative energy against bandwidth, by depth."""
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    cmap, n = plt.colormaps["viridis"], len(spectrum.features)
    for i, f in enumerate(spectrum.features):
        m = f.measures
        ax.plot([0.0, *m.pattern_bandwidth], [0.0, *m.pattern_energy], color=cmap(i / max(n - 1, 1)), lw=1,
                label=f.name if n <= 12 else None)
    ax.axhline(FEATURE_Q, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("bandwidth d / min(tokens, channels)")
    ax.set_ylabel("cumulative energy fraction (mean over inputs)")
    ax.set_title(f"energy pattern of branch outputs (colour: depth){'' if n <= 12 else f', {n} outputs'}")
    if n <= 12:
        ax.legend(fontsize=6)
    fig.tight_layout()
    save_png(fig, path)


def check_out(out: Path) -> None:
    """Refuse an output folder that is a file, or a run directory, before anything is computed."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a directory")
    if (out / "config.json").is_file() and any((out / name).is_file() for name in ("teacher.json", "trials.jsonl")):
        # Its spectrum.json is its own teacher's, which `report` and `compare` read as the run's.
        raise ConfigError(f"--out {out} is a run directory, whose spectrum.json is its teacher's: write this "
                          "spectrum to a folder of its own")


DEPTH_PLOT, ENERGY_PLOT = "spectrum-depth.png", "spectrum-energy.png"


def write_spectrum(spectrum: ModelSpectrum, out: Path, plot: bool = True) -> list[Path]:
    """spectrum.json, spectrum.csv and, with ``plot``, spectrum-depth.png and (with branches)
    spectrum-energy.png, each written whole. A plot of an earlier spectrum that this one does not redraw
    is removed: it would show another teacher than the files beside it."""
    out = Path(out)
    check_out(out)
    make_folder(out)
    writers = {out / "spectrum.json": text_writer(json.dumps(spectrum.to_dict(), indent=2)),
               out / "spectrum.csv": partial(_csv, spectrum)}
    if plot:
        writers[out / DEPTH_PLOT] = partial(plot_depth, spectrum)
        if spectrum.features:
            writers[out / ENERGY_PLOT] = partial(plot_energy, spectrum)
    for name in (DEPTH_PLOT, ENERGY_PLOT):
        if out / name not in writers:
            (out / name).unlink(missing_ok=True)
    return write_files(writers)
