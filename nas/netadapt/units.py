"""Which widths of a network can shrink, and which must shrink together.

NetAdapt's per-network knowledge lives here, derived from the :class:`~nas.arch.ArchSpec`
alone, so one implementation prunes every network the builder can make.

A network's channel counts are *slots*: ``("stem", 0)``, ``("exp", i)`` and ``("out", i)`` for
layer ``i``, ``("se", i)`` for its squeeze width, ``("head", 0)`` and ``("hidden", 0)``. Some
slots are tied, because one tensor flows through them:

* a residual layer's output equals its input (so a run of residual layers forms a group);
* a ``ds`` layer, or an ``ir`` layer without an expansion conv (``exp == input``), filters its
  input depthwise, so its ``exp`` equals its input;
* a ``conv`` layer's ``exp`` is its output.

A :class:`Unit` is one class of tied slots: shrinking it changes every slot in it by the same
amount, which keeps residual adds valid. SE widths are not units: they follow from ``exp``
(MobileNetV3 style) or from the block input (MnasNet style).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from nas.arch import ArchSpec, iter_layers
from nas.blocks import block_expands

Slot = tuple[str, int]


@dataclass(frozen=True)
class Unit:
    """One prunable width: a class of tied slots, named for the history (``out[3-6]``, ``exp[4]``)."""

    name: str
    slots: tuple[Slot, ...]


def input_slot(index: int) -> Slot:
    return ("stem", 0) if index == 0 else ("out", index - 1)


def has_expand(spec: ArchSpec) -> tuple[bool, ...]:
    """Per layer: whether it has a 1x1 expansion conv. Pruning must keep this pattern."""
    return tuple(block_expands(layer, in_ch) for _, in_ch, layer in iter_layers(spec))


def slot_widths(spec: ArchSpec) -> dict[Slot, int]:
    """Every slot's width, in network order."""
    widths: dict[Slot, int] = {("stem", 0): spec.stem.channels}
    for i, in_ch, layer in iter_layers(spec):
        widths[("exp", i)] = layer.exp
        widths[("se", i)] = layer.se_channels(in_ch)
        widths[("out", i)] = layer.out
    widths[("head", 0)] = spec.head.channels
    if spec.head.efficient:
        widths[("hidden", 0)] = spec.head.hidden
    return widths


def slot_classes(spec: ArchSpec) -> list[tuple[Slot, ...]]:
    """Classes of tied slots (SE slots each alone), in order of their first slot."""
    parent: dict[Slot, Slot] = {slot: slot for slot in slot_widths(spec)}

    def find(slot: Slot) -> Slot:
        while parent[slot] != slot:
            parent[slot] = parent[parent[slot]]
            slot = parent[slot]
        return slot

    def tie(a: Slot, b: Slot) -> None:
        parent[find(b)] = find(a)

    expands = has_expand(spec)
    for i, _, layer in iter_layers(spec):
        if layer.op == "conv":
            tie(("out", i), ("exp", i))
        elif not expands[i]:
            tie(input_slot(i), ("exp", i))
        if layer.residual:
            tie(input_slot(i), ("out", i))
    classes: dict[Slot, list[Slot]] = {}
    for slot in parent:
        classes.setdefault(find(slot), []).append(slot)
    return [tuple(members) for members in classes.values()]


def _ranges(indices: list[int]) -> str:
    parts, start = [], indices[0]
    for prev, cur in zip(indices, indices[1:] + [None]):
        if cur != prev + 1:
            parts.append(str(start) if start == prev else f"{start}-{prev}")
            start = cur
    return ",".join(parts)


def _name(slots: tuple[Slot, ...]) -> str:
    kinds = {kind for kind, _ in slots}
    parts = [kind for kind in ("stem", "head", "hidden") if kind in kinds]
    outs = [i for kind, i in slots if kind == "out"]
    if outs:
        parts.append(f"out[{_ranges(outs)}]")
    if not parts:
        parts.append(f"exp[{_ranges([i for _, i in slots])}]")
    return "+".join(parts)


def units(spec: ArchSpec) -> list[Unit]:
    """Every prunable width of the network, in network order."""
    return [Unit(_name(members), members) for members in slot_classes(spec) if members[0][0] != "se"]


def unit_width(spec: ArchSpec, unit: Unit) -> int:
    return slot_widths(spec)[unit.slots[0]]


def with_width(spec: ArchSpec, unit: Unit, width: int) -> ArchSpec:
    """The spec with every slot of ``unit`` set to ``width`` (validated by ``ArchSpec``)."""
    slots = set(unit.slots)
    stem = replace(spec.stem, channels=width) if ("stem", 0) in slots else spec.stem
    layers = tuple(
        replace(layer,
                exp=width if ("exp", i) in slots else layer.exp,
                out=width if ("out", i) in slots else layer.out)
        for i, layer in enumerate(spec.layers)
    )
    head = replace(spec.head,
                   channels=width if ("head", 0) in slots else spec.head.channels,
                   hidden=width if ("hidden", 0) in slots else spec.head.hidden)
    return ArchSpec(stem=stem, layers=layers, head=head)


def layer_widths(spec: ArchSpec) -> dict[str, int]:
    """Flat ``{"stem": 16, "exp[0]": 16, "out[0]": 16, ..., "head": 960}`` for tables."""
    return {f"{kind}[{i}]" if kind in ("exp", "out") else kind: width
            for (kind, i), width in slot_widths(spec).items() if kind != "se"}
