"""Architecture specs: ``ArchSpec`` and its parts, validation and the string/JSON codecs."""

from nas.arch.spec import (
    ACTIVATIONS,
    KERNELS,
    OPS,
    SE_STYLES,
    STRIDES,
    ArchSpec,
    HeadSpec,
    LayerSpec,
    StemSpec,
    iter_layers,
    make_divisible,
    parse,
    validate,
)
from nas.errors import SpecError

__all__ = [
    "ACTIVATIONS", "KERNELS", "OPS", "SE_STYLES", "STRIDES", "ArchSpec", "HeadSpec", "LayerSpec",
    "SpecError", "StemSpec", "iter_layers", "make_divisible", "parse", "validate",
]
