"""The Pixel 1 per-op cost model: a latency key priced as a sum over its TFLite primitives.

TFLite runs a block as separate kernels: 1x1 convolutions, a depthwise kxk convolution, an
h-swish op (ReLU and ReLU6 fuse into the convolution and cost nothing extra), the
squeeze-excite ops, a residual ADD. Each primitive costs

    compute   ms per million multiply-adds: full conv (stem), 1x1 conv, depthwise
    + traffic ms per million activation elements read and written (conv inputs/outputs,
              elementwise add / pool, h-swish, SE pool + gate)
    + weights ms per million weights read: the per-layer cost that does not shrink with
              resolution, which is what a MAdds-only model misses on small networks
    + fixed   ms per op launched and per SE block

A fully connected layer is priced by its weights (its MACs equal them). A stride-2 block
is priced on its input size: its expansion runs at the input resolution and only the
depthwise output is smaller.

h-swish is priced per element read and written, like any other streaming kernel, at the rate
nn-Meter's Pixel 1 blocks show for it on this model's scale (about the cost of a convolution's
own activation traffic). It used to be priced at the Note10 phone's h-swish / ADD ratio, which
made it about twice as dear, over-priced the SE twins derived from it, and put MobileNetV3 /
-minimalistic at 1.187 (Large) and 1.365 (Small) where the paper's run measured 1.161 and 1.295;
see :mod:`nas.latency.pixel.fit` and ``latency_tables/README.md``.

Coefficients are fitted by :mod:`nas.latency.pixel.fit`, one set per named calibration
(:mod:`nas.latency.pixel.calibrations`): ``latency_tables/pixel-cpu/coefficients.json`` for the
default, ``latency_tables/pixel-cpu/<name>/coefficients.json`` for the others. Each file
records its calibration's name, and :meth:`PixelCostModel.load` refuses a file under another
name. This module only prices.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from nas.errors import NasError
from nas.latency.keys import LatencyKey
from nas.latency.pixel import calibrations
from nas.latency.locations import pixel_table_dir

TABLE_DIR = pixel_table_dir()
COEFFICIENTS_FILE = "coefficients.json"


def calibration_dir(calibration: str | None = None) -> Path:
    """The folder of one calibration's coefficients, table and meta (None: the default's)."""
    return TABLE_DIR / calibrations.get(calibration).folder

# One coefficient per feature; the feature is in millions (MACs, elements) or a count (ops).
# GROUPS are what the whole-network calibration scales or refits; h-swish and SE are set
# afterwards as relative effects (see nas.latency.pixel.fit).
COMPUTE = ("conv_mac", "pw_mac", "dw_mac")
MEMORY = ("act_mem", "eltwise_mem")
WEIGHTS = ("weight_mem",)
FIXED = ("op",)
RELATIVE = ("hswish_mem", "se_mem", "se_op")
FEATURES = COMPUTE + MEMORY + RELATIVE + WEIGHTS + FIXED
GROUPS = {"compute": COMPUTE, "memory": MEMORY, "weights": WEIGHTS, "fixed": FIXED}
_INDEX = {name: i for i, name in enumerate(FEATURES)}


@dataclass(frozen=True)
class Primitive:
    """One TFLite kernel of a key: multiply-adds, activation elements read and written, weights."""

    kind: str  # conv | pw | dw | fc | hswish | add | pool | se
    macs: int
    elements: int
    weights: int = 0
    kernel: int = 1


def _conv(kind: str, hw_in: int, hw_out: int, cin: int, cout: int, kernel: int = 1) -> Primitive:
    weights = cout * kernel * kernel if kind == "dw" else cin * cout * kernel * kernel
    macs = hw_out * hw_out * weights
    return Primitive(kind, macs, hw_in * hw_in * cin + hw_out * hw_out * cout, weights, kernel)


def _act(act: str, elements: int) -> list[Primitive]:
    """ReLU and ReLU6 fuse into the preceding convolution; h-swish is its own kernel."""
    return [Primitive("hswish", 0, 2 * elements)] if act == "hswish" else []


def primitives(key: LatencyKey) -> tuple[Primitive, ...]:
    """The TFLite kernels one key runs, in order."""
    hw, ho = key.hw, key.out_hw
    if key.kind == "stem":
        return (_conv("conv", hw, ho, key.cin, key.cout, key.kernel), *_act(key.act, ho * ho * key.cout))
    if key.kind == "head":
        ops = [_conv("pw", hw, hw, key.cin, key.exp), *_act(key.act, hw * hw * key.exp),
               Primitive("pool", 0, hw * hw * key.exp + key.exp)]
        if key.hidden:
            ops += [_conv("fc", 1, 1, key.exp, key.hidden), *_act(key.act, key.hidden),
                    _conv("fc", 1, 1, key.hidden, key.cout)]
        else:
            ops.append(_conv("fc", 1, 1, key.exp, key.cout))
        return tuple(ops)
    if key.kind not in ("conv", "ds", "ir"):
        raise NasError(f"pixel-cpu: cannot price a key of kind {key.kind!r}")
    ops: list[Primitive] = []
    if key.kind == "conv":
        ops += [_conv("conv", hw, ho, key.cin, key.cout, key.kernel), *_act(key.act, ho * ho * key.cout)]
        width = key.cout
    else:
        if key.kind == "ir" and key.exp != key.cin:
            ops += [_conv("pw", hw, hw, key.cin, key.exp), *_act(key.act, hw * hw * key.exp)]
        ops += [_conv("dw", hw, ho, key.exp, key.exp, key.kernel), *_act(key.act, ho * ho * key.exp)]
        width = key.exp
    if key.se:
        # pool + multiply touch the full tensor; the two tiny FCs are weight-bound.
        ops.append(Primitive("se", 2 * width * key.se, 3 * ho * ho * width, 2 * width * key.se))
    if key.kind != "conv":
        ops.append(_conv("pw", ho, ho, key.exp, key.cout))
    if key.residual:
        ops.append(Primitive("add", 0, 3 * ho * ho * key.cout))
    return tuple(ops)


def features(key: LatencyKey) -> np.ndarray:
    """The key's feature vector (see :data:`FEATURES`): a price is its dot product with the coefficients."""
    row = np.zeros(len(FEATURES))
    for op in primitives(key):
        row[_INDEX["weight_mem"]] += op.weights / 1e6
        if op.kind in ("conv", "pw", "dw", "fc"):
            if op.kind != "fc":  # a fully connected layer is weight-bound: its MACs are its weights
                row[_INDEX[f"{op.kind}_mac"]] += op.macs / 1e6
            row[_INDEX["act_mem"]] += op.elements / 1e6
            row[_INDEX["op"]] += 1
        elif op.kind in ("add", "pool"):
            row[_INDEX["eltwise_mem"]] += op.elements / 1e6
            row[_INDEX["op"]] += 1
        elif op.kind == "hswish":
            row[_INDEX["hswish_mem"]] += op.elements / 1e6
            row[_INDEX["op"]] += 1
        else:  # se: mean, reduce, expand, gate, multiply; their fixed cost is se_op's
            row[_INDEX["se_mem"]] += op.elements / 1e6
            row[_INDEX["se_op"]] += 1
    return row


