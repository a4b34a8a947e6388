"""Write the shipped ``latency_tables/pixel-cpu/`` table from the fitted model.

Every row's ``ms`` is the calibrated model's price: that is the number the whole-network
validation checks, and the one a search must sum. ``provenance`` says where the key stands:

* ``measured``: a Pixel 1 source (ProxylessNAS or nn-Meter) timed exactly this key; ``n`` is
  its sample count and ``spread_ms`` the model's disagreement with that timing once the
  source is put on the model's scale (one factor per source, the median model / measured
  ratio). The raw timing itself is not the value: it is an isolated-block time from another
  TFLite build, which summed over a network overshoots the published latencies by up to 20 %.
* ``fitted``: priced by the model alone.

Covered: every zoo network at the published widths and resolutions 96..256, and the keys
of a fixed-seed sample of both search spaces at 224. Any other key is priced on the fly by
the model (the predictor flags it ``estimated``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
from tqdm import tqdm

from nas import zoo
from nas.arch import ArchSpec
from nas.errors import NasError
from nas.latency.keys import LatencyKey, decompose
from nas.latency.pixel import calibrations, sources
from nas.latency.pixel.model import PixelCostModel
from nas.latency.table import LatencyTable, TableMeta

WIDTHS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
RESOLUTIONS = (96, 128, 160, 192, 224, 256)
SPACE_SAMPLES = 1500
DEVICE = "Google Pixel 1 CPU (TFLite float32, batch 1, one big core), fitted to public measurements"
BLOCK_SOURCES = (
    "ProxylessNAS mobile_trim.yaml (han-cai/files a7c9bcd; Pixel 1 MBConv blocks) - anchor",
    "nn-Meter pixel1_lut_ln_v3.json (microsoft/nn-Meter 9c31e19, MIT; h-swish cost, SE / no-SE ratios)",
)


def zoo_specs() -> list[tuple[str, float, ArchSpec]]:
    """(name, width, spec) for every zoo network at every published width (fixed ones at 1.0)."""
    specs = []
    for name in zoo.names():
        if name in zoo.FIXED:
            specs.append((name, 1.0, zoo.get(name)))
        elif name in zoo.FAMILIES:
            specs += [(name, width, zoo.get(name, width=width)) for width in WIDTHS]
    return specs


def space_specs(samples: int = SPACE_SAMPLES, seed: int = 0) -> list[ArchSpec]:
    """A fixed-seed sample of each search space (empty where the spaces package is absent)."""
    try:
        from search_spaces import get_space
    except ImportError:
        return []
    rng = np.random.default_rng(seed)
    return [get_space(name).sample(rng) for name in ("mnasnet", "mobilenetv3") for _ in range(samples)]


def table_keys(samples: int = SPACE_SAMPLES) -> list[LatencyKey]:
    keys: dict[LatencyKey, None] = {}
    for _, _, spec in zoo_specs():
        for resolution in RESOLUTIONS:
            keys.update(dict.fromkeys(decompose(spec, resolution)))
    for spec in tqdm(space_specs(samples), desc="space samples", unit="arch", leave=False):
        keys.update(dict.fromkeys(decompose(spec, 224)))
    return sorted(keys, key=str)


def measured_rows(model: PixelCostModel, measurements: Sequence[sources.Measurement]) -> pd.DataFrame:
    """Keys timed by a Pixel 1 source: model price, sample count, and disagreement with the timing."""
    frames = []
    for name in sorted({m.source for m in measurements}):
        rows = [m for m in measurements if m.source == name]
        measured = np.array([m.ms for m in rows])
        priced = model.price_many(m.key for m in rows)
        factor = float(np.median(priced / measured))
        frames.append(pd.DataFrame({
            "key": [str(m.key) for m in rows], "ms": priced, "spread_ms": np.abs(priced - measured * factor),
            "n": [m.n for m in rows], "provenance": "measured", "source": name, "factor": factor}))
    frame = pd.concat(frames, ignore_index=True)
    # a key timed by two sources keeps the anchor's row
    frame["rank"] = (frame["source"] != "proxylessnas").astype(int)
    return frame.sort_values(["key", "rank"]).drop_duplicates("key").drop(columns="rank")


def build_table(model: PixelCostModel, measurements: Sequence[sources.Measurement],
                keys: Iterable[LatencyKey], date: str = "") -> tuple[LatencyTable, dict[str, float]]:
    """The table over ``keys`` and every source-timed key (see the module docstring)."""
    measured = measured_rows(model, measurements)
    keys = list(keys)
    fitted = pd.DataFrame({"key": [str(k) for k in keys], "ms": model.price_many(keys), "spread_ms": 0.0,
                           "n": 0, "provenance": "fitted"})
    fitted = fitted[~fitted["key"].isin(measured["key"])]
    factors = measured.groupby("source")["factor"].first().to_dict()
    frame = pd.concat([measured[list(fitted.columns)], fitted], ignore_index=True).sort_values("key")
    if not np.isfinite(frame["ms"]).all():
        raise NasError("pixel-cpu table: a key priced to a non-finite latency")
    if model.calibration is None:
        raise NasError("pixel-cpu table: the coefficients record no calibration; refit them")
    calibration = calibrations.get(model.calibration)
    meta = TableMeta(target="pixel-cpu", device=DEVICE, kind="fitted", torch_version=None, threads=None,
                     date=date, sources=(*BLOCK_SOURCES, f"{calibration.source}: {calibration.description}"),
                     protocol={"calibration": calibration.name,
                               "model": f"nas.latency.pixel (coefficients.json); python -m nas.latency.pixel fit "
                                        f"--calibration {calibration.name}",
                               "ms": "calibrated model price for every row (whole-network scale)",
                               "measured_rows": "a Pixel 1 source timed this exact key; n = its samples; spread_ms = "
                                                "|ms - timing x source factor|",
                               "source_factors": factors,
                               "covered": f"zoo at widths {list(WIDTHS)} x resolutions {list(RESOLUTIONS)}; "
                                          f"{SPACE_SAMPLES} samples per search space at 224"})
    table = LatencyTable.empty(meta).with_rows(frame.reset_index(drop=True))
    return table, factors


def write(model: PixelCostModel, directory: Path, measurements: Sequence[sources.Measurement],
          keys: Iterable[LatencyKey], date: str = "") -> LatencyTable:
    table, _ = build_table(model, measurements, keys, date)
    table.save(directory)
    return table
