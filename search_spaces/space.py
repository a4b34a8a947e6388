"""What every search space offers: named categorical choices and a flat index vector.

A controller (RL, Optuna, random) never sees layers: it sees ``choices()``, a fixed list of
:class:`Choice` in traversal order, and proposes one option index per choice. ``decode`` turns
that vector into an :class:`~nas.arch.ArchSpec`; ``encode`` reads a spec back into a vector, so
published networks can be placed in the space and searches can be seeded or resumed from specs.

Several vectors may name the same network (a choice can have no effect, e.g. the skip choice of
a block whose only layer has stride 2). ``encode`` then returns one canonical vector, and
``decode(encode(spec)) == spec`` for every member; ``size()`` counts vectors, not networks.

Example::

    >>> import numpy as np
    >>> from search_spaces import get_space
    >>> space = get_space("mnasnet")
    >>> spec = space.sample(np.random.default_rng(0))
    >>> space.decode(space.encode(spec)) == spec
    True
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from nas.arch import ArchSpec
from nas.errors import NasError, SpecError


class NotInSpaceError(NasError):
    """A spec that the space cannot produce; the message says which part does not fit."""


@dataclass(frozen=True)
class Choice:
    """One categorical decision: a dotted name (``block3.kernel``) and its options in index order."""

    name: str
    options: tuple

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", tuple(self.options))
        if not self.options:
            raise NasError(f"{self.name}: a choice needs at least one option")
        if len(set(self.options)) != len(self.options):
            raise NasError(f"{self.name}: options repeat: {self.options}")

    def option(self, index: Any) -> Any:
        """The option at ``index``; a bad index is a :class:`SpecError` naming this choice."""
        if isinstance(index, (bool, np.bool_)) or not isinstance(index, (int, np.integer)):
            raise SpecError(f"{self.name}: index must be an integer, got {index!r}")
        if not 0 <= index < len(self.options):
            raise SpecError(f"{self.name}: index {index} out of range 0..{len(self.options) - 1} "
                            f"(options {self.options})")
        return self.options[index]


class SearchSpace(ABC):
    """A space of architectures addressed by a flat vector of option indices."""

    name: str

    @abstractmethod
    def choices(self) -> list[Choice]:
        """The choices in traversal order; the vector holds one index per entry."""

    @abstractmethod
    def encode(self, spec: ArchSpec, *, ignore_expansion: bool = False) -> list[int]:
        """The canonical vector of ``spec``; :class:`NotInSpaceError` if the space cannot build it.

        With ``ignore_expansion`` the expanded (depthwise) widths of ``spec`` may differ from the
        space's: NetAdapt sets those freely after the search, so such a network still comes from
        the space. The vector then decodes to :meth:`project` of ``spec``.
        """

    @abstractmethod
    def _build(self, values: Mapping[str, Any]) -> ArchSpec:
        """The network for one chosen option per choice (``values``: choice name -> option)."""

    def decode(self, vector: Sequence[int]) -> ArchSpec:
        """The network a vector names; a wrong length or index is a :class:`SpecError`."""
        choices = self.choices()
        if len(vector) != len(choices):
            raise SpecError(f"{self.name} vector: expected {len(choices)} indices, got {len(vector)}")
        return self._build({choice.name: choice.option(index) for choice, index in zip(choices, vector)})

    def sample(self, rng: np.random.Generator) -> ArchSpec:
        """A network with every choice drawn uniformly and independently."""
        return self.decode([int(rng.integers(len(choice.options))) for choice in self.choices()])

    def size(self) -> int:
        """Number of distinct vectors (exact): the product of the option counts."""
        return math.prod(len(choice.options) for choice in self.choices())

    def contains(self, spec: ArchSpec, *, ignore_expansion: bool = False) -> bool:
        """Whether the space builds ``spec`` (up to expanded widths with ``ignore_expansion``)."""
        try:
            self.encode(spec, ignore_expansion=ignore_expansion)
        except NotInSpaceError:
            return False
        return True

    def project(self, spec: ArchSpec) -> ArchSpec:
        """The member equal to ``spec`` except for its expanded widths, which take the space's values."""
        return self.decode(self.encode(spec, ignore_expansion=True))

    def why_not(self, spec: ArchSpec, *, ignore_expansion: bool = False) -> str | None:
        """Why ``spec`` is not a member (one line), or None when it is."""
        try:
            self.encode(spec, ignore_expansion=ignore_expansion)
        except NotInSpaceError as err:
            return str(err)
        return None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}: {len(self.choices())} choices, {self.size():.3g} vectors>"
