"""Whole-network check of the pixel-cpu model against published Pixel 1 latencies.

Every published row is priced the way the product prices it (table row where the shipped
table has the key, model otherwise) and set beside the obvious baseline, ``ms = a * MAdds + b``
fitted by least squares on the same MobileNetV2 rows the model was calibrated on. The
MnasNet-A1 rows and ProxylessNAS-Mobile (80.67 ms, the authors' own TFLite benchmark) were
never seen by either fit: they are the held-out test.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from nas.latency.pixel import sources
from nas.latency.pixel.fit import CALIBRATION_MODEL, network_keys, spearman
from nas.latency.pixel.model import TABLE_DIR, PixelCostModel, madds

SMALL_WIDTH, SMALL_RESOLUTION = 0.5, 128
VALIDATION_CSV, SUMMARY_CSV, PLOT_PNG = "validation.csv", "validation_summary.csv", "validation.png"


def published_rows(directory: Path = sources.SOURCES_DIR) -> pd.DataFrame:
    """Published rows plus ProxylessNAS-Mobile, each with its set (calibration | held-out)."""
    table = sources.published(directory).rename(columns={"width_mult": "width", "pixel1_ms": "published_ms"})
    proxyless = pd.DataFrame([{"model": "proxylessnas_mobile", "width": 1.0, "resolution": 224,
                               "published_ms": sources.proxyless_mobile_ms(directory), "macs_M": np.nan}])
    table = pd.concat([table, proxyless], ignore_index=True)
    table["set"] = np.where(table["model"] == CALIBRATION_MODEL, "calibration", "held-out")
    return table


def price_network(keys, model: PixelCostModel, table: Mapping[str, float] | None = None) -> float:
    """Sum over keys: the table's value where it has the key, the model's price otherwise."""
    table = table or {}
    return float(sum(table[str(k)] if str(k) in table else model.price(k) for k in keys))


def fit_baseline(madds_m: np.ndarray, ms: np.ndarray) -> tuple[float, float]:
    """Least-squares ``ms = a * MAdds(M) + b``."""
    a, b = np.polyfit(np.asarray(madds_m, dtype=float), np.asarray(ms, dtype=float), 1)
    return float(a), float(b)


def compare(model: PixelCostModel, table: Mapping[str, float] | None = None,
            directory: Path = sources.SOURCES_DIR) -> pd.DataFrame:
    """One row per published network: published, model and baseline latency, signed errors in %."""
    rows = published_rows(directory)
    predicted, counted = [], []
    for row in rows.itertuples():
        keys = network_keys(row.model, row.width, int(row.resolution))
        predicted.append(price_network(keys, model, table))
        counted.append(sum(madds(k) for k in keys) / 1e6)
    rows["madds_M"] = counted
    rows["predicted_ms"] = predicted
    calibration = rows["set"] == "calibration"
    a, b = fit_baseline(rows.loc[calibration, "madds_M"], rows.loc[calibration, "published_ms"])
    rows["baseline_ms"] = a * rows["madds_M"] + b
    rows["error_pct"] = (rows["predicted_ms"] / rows["published_ms"] - 1) * 100
    rows["baseline_error_pct"] = (rows["baseline_ms"] / rows["published_ms"] - 1) * 100
    rows["small"] = (rows["width"] <= SMALL_WIDTH) & (rows["resolution"] <= SMALL_RESOLUTION)
    rows.attrs["baseline"] = {"a_ms_per_MMAdd": a, "b_ms": b}
    columns = ["model", "width", "resolution", "set", "small", "madds_M", "published_ms", "predicted_ms",
               "error_pct", "baseline_ms", "baseline_error_pct"]
    return rows[columns]


def summarize(rows: pd.DataFrame) -> pd.DataFrame:
    """Median / max absolute error and Spearman per set, model beside baseline."""
    groups = [
        ("calibration: mobilenet_v2", rows["set"] == "calibration"),
        ("held-out: mnasnet_a1", rows["model"] == "mnasnet_a1"),
        ("held-out: mnasnet_a1 small (w<=0.5, r<=128)", (rows["model"] == "mnasnet_a1") & rows["small"]),
        ("held-out: proxylessnas_mobile", rows["model"] == "proxylessnas_mobile"),
    ]
    out = []
    for name, mask in groups:
        part = rows[mask]
        entry = {"set": name, "n": len(part)}
        for prefix, column, value in (("model", "error_pct", "predicted_ms"),
                                      ("baseline", "baseline_error_pct", "baseline_ms")):
            error = part[column].abs()
            entry[f"{prefix}_median_abs_pct"] = float(error.median())
            entry[f"{prefix}_max_abs_pct"] = float(error.max())
            entry[f"{prefix}_spearman"] = spearman(part[value], part["published_ms"]) if len(part) > 2 else np.nan
        out.append(entry)
    return pd.DataFrame(out)


def plot(rows: pd.DataFrame, path: Path) -> None:
    """Predicted against published, model and baseline, calibration and held-out marked apart."""
    fig = Figure(figsize=(11, 4.8))
    axes = fig.subplots(1, 2)
    for ax, column, title in ((axes[0], "predicted_ms", "per-op model"), (axes[1], "baseline_ms", "a*MAdds + b")):
        for subset, marker, color in (("calibration", "o", "tab:blue"), ("held-out", "^", "tab:red")):
            part = rows[rows["set"] == subset]
            ax.scatter(part["published_ms"], part[column], marker=marker, color=color, label=subset, s=22, zorder=3)
        low, high = rows["published_ms"].min() * 0.8, rows["published_ms"].max() * 1.2
        ax.plot([low, high], [low, high], "k-", lw=0.8, zorder=2)
        ax.fill_between([low, high], [low * 0.9, high * 0.9], [low * 1.1, high * 1.1], color="0.9", label="+-10 %",
                        zorder=1)
        ax.set(xscale="log", yscale="log", xlabel="published Pixel 1 latency (ms)", ylabel="predicted (ms)",
               title=title)
        ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def format_validation(rows: pd.DataFrame) -> str:
    """The per-row table and the per-set summary as printed by the command-line tools."""
    summary = rows.attrs.get("summary", summarize(rows))
    return "\n".join([rows.to_string(index=False, float_format=lambda v: f"{v:.2f}"), "",
                      summary.to_string(index=False, float_format=lambda v: f"{v:.3f}")])


def load_table(directory: Path = TABLE_DIR) -> dict[str, float]:
    """The shipped table's key -> ms, validated (an absent table means model prices only)."""
    from nas.latency.table import LatencyTable

    if not (directory / "table.csv").is_file():
        return {}
    return dict(LatencyTable.load(directory).as_dict())


def validate_published(out_dir: Path, *, model: PixelCostModel | None = None,
                       table: Mapping[str, float] | None = None) -> pd.DataFrame:
    """Compare with every published row; write ``validation.csv``, ``validation_summary.csv``
    and ``validation.png`` into ``out_dir``. Returns the per-row frame (summary in ``attrs``)."""
    model = PixelCostModel.load() if model is None else model
    table = load_table() if table is None else table
    rows = compare(model, table)
    summary = summarize(rows)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows.to_csv(out_dir / VALIDATION_CSV, index=False, float_format="%.4g")
    summary.to_csv(out_dir / SUMMARY_CSV, index=False, float_format="%.4g")
    plot(rows, out_dir / PLOT_PNG)
    rows.attrs["summary"] = summary
    return rows
