"""The zoo's published networks as reference points on a target's latency axis.

A search result means little without the hand-designed and earlier-searched networks priced by
the same latency model beside it; this prices them once so every plot and notebook agrees.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from nas import zoo
from nas.errors import NasError

DEFAULT_REFERENCES: tuple[str, ...] = (
    "mobilenet_v3_large", "mobilenet_v3_small", "mnasnet_a1", "mnasnet_b1", "mobilenet_v2",
)


def reference_latencies(target: str, names: Sequence[str] = DEFAULT_REFERENCES, resolution: int = 224, *,
                        latency_model=None) -> pd.DataFrame:
    """Predicted latency of each named zoo network on ``target``: columns name, latency_ms, source.

    ``latency_model`` (a ``LatencyModel`` for the same target) skips loading it again; otherwise
    ``nas.latency.predict.get_latency_model(target)`` is used, imported only here so the pure
    analysis code does not pull in the latency layer.

    >>> table = reference_latencies("pixel-cpu", ["mobilenet_v3_large", "mnasnet_a1"])  # doctest: +SKIP
    """
    if latency_model is None:
        from nas.latency.predict import get_latency_model

        latency_model = get_latency_model(target)
    elif latency_model.target != target:
        raise NasError(f"latency model is for {latency_model.target!r}, not {target!r}")
    records = []
    for name in names:
        prediction = latency_model.predict(zoo.get(name), resolution)
        records.append({"name": name, "latency_ms": float(prediction.ms), "source": prediction.source})
    return pd.DataFrame.from_records(records, columns=["name", "latency_ms", "source"])
