"""Readers for the public Pixel 1 measurements shipped in ``latency_tables/pixel-cpu/sources/``.

Each reader turns one source's own key format into our :class:`~nas.latency.keys.LatencyKey`,
so the fitting code sees one vocabulary. Only the fit and the validation read these files;
pricing at run time needs nothing but the fitted coefficients (see :mod:`nas.latency.pixel.model`).
Provenance and licences are in ``sources/README.md``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from nas.arch import make_divisible
from nas.errors import NasError
from nas.latency.keys import LatencyKey
from nas.latency.locations import pixel_sources_dir

SOURCES_DIR = pixel_sources_dir()

PROXYLESS_BLOCKS = "mobile_trim.yaml"
PROXYLESS_PROFILE = "proxyless_mobile_10_latency.txt"
NN_METER_BLOCKS = "nn_meter_pixel1_lut_ln_v3_cnn.json"
SINGLE_PATH_LAYERS = "pixel1_runtime_model.json"
NOTE10_BLOCKS = ("note10_ofa_160_lookup_table.yaml", "note10_ofa_192_lookup_table.yaml",
                 "note10_ofa_224_lookup_table.yaml")
PUBLISHED = "pixel1_published.csv"


@dataclass(frozen=True)
class Measurement:
    """One source's latency for one key, in that source's own scale (TFLite builds differ)."""

    key: LatencyKey
    ms: float
    spread_ms: float
    n: int
    source: str


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError as err:
        raise NasError(f"cannot read Pixel 1 source {path}: {err.strerror}") from None


def _shape(text: str) -> tuple[int, int, int]:
    h, w, c = (int(v) for v in text.split("x"))
    if h != w:
        raise NasError(f"non-square shape {text!r} in a Pixel 1 source")
    return h, w, c


def proxyless_blocks(directory: Path = SOURCES_DIR) -> list[Measurement]:
    """ProxylessNAS ``mobile_trim.yaml``: MBConv blocks (ReLU6, no SE), stem and head at 224.

    ``Conv_1`` (1x1 320->1280) and ``Logits`` (pool + classifier) together are our head key.
    """
    try:
        table = yaml.safe_load(_read(directory / PROXYLESS_BLOCKS))
    except yaml.YAMLError as err:
        raise NasError(f"corrupt {PROXYLESS_BLOCKS}: {err}") from None
    found, head = [], {}
    block = re.compile(r"expanded_conv-input:(\S+?)-output:(\S+?)-expand:(\d+)-kernel:(\d+)-stride:(\d+)-idskip:([01])")
    for name, row in table.items():
        spread, n = float(row["var"]) ** 0.5, int(row["count"])
        if name.startswith("Conv-"):
            hw, _, cin = _shape(name.split("input:")[1].split("-")[0])
            _, _, cout = _shape(name.split("output:")[1])
            key = LatencyKey("stem", hw, cin, cout, cout, 3, 2, act="relu6")
            found.append(Measurement(key, float(row["mean"]), spread, n, "proxylessnas"))
        elif name.startswith(("Conv_1-", "Logits-")):
            head[name.split("-")[0]] = (name, row)
        else:
            match = block.fullmatch(name)
            if match is None:
                raise NasError(f"unexpected key {name!r} in {PROXYLESS_BLOCKS}")
            (hw, _, cin), (_, _, cout) = _shape(match[1]), _shape(match[2])
            ratio, kernel, stride, skip = (int(match[i]) for i in range(3, 7))
            kind = "ds" if ratio == 1 else "ir"
            key = LatencyKey(kind, hw, cin, cin * ratio, cout, kernel, stride, act="relu6", residual=bool(skip))
            found.append(Measurement(key, float(row["mean"]), spread, n, "proxylessnas"))
    (conv_name, conv), (_, logits) = head["Conv_1"], head["Logits"]
    hw, _, cin = _shape(conv_name.split("input:")[1].split("-")[0])
    _, _, wide = _shape(conv_name.split("output:")[1])
    key = LatencyKey("head", hw, cin, wide, 1000, act="relu6")
    spread = (float(conv["var"]) + float(logits["var"])) ** 0.5
    found.append(Measurement(key, float(conv["mean"]) + float(logits["mean"]), spread,
                             min(int(conv["count"]), int(logits["count"])), "proxylessnas"))
    return found


def nn_meter_blocks(directory: Path = SOURCES_DIR) -> list[Measurement]:
    """nn-Meter Pixel 1 v3 MBConv blocks (h-swish everywhere, SE on/off) and h-swish stems.

    Their block: optional 1x1 expansion (none at ratio 1), depthwise, SE of
    ``make_divisible(expanded / 4, 8)`` with a hard-sigmoid gate, projection; a residual when
    shapes allow. ``hw`` is the block's input size, as in our keys.
    """
    try:
        table = json.loads(_read(directory / NN_METER_BLOCKS))
    except json.JSONDecodeError as err:
        raise NasError(f"corrupt {NN_METER_BLOCKS}: {err}") from None
    found = []
    block = re.compile(r"conv_(\d+)_(\d+)_(\d+)_(\d+)_(\d+)_hard_swish_(\d)_(se|nose)")
    stem = re.compile(r"firstconv_(\d+)_3_(\d+)_2_3")
    for name, ms in table.items():
        if match := block.fullmatch(name):
            hw, cin, cout, ratio, stride, kernel = (int(v) for v in match.groups()[:6])
            exp = cin * ratio
            se = make_divisible(exp / 4, 8) if match[7] == "se" else 0
            key = LatencyKey("ds" if ratio == 1 else "ir", hw, cin, exp, cout, kernel, stride, se, se > 0,
                             "hswish", stride == 1 and cin == cout)
        elif match := stem.fullmatch(name):
            hw, cout = int(match[1]), int(match[2])
            key = LatencyKey("stem", hw, 3, cout, cout, 3, 2, act="hswish")
        else:
            continue
        found.append(Measurement(key, float(ms), 0.0, 1, "nn-meter"))
    return found


def note10_blocks(directory: Path = SOURCES_DIR) -> list[Measurement]:
    """Once-for-all Galaxy Note10 MobileNetV3 blocks: the one table timing h-swish and ReLU blocks
    with one build, so it gives h-swish's cost *relative* to the rest (never its scale).

    ``expand`` is the expanded width; SE is ``make_divisible(expanded / 4, 8)``, hard-sigmoid.
    """
    found = []
    block = re.compile(r"expanded_conv-input:(\S+?)-output:(\S+?)-expand:(\d+)-kernel:(\d+)-stride:(\d+)"
                       r"-idskip:([01])-se:([01])-hs:([01])")
    for filename in NOTE10_BLOCKS:
        try:
            table = yaml.safe_load(_read(directory / filename))
        except yaml.YAMLError as err:
            raise NasError(f"corrupt {filename}: {err}") from None
        for name, row in table.items():
            match = block.fullmatch(name)
            if match is None:
                continue  # stem, head and pooling rows belong to the OFA layout only
            (hw, _, cin), (_, _, cout) = _shape(match[1]), _shape(match[2])
            exp, kernel, stride, skip, se, hs = (int(match[i]) for i in range(3, 9))
            key = LatencyKey("ir", hw, cin, exp, cout, kernel, stride, make_divisible(exp / 4, 8) if se else 0,
                             bool(se), "hswish" if hs else "relu", bool(skip))
            found.append(Measurement(key, float(row["mean"]), float(row["std"]), int(row["count"]), "note10"))
    return found


# Single-path NAS layer positions: (input size, input width, output width, stride) of the
# MnasNet layout at 224; position 0 is the fixed MBConv1 3x3 block.
_SINGLE_PATH_LAYOUT = (
    [(112, 32, 16, 1)]
    + [(112, 16, 24, 2)] + [(56, 24, 24, 1)] * 3
    + [(56, 24, 40, 2)] + [(28, 40, 40, 1)] * 3
    + [(28, 40, 80, 2)] + [(14, 80, 80, 1)] * 3
    + [(14, 80, 96, 1)] + [(14, 96, 96, 1)] * 3
    + [(14, 96, 192, 2)] + [(7, 192, 192, 1)] * 3
    + [(7, 192, 320, 1)]
)
_SINGLE_PATH_CHOICES = {0: (3, 3), 1: (3, 6), 2: (5, 3), 3: (5, 6)}


def single_path_blocks(directory: Path = SOURCES_DIR) -> list[Measurement]:
    """Single-path NAS per-position runtimes (ReLU6 MBConv, MnasNet layout); a cross-check only."""
    table = json.loads(_read(directory / SINGLE_PATH_LAYERS))
    found = []
    for position, (hw, cin, cout, stride) in enumerate(_SINGLE_PATH_LAYOUT):
        if position == 0:
            key = LatencyKey("ds", hw, cin, cin, cout, 3, 1, act="relu6")
            found.append(Measurement(key, float(table["0"]["0"]), 0.0, 1, "single-path-nas"))
            continue
        for choice, (kernel, ratio) in _SINGLE_PATH_CHOICES.items():
            key = LatencyKey("ir", hw, cin, cin * ratio, cout, kernel, stride, act="relu6",
                             residual=stride == 1 and cin == cout)
            found.append(Measurement(key, float(table[str(position)][str(choice)]), 0.0, 1, "single-path-nas"))
    return found


def proxyless_profile(directory: Path = SOURCES_DIR) -> pd.DataFrame:
    """Per-node rows (node type, avg ms, name) of TFLite's profile of ProxylessNAS-Mobile."""
    rows, in_run_order = [], False
    for line in _read(directory / PROXYLESS_PROFILE).splitlines():
        if "Run Order" in line:
            in_run_order = True
            continue
        if in_run_order and "====" in line:
            break
        fields = line.split()
        if in_run_order and len(fields) >= 9 and fields[0].isupper() and fields[-1].startswith("["):
            rows.append({"node": fields[0], "ms": float(fields[3]), "name": fields[-1].strip("[]")})
    if not rows:
        raise NasError(f"no per-node rows found in {PROXYLESS_PROFILE}")
    return pd.DataFrame(rows)


