"""Latency table files: ``table.csv`` (one row per latency key) and ``meta.json`` (where it came from).

A table is per target (``host-cpu``, ``cuda``, ``pixel-cpu``) and lives in its own folder::

    latency_tables/<target>/table.csv        key, ms, spread_ms, n, provenance
    latency_tables/<target>/meta.json        target, device, torch version, threads, batch, ...
    latency_tables/<target>/calibration.json whole-network calibration (see nas.latency.calibrate)

Columns: ``key`` is ``str(LatencyKey)``; ``ms`` the robust per-key time; ``spread_ms`` its
spread (inter-quartile range of the samples for measured rows, fit residual or 0 otherwise);
``n`` the number of timed samples (0 for rows not measured); ``provenance`` is ``measured``,
``fitted`` or ``estimated``.

A number read from a damaged file would silently mislead every search that uses it, so
:meth:`LatencyTable.load` checks everything it can (columns, types, NaN, negative values,
duplicate or unparseable keys, the row count recorded in ``meta.json``) and raises
:class:`~nas.errors.NasError` naming the file and the problem. A table measured on another
machine is refused by :func:`check_compatible` unless forced.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

from nas import rundir
from nas.errors import NasError
from nas.latency.keys import parse_key

TABLE_FILE = "table.csv"
META_FILE = "meta.json"
COLUMNS = ("key", "ms", "spread_ms", "n", "provenance")
PROVENANCES = ("measured", "fitted", "estimated")
FORMAT_VERSION = 1

# The fields that make a measured table valid only on the machine, software and measurement protocol
# that produced it.
# A fitted table (a model of a device we do not have, e.g. pixel-cpu) records None for what does
# not apply, and None is never compared.
COMPATIBILITY_FIELDS = ("device", "torch_version", "threads", "batch", "dtype", "protocol")


@dataclass(frozen=True)
class TableMeta:
    """Where a table's numbers come from. ``rows`` guards against truncation."""

    target: str
    device: str
    kind: str = "measured"  # measured (on this kind of machine) | fitted (a model of a remote device)
    torch_version: str | None = None
    threads: int | None = None
    batch: int = 1
    dtype: str = "float32"
    date: str = ""
    protocol: dict[str, Any] = field(default_factory=dict)
    sources: tuple[str, ...] = ()
    rows: int = 0
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["sources"] = list(self.sources)
        return data

    @classmethod
    def from_dict(cls, data: Any, where: str) -> TableMeta:
        if not isinstance(data, dict):
            raise NasError(f"corrupt latency table metadata {where}: expected a JSON object")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise NasError(f"corrupt latency table metadata {where}: unknown field {unknown[0]!r}")
        for required in ("target", "device", "rows"):
            if required not in data:
                raise NasError(f"corrupt latency table metadata {where}: missing field {required!r}")
        checks = {"target": str, "device": str, "kind": str, "batch": int, "dtype": str, "date": str,
                  "protocol": dict, "sources": list, "rows": int, "format_version": int}
        for name, kind in checks.items():
            if name in data and (not isinstance(data[name], kind) or isinstance(data[name], bool)):
                raise NasError(f"corrupt latency table metadata {where}: {name} must be a {kind.__name__}, "
                               f"got {data[name]!r}")
        for name, kind in (("torch_version", str), ("threads", int)):
            if data.get(name) is not None and not isinstance(data[name], kind):
                raise NasError(f"corrupt latency table metadata {where}: {name} must be a {kind.__name__} "
                               f"or null, got {data[name]!r}")
        if data.get("kind", "measured") not in ("measured", "fitted"):
            raise NasError(f"corrupt latency table metadata {where}: kind must be 'measured' or 'fitted'")
        if data.get("format_version", FORMAT_VERSION) > FORMAT_VERSION:
            raise NasError(f"latency table {where} has format version {data['format_version']}; "
                           f"this code reads up to {FORMAT_VERSION}")
        return cls(**{**data, "sources": tuple(data.get("sources", ()))})


