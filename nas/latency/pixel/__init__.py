"""The pixel-cpu target: a Pixel 1 latency model fitted to public phone measurements.

* :mod:`.model`: :class:`PixelCostModel`, a key priced as a sum over its TFLite primitives;
* :mod:`.calibrations`: the named whole-network calibrations (one benchmark run each);
* :mod:`.sources`: readers for the copied measurements (``latency_tables/pixel-cpu/sources``);
* :mod:`.fit`: anchor fit, calibration on one run's rows, h-swish and SE from nn-Meter's Pixel 1 blocks;
* :mod:`.materialize`: each calibration's shipped ``table.csv`` + ``meta.json``;
* :mod:`.validate`: each calibration against its run's published rows, beside the MAdds baseline,
  and the MobileNetV3 / -minimalistic ratios.

``python -m nas.latency.pixel fit | table | validate | sources [--calibration NAME]`` runs each step.
"""

from __future__ import annotations

from nas.latency.pixel.model import PixelCostModel, primitives

__all__ = ["PixelCostModel", "primitives"]
