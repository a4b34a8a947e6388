"""PNG renderers for search and NetAdapt records; they draw, the numbers come from :mod:`nas.analysis.pareto`.

Figures are built on :class:`matplotlib.figure.Figure` directly (Agg canvas, no pyplot state), so
a search worker or a notebook can call these without touching the global backend.

Example::

    >>> plot_pareto(trials, "run/pareto.png", reference_points=refs, target="pixel-cpu")  # doctest: +SKIP
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

from nas.analysis.labels import spread_labels
from nas.analysis.pareto import ACCURACY_LATENCY, pareto_front, valid_rows
from nas.errors import NasError

_DPI = 120
PNG_METADATA = {"Software": None}  # no matplotlib version in the file: same figure, same bytes
_REF_FONT = 7.0  # points
_LINE_SPACING = 1.3  # label gap, in font sizes
_STAR_RISE = 4.0  # points a star's label sits above it when nothing crowds it
_LABEL_BOX = {"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 0.3}  # hides the lines it crosses
_LEADER = {"arrowstyle": "-", "color": "0.5", "linewidth": 0.6}


def _require(df: pd.DataFrame, columns: list[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise NasError(f"{what} has no column {missing[0]!r} (columns: {', '.join(map(str, df.columns))})")


def _save(fig: Figure, path) -> Figure:
    """Write the PNG where a path is given; a notebook passes none and shows :func:`png_bytes`."""
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=_DPI, metadata=PNG_METADATA)
    return fig


def png_bytes(fig: Figure) -> bytes:
    """The figure as PNG bytes, as :func:`_save` would write it (for ``IPython.display.Image``)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_DPI, metadata=PNG_METADATA)
    return buffer.getvalue()


def _percent_axis(axis) -> None:
    """Show a 0-1 accuracy axis in percent; its limits stay where the data put them."""
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{100 * value:.4g}%"))


def _points(ax, xy: np.ndarray) -> np.ndarray:
    """Data coordinates to typographic points from the figure's lower left corner."""
    return ax.transData.transform(xy) * 72.0 / ax.figure.dpi


def _reference_arrays(reference_points: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Names, latency and accuracy (NaN where unknown) of the zoo networks, rows without a latency dropped."""
    _require(reference_points, ["name", "latency_ms"], "reference points")
    latency = pd.to_numeric(reference_points["latency_ms"], errors="coerce").to_numpy(dtype=float)
    accuracy = (pd.to_numeric(reference_points["accuracy"], errors="coerce").to_numpy(dtype=float)
                if "accuracy" in reference_points.columns else np.full(len(latency), np.nan))
    known = np.isfinite(latency)
    return reference_points["name"].astype(str).to_numpy()[known], latency[known], accuracy[known]


def _draw_references(ax, reference_points: pd.DataFrame) -> None:
    """Zoo networks: a star where accuracy is known, else a dotted vertical line at their latency."""
    _, latency, accuracy = _reference_arrays(reference_points)
    star = np.isfinite(accuracy)
    ax.scatter(latency[star], accuracy[star], marker="*", s=160, color="black", zorder=5)
    for x in latency[~star]:
        ax.axvline(x, color="0.45", linestyle=":", linewidth=1)


def _label_references(ax, reference_points: pd.DataFrame) -> None:
    """Name the zoo networks once the axes are laid out and their limits fixed.

    Labels are spread in points (:func:`spread_labels`), so two networks a millisecond apart get
    two readable labels instead of one smudge; a star label moved off its star gets a leader line.
    """
    names, latency, accuracy = _reference_arrays(reference_points)
    ax.set_xlim(ax.get_xlim())
    ax.set_ylim(ax.get_ylim())
    (left, bottom), (right, top) = ax.get_window_extent().get_points() * 72.0 / ax.figure.dpi
    gap = _REF_FONT * _LINE_SPACING
    star = np.isfinite(accuracy)

    star_y = _points(ax, np.column_stack([latency[star], accuracy[star]]))[:, 1]
    placed = spread_labels(star_y + _STAR_RISE, gap=gap, low=bottom + gap / 2, high=top - gap / 2)
    for x, y, name, rise in zip(latency[star], accuracy[star], names[star], placed - star_y):
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(7, rise), va="center", fontsize=_REF_FONT,
                    arrowprops=_LEADER if abs(rise - _STAR_RISE) > 1 else None)

    line_x = _points(ax, np.column_stack([latency[~star], np.zeros((~star).sum())]))[:, 0]
    placed = spread_labels(line_x, gap=gap, low=left + gap, high=right)
    for x, name, shift in zip(latency[~star], names[~star], placed - line_x):
        ax.annotate(name, (x, 0.98), xycoords=ax.get_xaxis_transform(), textcoords="offset points",
                    xytext=(shift - 1, 0), rotation=90, va="top", ha="right", fontsize=_REF_FONT, color="0.3",
                    bbox=_LABEL_BOX)


def plot_pareto(trials_df: pd.DataFrame, path, *, reference_points: pd.DataFrame | None = None,
                by: str | None = "controller", title: str = "Accuracy vs latency",
                target: str | None = None, latency_target: float | None = None) -> Figure:
    """Accuracy against latency: every valid trial, each group's Pareto front as a step line, the zoo.

    ``by`` names the column that splits trials into groups (one colour and one front each);
    ``None`` draws one group. ``reference_points`` has columns name, latency_ms and optionally
    accuracy (see :func:`nas.analysis.references.reference_latencies`). ``latency_target`` draws
    the search's T. Writes the PNG (unless ``path`` is None) and returns the figure.
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
    ax.set_ylabel("top-1 accuracy")
    _percent_axis(ax.yaxis)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    if reference_points is not None:
        _label_references(ax, reference_points)
    return _save(fig, path)


def plot_netadapt_history(history_df: pd.DataFrame, path, *, proposals: pd.DataFrame | None = None,
                          title: str = "NetAdapt trajectory", latency_target: float | None = None) -> Figure:
    """Left: accuracy against latency, one point per kept network in iteration order; right: both per iteration.

    ``history_df`` is NetAdapt's ``history.csv`` (iteration, latency_ms, accuracy; 0 = the seed);
    ``proposals`` (its ``proposals.csv``) adds every fine-tuned candidate as a faint point, so the
    choice made at each step is visible. Writes the PNG (unless ``path`` is None) and returns the figure.
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
        ax.axvline(latency_target, color="red", linestyle="--", linewidth=1, label=f"target {latency_target:.4g} ms")
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("top-1 accuracy")
    _percent_axis(ax.yaxis)
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
    ax_acc.set_ylabel("top-1 accuracy", color="C1")
    _percent_axis(ax_acc.yaxis)
    ax_iter.grid(alpha=0.3)
    ax_iter.set_title("per iteration")
    fig.tight_layout()
    return _save(fig, path)
