"""Fit the Pixel 1 cost model: shapes from phone block tables, scale from whole networks.

Four steps, each using only what it may (:func:`fit`):

1. **Anchor.** The ProxylessNAS ``mobile_trim.yaml`` blocks (Pixel 1; ReLU6, no SE) fix every
   coefficient they exercise: relative-error non-negative least squares.
2. **Calibration on the rows of one benchmark run** (a named
   :class:`~nas.latency.pixel.calibrations.CalibrationSet`). A network is not the sum of blocks
   timed one at a time (warm caches, another TFLite build): the compute and the
   activation-traffic coefficients each get one multiplier; where the run has enough rows
   (``readme-2018``: 22 MobileNetV2 rows) the weight-traffic and per-op costs are refitted too,
   where it has three (``mobilenetv3-paper``) they keep the anchor's (zero). The fit minimises
   the *absolute* relative error (:func:`lad_nnls`), not its square: a few README rows break the
   smooth width trend (width 0.75 at 96 and 128 px runs 10-15 % slower than widths 0.5 and 1.0
   suggest), and least squares bends the whole model towards them. :func:`calibrate` refuses
   rows of networks the calibration holds out.
3. **h-swish**, from nn-Meter's Pixel 1 blocks (every one of them uses h-swish, SE on or off):
   one least-absolute-error fit of their times as ``s x (the calibrated model's price of the
   block without h-swish and SE) + h-swish traffic + SE traffic + SE blocks``; the h-swish cost
   per element on the model's scale is its coefficient over ``s``. (Before, it was the Note10
   h-swish / residual-add cost ratio, from another phone, whose OFA layout puts h-swish only in
   the late low-resolution stages: it priced h-swish 2x what the Pixel 1 blocks show and
   MobileNetV3 / -minimalistic at 1.187 and 1.365 against the published 1.161 and 1.295.)
4. **SE**, relative: per-element and per-block SE costs that reproduce the nn-Meter Pixel 1
   SE / no-SE ratios of otherwise identical blocks on the calibrated model.

Sources disagree in scale by up to 1.8x (other TFLite builds), so only the anchor and the
calibration rows set absolute numbers; :func:`source_agreement` reports each source's ratio
to the final model, the single-path-nas table included (a cross-check, never fitted).
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import replace
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from nas import zoo
from nas.errors import NasError
from nas.latency.keys import LatencyKey, decompose
from nas.latency.pixel import calibrations, sources
from nas.latency.pixel.calibrations import CalibrationSet
from nas.latency.pixel.model import FEATURES, GROUPS, PixelCostModel, feature_matrix

ANCHOR = "proxylessnas"
RELATIVE_SOURCE = "nn-meter"  # h-swish and SE, both on the calibrated model's scale
HSWISH = FEATURES.index("hswish_mem")
SE = FEATURES.index("se_mem")
SE_OP = FEATURES.index("se_op")


def nnls(a: np.ndarray, b: np.ndarray, tol: float = 1e-12) -> np.ndarray:
    """Non-negative least squares, min |a x - b| with x >= 0 (Lawson-Hanson active set)."""
    n = a.shape[1]
    x, passive = np.zeros(n), np.zeros(n, dtype=bool)
    for _ in range(3 * n + 10):
        gradient = a.T @ (b - a @ x)
        candidates = ~passive & (gradient > tol)
        if not candidates.any():
            break
        passive[np.argmax(np.where(candidates, gradient, -np.inf))] = True
        while True:
            z = np.zeros(n)
            z[passive] = np.linalg.lstsq(a[:, passive], b, rcond=None)[0]
            if (z[passive] > 0).all():
                x = z
                break
            shrinking = passive & (z <= 0)
            step = np.min(x[shrinking] / (x[shrinking] - z[shrinking]))
            x = x + step * (z - x)
            passive &= x > tol
            x[~passive] = 0.0
    return x


def lad_nnls(a: np.ndarray, b: np.ndarray, iterations: int = 100, floor: float = 1e-4) -> np.ndarray:
    """Non-negative least absolute deviations, min sum |a x - b| with x >= 0.

    Iteratively reweighted :func:`nnls`: each row weighs 1 / max(|residual|, ``floor``), which
    turns the squared loss into the absolute one at the fixed point.
    """
    x = nnls(a, b)
    for _ in range(iterations):
        weights = np.sqrt(1.0 / np.maximum(np.abs(a @ x - b), floor))
        updated = nnls(a * weights[:, None], b * weights)
        if np.allclose(updated, x, rtol=1e-10, atol=1e-12):
            return updated
        x = updated
    return x


def _fit_alone(rows: Sequence[sources.Measurement]) -> np.ndarray:
    """Relative-error NNLS of one source on the features it exercises (the others stay 0)."""
    x, y = feature_matrix(m.key for m in rows), np.array([m.ms for m in rows])
    seen = np.abs(x).sum(axis=0) > 0
    theta = np.zeros(len(FEATURES))
    theta[seen] = nnls(x[:, seen] / y[:, None], np.ones(len(y)))
    return theta


def hswish_cost(theta: np.ndarray, rows: Sequence[sources.Measurement]) -> float:
    """h-swish cost per element on the calibrated model's scale, from nn-Meter's Pixel 1 blocks.

    Their times are fitted (least absolute relative error) as ``s`` times the model's price of
    the block with h-swish and SE left out, plus free h-swish-traffic, SE-traffic and SE-block
    costs; ``h / s`` puts h-swish on the model's scale whatever nn-Meter's build speed.
    """
    relative = [HSWISH, SE, SE_OP]
    x, y = feature_matrix(m.key for m in rows), np.array([m.ms for m in rows])
    rest = theta.copy()
    rest[relative] = 0.0
    solution = lad_nnls(np.column_stack([x @ rest, x[:, relative]]) / y[:, None], np.ones(len(y)))
    if solution[0] <= 0 or solution[1] <= 0:
        raise NasError(f"pixel-cpu fit: {RELATIVE_SOURCE} rows do not show both a block scale and an h-swish cost")
    return float(solution[1] / solution[0])


def _se_cost(theta: np.ndarray, rows: Sequence[sources.Measurement]) -> np.ndarray:
    """SE cost per element and per SE block that reproduce nn-Meter's SE / no-SE block ratios.

    Only ratios are used, so the SE cost lands on the calibrated model's scale whatever
    nn-Meter's build speed; the model prices the SE-free twin of each pair.
    """
    measured = {m.key: m.ms for m in rows}
    pairs = [(key, replace(key, se=0, se_hard=False)) for key in measured if key.se]
    pairs = [(with_se, plain) for with_se, plain in pairs if plain in measured]
    if not pairs:
        raise NasError(f"pixel-cpu fit: {RELATIVE_SOURCE} has no SE / no-SE block pairs")
    x = feature_matrix(with_se for with_se, _ in pairs)
    plain = feature_matrix(p for _, p in pairs) @ theta
    ratio = np.array([measured[a] / measured[b] for a, b in pairs])
    # the SE twin differs from the plain block by SE traffic, one SE block, and nothing else
    x[:, SE_OP] = 1.0
    return nnls(x[:, [SE, SE_OP]] / plain[:, None], ratio - 1)


def _group(name: str) -> list[int]:
    return [FEATURES.index(feature) for feature in GROUPS[name]]


def network_keys(model: str, width: float, resolution: int) -> list[LatencyKey]:
    return decompose(zoo.get(model, width=width), resolution)


def calibrate(theta: np.ndarray, rows: pd.DataFrame,
              calibration: CalibrationSet) -> tuple[np.ndarray, dict[str, float]]:
    """Refit the block model's scale on one run's whole networks (step 2); held-out rows are refused."""
    other = sorted(set(rows["model"]) - set(calibration.calibrate_on))
    if other:
        raise NasError(f"pixel-cpu calibration {calibration.name!r} takes {list(calibration.calibrate_on)} rows only; "
                       f"got {other} (held out)")
    if rows.empty:
        raise NasError(f"pixel-cpu calibration {calibration.name!r}: no rows")
    x = np.vstack([feature_matrix(network_keys(r.model, r.width_mult, int(r.resolution))).sum(axis=0)
                   for r in rows.itertuples()])
    y = rows["pixel1_ms"].to_numpy(dtype=float)
    # Scaled groups keep their fitted shape and get one multiplier each; refitted groups (weight
    # traffic, per-op cost) are fitted outright: isolated-block timings carry per-invoke overheads
    # that a whole network does not pay.
    columns = [x[:, _group(name)] @ theta[_group(name)] for name in calibration.scaled]
    columns += [x[:, _group(name)].sum(axis=1) for name in calibration.refit]
    solution = lad_nnls(np.column_stack(columns) / y[:, None], np.ones(len(y)))
    scaled = theta.copy()
    for i, name in enumerate(calibration.scaled):
        scaled[_group(name)] *= solution[i]
    for i, name in enumerate(calibration.refit, start=len(calibration.scaled)):
        scaled[_group(name)] = solution[i]
    names = [f"{name}_multiplier" for name in calibration.scaled]
    names += [{"weights": "weight_ms_per_m", "fixed": "op_ms"}[name] for name in calibration.refit]
    return scaled, dict(zip(names, map(float, solution)))


def fit(measurements: Sequence[sources.Measurement], rows: pd.DataFrame,
        calibration: CalibrationSet) -> PixelCostModel:
    """The whole fit (see the module docstring); ``rows`` are ``calibration``'s own rows only."""
    by_source = {name: [m for m in measurements if m.source == name] for name in (ANCHOR, RELATIVE_SOURCE)}
    empty = [name for name, found in by_source.items() if not found]
    if empty:
        raise NasError(f"pixel-cpu fit: no rows from source(s) {empty}")
    anchor = _fit_alone(by_source[ANCHOR])
    theta, multipliers = calibrate(anchor, rows, calibration)
    theta[HSWISH] = hswish_cost(theta, by_source[RELATIVE_SOURCE])
    theta[[SE, SE_OP]] = _se_cost(theta, by_source[RELATIVE_SOURCE])
    info = {
        "target": "pixel-cpu",
        "anchor": ANCHOR,
        "calibration": {"name": calibration.name, "description": calibration.description,
                        "rows": f"{', '.join(calibration.calibrate_on)} rows of {calibration.source}",
                        "n": int(len(rows)), **multipliers},
        "relative_effects": {"hswish": f"{RELATIVE_SOURCE} (Pixel 1) block times: h-swish traffic over the block "
                                       "scale, one least-absolute-error fit",
                             "se": f"SE / no-SE block ratios in {RELATIVE_SOURCE} (Pixel 1)"},
        "block_rows": {name: len(found) for name, found in by_source.items()},
        "units": "ms per million multiply-adds (*_mac) or elements (*_mem); ms per TFLite op (op)",
    }
    return PixelCostModel({name: float(v) for name, v in zip(FEATURES, theta)}, info)


