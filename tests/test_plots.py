"""Figures: label placement (pure), percent axes, PNG bytes, the pipeline report's plots and --report-only."""

from __future__ import annotations

import shutil
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.text import Annotation, Text

from nas.analysis.labels import spread_labels
from nas.analysis.plots import plot_netadapt_history, plot_pareto, png_bytes
from nas.cli import run
from nas.errors import NasError
from nas.pipeline.__main__ import main
from nas.pipeline.report import accuracy_limits, plot_comparison, plot_learning_curves

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results" / "mobilenetv3_small_cifar10"
CONFIG = ROOT / "experiments" / "mobilenetv3_small_cifar10.yaml"
RUN_DATA = "/tmp/cifar/cifar10_jpg"  # what the committed run was given as --data (its config.json)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# ---- label placement ---------------------------------------------------------------------


def test_labels_already_apart_stay_where_they_are():
    assert spread_labels([30.0, 5.0, 18.0], gap=4.0).tolist() == [30.0, 5.0, 18.0]


def test_crowded_labels_move_the_least_and_keep_their_order():
    assert spread_labels([0.0, 0.0, 0.0], gap=1.0).tolist() == pytest.approx([-1.0, 0.0, 1.0])
    assert spread_labels([11.0, 10.0, 30.0], gap=4.0).tolist() == pytest.approx([12.5, 8.5, 30.0])
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 20, 40)
    placed = spread_labels(x, gap=1.5)
    order = np.argsort(x, kind="stable")
    assert np.all(np.diff(placed[order]) >= 1.5 - 1e-9)
    assert placed.mean() == pytest.approx(x.mean())  # unbounded least squares: no net drift


def test_labels_stay_inside_the_range_where_they_fit():
    placed = spread_labels([9.5, 10.0], gap=2.0, low=0.0, high=10.0)
    assert placed.tolist() == pytest.approx([8.0, 10.0])
    assert spread_labels([0.0, 0.0, 0.0], gap=2.0, low=0.0, high=3.0).tolist() == pytest.approx([0.0, 2.0, 4.0])
    assert spread_labels([], gap=1.0).size == 0


@pytest.mark.parametrize("positions, gap", [([1.0, np.nan], 1.0), ([[1.0, 2.0]], 1.0), ([1.0], -1.0)])
def test_bad_label_input_is_refused(positions, gap):
    with pytest.raises(NasError, match="label"):
        spread_labels(positions, gap=gap)


# ---- Pareto and NetAdapt figures -------------------------------------------------------


def _trials(n: int = 30) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    latency = rng.uniform(20, 250, n)
    return pd.DataFrame({"controller": "rl", "arch": [f"net{i}" for i in range(n)], "latency_ms": latency,
                         "accuracy": 0.12 + 0.0005 * latency + rng.normal(0, 0.02, n), "status": "ok"})


def _label_boxes(fig, names):
    """Where each named label's text (not its leader line) lands once drawn."""
    FigureCanvasAgg(fig).draw()
    labels = [t for t in fig.axes[0].texts if isinstance(t, Annotation) and t.get_text() in names]
    assert sorted(t.get_text() for t in labels) == sorted(names)
    return [Text.get_window_extent(t) for t in labels]


@pytest.mark.parametrize("accuracy", [None, [0.20, 0.201, 0.199]], ids=["lines", "stars"])
def test_reference_labels_do_not_overlap(tmp_path, accuracy):
    # MnasNet-A1 and -B1 are under a millisecond apart on pixel-cpu: drawn at their latency, one smudge.
    refs = pd.DataFrame({"name": ["mnasnet_a1", "mnasnet_b1", "mobilenet_v2"], "latency_ms": [80.96, 80.03, 81.5]})
    if accuracy is not None:
        refs["accuracy"] = accuracy
    fig = plot_pareto(_trials(), tmp_path / "pareto.png", reference_points=refs, target="pixel-cpu")
    boxes = _label_boxes(fig, refs["name"].tolist())
    assert not any(a.overlaps(b) for a, b in combinations(boxes, 2))
    axes_box = fig.axes[0].get_window_extent()
    assert all(axes_box.x0 - 1 <= box.x0 and box.x1 <= axes_box.x1 + 1 for box in boxes)