@dataclass(frozen=True)
class LatencyTable:
    """One target's per-key latencies and their metadata; immutable, ``with_rows`` makes a new one."""

    meta: TableMeta
    frame: pd.DataFrame = field(compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_ms", dict(zip(self.frame["key"], self.frame["ms"].astype(float))))

    @classmethod
    def empty(cls, meta: TableMeta) -> LatencyTable:
        frame = pd.DataFrame({"key": pd.Series(dtype=str), "ms": pd.Series(dtype=float),
                              "spread_ms": pd.Series(dtype=float), "n": pd.Series(dtype="int64"),
                              "provenance": pd.Series(dtype=str)})
        return cls(replace(meta, rows=0), frame)

    def __len__(self) -> int:
        return len(self.frame)

    def __contains__(self, key: object) -> bool:
        return str(key) in self._ms

    def ms(self, key: object) -> float:
        """The latency of one key; a key the table lacks raises :class:`NasError` naming it."""
        try:
            return self._ms[str(key)]
        except KeyError:
            raise NasError(f"latency table for {self.meta.target!r} has no key {str(key)!r}") from None

    def as_dict(self) -> Mapping[str, float]:
        return self._ms

    def missing(self, keys: Iterable[object]) -> list[str]:
        """The distinct keys (as strings, first-seen order) that the table lacks."""
        return [k for k in dict.fromkeys(map(str, keys)) if k not in self._ms]

    def with_rows(self, rows: pd.DataFrame | Iterable[Mapping[str, Any]]) -> LatencyTable:
        """A table with ``rows`` added; a row for a key already present replaces it."""
        new = _check_frame(pd.DataFrame(list(rows) if not isinstance(rows, pd.DataFrame) else rows,
                                        columns=list(COLUMNS)), "new rows")
        merged = pd.concat([self.frame[~self.frame["key"].isin(new["key"])], new], ignore_index=True)
        return LatencyTable(replace(self.meta, rows=len(merged)), merged)

    def save(self, directory: Path) -> None:
        """Write ``table.csv`` then ``meta.json``, each atomically (a crash never leaves half a file)."""
        directory = Path(directory)
        meta = replace(self.meta, rows=len(self.frame))
        rundir.write_text(directory / TABLE_FILE, self.frame.to_csv(index=False, float_format="%.6g"))
        rundir.write_json(directory / META_FILE, meta.to_dict())

    @classmethod
    def load(cls, directory: Path) -> LatencyTable:
        """Read and validate a table folder; any damage is a :class:`NasError` naming the file."""
        directory = Path(directory)
        meta_path, table_path = directory / META_FILE, directory / TABLE_FILE
        if not meta_path.is_file() or not table_path.is_file():
            missing = META_FILE if not meta_path.is_file() else TABLE_FILE
            raise NasError(f"no latency table in {directory} ({missing} is missing)")
        try:
            meta = TableMeta.from_dict(json.loads(meta_path.read_text()), str(meta_path))
        except json.JSONDecodeError as err:
            raise NasError(f"corrupt latency table metadata {meta_path}: {err}") from None
        try:
            raw = pd.read_csv(table_path, dtype={"key": str, "provenance": str}, keep_default_na=False,
                              na_values={"ms": ["", "nan", "NaN"], "spread_ms": ["", "nan", "NaN"],
                                         "n": ["", "nan", "NaN"]})
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as err:
            raise NasError(f"corrupt latency table {table_path}: {str(err).splitlines()[0]}") from None
        frame = _check_frame(raw, str(table_path))
        if len(frame) != meta.rows:
            raise NasError(f"corrupt latency table {table_path}: {len(frame)} rows but {meta_path.name} "
                           f"records {meta.rows} (truncated or edited?)")
        return cls(meta, frame)


def _check_frame(frame: pd.DataFrame, where: str) -> pd.DataFrame:
    """Validate and normalise the columns; the error names the first bad row."""
    if list(frame.columns) != list(COLUMNS):
        raise NasError(f"corrupt latency table {where}: columns {list(frame.columns)}, expected {list(COLUMNS)}")
    frame = frame.reset_index(drop=True)
    for name in ("ms", "spread_ms", "n"):
        values = pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=float)
        bad = ~np.isfinite(values) | (values < 0)
        if name == "n":
            bad |= values != np.round(values)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise NasError(f"corrupt latency table {where}: row {row + 1} ({frame['key'].iloc[row]!r}): "
                           f"{name} = {frame[name].iloc[row]!r} is not a finite number >= 0"
                           + (" (integer)" if name == "n" else ""))
        frame[name] = values.astype("int64") if name == "n" else values
    for row, (key, provenance) in enumerate(zip(frame["key"], frame["provenance"])):
        if not isinstance(key, str):
            raise NasError(f"corrupt latency table {where}: row {row + 1}: key {key!r} is not text")
        try:
            parse_key(key)
        except NasError:
            raise NasError(f"corrupt latency table {where}: row {row + 1}: malformed key {key!r}") from None
        if provenance not in PROVENANCES:
            raise NasError(f"corrupt latency table {where}: row {row + 1} ({key!r}): provenance "
                           f"{provenance!r} not in {PROVENANCES}")
    duplicated = frame["key"].duplicated()
    if duplicated.any():
        raise NasError(f"corrupt latency table {where}: key {frame['key'][duplicated].iloc[0]!r} appears twice")
    return frame


def check_compatible(meta: TableMeta, here: Mapping[str, Any], *, where: str, force: bool = False) -> None:
    """Refuse a table whose machine/software differs from ``here`` (a dict of COMPATIBILITY_FIELDS).

    A field that either side records as None is not compared (a fitted table has no torch version).
    """
    diffs = []
    for name in COMPATIBILITY_FIELDS:
        theirs, ours = getattr(meta, name), here.get(name)
        if theirs is None or ours is None or theirs == ours:
            continue
        if isinstance(theirs, dict) and isinstance(ours, dict):
            changed = sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))
            diffs.append(f"{name} differs in {', '.join(changed)}")
        else:
            diffs.append(f"{name} {theirs!r} (here: {ours!r})")
    if diffs and not force:
        raise NasError(f"latency table {where} was made elsewhere: {'; '.join(diffs)}. Rebuild it "
                       f"(python -m nas.latency build --target {meta.target}) or pass --force / force=True")
