"""The comparison report: the found network beside the reference, as markdown tables and PNGs.

Tables are pandas DataFrames rendered by :func:`markdown_table` (a few lines of ours, so the
report needs no optional dependency); the figures are matplotlib PNGs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from nas import rundir, zoo
from nas.analysis.plots import PNG_METADATA, plot_netadapt_history
from nas.analysis.runs import load_history, load_trials
from nas.arch import ArchSpec
from nas.errors import NasError
from nas.pipeline.config import PipelineConfig, read_run_config
from nas.pipeline.stages import (
    R, AdaptedResult, EditsResult, SeedResult, TrainedResult, deployed, read_done, training_runs,
)
from nas.train.trainer import METRICS

LAYER_COLUMNS = ["op", "kernel", "stride", "exp", "se", "act", "out"]
CURVE_COLUMNS = ["epoch", "val_top1", "train_loss", "val_loss"]


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.4g}"
    return "" if value is None or value is pd.NA else str(value)


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table of ``frame`` (index not shown)."""
    header = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(_cell(v).replace("|", "\\|") for v in row) + " |")
    return "\n".join(lines)


def layer_table(spec: ArchSpec) -> pd.DataFrame:
    """One row per part of the network: stem, each layer, head (kernel, expansion, SE, activation, out)."""
    rows = [{"op": "stem", "kernel": spec.stem.kernel, "stride": spec.stem.stride, "exp": "", "se": "",
             "act": spec.stem.act, "out": spec.stem.channels}]
    for layer, in_ch in zip(spec.layers, spec.in_channels()):
        se = f"{layer.se_ratio:g} ({layer.se_style})" if layer.has_se else "-"
        rows.append({"op": layer.op, "kernel": layer.kernel, "stride": layer.stride, "exp": layer.exp, "se": se,
                     "act": layer.act, "out": layer.out})
    head = spec.head
    rows.append({"op": "head", "kernel": 1, "stride": "", "exp": head.channels,
                 "se": "", "act": head.act, "out": head.hidden or head.channels})
    return pd.DataFrame(rows, columns=LAYER_COLUMNS)


def side_by_side(found: ArchSpec, reference: ArchSpec, names: tuple[str, str]) -> pd.DataFrame:
    """The two layer tables next to each other, row by row (the shorter one padded)."""
    left, right = layer_table(found), layer_table(reference)
    length = max(len(left), len(right))
    left, right = left.reindex(range(length)), right.reindex(range(length))
    left.columns = [f"{names[0]} {c}" for c in left.columns]
    right.columns = [f"{names[1]} {c}" for c in right.columns]
    return pd.concat([pd.DataFrame({"#": range(length)}), left, right], axis=1).fillna("")


def _value_labels(ax, values: np.ndarray, positions: np.ndarray, fmt: str, prefix: str = "") -> None:
    """Each value written just right of its bar end or point."""
    for value, y in zip(values, positions):
        if np.isfinite(value):
            ax.annotate(prefix + format(value, fmt), (value, y), textcoords="offset points", xytext=(5, 0),
                        va="center", fontsize=8)


def accuracy_limits(values, *, pad: float = 0.25, least: float = 1.0) -> tuple[float, float]:
    """Axis limits (same unit as ``values``) around the finite values: their span widened by ``pad`` of it
    on each side, at least ``least`` wide, so a point difference between two networks is visible."""
    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        raise NasError("no accuracy to plot")
    low, high = float(finite.min()), float(finite.max())
    margin = max(pad * (high - low), (least - (high - low)) / 2, 0.0)
    return low - margin, high + margin


def plot_comparison(summary: pd.DataFrame, path: Path) -> Figure:
    """Latency, params and MAdds as bars from zero (their ratios read off the bars); top-1 accuracy in %
    as points on an axis around the values, where bars from zero would hide a point's difference."""
    sizes = [("latency_ms", "predicted latency (ms)", ".2f"), ("params_M", "params (M)", ".3f"),
             ("madds_M", "MAdds (M)", ".1f")]
    accuracies = [(column, label, marker) for column, label, marker in
                  (("val_top1", "val", "o"), ("test_top1", "test", "D")) if summary[column].notna().any()]
    networks = summary["network"].astype(str).tolist()
    rows = np.arange(len(networks))
    colors = [f"C{i % 10}" for i in range(len(networks))]
    widths = [1.0] * len(sizes) + ([1.6] if accuracies else [])
    fig = Figure(figsize=(2.9 * sum(widths) + 1.2, 0.5 * len(networks) + 1.6))
    axes = fig.subplots(1, len(widths), sharey=True, gridspec_kw={"width_ratios": widths})
    for ax, (column, title, fmt) in zip(axes, sizes):
        values = summary[column].to_numpy(dtype=float)
        ax.barh(rows, values, color=colors, height=0.6)
        _value_labels(ax, values, rows, fmt)
        ax.set_xlim(0, np.nanmax(values) * 1.3)
        ax.set_title(title, fontsize=9)
    if accuracies:
        ax = axes[-1]
        shown = []
        for i, (column, label, marker) in enumerate(accuracies):
            values = 100 * summary[column].to_numpy(dtype=float)
            shown.extend(values)
            lane = rows + 0.3 * (i - (len(accuracies) - 1) / 2)  # val above test within a network's row
            ax.scatter(values, lane, marker=marker, s=40, c=colors, edgecolors="black", linewidths=0.6, zorder=3)
            _value_labels(ax, values, lane, ".1f", prefix=f"{label} ")
        low, high = accuracy_limits(shown)
        ax.set_xlim(low, high + 0.3 * (high - low))  # room for the value labels
        ax.set_title("top-1 accuracy (%)", fontsize=9)
    for ax in axes:
        ax.grid(axis="x", alpha=0.3)
        ax.tick_params(labelsize=8)
    axes[0].set_yticks(rows, networks)
    axes[0].set_ylim(len(networks) - 0.5, -0.5)
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata=PNG_METADATA)
    return fig


