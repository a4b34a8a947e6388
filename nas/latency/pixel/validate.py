"""Whole-network check of each pixel-cpu calibration against the published Pixel 1 latencies of its run.

Every published row of the calibration's run is priced the way the product prices it (that
calibration's table row where the table has the key, its model otherwise) and set beside the
obvious baseline, ``ms = a * MAdds + b`` fitted by least squares on the same calibration rows.
Rows of networks the calibration holds out were never seen by either fit: they are the test.

The MobileNetV3 / -minimalistic ratios are the check of what makes V3 differ (h-swish, SE, 5x5
kernels). The four MobileNetV3 latencies are those listed beside the checkpoints in the
tensorflow/models slim MobileNetV3 table (also in the Keras MobileNetV3 docstring); only their
ratios are compared for every calibration, their absolute values belong to the paper's run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from nas.latency.pixel import calibrations, sources
from nas.latency.pixel.calibrations import CalibrationSet
from nas.latency.pixel.fit import network_keys, spearman
from nas.latency.pixel.model import PixelCostModel, calibration_dir, madds

SMALL_WIDTH, SMALL_RESOLUTION = 0.5, 128
VALIDATION_CSV, SUMMARY_CSV, RATIOS_CSV, PLOT_PNG = ("validation.csv", "validation_summary.csv", "ratios.csv",
                                                     "validation.png")
MOBILENET_V3_PUBLISHED = {"mobilenet_v3_large": 51.2, "mobilenet_v3_large_minimalistic": 44.1,
                          "mobilenet_v3_small": 15.8, "mobilenet_v3_small_minimalistic": 12.2}
RATIO_FAMILIES = ("mobilenet_v3_large", "mobilenet_v3_small")


def published_rows(calibration: CalibrationSet, directory: Path = sources.SOURCES_DIR) -> pd.DataFrame:
    """The run's priceable rows, each with its set (calibration | held-out); ``attrs['unpriced']``
    lists the rows left out and why."""
    table = sources.published(directory, calibration.source)
    table = table.rename(columns={"width_mult": "width", "pixel1_ms": "published_ms"})
    unpriced = dict(calibration.unpriced)
    left_out = table[table["model"].isin(unpriced)]
    table = table[~table["model"].isin(unpriced)]
    if calibration.proxyless_log_held_out:
        proxyless = pd.DataFrame([{"model": "proxylessnas_mobile", "width": 1.0, "resolution": 224,
                                   "published_ms": sources.proxyless_mobile_ms(directory), "macs_M": np.nan}])
        table = pd.concat([table, proxyless], ignore_index=True)
    table = table.reset_index(drop=True)
    table["set"] = np.where(table["model"].isin(calibration.calibrate_on), "calibration", "held-out")
    table.attrs["unpriced"] = {row.model: unpriced[row.model] for row in left_out.itertuples()}
    return table


def price_network(keys, model: PixelCostModel, table: Mapping[str, float] | None = None) -> float:
    """Sum over keys: the table's value where it has the key, the model's price otherwise."""
    table = table or {}
    return float(sum(table[str(k)] if str(k) in table else model.price(k) for k in keys))


def fit_baseline(madds_m: np.ndarray, ms: np.ndarray) -> tuple[float, float]:
    """Least-squares ``ms = a * MAdds(M) + b``."""
    a, b = np.polyfit(np.asarray(madds_m, dtype=float), np.asarray(ms, dtype=float), 1)
    return float(a), float(b)


def compare(model: PixelCostModel, calibration: CalibrationSet, table: Mapping[str, float] | None = None,
            directory: Path = sources.SOURCES_DIR) -> pd.DataFrame:
    """One row per published network of the run: published, model and baseline latency, signed errors in %."""
    rows = published_rows(calibration, directory)
    predicted, counted = [], []
    for row in rows.itertuples():
        keys = network_keys(row.model, row.width, int(row.resolution))
        predicted.append(price_network(keys, model, table))
        counted.append(sum(madds(k) for k in keys) / 1e6)
    rows["madds_M"] = counted
    rows["predicted_ms"] = predicted
    fitted = rows["set"] == "calibration"
    a, b = fit_baseline(rows.loc[fitted, "madds_M"], rows.loc[fitted, "published_ms"])
    rows["baseline_ms"] = a * rows["madds_M"] + b
    rows["error_pct"] = (rows["predicted_ms"] / rows["published_ms"] - 1) * 100
    rows["baseline_error_pct"] = (rows["baseline_ms"] / rows["published_ms"] - 1) * 100
    rows["small"] = (rows["width"] <= SMALL_WIDTH) & (rows["resolution"] <= SMALL_RESOLUTION)
    rows.insert(0, "calibration", calibration.name)
    columns = ["calibration", "model", "width", "resolution", "set", "small", "madds_M", "published_ms",
               "predicted_ms", "error_pct", "baseline_ms", "baseline_error_pct"]
    out = rows[columns]
    out.attrs = {"baseline": {"a_ms_per_MMAdd": a, "b_ms": b}, "unpriced": rows.attrs["unpriced"]}
    return out


def summarize(rows: pd.DataFrame) -> pd.DataFrame:
    """Median / max absolute error and Spearman per set, model beside baseline: the calibration
    rows, all held-out rows, each held-out network, and the small MnasNet-A1 rows where the run has them."""
    calibrating = sorted(set(rows.loc[rows["set"] == "calibration", "model"]))
    held = rows["set"] == "held-out"
    groups = [(f"calibration: {', '.join(calibrating)}", rows["set"] == "calibration"), ("held-out: all", held)]
    groups += [(f"held-out: {name}", held & (rows["model"] == name)) for name in dict.fromkeys(rows.loc[held, "model"])]
    small = held & (rows["model"] == "mnasnet_a1") & rows["small"]
    if small.any():
        groups.append((f"held-out: mnasnet_a1 small (w<={SMALL_WIDTH}, r<={SMALL_RESOLUTION})", small))
    out = []
    for name, mask in groups:
        part = rows[mask]
        entry = {"calibration": rows["calibration"].iloc[0], "set": name, "n": len(part)}
        for prefix, column, value in (("model", "error_pct", "predicted_ms"),
                                      ("baseline", "baseline_error_pct", "baseline_ms")):
            error = part[column].abs()
            entry[f"{prefix}_median_abs_pct"] = float(error.median())
            entry[f"{prefix}_max_abs_pct"] = float(error.max())
            entry[f"{prefix}_spearman"] = spearman(part[value], part["published_ms"]) if len(part) > 2 else np.nan
        out.append(entry)
    return pd.DataFrame(out)


def ratios(model: PixelCostModel, calibration: str, table: Mapping[str, float] | None = None) -> pd.DataFrame:
    """MobileNetV3 / -minimalistic latency ratios at 224 px, predicted beside published."""
    out = []
    for family in RATIO_FAMILIES:
        plain = f"{family}_minimalistic"
        full_ms, plain_ms = (price_network(network_keys(name, 1.0, 224), model, table) for name in (family, plain))
        published = MOBILENET_V3_PUBLISHED[family] / MOBILENET_V3_PUBLISHED[plain]
        out.append({"calibration": calibration, "family": family, "predicted_ms": full_ms,
                    "minimalistic_predicted_ms": plain_ms, "published_ms": MOBILENET_V3_PUBLISHED[family],
                    "minimalistic_published_ms": MOBILENET_V3_PUBLISHED[plain], "predicted_ratio": full_ms / plain_ms,
                    "published_ratio": published, "ratio_error_pct": (full_ms / plain_ms / published - 1) * 100})
    return pd.DataFrame(out)


def plot(rows: pd.DataFrame, ratio_rows: pd.DataFrame, path: Path) -> None:
    """Predicted against published (model, baseline; calibration and held-out apart) and the V3 ratios."""
    fig = Figure(figsize=(15, 4.8))
    axes = fig.subplots(1, 3)
    name = rows["calibration"].iloc[0]
    for ax, column, title in ((axes[0], "predicted_ms", "per-op model"), (axes[1], "baseline_ms", "a*MAdds + b")):
        for subset, marker, color in (("calibration", "o", "tab:blue"), ("held-out", "^", "tab:red")):
            part = rows[rows["set"] == subset]
            ax.scatter(part["published_ms"], part[column], marker=marker, color=color, label=subset, s=22, zorder=3)
        low, high = rows["published_ms"].min() * 0.8, rows["published_ms"].max() * 1.2
        ax.plot([low, high], [low, high], "k-", lw=0.8, zorder=2)
        ax.fill_between([low, high], [low * 0.9, high * 0.9], [low * 1.1, high * 1.1], color="0.9", label="+-10 %",
                        zorder=1)
        ax.set(xscale="log", yscale="log", xlabel="published Pixel 1 latency (ms)", ylabel="predicted (ms)",
               title=f"{title} ({name})")
        ax.legend(loc="upper left", fontsize=8)
    ax = axes[2]
    x = np.arange(len(ratio_rows))
    published = ratio_rows["published_ratio"].to_numpy()
    ax.errorbar(x, published, yerr=0.03 * published, fmt="s", color="k", capsize=6, label="published +-3 %")
    ax.scatter(x, ratio_rows["predicted_ratio"], color="tab:red", zorder=3, label="predicted")
    ax.set_xticks(x, [family.replace("mobilenet_", "") for family in ratio_rows["family"]])
    ax.set_xlim(-0.6, len(ratio_rows) - 0.4)
    ax.set(ylabel="latency ratio", title="MobileNetV3 / -minimalistic")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def format_validation(rows: pd.DataFrame, summary: pd.DataFrame, ratio_rows: pd.DataFrame) -> str:
    """One calibration's rows, summary, ratios and unpriced rows, as the command-line tools print them."""
    lines = [rows.to_string(index=False, float_format=lambda v: f"{v:.2f}"), "",
             summary.to_string(index=False, float_format=lambda v: f"{v:.3f}"), "",
             ratio_rows.to_string(index=False, float_format=lambda v: f"{v:.3f}")]
    lines += [f"not priced: {name} ({why})" for name, why in rows.attrs.get("unpriced", {}).items()]
    return "\n".join(lines)