def proxyless_mobile_ms(directory: Path = SOURCES_DIR) -> float:
    """The whole-network average the ProxylessNAS authors measured (``no stats`` line)."""
    match = re.search(r"no stats: ([\d.]+)", _read(directory / PROXYLESS_PROFILE))
    if match is None:
        raise NasError(f"no whole-network average in {PROXYLESS_PROFILE}")
    return float(match[1]) / 1000.0


def published(directory: Path = SOURCES_DIR, filename: str = PUBLISHED) -> pd.DataFrame:
    """Published whole-network Pixel 1 latencies of one benchmark run (``filename``): README rows
    (MobileNetV2, MnasNet-A1) or the MobileNetV3 paper's Table 3 rows (each calibration's ``source``)."""
    try:
        table = pd.read_csv(directory / filename, comment="#")
    except (OSError, pd.errors.ParserError) as err:
        raise NasError(f"cannot read {filename}: {err}") from None
    table = table.rename(columns={"madds_M": "macs_M"})  # the paper's file names the column after the paper
    needed = {"model", "width_mult", "resolution", "pixel1_ms", "macs_M"}
    if not needed <= set(table.columns):
        raise NasError(f"{filename}: missing columns {sorted(needed - set(table.columns))}")
    table = table[table["pixel1_ms"].notna()]
    return table[["model", "width_mult", "resolution", "pixel1_ms", "macs_M"]].reset_index(drop=True)