def plot_learning_curves(curves: Mapping[str, pd.DataFrame], path: Path) -> Figure:
    """Every trained network's validation top-1 (%) on one axis and its losses on another, epoch by epoch."""
    fig = Figure(figsize=(10, 4))
    ax_acc, ax_loss = fig.subplots(1, 2)
    for (name, curve), color in zip(curves.items(), (f"C{i % 10}" for i in range(len(curves)))):
        missing = [c for c in CURVE_COLUMNS if c not in curve.columns]
        if missing:
            raise NasError(f"training metrics of {name} have no column {missing[0]!r}")
        epoch = curve["epoch"].to_numpy()
        top1 = 100 * curve["val_top1"].to_numpy(dtype=float)
        ax_acc.plot(epoch, top1, marker="o", markersize=3, color=color, label=name)
        ax_acc.annotate(f"{top1[-1]:.1f}", (epoch[-1], top1[-1]), textcoords="offset points", xytext=(4, 0),
                        va="center", fontsize=8, color=color)
        ax_loss.plot(epoch, curve["train_loss"], color=color, label=f"{name} train")
        ax_loss.plot(epoch, curve["val_loss"], color=color, linestyle="--", label=f"{name} val")
    ax_acc.set(xlabel="epoch", ylabel="val top-1 accuracy (%)", title="held-out validation accuracy")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss (solid: train, dashed: val)")
    ax_acc.margins(x=0.12)  # room for the final values
    for ax in (ax_acc, ax_loss):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata=PNG_METADATA)
    return fig


