"""The architecture spec: one frozen, typed value that describes a whole network.

A search space produces an :class:`ArchSpec`, :func:`nas.model.build_model` turns it into
modules, the latency layer decomposes it into lookup keys and NetAdapt rewrites its widths.
Nothing else needs to know how a network is laid out.

Every width is an exact channel count (never a ratio), so NetAdapt can set any value.

Compact string form (one token per part, separated by whitespace)::

    stem_k3_s2_c16_hswish
    ds_k3_s1_e16_c16_relu_skip
    ir_k5_s2_e72_c40_hse0.25_relu
    head_c960_h1280_hswish_d0.2_n1000

Layer tokens start with the op (``conv`` regular kxk conv, ``ds`` depthwise-separable,
``ir`` inverted residual / MBConv) followed by ``k`` kernel, ``s`` stride, ``e`` expanded
channels, ``c`` output channels, an optional squeeze-excite ``se<ratio>`` (MnasNet style:
sigmoid gate, squeeze width ``max(1, int(block_input * ratio))``) or ``hse<ratio>``
(MobileNetV3 style: hard-sigmoid gate, squeeze width ``make_divisible(expanded * ratio, 8)``),
the activation ``relu`` / ``relu6`` / ``hswish``, and ``skip`` when the block has a residual
connection. The head token has ``c`` (1x1 conv before pooling), ``h`` (hidden width of
MobileNetV3's efficient last stage after pooling; absent for the classic head), the
activation, ``d`` dropout and ``n`` classes.
"""

from __future__ import annotations

import json
import re
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from typing import Any, Iterator

from nas.errors import SpecError

OPS = ("conv", "ds", "ir")
KERNELS = (1, 3, 5, 7)
STRIDES = (1, 2)
ACTIVATIONS = ("relu", "relu6", "hswish")
SE_STYLES = ("mnas", "v3")


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round a width to a multiple of ``divisor`` without losing more than 10 % (TF-slim rule)."""
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


@dataclass(frozen=True)
class StemSpec:
    """The first full convolution on the RGB input."""

    channels: int = 16
    kernel: int = 3
    stride: int = 2
    act: str = "hswish"


@dataclass(frozen=True)
class LayerSpec:
    """One block. ``exp`` is the depthwise width: the input width for ``ds``, the output for ``conv``."""

    op: str
    kernel: int
    stride: int
    exp: int
    out: int
    se_ratio: float = 0.0
    se_style: str = "mnas"
    act: str = "relu"
    residual: bool = False

    def __post_init__(self) -> None:
        # Without SE the style means nothing: keep one canonical value so equal blocks compare equal.
        if self.se_ratio == 0 and self.se_style != "mnas":
            object.__setattr__(self, "se_style", "mnas")

    @property
    def has_se(self) -> bool:
        return self.se_ratio > 0

    def se_channels(self, in_channels: int) -> int:
        """Squeeze width: MnasNet sizes it from the block input, MobileNetV3 from the expansion."""
        if not self.has_se:
            return 0
        if self.se_style == "v3":
            return make_divisible(self.exp * self.se_ratio, 8)
        return max(1, int(in_channels * self.se_ratio))


@dataclass(frozen=True)
class HeadSpec:
    """Classifier head: 1x1 conv, pooling, then either a linear layer (classic) or
    MobileNetV3's efficient last stage (``hidden`` > 0: linear, activation, dropout, linear)."""

    channels: int = 1280
    hidden: int = 0
    act: str = "relu"
    dropout: float = 0.2
    num_classes: int = 1000

    @property
    def efficient(self) -> bool:
        return self.hidden > 0


