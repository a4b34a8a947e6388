"""The comparison report: the found network beside the reference, as markdown tables and PNGs.

Tables are pandas DataFrames rendered by :func:`markdown_table` (a few lines of ours, so the
report needs no optional dependency); the figures are matplotlib PNGs.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from nas import rundir
from nas.arch import ArchSpec
from nas.pipeline.stages import AdaptedResult

LAYER_COLUMNS = ["op", "kernel", "stride", "exp", "se", "act", "out"]


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


def plot_comparison(summary: pd.DataFrame, path: Path) -> None:
    """Bars of latency, params, MAdds and proxy accuracy, one bar per network."""
    metrics = [("latency_ms", "predicted latency (ms)"), ("params_M", "params (M)"), ("madds_M", "MAdds (M)"),
               ("val_top1", "held-out val top-1"), ("test_top1", "test top-1")]
    metrics = [(column, title) for column, title in metrics if summary[column].notna().any()]
    fig = Figure(figsize=(3.2 * len(metrics), 3.6))
    axes = fig.subplots(1, len(metrics))
    colors = [f"C{i}" for i in range(len(summary))]
    for ax, (column, title) in zip(axes, metrics):
        ax.bar(summary["network"], summary[column], color=colors)
        ax.set_title(title, fontsize=9)
        ax.tick_params(axis="x", labelrotation=20, labelsize=7)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def plot_layers(found: ArchSpec, reference: ArchSpec, names: tuple[str, str], path: Path) -> None:
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
    fig.savefig(path, dpi=100)


def write_report(out: Path, *, name: str, target: str, reference_name: str, found: ArchSpec,
                 reference: ArchSpec, summary: pd.DataFrame, edits: pd.DataFrame, seed_source: str,
                 netadapt: AdaptedResult, train_note: str) -> Path:
    """``report.md`` with ``comparison.png`` and ``layers.png`` beside it."""
    names = ("found", reference_name)
    plot_comparison(summary, out / "comparison.png")
    plot_layers(found, reference, names, out / "layers.png")
    shown = summary.assign(params_M=summary["params_M"].round(3), madds_M=summary["madds_M"].round(1),
                           latency_ms=summary["latency_ms"].round(2), val_top1=summary["val_top1"].round(4),
                           test_top1=summary["test_top1"].round(4))
    reached = "reached" if netadapt.reached else "NOT reached (best network found kept)"
    text = "\n\n".join([
        f"# {name}: found network vs {reference_name}",
        f"Latency: predicted on `{target}` at 224 px for the 1000-class network. Accuracy: top-1 on the "
        f"validation split held out from train (which search and NetAdapt also scored on) and on the test "
        f"split, after training both networks with the same budget ({train_note}).",
        markdown_table(shown),
        "![comparison](comparison.png)",
        f"## Seed\n\n{seed_source}",
        "## Manual edits (MobileNetV3 section 5)",
        markdown_table(edits.assign(latency_ms=edits["latency_ms"].round(2))),
        f"## NetAdapt\n\nTarget {netadapt.target_ms:.2f} ms ({reference_name} on {target}): {reached}; "
        f"{netadapt.iterations} iterations, final {netadapt.facts.latency_ms:.2f} ms. See `netadapt/history.png`.",
        "## Layer by layer",
        markdown_table(side_by_side(found, reference, names)),
        "![layers](layers.png)",
        f"Found network spec: `{found.to_string()}`",
    ])
    path = out / "report.md"
    rundir.write_text(path, text + "\n")
    return path
