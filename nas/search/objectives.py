"""What a search optimises: MnasNet's latency-aware reward, or accuracy and latency as two objectives.

MnasNet (Tan et al. 2019, eq. 2) folds latency into one scalar::

    reward = ACC(m) * (LAT(m) / T) ** w,   w = alpha if LAT(m) <= T else beta

``alpha = beta = -0.07`` is a *soft* constraint (a network twice as fast as ``T`` may cost about
5 % relative accuracy and still tie), used for MnasNet and MobileNetV3-Large; MobileNetV3-Small
used ``w = -0.15`` because accuracy moves more steeply with latency for small models; ``alpha = 0,
beta = -1`` is the *hard* constraint: no bonus below ``T``, a steep penalty above it.

The *pareto* mode gives the controller both values (accuracy maximised, latency minimised) so a
multi-objective sampler returns a front instead of one point for one ``T``.

Pure functions of floats or numpy arrays; nothing here imports torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from nas.errors import NasError

PRESETS: dict[str, tuple[float, float]] = {
    "soft": (-0.07, -0.07),
    "small": (-0.15, -0.15),
    "hard": (0.0, -1.0),
}
MODES = ("reward", "pareto")


def mnas_reward(accuracy, latency_ms, *, target_ms: float, alpha: float = -0.07, beta: float = -0.07):
    """``accuracy * (latency / target) ** w`` with ``w = alpha`` at or under the target, else ``beta``.

    Works elementwise on numpy arrays; a float in gives a float out.

    >>> round(mnas_reward(0.75, 80.0, target_ms=80.0), 6)
    0.75
    >>> mnas_reward(0.75, 160.0, target_ms=80.0, alpha=0.0, beta=-1.0)
    0.375
    """
    _check_target(target_ms)
    acc = np.asarray(accuracy, dtype=float)
    lat = np.asarray(latency_ms, dtype=float)
    if np.any(lat <= 0):
        raise NasError(f"latency must be positive to compute a reward, got {latency_ms!r}")
    ratio = lat / target_ms
    reward = acc * ratio ** np.where(ratio <= 1.0, alpha, beta)
    return float(reward) if reward.ndim == 0 else reward


def _check_target(target_ms: float) -> None:
    if not (isinstance(target_ms, (int, float)) and math.isfinite(target_ms) and target_ms > 0):
        raise NasError(f"latency target must be a positive number of milliseconds, got {target_ms!r}")


@dataclass(frozen=True)
class Objective:
    """The search's goal: ``mode`` "reward" (one scalar) or "pareto" (accuracy, latency).

    The reward is computed in both modes: it ranks ``best.json`` and the progress line.

    >>> Objective.preset("hard", target_ms=50.0).values(0.8, 40.0)
    (0.8,)
    >>> Objective.preset("soft", target_ms=50.0, mode="pareto").values(0.8, 40.0)
    (0.8, 40.0)
    """

    target_ms: float
    alpha: float = -0.07
    beta: float = -0.07
    mode: str = "reward"

    def __post_init__(self) -> None:
        _check_target(self.target_ms)
        if self.mode not in MODES:
            raise NasError(f"unknown objective mode {self.mode!r}; known: {', '.join(MODES)}")
        for name in ("alpha", "beta"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value <= 0):
                raise NasError(f"{name} must be a finite number <= 0 (a latency penalty), got {value!r}")

    @classmethod
    def preset(cls, name: str, *, target_ms: float, mode: str = "reward") -> Objective:
        if name not in PRESETS:
            raise NasError(f"unknown reward preset {name!r}; known: {', '.join(PRESETS)}")
        alpha, beta = PRESETS[name]
        return cls(target_ms=target_ms, alpha=alpha, beta=beta, mode=mode)

    @property
    def directions(self) -> tuple[str, ...]:
        """Optuna's study directions for :meth:`values`."""
        return ("maximize",) if self.mode == "reward" else ("maximize", "minimize")

    def reward(self, accuracy: float, latency_ms: float) -> float:
        return mnas_reward(accuracy, latency_ms, target_ms=self.target_ms, alpha=self.alpha, beta=self.beta)

    def values(self, accuracy: float, latency_ms: float) -> tuple[float, ...]:
        """What the controller is told for one trial."""
        if self.mode == "reward":
            return (self.reward(accuracy, latency_ms),)
        return (float(accuracy), float(latency_ms))