@dataclass(frozen=True)
class ArchSpec:
    """A whole network: stem, blocks in order, head."""

    stem: StemSpec
    layers: tuple[LayerSpec, ...]
    head: HeadSpec = field(default_factory=HeadSpec)

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(self.layers))
        validate(self)

    def in_channels(self) -> list[int]:
        """Input width of every layer, in order."""
        widths, current = [], self.stem.channels
        for layer in self.layers:
            widths.append(current)
            current = layer.out
        return widths

    def last_channels(self) -> int:
        return self.layers[-1].out if self.layers else self.stem.channels

    def with_layer(self, index: int, **changes: Any) -> ArchSpec:
        """A copy with one layer's fields changed (validated)."""
        layers = list(self.layers)
        layers[index] = replace(layers[index], **changes)
        return replace(self, layers=tuple(layers))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArchSpec:
        if not isinstance(data, dict):
            raise SpecError(f"spec: expected an object, got {type(data).__name__}")
        _check_keys("spec", data, {"stem", "layers", "head"}, required={"stem", "layers"})
        if not isinstance(data["layers"], (list, tuple)):
            raise SpecError("layers: expected a list")
        stem = _from_fields(StemSpec, "stem", data["stem"])
        layers = tuple(_from_fields(LayerSpec, f"layers[{i}]", d) for i, d in enumerate(data["layers"]))
        head = _from_fields(HeadSpec, "head", data["head"]) if "head" in data else HeadSpec()
        return cls(stem=stem, layers=layers, head=head)

    @classmethod
    def from_json(cls, text: str) -> ArchSpec:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise SpecError(f"spec JSON: {err}") from None
        return cls.from_dict(data)

    def to_string(self, sep: str = " ") -> str:
        return sep.join([_stem_token(self.stem), *map(_layer_token, self.layers), _head_token(self.head)])

    @classmethod
    def from_string(cls, text: str) -> ArchSpec:
        return parse(text)

    def __str__(self) -> str:
        return self.to_string()


def _check_keys(where: str, data: dict[str, Any], allowed: set[str], required: set[str]) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise SpecError(f"{where}.{unknown[0]}: unknown field (allowed: {', '.join(sorted(allowed))})")
    missing = sorted(required - set(data))
    if missing:
        raise SpecError(f"{where}.{missing[0]}: missing")


def _from_fields(cls: type, where: str, data: Any) -> Any:
    if not isinstance(data, dict):
        raise SpecError(f"{where}: expected an object, got {type(data).__name__}")
    names = {f.name for f in fields(cls)}
    required = {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}
    _check_keys(where, data, names, required)
    return cls(**data)


# ---------------------------------------------------------------- validation


def _require(ok: bool, where: str, message: str) -> None:
    if not ok:
        raise SpecError(f"{where}: {message}")


def _check_int(value: Any, where: str, low: int = 1) -> None:
    _require(isinstance(value, int) and not isinstance(value, bool), where, f"expected an integer, got {value!r}")
    _require(value >= low, where, f"must be >= {low}, got {value}")


def _check_choice(value: Any, options: tuple, where: str) -> None:
    _require(value in options, where, f"{value!r} not in {options}")


def validate(spec: ArchSpec) -> None:
    """Raise :class:`SpecError` naming the first bad field; return quietly for a valid spec."""
    _require(isinstance(spec.stem, StemSpec), "stem", "expected a StemSpec")
    _require(isinstance(spec.head, HeadSpec), "head", "expected a HeadSpec")
    _check_int(spec.stem.channels, "stem.channels")
    _check_choice(spec.stem.kernel, KERNELS, "stem.kernel")
    _check_choice(spec.stem.stride, STRIDES, "stem.stride")
    _check_choice(spec.stem.act, ACTIVATIONS, "stem.act")
    _require(len(spec.layers) > 0, "layers", "at least one layer is needed")
    in_ch = spec.stem.channels
    for i, layer in enumerate(spec.layers):
        where = f"layers[{i}]"
        _require(isinstance(layer, LayerSpec), where, "expected a LayerSpec")
        _check_choice(layer.op, OPS, f"{where}.op")
        _check_choice(layer.kernel, KERNELS, f"{where}.kernel")
        _check_choice(layer.stride, STRIDES, f"{where}.stride")
        _check_int(layer.exp, f"{where}.exp")
        _check_int(layer.out, f"{where}.out")
        _check_choice(layer.act, ACTIVATIONS, f"{where}.act")
        _check_choice(layer.se_style, SE_STYLES, f"{where}.se_style")
        _require(isinstance(layer.se_ratio, (int, float)) and 0 <= layer.se_ratio <= 1,
                 f"{where}.se_ratio", f"must lie in [0, 1], got {layer.se_ratio!r}")
        _require(isinstance(layer.residual, bool), f"{where}.residual", "expected true or false")
        if layer.op == "ds":
            _require(layer.exp == in_ch, f"{where}.exp", f"a ds layer's depthwise width must equal its input ({in_ch}), got {layer.exp}")
        if layer.op == "conv":
            _require(layer.exp == layer.out, f"{where}.exp", f"a conv layer's exp must equal its out ({layer.out}), got {layer.exp}")
        if layer.residual:
            _require(layer.stride == 1 and layer.out == in_ch, f"{where}.residual",
                     f"needs stride 1 and out == input width ({in_ch}); got stride {layer.stride}, out {layer.out}")
        in_ch = layer.out
    _check_int(spec.head.channels, "head.channels")
    _check_int(spec.head.hidden, "head.hidden", low=0)
    _check_choice(spec.head.act, ACTIVATIONS, "head.act")
    _require(isinstance(spec.head.dropout, (int, float)) and 0 <= spec.head.dropout < 1,
             "head.dropout", f"must lie in [0, 1), got {spec.head.dropout!r}")
    _check_int(spec.head.num_classes, "head.num_classes")


