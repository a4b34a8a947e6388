"""One NetAdapt step's proposals: shrink each unit just enough to cut the latency budget.

For every prunable :class:`~nas.netadapt.units.Unit` the proposal is the *largest* width (a
multiple of ``divisor``) whose predicted latency is at least ``reduction_ms`` below the
current network's. Widths are searched by bisection, so a unit costs about log2(width/8)
predictions; latency is assumed to grow with width, and the chosen width is always one
that was predicted to meet the cut.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from nas.arch import ArchSpec, iter_layers
from nas.errors import NasError
from nas.netadapt.units import Unit, has_expand, input_slot, unit_width, units, with_width

LatencyFn = Callable[[ArchSpec], float]


@dataclass(frozen=True)
class Proposal:
    """A child network: ``unit`` shrunk from ``old_width`` to ``width``."""

    unit: Unit
    old_width: int
    width: int
    spec: ArchSpec
    latency_ms: float


def reduction_ms(seed_ms: float, *, ratio: float, decay: float, iteration: int) -> float:
    """NetAdapt's schedule: ``ratio * seed_ms`` at iteration 1, times ``decay`` each later one.

    ``decay = 1`` is MobileNetV3's constant step (delta = 0.01 |L| with ``ratio = 0.01``).
    """
    if not ratio > 0:
        raise NasError(f"delta ratio must be positive, got {ratio}")
    if not 0 < decay <= 1:
        raise NasError(f"delta decay must lie in (0, 1], got {decay}")
    if iteration < 1:
        raise NasError(f"iterations count from 1, got {iteration}")
    return ratio * abs(seed_ms) * decay ** (iteration - 1)


def candidate_widths(spec: ArchSpec, unit: Unit, *, divisor: int = 8) -> list[int]:
    """Smaller multiples of ``divisor`` that keep every block's structure, ascending.

    A width that would make an ``ir`` layer's expansion equal its input is left out: the
    builder would drop that expansion conv, and its weights could not be inherited.
    """
    slots, forbidden = set(unit.slots), set()
    for (i, in_ch, layer), expands in zip(iter_layers(spec), has_expand(spec)):
        if expands and input_slot(i) in slots:
            forbidden.add(layer.exp)
        elif expands and ("exp", i) in slots:
            forbidden.add(in_ch)
    return [width for width in range(divisor, unit_width(spec, unit), divisor) if width not in forbidden]


def shrink(spec: ArchSpec, unit: Unit, *, latency: LatencyFn, budget_ms: float,
           divisor: int = 8) -> Proposal | None:
    """The largest allowed width of ``unit`` whose network fits ``budget_ms``; None if none does."""
    widths = candidate_widths(spec, unit, divisor=divisor)
    if not widths:
        return None
    predicted: dict[int, float] = {}

    def fits(index: int) -> bool:
        width = widths[index]
        predicted[width] = latency(with_width(spec, unit, width))
        return predicted[width] <= budget_ms

    if not fits(0):
        return None
    low, high = 0, len(widths)  # widths[low] fits; widths[high] (the current width) does not
    while high - low > 1:
        mid = (low + high) // 2
        if fits(mid):
            low = mid
        else:
            high = mid
    width = widths[low]
    return Proposal(unit, unit_width(spec, unit), width, with_width(spec, unit, width), predicted[width])


def propose(spec: ArchSpec, *, latency: LatencyFn, reduction: float, divisor: int = 8,
            current_ms: float | None = None) -> list[Proposal]:
    """One proposal per unit that can cut ``reduction`` ms from ``spec`` (units that cannot are left out)."""
    if not reduction > 0:
        raise NasError(f"the latency reduction must be positive, got {reduction}")
    current = latency(spec) if current_ms is None else current_ms
    found = (shrink(spec, unit, latency=latency, budget_ms=current - reduction, divisor=divisor)
             for unit in units(spec))
    return [proposal for proposal in found if proposal is not None]


class CachedLatency:
    """Memoise a latency function: bisection and resumed runs ask for the same specs again."""

    def __init__(self, latency: LatencyFn) -> None:
        self._latency = latency
        self._cache: dict[ArchSpec, float] = {}

    def __call__(self, spec: ArchSpec) -> float:
        if spec not in self._cache:
            value = float(self._latency(spec))
            if value != value or value in (float("inf"), float("-inf")):
                raise NasError(f"latency model returned {value} for {spec}")
            self._cache[spec] = value
        return self._cache[spec]
