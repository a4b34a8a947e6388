"""Decompose an architecture into latency lookup keys: one per stem, block and head.

The same decomposition serves every target (host-cpu, cuda, pixel-cpu): a table maps key
strings to milliseconds, and a network's latency is built from the sum over its keys.

A key is a plain string of ``_``-separated tokens, e.g.::

    stem_r224_i3_o16_k3_s2_hswish
    ir_r56_i24_e72_o40_k5_s2_se24h_relu
    ds_r112_i16_e16_o16_k3_s1_se0_relu_skip
    head_r7_i160_e960_h1280_o1000_hswish

``r`` is the square input size the part sees, ``i``/``e``/``o`` its input, expanded
(depthwise) and output channels, ``k`` kernel, ``s`` stride, ``se<n>`` the squeeze width
(0 = no SE; suffix ``h`` for the hard-sigmoid MobileNetV3 style), then the activation and
``skip`` for a residual add. The head has ``e`` = its 1x1 conv width and ``h`` = the hidden
width of MobileNetV3's efficient last stage (0 for a classic head); ``o`` = classes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from nas.arch import ArchSpec, iter_layers
from nas.errors import NasError


@dataclass(frozen=True, order=True)
class LatencyKey:
    kind: str  # stem | conv | ds | ir | head
    hw: int
    cin: int
    exp: int
    cout: int
    kernel: int = 1
    stride: int = 1
    se: int = 0
    se_hard: bool = False
    act: str = "relu"
    residual: bool = False
    hidden: int = 0

    @property
    def out_hw(self) -> int:
        return -(-self.hw // self.stride)

    def __str__(self) -> str:
        if self.kind == "stem":
            return f"stem_r{self.hw}_i{self.cin}_o{self.cout}_k{self.kernel}_s{self.stride}_{self.act}"
        if self.kind == "head":
            return f"head_r{self.hw}_i{self.cin}_e{self.exp}_h{self.hidden}_o{self.cout}_{self.act}"
        se = f"se{self.se}{'h' if self.se_hard else ''}"
        text = f"{self.kind}_r{self.hw}_i{self.cin}_e{self.exp}_o{self.cout}_k{self.kernel}_s{self.stride}_{se}_{self.act}"
        return text + ("_skip" if self.residual else "")


_PATTERNS = {
    "stem": re.compile(r"stem_r(?P<hw>\d+)_i(?P<cin>\d+)_o(?P<cout>\d+)_k(?P<kernel>\d+)_s(?P<stride>\d+)_(?P<act>\w+?)"),
    "head": re.compile(r"head_r(?P<hw>\d+)_i(?P<cin>\d+)_e(?P<exp>\d+)_h(?P<hidden>\d+)_o(?P<cout>\d+)_(?P<act>\w+?)"),
    "block": re.compile(r"(?P<kind>conv|ds|ir)_r(?P<hw>\d+)_i(?P<cin>\d+)_e(?P<exp>\d+)_o(?P<cout>\d+)_k(?P<kernel>\d+)"
                        r"_s(?P<stride>\d+)_se(?P<se>\d+)(?P<se_hard>h?)_(?P<act>relu6|relu|hswish)(?P<residual>_skip)?"),
}


def parse_key(text: str) -> LatencyKey:
    """Inverse of ``str(key)``; a malformed key raises :class:`NasError`."""
    for kind, pattern in _PATTERNS.items():
        match = pattern.fullmatch(text)
        if match is None:
            continue
        values = match.groupdict()
        ints = {k: int(v) for k, v in values.items() if v is not None and v.isdigit()}
        if kind == "block":
            return LatencyKey(kind=values["kind"], act=values["act"], se_hard=values["se_hard"] == "h",
                              residual=values["residual"] is not None, **ints)
        if kind == "stem":
            return LatencyKey(kind="stem", exp=ints["cout"], act=values["act"], **ints)
        return LatencyKey(kind="head", act=values["act"], **ints)
    raise NasError(f"malformed latency key {text!r}")


def decompose(spec: ArchSpec, resolution: int = 224) -> list[LatencyKey]:
    """The keys of a network at a square input of ``resolution``, in execution order."""
    stem = spec.stem
    keys = [LatencyKey("stem", resolution, 3, stem.channels, stem.channels, stem.kernel, stem.stride, act=stem.act)]
    hw = keys[0].out_hw
    for _, in_ch, layer in iter_layers(spec):
        key = LatencyKey(layer.op, hw, in_ch, layer.exp, layer.out, layer.kernel, layer.stride,
                         layer.se_channels(in_ch), layer.has_se and layer.se_style == "v3", layer.act, layer.residual)
        keys.append(key)
        hw = key.out_hw
    head = spec.head
    keys.append(LatencyKey("head", hw, spec.last_channels(), head.channels, head.num_classes, act=head.act,
                           hidden=head.hidden))
    return keys
