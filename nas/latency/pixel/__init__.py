"""The pixel-cpu target: a Pixel 1 latency model fitted to public phone measurements.

* :mod:`.model`: :class:`PixelCostModel`, a key priced as a sum over its TFLite primitives;
* :mod:`.sources`: readers for the copied measurements (``latency_tables/pixel-cpu/sources``);
* :mod:`.fit`: anchor fit, MobileNetV2-only calibration, SE and h-swish as relative effects;
* :mod:`.materialize`: the shipped ``table.csv`` + ``meta.json``;
* :mod:`.validate`: published whole-network rows, model beside the MAdds baseline.

``python -m nas.latency.pixel fit | table | validate | sources`` runs each step.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas.latency.pixel.model import PixelCostModel, primitives

if TYPE_CHECKING:
    import pandas as pd


def validate_published(out_dir: Path, **options: Any) -> pd.DataFrame:
    """See :func:`nas.latency.pixel.validate.validate_published` (imported on use: it loads matplotlib)."""
    from nas.latency.pixel.validate import validate_published as _validate

    return _validate(out_dir, **options)


def format_validation(rows: pd.DataFrame) -> str:
    """See :func:`nas.latency.pixel.validate.format_validation`."""
    from nas.latency.pixel.validate import format_validation as _format

    return _format(rows)


__all__ = ["PixelCostModel", "format_validation", "primitives", "validate_published"]
