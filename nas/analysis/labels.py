"""Where to put text labels along one axis so that none overlaps the next: pure numpy, no drawing.

Reference networks often sit a millisecond apart (MnasNet-A1 and -B1 on pixel-cpu), and their
labels, drawn at their latency, print over each other. :func:`spread_labels` moves each label the
least it can (in the least-squares sense) so that neighbours are at least one label height apart,
keeping their order, which a renderer then draws with a short offset from the point it names.

Example::

    >>> spread_labels([10.0, 11.0, 30.0], gap=4.0).tolist()
    [8.5, 12.5, 30.0]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from nas.errors import NasError


def _nondecreasing_fit(values: np.ndarray) -> np.ndarray:
    """Least-squares nondecreasing sequence closest to ``values`` (pool adjacent violators)."""
    means: list[float] = []
    counts: list[int] = []
    for value in values:
        means.append(float(value))
        counts.append(1)
        while len(means) > 1 and means[-2] > means[-1]:
            count = counts[-2] + counts[-1]
            means[-2] = (means[-2] * counts[-2] + means[-1] * counts[-1]) / count
            counts[-2] = count
            del means[-1], counts[-1]
    return np.repeat(means, counts)


def spread_labels(positions: Sequence[float], *, gap: float, low: float = -np.inf,
                  high: float = np.inf) -> np.ndarray:
    """Label positions, in the order given, at least ``gap`` apart and as close as possible to ``positions``.

    Labels keep the order of their positions (ties keep input order). With ``low``/``high`` the
    labels also stay inside that range where they fit in it; where they cannot (``n * gap`` wider
    than the range), they start at ``low``. Minimises the sum of squared moves: subtracting
    ``i * gap`` from the i-th sorted label turns "``gap`` apart" into "nondecreasing", an isotonic
    regression, and with a range the optimum is that regression clipped into it.
    """
    x = np.asarray(positions, dtype=float)
    if x.ndim != 1 or not np.isfinite(x).all():
        raise NasError("label positions must be a flat sequence of finite numbers")
    if not gap >= 0:
        raise NasError(f"label gap must be a number >= 0, got {gap}")
    if x.size == 0:
        return x
    order = np.argsort(x, kind="stable")
    steps = gap * np.arange(x.size)
    fitted = _nondecreasing_fit(x[order] - steps)
    fitted = np.clip(fitted, None, high - steps[-1])
    fitted = np.clip(fitted, low, None)
    placed = np.empty_like(x)
    placed[order] = fitted + steps
    return placed