# ---------------------------------------------------------------- string codec

_SE_PREFIX = {"mnas": "se", "v3": "hse"}


def _num(value: float) -> str:
    return f"{value:g}"


def _stem_token(stem: StemSpec) -> str:
    return f"stem_k{stem.kernel}_s{stem.stride}_c{stem.channels}_{stem.act}"


def _layer_token(layer: LayerSpec) -> str:
    parts = [layer.op, f"k{layer.kernel}", f"s{layer.stride}", f"e{layer.exp}", f"c{layer.out}"]
    if layer.has_se:
        parts.append(f"{_SE_PREFIX[layer.se_style]}{_num(layer.se_ratio)}")
    parts.append(layer.act)
    if layer.residual:
        parts.append("skip")
    return "_".join(parts)


def _head_token(head: HeadSpec) -> str:
    parts = ["head", f"c{head.channels}"]
    if head.efficient:
        parts.append(f"h{head.hidden}")
    parts += [head.act, f"d{_num(head.dropout)}", f"n{head.num_classes}"]
    return "_".join(parts)


_INT = r"(\d+)"
_FLOAT = r"(\d+(?:\.\d*)?(?:e-?\d+)?)"
_TOKEN_RULES: dict[str, list[tuple[str, str, Any]]] = {
    # part -> [(regex, field, converter)]
    "stem": [(rf"k{_INT}", "kernel", int), (rf"s{_INT}", "stride", int), (rf"c{_INT}", "channels", int)],
    "layer": [(rf"k{_INT}", "kernel", int), (rf"s{_INT}", "stride", int), (rf"e{_INT}", "exp", int),
              (rf"c{_INT}", "out", int), (rf"se{_FLOAT}", "se_ratio", float), (rf"hse{_FLOAT}", "se_ratio", float)],
    "head": [(rf"c{_INT}", "channels", int), (rf"h{_INT}", "hidden", int), (rf"d{_FLOAT}", "dropout", float),
             (rf"n{_INT}", "num_classes", int)],
}


def _parse_token(token: str, part: str) -> dict[str, Any]:
    head, *args = token.split("_")
    values: dict[str, Any] = {}
    if part == "layer":
        values["op"] = head
    for arg in args:
        if arg in ACTIVATIONS:
            values["act"] = arg
            continue
        if arg == "skip" and part == "layer":
            values["residual"] = True
            continue
        for regex, name, convert in _TOKEN_RULES[part]:
            match = re.fullmatch(regex, arg)
            if match:
                if name in values:
                    raise SpecError(f"{token!r}: {name} given twice")
                values[name] = convert(match.group(1))
                if regex.startswith("hse"):
                    values["se_style"] = "v3"
                break
        else:
            raise SpecError(f"{token!r}: cannot read {arg!r}")
    return values


def parse(text: str) -> ArchSpec:
    """Decode the compact string form (see the module docstring)."""
    tokens = text.split()
    if len(tokens) < 3:
        raise SpecError("spec string: needs a stem token, at least one layer token and a head token")
    if not tokens[0].startswith("stem_"):
        raise SpecError(f"spec string: first token must be the stem, got {tokens[0]!r}")
    if not tokens[-1].startswith("head_"):
        raise SpecError(f"spec string: last token must be the head, got {tokens[-1]!r}")
    stem = _parse_token(tokens[0], "stem")
    head = _parse_token(tokens[-1], "head")
    layers = []
    for i, token in enumerate(tokens[1:-1]):
        values = _parse_token(token, "layer")
        for name in ("kernel", "stride", "exp", "out", "act"):
            if name not in values:
                raise SpecError(f"layers[{i}].{name}: missing in {token!r}")
        layers.append(LayerSpec(**values))
    return ArchSpec(stem=StemSpec(**stem), layers=tuple(layers), head=HeadSpec(**head))


def iter_layers(spec: ArchSpec) -> Iterator[tuple[int, int, LayerSpec]]:
    """(index, input width, layer) for every block."""
    for index, (in_ch, layer) in enumerate(zip(spec.in_channels(), spec.layers)):
        yield index, in_ch, layer