def test_accuracy_axes_are_in_percent_and_figures_render_without_a_file(tmp_path):
    fig = plot_pareto(_trials(), None)
    assert fig.axes[0].yaxis.get_major_formatter()(0.25, 0) == "25%"
    assert png_bytes(fig).startswith(PNG_MAGIC) and png_bytes(fig) == png_bytes(fig)
    assert list(tmp_path.iterdir()) == []
    history = pd.DataFrame({"iteration": [0, 1], "latency_ms": [60.0, 50.0], "accuracy": [0.7, 0.65]})
    netadapt = plot_netadapt_history(history, None, latency_target=20.391658)
    assert netadapt.axes[0].yaxis.get_major_formatter()(0.425, 0) == "42.5%"
    assert "target 20.39 ms" in netadapt.axes[0].get_legend_handles_labels()[1]


# ---- the pipeline report ------------------------------------------------------------------


def test_accuracy_limits_hug_the_data():
    assert accuracy_limits([63.12, 63.17, 64.1, 64.6]) == pytest.approx((62.75, 64.97))
    assert accuracy_limits([70.0, np.nan]) == pytest.approx((69.5, 70.5))  # at least one point wide
    with pytest.raises(NasError, match="no accuracy"):
        accuracy_limits([np.nan])


def _summary() -> pd.DataFrame:
    return pd.read_csv(RESULTS / "summary.csv")


def test_comparison_shows_accuracy_in_percent_near_the_values(tmp_path):
    fig = plot_comparison(_summary(), tmp_path / "comparison.png")
    assert (tmp_path / "comparison.png").read_bytes().startswith(PNG_MAGIC)
    accuracy = fig.axes[-1]
    assert accuracy.get_title() == "top-1 accuracy (%)"
    low, high = accuracy.get_xlim()
    assert 62 < low < 63.12 and 64.6 < high < 66  # not from zero: the 1.4 points between them are visible
    assert [ax.get_xlim()[0] for ax in fig.axes[:3]] == [0, 0, 0]  # latency, params, MAdds: bars from zero
    assert {t.get_text() for t in accuracy.texts} == {"val 63.1", "test 63.2", "val 64.1", "test 64.6"}


def test_learning_curves_of_both_networks_share_one_axis(tmp_path):
    curves = {name: pd.read_csv(RESULTS / "train" / name / "metrics.csv") for name in ("found", "mobilenet_v3_small")}
    fig = plot_learning_curves(curves, tmp_path / "curves.png")
    accuracy, loss = fig.axes
    assert [line.get_label() for line in accuracy.lines] == ["found", "mobilenet_v3_small"]
    assert accuracy.lines[1].get_ydata()[-1] == pytest.approx(100 * curves["mobilenet_v3_small"]["val_top1"].iloc[-1])
    assert len(loss.lines) == 4
    with pytest.raises(NasError, match="'val_loss'"):
        plot_learning_curves({"found": curves["found"].drop(columns="val_loss")}, tmp_path / "bad.png")


def test_report_only_redraws_the_committed_run_without_training(tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(RESULTS, out)
    figures = ["comparison.png", "layers.png", "learning_curves.png", "search/pareto.png", "netadapt/history.png"]
    for name in figures:
        (out / name).unlink()
    assert run(main, ["--out", str(out), "--report-only"]) == 0  # the run's own config.json, not today's YAML
    assert all((out / name).read_bytes().startswith(PNG_MAGIC) for name in figures)
    assert (out / "report.md").read_text() == (RESULTS / "report.md").read_text(), (
        "the committed report is stale: rerun the --report-only command of python -m nas.pipeline --help")
    assert not (out / "train" / "found" / "checkpoint.pt").exists()

    capsys.readouterr()
    assert run(main, [str(CONFIG), "--out", str(out), "--report-only"]) == 2  # another --data than the run's
    assert capsys.readouterr().err.strip() == (
        f"error: {out} was started with other settings (data: {RUN_DATA!r} there, 'synthetic' now); "
        "give the config and options it was run with")
    shutil.rmtree(out / "netadapt")
    assert run(main, ["--out", str(out), "--report-only"]) == 2
    assert "no finished 'netadapt' stage" in capsys.readouterr().err
    assert run(main, [str(CONFIG), "--report-only"]) == 2
    assert "--report-only needs --out" in capsys.readouterr().err
    assert run(main, []) == 2
    assert "give a pipeline config" in capsys.readouterr().err