def load_table(directory: Path) -> dict[str, float]:
    """A calibration's shipped table as key -> ms, validated (an absent table means model prices only)."""
    from nas.latency.table import LatencyTable

    if not (directory / "table.csv").is_file():
        return {}
    return dict(LatencyTable.load(directory).as_dict())


def validate_calibration(out_dir: Path, calibration: str | None = None, *, model: PixelCostModel | None = None,
                         table: Mapping[str, float] | None = None,
                         directory: Path = sources.SOURCES_DIR) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Check one calibration (default: the default); write its rows, summary, ratios (CSV) and plot
    (PNG) into ``out_dir``. Returns (rows, summary, ratios)."""
    chosen = calibrations.get(calibration)
    model = PixelCostModel.load(calibration=chosen.name) if model is None else model
    table = load_table(calibration_dir(chosen.name)) if table is None else table
    rows = compare(model, chosen, table, directory)
    summary = summarize(rows)
    ratio_rows = ratios(model, chosen.name, table)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows.to_csv(out_dir / VALIDATION_CSV, index=False, float_format="%.4g")
    summary.to_csv(out_dir / SUMMARY_CSV, index=False, float_format="%.4g")
    ratio_rows.to_csv(out_dir / RATIOS_CSV, index=False, float_format="%.4g")
    plot(rows, ratio_rows, out_dir / PLOT_PNG)
    return rows, summary, ratio_rows


def validate_published(out_dir: Path, names: Iterable[str] | None = None) -> dict[str, tuple[pd.DataFrame, ...]]:
    """:func:`validate_calibration` for each named calibration (default: all), each in ``out_dir/<name>/``."""
    names = list(calibrations.CALIBRATIONS) if names is None else [calibrations.get(n).name for n in names]
    return {name: validate_calibration(Path(out_dir) / name, name) for name in names}
