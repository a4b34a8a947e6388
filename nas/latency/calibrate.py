"""From a sum of per-key times to a whole-network latency (``ms = scale * sum + offset``), and how
well predictions match measurements (:func:`accuracy`).

Per-key times are taken one block at a time; a whole network runs them back to back with its
own framework overhead (module dispatch, the pooling/flatten glue, allocator traffic) and its
own cache state. On the machines we measured, both effects are close to a constant per network
plus a proportional factor, so two numbers fitted on a handful of end-to-end measurements of
the same target close the gap (``python -m nas.latency validate`` checks it on networks the fit
never saw). The fit minimises *relative* error, the quantity the ±10 % criterion is about.

The file ``calibration.json`` beside the table records the fit and the networks it used.

>>> c = fit_calibration([10.0, 20.0, 40.0], [13.0, 23.0, 43.0])
>>> round(c.scale, 6), round(c.offset, 6)
(1.0, 3.0)
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from nas import rundir
from nas.errors import NasError

CALIBRATION_FILE = "calibration.json"


@dataclass(frozen=True)
class Calibration:
    """``ms = scale * sum_of_keys + offset``; ``networks`` records what it was fitted on."""

    scale: float = 1.0
    offset: float = 0.0
    networks: tuple[dict[str, Any], ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        if not (np.isfinite(self.scale) and np.isfinite(self.offset)) or self.scale <= 0:
            raise NasError(f"invalid calibration: scale {self.scale!r} must be > 0 and offset {self.offset!r} finite")

    def apply(self, sums: np.ndarray | float) -> np.ndarray | float:
        return self.scale * sums + self.offset

    def save(self, directory: Path) -> None:
        data = {"model": "ms = scale * sum_of_keys + offset", **asdict(self), "networks": list(self.networks)}
        rundir.write_json(Path(directory) / CALIBRATION_FILE, data)

    @classmethod
    def load(cls, directory: Path) -> Calibration | None:
        """The calibration stored in ``directory``, or None when there is none."""
        path = Path(directory) / CALIBRATION_FILE
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text())
            return cls(float(data["scale"]), float(data["offset"]), tuple(data.get("networks", ())))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            raise NasError(f"corrupt calibration {path}: {err}") from None


def fit_calibration(sums: Sequence[float], measured: Sequence[float], *,
                    networks: Sequence[dict[str, Any]] = ()) -> Calibration:
    """Least squares in relative error: minimise sum(((scale * s + offset) - m) / m) ** 2.

    One network fixes only the scale (offset 0). A fit that would give a non-positive scale
    (inconsistent data) is an error, not a silently clamped number.
    """
    s, m = np.asarray(sums, dtype=float), np.asarray(measured, dtype=float)
    if s.shape != m.shape or s.ndim != 1 or len(s) == 0:
        raise NasError("calibration needs as many sums as measurements, at least one")
    if not (np.all(np.isfinite(s)) and np.all(np.isfinite(m)) and np.all(s > 0) and np.all(m > 0)):
        raise NasError("calibration needs finite, positive sums and measurements")
    if len(s) == 1:
        return Calibration(float(m[0] / s[0]), 0.0, tuple(networks))
    design = np.stack([s / m, 1.0 / m], axis=1)
    (scale, offset), *_ = np.linalg.lstsq(design, np.ones_like(m), rcond=None)
    if scale <= 0:
        raise NasError(f"calibration fit gave scale {scale:.3g} <= 0: the whole-network measurements do not "
                       f"follow the per-key sums (too noisy? rerun on a quieter machine)")
    return Calibration(float(scale), float(offset), tuple(networks))


def accuracy(predicted: Sequence[float], measured: Sequence[float], *, tolerance: float = 0.10) -> dict[str, float]:
    """How well predictions match measurements: relative errors, share within ``tolerance``, Spearman.

    >>> accuracy([10.0, 22.0], [10.0, 20.0])["within"]
    1.0
    """
    p, m = np.asarray(predicted, dtype=float), np.asarray(measured, dtype=float)
    if p.shape != m.shape or p.ndim != 1 or len(p) == 0 or np.any(m <= 0):
        raise NasError("accuracy needs equally many predictions and positive measurements, at least one")
    error = np.abs(p - m) / m
    return {"n": float(len(p)), "mean_abs_rel_error": float(error.mean()),
            "median_abs_rel_error": float(np.median(error)), "max_abs_rel_error": float(error.max()),
            "within": float(np.mean(error <= tolerance + 1e-12)), "tolerance": tolerance,
            "spearman": spearman(p, m)}


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Rank correlation with average ranks for ties; NaN when either side is constant."""
    ra, rb = _ranks(np.asarray(a, dtype=float)), _ranks(np.asarray(b, dtype=float))
    if len(ra) < 2 or ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def _ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(len(values), dtype=float)
    for value in np.unique(values):  # ties share their mean rank
        tied = values == value
        ranks[tied] = ranks[tied].mean()
    return ranks
