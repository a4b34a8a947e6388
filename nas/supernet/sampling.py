"""Which children a supernet training step runs.

* ``uniform``: one child per step, every choice drawn uniformly (single-path training as in
  TuNAS's and SPOS's weight-sharing phase, without TuNAS's learned controller).
* ``sandwich``: the largest child, the smallest child and ``random`` uniform children of one
  skeleton per step, the others distilled from the largest's predictions (BigNAS / once-for-all
  "sandwich rule with in-place distillation").

The largest (smallest) child takes the largest (smallest) option of every choice that sizes the
network: op (the widest MBConv; ``ds`` is the smallest), kernel, SE, filters, layers, stem
channels and head width. Choices that do not size it (activation, skip, head kind) are drawn at
random, so the sandwich's ends still see every activation and head.
"""

from __future__ import annotations

import numpy as np

from nas.arch import ArchSpec
from nas.errors import NasError
from search_spaces import FactorizedSpace
from search_spaces.factorized import layer_op

RULES = ("uniform", "sandwich")
_SIZED = (".kernel", ".se", ".filters", ".layers", "stem.channels", "head.width")


def _op_size(op: str) -> float:
    """Only the ends are used: ``ds`` is the smallest op, the widest MBConv the largest."""
    kind, ratio = layer_op(op)
    return {"ds": 0.0, "conv": 0.5}.get(kind, float(ratio or 0))


def _vector(space: FactorizedSpace, rng: np.random.Generator, skeleton: str | None) -> list[int]:
    vector = []
    for choice in space.choices():
        if choice.name == "skeleton" and skeleton is not None:
            vector.append(choice.options.index(skeleton))
        else:
            vector.append(int(rng.integers(len(choice.options))))
    return vector


def random_child(space: FactorizedSpace, rng: np.random.Generator, *, skeleton: str | None = None) -> ArchSpec:
    """A uniform draw of the space (of one skeleton when ``skeleton`` is given)."""
    return space.decode(_vector(space, rng, skeleton))


def extreme_child(space: FactorizedSpace, rng: np.random.Generator, *, largest: bool,
                  skeleton: str | None = None) -> ArchSpec:
    """The largest (or smallest) child of a skeleton; unsized choices are drawn from ``rng``."""
    pick = max if largest else min
    vector = _vector(space, rng, skeleton)
    for k, choice in enumerate(space.choices()):
        if choice.name.endswith(".op"):
            vector[k] = choice.options.index(pick(choice.options, key=_op_size))
        elif choice.name.endswith(_SIZED):
            vector[k] = choice.options.index(pick(choice.options))
    return space.decode(vector)


def step_children(space: FactorizedSpace, rng: np.random.Generator, *, rule: str,
                  random: int = 2) -> list[ArchSpec]:
    """The children of one training step; with ``sandwich`` the first is the teacher (largest)."""
    if rule == "uniform":
        return [random_child(space, rng)]
    if rule == "sandwich":
        skeleton = list(space.skeletons)[int(rng.integers(len(space.skeletons)))]
        return [extreme_child(space, rng, largest=True, skeleton=skeleton),
                extreme_child(space, rng, largest=False, skeleton=skeleton),
                *(random_child(space, rng, skeleton=skeleton) for _ in range(random))]
    raise NasError(f"unknown sampling rule {rule!r}; known: {', '.join(RULES)}")
