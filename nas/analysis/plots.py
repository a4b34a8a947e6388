"""PNG renderers for search and NetAdapt records; they draw, the numbers come from :mod:`nas.analysis.pareto`.

Figures are built on :class:`matplotlib.figure.Figure` directly (Agg canvas, no pyplot state), so
a search worker or a notebook can call these without touching the global backend.

Example::

    >>> plot_pareto(trials, "run/pareto.png", reference_points=refs, target="pixel-cpu")  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from nas.analysis.pareto import ACCURACY_LATENCY, pareto_front, valid_rows
from nas.errors import NasError

_DPI = 120


def _require(df: pd.DataFrame, columns: list[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise NasError(f"{what} has no column {missing[0]!r} (columns: {', '.join(map(str, df.columns))})")


def _save(fig: Figure, path) -> Figure:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=_DPI)
    return fig


def _draw_references(ax, reference_points: pd.DataFrame) -> None:
    """Zoo networks: a star where accuracy is known, else a labelled vertical line at their latency."""
    _require(reference_points, ["name", "latency_ms"], "reference points")
    has_accuracy = "accuracy" in reference_points.columns
    for row in reference_points.itertuples(index=False):
        accuracy = float(row.accuracy) if has_accuracy else float("nan")
        if np.isfinite(accuracy):
            ax.scatter([row.latency_ms], [accuracy], marker="*", s=160, color="black", zorder=5)
            ax.annotate(row.name, (row.latency_ms, accuracy), textcoords="offset points", xytext=(6, 4),
                        fontsize=8)
        else:
            ax.axvline(row.latency_ms, color="0.45", linestyle=":", linewidth=1)
            ax.text(row.latency_ms, 0.98, f" {row.name}", transform=ax.get_xaxis_transform(), rotation=90,
                    va="top", ha="right", fontsize=7, color="0.3")


def plot_pareto(trials_df: pd.DataFrame, path, *, reference_points: pd.DataFrame | None = None,
                by: str | None = "controller", title: str = "Accuracy vs latency",
                target: str | None = None, latency_target: float | None = None) -> Figure:
    """Accuracy against latency: every valid trial, each group's Pareto front as a step line, the zoo.

    ``by`` names the column that splits trials into groups (one colour and one front each);
    ``None`` draws one group. ``reference_points`` has columns name, latency_ms and optionally
    accuracy (see :func:`nas.analysis.references.reference_latencies`). ``latency_target`` draws
    the search's T. Writes the PNG and returns the figure (for inspection or further drawing).
    """
    _require(trials_df, list(ACCURACY_LATENCY), "trials table")
    if by is not None:
        _require(trials_df, [by], "trials table")
    groups = [("trials", trials_df)] if by is None else list(trials_df.groupby(by, sort=True))
    dedupe_on = "arch" if "arch" in trials_df.columns else None

    fig = Figure(figsize=(7.5, 5.0))
    ax = fig.add_subplot()
    colors = [f"C{i % 10}" for i in range(len(groups))]
    any_valid = False
    for (group, rows), color in zip(groups, colors):
        valid = valid_rows(rows, ACCURACY_LATENCY)
        any_valid |= not valid.empty
        ax.scatter(valid["latency_ms"], valid["accuracy"], s=14, alpha=0.35, color=color,
                   label=f"{group}: {len(valid)}/{len(rows)} valid trials")
        front = pareto_front(rows, dedupe_on=dedupe_on)
        if not front.empty:
            ax.step(front["latency_ms"], front["accuracy"], where="post", marker="o", markersize=4,
                    color=color, label=f"{group} front ({len(front)})")
    if not any_valid:
        ax.text(0.5, 0.5, "no valid trials", transform=ax.transAxes, ha="center", va="center", color="red")
    if latency_target is not None:
        ax.axvline(latency_target, color="red", linestyle="--", linewidth=1, label=f"T = {latency_target:g} ms")
    if reference_points is not None:
        _draw_references(ax, reference_points)
    ax.set_xlabel(f"latency on {target} (ms)" if target else "latency (ms)")
    ax.set_ylabel("accuracy (top-1)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return _save(fig, path)


def plot_netadapt_history(history_df: pd.DataFrame, path, *, proposals: pd.DataFrame | None = None,
                          title: str = "NetAdapt trajectory", latency_target: float | None = None) -> Figure:
    """Left: accuracy against latency, one point per kept network in iteration order; right: both per iteration.

    ``history_df`` is NetAdapt's ``history.csv`` (iteration, latency_ms, accuracy; 0 = the seed);
    ``proposals`` (its ``proposals.csv``) adds every fine-tuned candidate as a faint point, so the
    choice made at each step is visible. Writes the PNG and returns the figure.
    """
    _require(history_df, ["iteration", "latency_ms", "accuracy"], "NetAdapt history")
    if history_df.empty:
        raise NasError("NetAdapt history has no rows to plot")
    path_rows = history_df.sort_values("iteration", kind="stable")
    latency = pd.to_numeric(path_rows["latency_ms"], errors="coerce").to_numpy(dtype=float)
    accuracy = pd.to_numeric(path_rows["accuracy"], errors="coerce").to_numpy(dtype=float)
    iteration = path_rows["iteration"].to_numpy()

    fig = Figure(figsize=(11.0, 4.5))
    ax, ax_iter = fig.subplots(1, 2)
    if proposals is not None:
        _require(proposals, ["latency_ms", "accuracy"], "NetAdapt proposals")
        tried = valid_rows(proposals, ACCURACY_LATENCY)
        ax.scatter(tried["latency_ms"], tried["accuracy"], s=10, color="0.7", alpha=0.6,
                   label=f"proposals ({len(tried)})")
    known = np.isfinite(accuracy)
    ax.plot(latency[known], accuracy[known], color="0.4", linewidth=1, zorder=1)
    points = ax.scatter(latency[known], accuracy[known], c=iteration[known], cmap="viridis", s=30, zorder=2)
    fig.colorbar(points, ax=ax, label="iteration", ticks=MaxNLocator(integer=True))
    for i in (0, len(path_rows) - 1):
        if known[i]:
            ax.annotate(f"it {iteration[i]}", (latency[i], accuracy[i]), textcoords="offset points",
                        xytext=(-5, 5), ha="right", fontsize=8)
    if latency_target is not None:
        ax.axvline(latency_target, color="red", linestyle="--", linewidth=1, label=f"target {latency_target:g} ms")
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("accuracy (top-1)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)

    ax_iter.plot(iteration, latency, marker="o", color="C0")
    ax_iter.set_xlabel("iteration")
    ax_iter.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_iter.set_ylabel("latency (ms)", color="C0")
    ax_acc = ax_iter.twinx()
    ax_acc.plot(iteration[known], accuracy[known], marker="s", color="C1")
    ax_acc.set_ylabel("accuracy (top-1)", color="C1")
    ax_iter.grid(alpha=0.3)
    ax_iter.set_title("per iteration")
    fig.tight_layout()
    return _save(fig, path)
