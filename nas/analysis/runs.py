"""Read the records that search and NetAdapt runs leave on disk into pandas tables.

A search run directory holds ``trials.parquet`` or ``trials.csv`` (the columns of
:class:`~nas.search.records.TrialRecord`); a NetAdapt run holds ``history.csv``. Reading them here
keeps the notebooks to a few lines and gives a bad path or a bad record one clear error instead of
a pandas traceback.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from nas.errors import NasError
from nas.search.records import Status

TRIALS_FILES = ("trials.parquet", "trials.csv")
HISTORY_COLUMNS = ("iteration", "latency_ms", "accuracy")


def _read_table(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except (OSError, ValueError) as err:
        raise NasError(f"cannot read {path}: {err}") from err


def _trials_file(run: Path) -> Path:
    if run.is_file():
        return run
    if not run.is_dir():
        raise NasError(f"run directory {run} does not exist")
    for name in TRIALS_FILES:
        if (run / name).is_file():
            return run / name
    raise NasError(f"{run} holds no {' or '.join(TRIALS_FILES)}; is it a search run directory?")


def load_trials(runs: str | Path | Iterable[str | Path]) -> pd.DataFrame:
    """The trials of one or more search runs (directories or trials files), with a ``run`` column.

    ``run`` is the directory name, so trials of several runs with the same controller can still
    be told apart (or pooled: the Pareto plots group by ``controller``).
    """
    paths = [Path(runs)] if isinstance(runs, (str, Path)) else [Path(r) for r in runs]
    if not paths:
        raise NasError("no run directories given")
    tables = []
    for path in paths:
        file = _trials_file(path)
        table = _read_table(file)
        if "status" in table.columns:
            _check_statuses(table["status"], file)
        if "run" not in table.columns:
            table.insert(0, "run", (path if path.is_dir() else file.parent).name)
        tables.append(table)
    return pd.concat(tables, ignore_index=True)


def _check_statuses(column: pd.Series, file: Path) -> None:
    for value in column.unique():
        try:
            Status.parse(value)
        except NasError as err:
            raise NasError(f"{file}: {err}") from None


def load_history(path: str | Path) -> pd.DataFrame:
    """A NetAdapt ``history.csv`` (or the run directory holding it), checked for its plotted columns."""
    path = Path(path)
    file = path / "history.csv" if path.is_dir() else path
    if not file.is_file():
        raise NasError(f"NetAdapt history {file} does not exist")
    history = _read_table(file)
    missing = [c for c in HISTORY_COLUMNS if c not in history.columns]
    if missing:
        raise NasError(f"{file} has no column {missing[0]!r}; is it a NetAdapt history?")
    return history
