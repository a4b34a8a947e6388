"""A search's records: the status of a trial and one typed row per trial.

A trial is RUNNING until it is told, then OK (it trained and was scored) or FAILED (with a
reason). That :class:`Status` is the one place failure is said: the Optuna study keeps it as the
trial's state, the trials table as its ``status`` column, and the analysis reads that column.

:class:`TrialRecord` is one row of ``trials.csv`` / ``trials.parquet``; its fields are the
table's columns in order. ``to_row()`` gives plain values (the architecture as its string),
``from_row()`` reads a row back, from the table or from the study's trial attributes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from enum import Enum
from typing import Any, Mapping, get_args, get_type_hints

import pandas as pd

from nas.arch import ArchSpec
from nas.errors import NasError


class Status(str, Enum):
    """What became of a trial; the values are what the trials table's ``status`` column holds."""

    OK = "ok"
    FAILED = "failed"
    RUNNING = "running"

    @classmethod
    def parse(cls, value: Any) -> Status:
        try:
            return cls(value)
        except ValueError:
            known = ", ".join(s.value for s in cls)
            raise NasError(f"unknown trial status {value!r} (known: {known})") from None


@dataclass(frozen=True)
class TrialRecord:
    """One trial of a search: its architecture, latency as priced, proxy training and score.

    Unknown numbers are NaN (floats) or None (counts). ``seed`` and ``run_id`` name the run the
    trial belongs to, so trials of several runs pooled in one table stay apart.
    """

    trial_id: int
    controller: str = ""
    status: Status = Status.RUNNING
    reason: str = ""
    arch: ArchSpec | None = None
    latency_ms: float = math.nan
    latency_source: str | None = None
    estimated_keys: int | None = None
    accuracy: float = math.nan
    reward: float = math.nan
    params: int | None = None
    madds: int | None = None
    train_seconds: float = math.nan
    steps: int | None = None
    val_loss: float = math.nan
    train_loss: float = math.nan
    seed: int | None = None
    run_id: str = ""

    @property
    def ok(self) -> bool:
        return self.status is Status.OK

    def to_row(self) -> dict[str, Any]:
        """The table row: plain values in column order."""
        row = {name: getattr(self, name) for name in COLUMNS}
        row["status"] = self.status.value
        row["arch"] = None if self.arch is None else self.arch.to_string()
        return row

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> TrialRecord:
        """A record from a table row or a study's trial attributes; columns it lacks take their defaults.

        Missing values may be None, NaN or pandas' NA (a CSV or parquet read back).
        """
        values: dict[str, Any] = {}
        for name in COLUMNS:
            value = row.get(name)
            if _missing(value):
                continue
            kind = _KINDS[name]
            if kind is Status:
                value = Status.parse(value)
            elif kind is ArchSpec:
                value = value if isinstance(value, ArchSpec) else ArchSpec.from_string(str(value))
            else:
                value = kind(value)
            values[name] = value
        if "trial_id" not in values:
            raise NasError("a trial row needs a trial_id")
        return cls(**values)


COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(TrialRecord))
_KINDS: dict[str, type] = {  # each column's type, read from the field annotations (None dropped)
    name: next(a for a in get_args(hint) or (hint,) if a is not type(None))
    for name, hint in get_type_hints(TrialRecord).items()
}
_FLOATS = [name for name, kind in _KINDS.items() if kind is float]
_COUNTS = [name for name, kind in _KINDS.items() if kind is int and name != "trial_id"]


def _missing(value: Any) -> bool:
    if value is None or value is pd.NA:
        return True
    return isinstance(value, float) and math.isnan(value)


def trials_frame(records: list[TrialRecord]) -> pd.DataFrame:
    """The trials table of ``records``: floats as float (NaN unknown), counts as nullable integers."""
    table = pd.DataFrame.from_records([r.to_row() for r in records], columns=list(COLUMNS))
    for column in _FLOATS:
        table[column] = pd.to_numeric(table[column], errors="coerce").astype(float)
    for column in _COUNTS:
        table[column] = pd.to_numeric(table[column], errors="coerce").astype("Int64")
    return table