def feature_matrix(keys: Iterable[LatencyKey]) -> np.ndarray:
    rows = [features(key) for key in keys]
    return np.vstack(rows) if rows else np.zeros((0, len(FEATURES)))


def madds(key: LatencyKey) -> int:
    """Multiply-adds of a key under the project convention (BN, activations, adds, gating count zero)."""
    return sum(op.macs for op in primitives(key))


@dataclass(frozen=True)
class PixelCostModel:
    """Prices any latency key for the Pixel 1 CPU (TFLite float, one big core), in ms.

    >>> model = PixelCostModel.load()
    >>> from nas.latency.keys import parse_key
    >>> round(model.price(parse_key("ir_r56_i24_e72_o40_k5_s2_se0_relu")), 3) > 0
    True
    """

    coefficients: dict[str, float]
    info: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        missing = sorted(set(FEATURES) - set(self.coefficients))
        unknown = sorted(set(self.coefficients) - set(FEATURES))
        if missing or unknown:
            raise NasError(f"pixel-cpu coefficients: missing {missing}, unknown {unknown}")
        bad = [name for name, value in self.coefficients.items() if not np.isfinite(value) or value < 0]
        if bad:
            raise NasError(f"pixel-cpu coefficients: {bad[0]} must be a finite value >= 0")

    @property
    def vector(self) -> np.ndarray:
        return np.array([self.coefficients[name] for name in FEATURES])

    def price(self, key: LatencyKey) -> float:
        """Predicted latency of one key in milliseconds."""
        return float(features(key) @ self.vector)

    def price_many(self, keys: Iterable[LatencyKey]) -> np.ndarray:
        return feature_matrix(keys) @ self.vector

    def breakdown(self, key: LatencyKey) -> dict[str, float]:
        """The price split by coefficient: which primitives a key's time goes to."""
        parts = features(key) * self.vector
        return {name: float(v) for name, v in zip(FEATURES, parts) if v}

    @property
    def calibration(self) -> str | None:
        """The name of the calibration these coefficients belong to (as recorded in the file)."""
        recorded = self.info.get("calibration")
        return recorded.get("name") if isinstance(recorded, dict) else None

    @classmethod
    def load(cls, path: Path | None = None, *, calibration: str | None = None) -> PixelCostModel:
        """Read a calibration's shipped (or a given) ``coefficients.json``.

        The file must record the calibration asked for: ``calibration`` if given, the default
        when neither a path nor a name is given; a given path without a name takes what it records.
        """
        expected = calibrations.get(calibration).name if calibration or path is None else None
        path = calibration_dir(calibration) / COEFFICIENTS_FILE if path is None else Path(path)
        try:
            data = json.loads(path.read_text())
        except OSError as err:
            raise NasError(f"cannot read pixel-cpu coefficients {path}: {err.strerror}") from None
        except json.JSONDecodeError as err:
            raise NasError(f"corrupt pixel-cpu coefficients {path}: {err}") from None
        if not isinstance(data, dict) or not isinstance(data.get("coefficients"), dict):
            raise NasError(f"corrupt pixel-cpu coefficients {path}: no 'coefficients' object")
        model = cls({k: float(v) for k, v in data["coefficients"].items()},
                    {k: v for k, v in data.items() if k != "coefficients"})
        if expected is not None and model.calibration != expected:
            held = "record no calibration" if model.calibration is None else f"are of calibration {model.calibration!r}"
            raise NasError(f"pixel-cpu coefficients {path} {held}, not {expected!r} (refit with: "
                           f"python -m nas.latency.pixel fit --calibration {expected})")
        return model

    def save(self, path: Path) -> None:
        data = {"coefficients": {name: self.coefficients[name] for name in FEATURES}, **self.info}
        Path(path).write_text(json.dumps(data, indent=2) + "\n")
