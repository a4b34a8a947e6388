"""Pareto fronts and hypervolume of search results: pure numpy/pandas, no torch.

Every function takes the objectives with their senses ("max" or "min") so that one code path
serves accuracy-vs-latency, reward-vs-MAdds or any other pair. Internally every objective is
turned into one to minimise (a "max" column is negated), which is the only place senses matter.

Example::

    >>> import pandas as pd
    >>> trials = pd.DataFrame({"arch": ["a", "b", "c"], "accuracy": [0.7, 0.6, 0.8],
    ...                        "latency_ms": [10.0, 12.0, 15.0]})
    >>> pareto_front(trials)["arch"].tolist()
    ['a', 'c']
    >>> round(hypervolume(trials, reference={"accuracy": 0.0, "latency_ms": 20.0}), 6)
    7.5
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from nas.errors import NasError
from nas.search.records import Status

ACCURACY_LATENCY: dict[str, str] = {"accuracy": "max", "latency_ms": "min"}
SENSES = ("max", "min")

_CHUNK = 256  # rows per block of the dominance matrix, bounds memory to CHUNK * n * m


def _signs(senses: Sequence[str]) -> np.ndarray:
    """+1 for an objective to minimise, -1 for one to maximise."""
    bad = [s for s in senses if s not in SENSES]
    if bad:
        raise NasError(f"objective sense must be 'max' or 'min', got {bad[0]!r}")
    return np.array([1.0 if s == "min" else -1.0 for s in senses])


def _as_minimised(points, senses: Sequence[str]) -> np.ndarray:
    """(n, m) float array with every objective turned into one to minimise."""
    values = np.asarray(points, dtype=float)
    if values.ndim == 1 and values.size == 0:
        values = values.reshape(0, len(senses))
    if values.ndim != 2 or values.shape[1] != len(senses):
        raise NasError(f"points must be an (n, {len(senses)}) array to match {len(senses)} senses, "
                       f"got shape {values.shape}")
    if np.isnan(values).any():
        row = int(np.argwhere(np.isnan(values))[0][0])
        raise NasError(f"point {row} has a NaN objective; drop failed trials first (pareto_front does)")
    return values * _signs(senses)


def _dominance(values: np.ndarray) -> np.ndarray:
    """``dom[i, j]`` is True when point i dominates point j (all <=, at least one <; minimising)."""
    n = len(values)
    dom = np.zeros((n, n), dtype=bool)
    for start in range(0, n, _CHUNK):
        block = values[start:start + _CHUNK, None, :]
        dom[start:start + _CHUNK] = (block <= values[None]).all(-1) & (block < values[None]).any(-1)
    return dom


def _first_front(values: np.ndarray) -> np.ndarray:
    """Indices of the non-dominated rows, in O(CHUNK * n) memory rather than the full n x n matrix."""
    dominated = np.zeros(len(values), dtype=bool)
    for start in range(0, len(values), _CHUNK):
        block = values[start:start + _CHUNK, None, :]
        beats = (values[None] <= block).all(-1) & (values[None] < block).any(-1)
        dominated[start:start + _CHUNK] = beats.any(axis=1)
    return np.flatnonzero(~dominated)


def non_dominated_sort(points, senses: Sequence[str]) -> list[np.ndarray]:
    """Split row indices into Pareto fronts: front 0 is non-dominated, front 1 is after removing it...

    Equal points dominate neither each other and share a front. Every row lands in exactly one
    front; NaN values are rejected rather than guessed. Costs O(n^2 m) time and n^2 bytes
    (10^4 trials: 100 MB); :func:`pareto_front` needs only the first front and stays small.

    >>> [f.tolist() for f in non_dominated_sort([[1, 5], [2, 2], [3, 3], [2, 2]], ["min", "min"])]
    [[0, 1, 3], [2]]
    """
    values = _as_minimised(points, senses)
    dom = _dominance(values)
    dominated_by = dom.sum(axis=0)
    remaining = np.ones(len(values), dtype=bool)
    fronts = []
    while remaining.any():
        front = np.flatnonzero(remaining & (dominated_by == 0))
        fronts.append(front)
        remaining[front] = False
        dominated_by = dominated_by - dom[front].sum(axis=0)
    return fronts


def valid_rows(df: pd.DataFrame, objectives: Mapping[str, str]) -> pd.DataFrame:
    """The rows that carry a finite value for every objective and, if a ``status`` column exists, are OK.

    ``status`` holds :class:`~nas.search.records.Status` values; any other value is an error, not a guess.
    """
    missing = [name for name in objectives if name not in df.columns]
    if missing:
        raise NasError(f"table has no column {missing[0]!r} (columns: {', '.join(map(str, df.columns))})")
    _signs(list(objectives.values()))  # an unknown sense fails here, before any row is judged
    values = df[list(objectives)].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
    keep = np.isfinite(values).all(axis=1)
    if "status" in df.columns:
        statuses = df["status"].map(Status.parse)
        keep &= (statuses == Status.OK).to_numpy(dtype=bool)
    return df.loc[keep]


def _sort_front(front: pd.DataFrame, objectives: Mapping[str, str]) -> pd.DataFrame:
    """Order by the first minimised objective (else the first one), ties by the others, best first."""
    names = list(objectives)
    first = next((name for name in names if objectives[name] == "min"), names[0])
    order = [first, *(name for name in names if name != first)]
    return front.sort_values(order, ascending=[objectives[name] == "min" for name in order], kind="stable")


def pareto_front(df: pd.DataFrame, *, objectives: Mapping[str, str] = ACCURACY_LATENCY,
                 dedupe_on: str | None = "arch") -> pd.DataFrame:
    """The non-dominated rows of a trials table, sorted by the first minimised objective.

    Rows with a NaN objective or a failed ``status`` are ignored. Two trials of the same
    architecture (``dedupe_on`` column) with the same scores are one point: the first is kept,
    as in Optuna's ``best_trials`` after dedupe. The index is reset; ``trial_id`` links back.
    """
    if not objectives:
        raise NasError("pareto_front needs at least one objective")
    if dedupe_on is not None and dedupe_on not in df.columns:
        raise NasError(f"table has no column {dedupe_on!r} to dedupe on; pass dedupe_on=None to keep duplicates")
    rows = valid_rows(df, objectives)
    if dedupe_on is not None:
        rows = rows.drop_duplicates(subset=[dedupe_on, *objectives], keep="first")
    if rows.empty:
        return rows.reset_index(drop=True)
    values = _as_minimised(rows[list(objectives)].to_numpy(dtype=float), list(objectives.values()))
    front = rows.iloc[_first_front(values)]
    return _sort_front(front, objectives).reset_index(drop=True)


def _hypervolume_min(values: np.ndarray, reference: np.ndarray) -> float:
    """Exact volume dominated by ``values`` (minimising) and bounded by ``reference``.

    2-D is a sweep; more dimensions slice along the last objective and recurse (exact, O(n^(m-1) log n)).
    """
    values = values[(values < reference).all(axis=1)]
    if len(values) == 0:
        return 0.0
    if values.shape[1] == 1:
        return float(reference[0] - values[:, 0].min())
    if values.shape[1] == 2:
        order = np.lexsort((values[:, 1], values[:, 0]))
        volume, best_y = 0.0, reference[1]
        for x, y in values[order]:
            if y < best_y:
                volume += (reference[0] - x) * (best_y - y)
                best_y = y
        return float(volume)
    values = values[np.argsort(values[:, -1], kind="stable")]
    levels = np.append(values[:, -1], reference[-1])
    volume = 0.0
    for i in range(len(values)):
        depth = levels[i + 1] - levels[i]
        if depth > 0:
            volume += depth * _hypervolume_min(values[:i + 1, :-1], reference[:-1])
    return float(volume)


def hypervolume(df_or_points, *, objectives: Mapping[str, str] | Sequence[str] = ACCURACY_LATENCY,
                reference: Mapping[str, float] | Sequence[float]) -> float:
    """Volume of objective space dominated by the points and bounded by ``reference``; larger is better.

    ``df_or_points`` is a trials DataFrame (``objectives`` maps column -> sense, invalid rows are
    ignored as in :func:`pareto_front`) or an (n, m) array (``objectives`` is the list of senses).
    ``reference`` is the worst acceptable value per objective (a mapping by column name, or a
    sequence in objective order); points not strictly better than it in every objective add nothing.
    Compare controllers only under one shared reference.

    >>> round(hypervolume([[0.5, 10.0], [0.7, 20.0]], objectives=["max", "min"], reference=[0.0, 30.0]), 6)
    12.0
    """
    if isinstance(df_or_points, pd.DataFrame):
        if not isinstance(objectives, Mapping):
            raise NasError("with a DataFrame, objectives must map column names to 'max'/'min'")
        senses = list(objectives.values())
        points = valid_rows(df_or_points, objectives)[list(objectives)].to_numpy(dtype=float)
    else:
        if isinstance(objectives, Mapping):
            senses = list(objectives.values())
        else:
            senses = list(objectives)
        points = df_or_points
    if isinstance(reference, Mapping):
        if not isinstance(objectives, Mapping):
            raise NasError("a reference given by name needs objectives given by name")
        absent = [name for name in objectives if name not in reference]
        if absent:
            raise NasError(f"reference has no value for objective {absent[0]!r}")
        reference = [reference[name] for name in objectives]
    ref = np.asarray(reference, dtype=float)
    if ref.shape != (len(senses),) or not np.isfinite(ref).all():
        raise NasError(f"reference must be {len(senses)} finite numbers, got {list(np.ravel(reference))}")
    signs = _signs(senses)
    return _hypervolume_min(_as_minimised(points, senses), ref * signs)


def nadir(df: pd.DataFrame, *, objectives: Mapping[str, str] = ACCURACY_LATENCY,
          margin: float = 0.1) -> dict[str, float]:
    """A shared hypervolume reference: the worst valid value per objective, pushed out by ``margin`` x range.

    The margin lets the worst trials still add volume. Compute it once over ALL runs compared.
    """
    rows = valid_rows(df, objectives)
    if rows.empty:
        raise NasError("no valid trials to derive a hypervolume reference from")
    reference = {}
    for name, sense in objectives.items():
        column = rows[name].astype(float)
        spread = float(column.max() - column.min()) or abs(float(column.max())) or 1.0
        worst = column.min() if sense == "max" else column.max()
        reference[name] = float(worst - margin * spread if sense == "max" else worst + margin * spread)
    return reference


def front_summary(df: pd.DataFrame, *, by: str = "controller",
                  objectives: Mapping[str, str] = ACCURACY_LATENCY,
                  reference: Mapping[str, float], dedupe_on: str | None = "arch") -> pd.DataFrame:
    """One row per group: trials, valid trials, front size and hypervolume under one shared reference."""
    if by not in df.columns:
        raise NasError(f"table has no column {by!r} to group by")
    records = []
    for group, rows in df.groupby(by, sort=True):
        records.append({
            by: group,
            "trials": len(rows),
            "valid": len(valid_rows(rows, objectives)),
            "front_size": len(pareto_front(rows, objectives=objectives, dedupe_on=dedupe_on)),
            "hypervolume": hypervolume(rows, objectives=objectives, reference=reference),
        })
    return pd.DataFrame.from_records(records, columns=[by, "trials", "valid", "front_size", "hypervolume"])
