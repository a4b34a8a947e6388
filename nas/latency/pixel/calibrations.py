"""The named whole-network calibrations of the pixel-cpu model.

Published Pixel 1 latencies come from benchmark runs of different TFLite builds that run the
same network at different speeds (MobileNetV2 1.0: 73.8 ms in the 2018 README tables, 64 ms in
the MobileNetV3 paper's run). A calibration fits the block model's scale to the rows of **one**
run; rows of two runs are never pooled into one fit. Each calibration ships its own
``coefficients.json`` + ``table.csv`` + ``meta.json``, and each of those files records the
calibration's name, so one calibration's files are refused under the other's name.

* ``mobilenetv3-paper`` (default): the comparison rows of Table 3 of *Searching for MobileNetV3*,
  measured in the same run as the paper's MobileNetV3 results, so a search prices candidates on
  the scale of the paper's own T and reward.
* ``readme-2018``: the MobileNetV2 rows of the tensorflow/models README (the model's first
  calibration); MnasNet-A1 rows of the MnasNet README held out.

This module is data only (no pandas, no matplotlib): every command line that takes ``--target``
imports it for ``--calibration``'s choices.
"""

from __future__ import annotations

from dataclasses import dataclass

from nas.errors import NasError

DEFAULT = "mobilenetv3-paper"


@dataclass(frozen=True)
class CalibrationSet:
    """Which published rows calibrate the model, which stay held out, and how many scales are fitted.

    ``scaled`` groups keep the anchor's shape and get one multiplier each; ``refit`` groups are
    fitted outright (see :func:`nas.latency.pixel.fit.calibrate`). ``unpriced`` maps a source row
    that cannot be priced to the reason.
    """

    name: str
    source: str
    calibrate_on: tuple[str, ...]
    scaled: tuple[str, ...]
    refit: tuple[str, ...]
    folder: str
    description: str
    proxyless_log_held_out: bool = False
    unpriced: tuple[tuple[str, str], ...] = ()


CALIBRATIONS: dict[str, CalibrationSet] = {
    "mobilenetv3-paper": CalibrationSet(
        name="mobilenetv3-paper",
        source="pixel1_mobilenetv3_paper.csv",
        calibrate_on=("mobilenet_v2", "proxylessnas_mobile"),
        # Three rows cannot pin four scales; the anchor has no weight or per-op cost, so only
        # the compute and the activation-traffic multipliers are fitted.
        scaled=("compute", "memory"),
        refit=(),
        folder="",
        description="MobileNetV3 paper (arXiv 1905.02244) Table 3, Pixel 1: MobileNetV2 1.0 and 0.35 and "
                    "ProxylessNAS-Mobile calibrate, MnasNet-A1 held out",
        unpriced=(("mnas_small", "the small MnasNet is not in the zoo: rebuilt from tensorflow/tpu's "
                                 "mnasnet_small it counts 68.3 M MAdds, not the published 65.1 M"),),
    ),
    "readme-2018": CalibrationSet(
        name="readme-2018",
        source="pixel1_published.csv",
        calibrate_on=("mobilenet_v2",),
        scaled=("compute", "memory"),
        refit=("weights", "fixed"),
        folder="readme-2018",
        description="tensorflow/models MobileNetV2 README rows (22), Pixel 1; MnasNet-A1 README rows and "
                    "ProxylessNAS-Mobile's own log held out",
        proxyless_log_held_out=True,
    ),
}


def get(name: str | None) -> CalibrationSet:
    """The calibration called ``name`` (None: the default)."""
    name = DEFAULT if name is None else name
    if name not in CALIBRATIONS:
        raise NasError(f"unknown pixel-cpu calibration {name!r}; known: {', '.join(CALIBRATIONS)}")
    return CALIBRATIONS[name]
