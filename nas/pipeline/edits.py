"""The MobileNetV3 paper's manual changes to its searched seed, as named pure ArchSpec -> ArchSpec edits.

Section 5 of Howard et al. (2019) changes the network found by search by hand:

* ``hswish_late``: h-swish instead of ReLU from the first stage at output stride 16 on (the
  cost of a non-linearity falls as the resolution shrinks, and most of the gain is there);
* ``efficient_last_stage``: the last 1x1 expansion moves past the average pooling (MobileNetV3's
  efficient head: pool, then a 1x1 ``hidden`` layer at 1x1 resolution), so the final stride-1
  block whose projection only fed that layer is dropped; its expanded width becomes the pre-pool
  conv;
* ``stem_16``: 16 filters with h-swish in the stem instead of 32 with ReLU; the first block's
  expansion keeps its ratio to the (now halved) input.

Each edit returns a new, validated spec and changes nothing it does not name.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

from nas.arch import ArchSpec, make_divisible
from nas.errors import NasError

Edit = Callable[[ArchSpec], ArchSpec]


def output_strides(spec: ArchSpec) -> list[int]:
    """The output stride after every layer (the stem's stride included)."""
    strides, current = [], spec.stem.stride
    for layer in spec.layers:
        current *= layer.stride
        strides.append(current)
    return strides


def hswish_late(spec: ArchSpec) -> ArchSpec:
    """h-swish in every layer at output stride >= 16 and in the head; earlier layers are untouched."""
    layers = tuple(replace(layer, act="hswish") if stride >= 16 else layer
                   for layer, stride in zip(spec.layers, output_strides(spec)))
    return replace(spec, layers=layers, head=replace(spec.head, act="hswish"))


def efficient_last_stage(spec: ArchSpec) -> ArchSpec:
    """Pool before the wide layer: the head becomes ``1x1 conv (expanded) -> pool -> 1x1 hidden``.

    A final stride-1 inverted residual is removed and its expanded width becomes the head's
    pre-pool conv; otherwise the pre-pool conv is six times the last width (MobileNetV3's ratio),
    at most the old head's width: the edit exists to make the last stage cheaper, and a seed
    ending in a wide regular conv (400 -> 2400) would otherwise get a wider layer at 7x7. The old
    head's wide layer (1280) becomes the hidden layer after pooling.
    """
    if spec.head.efficient:
        raise NasError("efficient_last_stage: the head is already MobileNetV3's efficient last stage")
    layers = spec.layers
    last = layers[-1]
    if last.op == "ir" and last.stride == 1 and len(layers) > 1:
        channels, layers = last.exp, layers[:-1]
    else:
        channels = min(make_divisible(6 * last.out, 8), spec.head.channels)
    head = replace(spec.head, channels=channels, hidden=spec.head.channels, act="hswish")
    return replace(spec, layers=layers, head=head)


def stem_16(spec: ArchSpec) -> ArchSpec:
    """A 16-filter h-swish stem; the first layer's input-dependent width follows (see module doc)."""
    old, new = spec.stem.channels, 16
    first = spec.layers[0]
    if first.op == "ds":
        first = replace(first, exp=new)
    elif first.op == "ir":
        first = replace(first, exp=make_divisible(first.exp * new / old, 8))
    first = replace(first, residual=first.residual and first.out == new)
    return replace(spec, stem=replace(spec.stem, channels=new, act="hswish"), layers=(first, *spec.layers[1:]))


EDITS: dict[str, Edit] = {
    "hswish_late": hswish_late,
    "efficient_last_stage": efficient_last_stage,
    "stem_16": stem_16,
}


def get_edit(name: str) -> Edit:
    if name not in EDITS:
        raise NasError(f"unknown manual edit {name!r}; known: {', '.join(EDITS)}")
    return EDITS[name]


def apply_edits(spec: ArchSpec, names: tuple[str, ...]) -> list[tuple[str, ArchSpec]]:
    """Every intermediate spec: ``[("seed", spec), (name, edited), ...]``."""
    steps = [("seed", spec)]
    for name in names:
        steps.append((name, get_edit(name)(steps[-1][1])))
    return steps
