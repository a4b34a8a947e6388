"""Pick one fine-tuned proposal per NetAdapt iteration.

``slope`` (MobileNetV3): the largest accuracy change per millisecond saved,
``(acc - parent_acc) / |parent_ms - ms|``, so a proposal that cuts more latency may lose a
little more accuracy. ``accuracy`` (original NetAdapt): the highest accuracy. Ties go to the
proposal that cuts more latency, then to the earlier one.
"""

from __future__ import annotations

from dataclasses import dataclass

from nas.errors import NasError

RULES = ("slope", "accuracy")


@dataclass(frozen=True)
class Outcome:
    """A fine-tuned proposal: its predicted latency and held-out accuracy."""

    latency_ms: float
    accuracy: float


def slope(outcome: Outcome, *, parent: Outcome) -> float:
    """Accuracy gained per millisecond saved (negative when accuracy drops)."""
    saved = abs(parent.latency_ms - outcome.latency_ms)
    if saved == 0:
        raise NasError("a proposal did not change the latency; its slope is undefined")
    return (outcome.accuracy - parent.accuracy) / saved


def select(outcomes: list[Outcome], *, parent: Outcome, rule: str = "slope") -> int:
    """Index of the chosen outcome."""
    if rule not in RULES:
        raise NasError(f"unknown selection rule {rule!r}; choose from {', '.join(RULES)}")
    if not outcomes:
        raise NasError("no proposals to select from")

    def score(index: int) -> tuple[float, float, int]:
        outcome = outcomes[index]
        value = slope(outcome, parent=parent) if rule == "slope" else outcome.accuracy
        return value, -outcome.latency_ms, -index

    return max(range(len(outcomes)), key=score)