def calibration_rows(table: pd.DataFrame, calibration: CalibrationSet) -> pd.DataFrame:
    """The rows of one run that the calibration may see; the rest stay held out."""
    return table[table["model"].isin(calibration.calibrate_on)].reset_index(drop=True)


def fit_from_sources(directory: Path = sources.SOURCES_DIR, calibration: str | None = None) -> PixelCostModel:
    """Reproduce one calibration's shipped coefficients from the copied source files."""
    chosen = calibrations.get(calibration)
    measurements = sources.proxyless_blocks(directory) + sources.nn_meter_blocks(directory)
    return fit(measurements, calibration_rows(sources.published(directory, chosen.source), chosen), chosen)


def source_agreement(model: PixelCostModel, directory: Path = sources.SOURCES_DIR) -> pd.DataFrame:
    """Per source: how its measurements compare with the model (ratio median and spread, Spearman)."""
    rows = []
    for name, measured in [("proxylessnas", sources.proxyless_blocks(directory)),
                           ("nn-meter", sources.nn_meter_blocks(directory)),
                           ("single-path-nas", sources.single_path_blocks(directory)),
                           ("note10 (another phone)", sources.note10_blocks(directory))]:
        predicted = model.price_many(m.key for m in measured)
        y = np.array([m.ms for m in measured])
        ratio = y / predicted
        rows.append({"source": name, "n": len(y), "median_ratio": float(np.median(ratio)),
                     "ratio_p10": float(np.quantile(ratio, 0.1)), "ratio_p90": float(np.quantile(ratio, 0.9)),
                     "spearman": spearman(predicted, y),
                     "median_abs_error_after_scale_pct": float(np.median(np.abs(ratio / np.median(ratio) - 1)) * 100)})
    return pd.DataFrame(rows)


def spearman(a: Iterable[float], b: Iterable[float]) -> float:
    ra, rb = pd.Series(list(a)).rank().to_numpy(), pd.Series(list(b)).rank().to_numpy()
    return float(np.corrcoef(ra, rb)[0, 1])


def timestamp() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