def plot_layers(found: ArchSpec, reference: ArchSpec, names: tuple[str, str], path: Path) -> Figure:
    """Expanded width per layer against output stride: where each network spends its channels."""
    fig = Figure(figsize=(8, 3.8))
    ax = fig.subplots()
    for spec, name, color in ((found, names[0], "C0"), (reference, names[1], "C1")):
        widths = [layer.exp for layer in spec.layers]
        ax.plot(range(len(widths)), widths, marker="o", color=color, label=name)
        for i, layer in enumerate(spec.layers):
            if layer.act == "hswish":
                ax.plot(i, layer.exp, marker="s", markersize=8, markerfacecolor="none", color=color)
    ax.set(xlabel="layer", ylabel="expanded width", title="expansion per layer (squares: h-swish)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata=PNG_METADATA)
    return fig


def verdict(summary: pd.DataFrame, reference_name: str) -> str:
    """Whether the found network matches the reference: equal or higher mean test top-1 at equal or lower latency."""
    rows = summary.set_index("network")
    found, reference = rows.loc["found"], rows.loc[reference_name]
    points = 100 * (found["test_top1"] - reference["test_top1"])
    faster = found["latency_ms"] <= reference["latency_ms"]
    seeds = sum(column.startswith("test_top1_seed") for column in summary.columns)
    mean = (f"mean test top-1 over {seeds} seed{'s' if seeds > 1 else ''}" if seeds
            else "test top-1 (one training run each)")
    outcome = "matches or beats the reference" if points >= 0 and faster else "falls short of the reference"
    return (f"**Verdict: the found network {outcome}**: {mean} {100 * found['test_top1']:.2f} % vs "
            f"{100 * reference['test_top1']:.2f} % ({points:+.2f} points) at {found['latency_ms']:.2f} vs "
            f"{reference['latency_ms']:.2f} ms on the target ({'not slower' if faster else 'slower'}).")


def write_report(out: Path, *, name: str, target: str, reference_name: str, found: ArchSpec,
                 reference: ArchSpec, summary: pd.DataFrame, edits: pd.DataFrame, seed_source: str,
                 netadapt: AdaptedResult, train_note: str, curves: Mapping[str, pd.DataFrame] | None = None) -> Path:
    """``report.md`` with ``comparison.png``, ``layers.png`` and (given ``curves``) ``learning_curves.png``."""
    names = ("found", reference_name)
    plot_comparison(summary, out / "comparison.png")
    plot_layers(found, reference, names, out / "layers.png")
    training = []
    if curves:
        plot_learning_curves(curves, out / "learning_curves.png")
        training = ["## Training", "![learning curves](learning_curves.png)"]
    shown = summary.assign(params_M=summary["params_M"].round(3), madds_M=summary["madds_M"].round(1),
                           latency_ms=summary["latency_ms"].round(2), val_top1=summary["val_top1"].round(4),
                           test_top1=summary["test_top1"].round(4))
    reached = "reached" if netadapt.reached else "NOT reached (best network found kept)"
    shown = shown.round({column: 4 for column in shown.columns if column.startswith("test_top1_")})
    text = "\n\n".join([
        f"# {name}: found network vs {reference_name}",
        f"Latency: predicted on `{target}` at 224 px for the 1000-class network. Accuracy: top-1 on the "
        f"validation split held out from train (which search and NetAdapt also scored on) and on the test "
        f"split, after training both networks with the same budget ({train_note}).",
        markdown_table(shown),
        verdict(summary, reference_name),
        "![comparison](comparison.png)",
        *training,
        f"## Seed\n\n{seed_source}",
        "## Manual edits (MobileNetV3 section 5)",
        markdown_table(edits.assign(latency_ms=edits["latency_ms"].round(2))),
        f"## NetAdapt\n\nTarget {netadapt.target_ms:.2f} ms ({reference_name} on {target}): {reached}; "
        f"{netadapt.iterations} iterations, final {netadapt.facts.latency_ms:.2f} ms.",
        "![NetAdapt trajectory](netadapt/history.png)",
        "## Layer by layer",
        markdown_table(side_by_side(found, reference, names)),
        "![layers](layers.png)",
        f"Found network spec: `{found.to_string()}`",
    ])
    path = out / "report.md"
    rundir.write_text(path, text + "\n")
    return path


def _finished(folder: Path, kind: type[R], out: Path) -> R:
    done = read_done(folder, kind)
    if done is None:
        raise NasError(f"{out} has no finished '{folder.relative_to(out)}' stage; run the pipeline into it first")
    return done


def train_note(config: PipelineConfig) -> str:
    """The training budget as the report states it; the data by its folder name, not this machine's path."""
    train = config.train
    return (f"recipe {train.recipe}, {train.epochs} epochs, batch {train.batch_size}, {train.resolution} px, "
            f"data {Path(config.data).name}")


def write_run_report(config: PipelineConfig, out: Path) -> Path:
    """The report of a run whose stages are all finished, from their records and ``summary.csv`` in ``out``."""
    searched = _finished(out / "search", SeedResult, out)
    edited = _finished(out / "manual_edits", EditsResult, out)
    adapted = _finished(out / "netadapt", AdaptedResult, out)
    curves = {}
    for name in ("found", config.reference):
        for _, sub in training_runs(config):
            folder = out / "train" / name / sub
            _finished(folder, TrainedResult, out)
            if (folder / METRICS).is_file():
                curves[f"{name} {sub}".strip()] = pd.read_csv(folder / METRICS)
    if not (out / "summary.csv").is_file():
        raise NasError(f"{out} has no summary.csv; run the pipeline into it first")
    summary = pd.read_csv(out / "summary.csv")
    edits = pd.DataFrame([step.to_row() for step in edited.steps])[["edit", "latency_ms", "params", "madds"]]
    return write_report(out, name=config.name, target=config.target, reference_name=config.reference,
                        found=deployed(adapted.spec), reference=zoo.get(config.reference),
                        summary=summary, edits=edits,
                        seed_source=f"{searched.source}: {searched.facts.latency_ms:.2f} ms, "
                                    f"`{searched.spec.to_string()}`",
                        netadapt=adapted, train_note=train_note(config), curves=curves)


def redraw_stage_figures(config: PipelineConfig, out: Path) -> list[Path]:
    """``search/pareto.png`` and ``netadapt/history.png`` again from the stages' tables (as their tools draw them)."""
    drawn = []
    search, netadapt = out / "search", out / "netadapt"
    _finished(search, SeedResult, out)
    target_ms = _finished(netadapt, AdaptedResult, out).target_ms
    if config.search.seed_arch is None:
        from nas.search.runner import draw_pareto

        drawn.append(draw_pareto(load_trials(search), search, pd.read_csv(search / "references.csv"),
                                 space=config.search.space, target=config.target,
                                 controller=config.search.controller, target_ms=config.search.target_ms))
    proposals = netadapt / "proposals.csv"
    plot_netadapt_history(load_history(netadapt), netadapt / "history.png",
                          proposals=pd.read_csv(proposals) if proposals.is_file() else None, latency_target=target_ms)
    drawn.append(netadapt / "history.png")
    return drawn


def rewrite_report(out: Path, *, config: PipelineConfig | None = None) -> Path:
    """``--report-only``: redraw every figure and ``report.md`` of the finished run in ``out``, training nothing.

    The run's own ``config.json`` says what it was; a ``config`` given as well must be that one.
    """
    recorded = read_run_config(out)
    if config is not None:
        rundir.check_same(asdict(recorded), asdict(config), where=out,
                          advice="give the config and options it was run with")
    redraw_stage_figures(recorded, out)
    return write_run_report(recorded, out)
