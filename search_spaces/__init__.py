"""Search spaces: named sets of architectures addressed by flat vectors of categorical choices.

``get_space("mnasnet")`` is the MnasNet factorized hierarchical space (MnasNet-A1 and -B1 are
exact members); ``get_space("mobilenetv3")`` adds MobileNetV3's choices (MobileNetV3-Large and
-Small are members up to their expanded widths). See each module's docstring for the tables.
``mnasnet-shared`` and ``mobilenetv3-shared`` are their sub-spaces for weight-sharing search
(:func:`~search_spaces.factorized.weight_sharing_space`): MBConv ops and identity skips only;
``mobilenetv3-large-shared`` and ``mobilenetv3-small-shared`` hold one skeleton each.
"""

from __future__ import annotations

from functools import partial
from typing import Callable

from nas.errors import NasError
from search_spaces.factorized import (BlockOptions, FactorizedSpace, HeadOptions, Stage, StemOptions,
                                     weight_sharing_space)
from search_spaces.mnasnet import mnasnet_space
from search_spaces.mobilenetv3 import mobilenetv3_space
from search_spaces.space import Choice, NotInSpaceError, SearchSpace


def _shared(make: Callable[..., FactorizedSpace], *, skeleton: str | None = None,
            num_classes: int = 1000) -> FactorizedSpace:
    return weight_sharing_space(make(num_classes=num_classes), skeleton=skeleton)


SPACES: dict[str, Callable[..., SearchSpace]] = {
    "mnasnet": mnasnet_space,
    "mobilenetv3": mobilenetv3_space,
    "mnasnet-shared": partial(_shared, mnasnet_space),
    "mobilenetv3-shared": partial(_shared, mobilenetv3_space),
    "mobilenetv3-large-shared": partial(_shared, mobilenetv3_space, skeleton="large"),
    "mobilenetv3-small-shared": partial(_shared, mobilenetv3_space, skeleton="small"),
}


def get_space(name: str, *, num_classes: int = 1000) -> SearchSpace:
    """The search space called ``name``; its networks classify into ``num_classes``."""
    if name not in SPACES:
        raise NasError(f"unknown search space {name!r}; known: {', '.join(SPACES)}")
    return SPACES[name](num_classes=num_classes)


__all__ = [
    "SPACES", "BlockOptions", "Choice", "FactorizedSpace", "HeadOptions", "NotInSpaceError", "SearchSpace",
    "Stage", "StemOptions", "get_space", "mnasnet_space", "mobilenetv3_space", "weight_sharing_space",
]
