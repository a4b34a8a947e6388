"""The files of a resumable run: written whole or not at all, claimed with their settings, read back strictly.

Search, NetAdapt, training and the pipeline each keep a run directory that a rerun resumes.
Three things make that safe, and they live here once:

* every file is written to a temporary name beside it and then renamed over the old one, so a
  kill leaves the old file or the new one, never half of one (:func:`write_text`,
  :func:`write_bytes`, :func:`write_json`, :func:`write_table`, :func:`write_torch`, :func:`copy_file`);
* a directory is claimed with the settings that started it; a rerun with other settings is
  refused in one line naming the first setting that differs, except the fields declared free
  to change on resume, such as the device (:func:`claim`, :func:`check_same`);
* a damaged or foreign checkpoint is one line naming the file, not a pickle traceback
  (:func:`read_checkpoint`).

>>> import tempfile
>>> root = Path(tempfile.mkdtemp())
>>> claim(root / "run.json", {"lr": 0.1, "device": "cpu"}, may_differ=("device",))
>>> claim(root / "run.json", {"lr": 0.1, "device": "cuda"}, may_differ=("device",))
>>> claim(root / "run.json", {"lr": 0.2, "device": "cpu"})  # doctest: +ELLIPSIS
Traceback (most recent call last):
nas.errors.NasError: ... was started with other settings (lr: 0.1 there, 0.2 now); ...
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import pandas as pd
import torch

from nas.errors import NasError

TABLE_FORMATS = (".csv", ".parquet")
ADVICE = "rerun with the same settings or use another --out"


def _replace(path: Path, write: Callable[[Path], None]) -> None:
    """``write`` a temporary file beside ``path``, then rename it over ``path``; a failure leaves no temporary."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    _replace(path, lambda tmp: tmp.write_text(text))


def write_bytes(path: Path, data: bytes) -> None:
    _replace(path, lambda tmp: tmp.write_bytes(data))


def write_json(path: Path, data: Any) -> None:
    """Indented JSON with a final newline."""
    write_text(path, json.dumps(data, indent=2) + "\n")


def table_format(path: Path) -> str:
    """The format a table at ``path`` is written in (its suffix); check it before long work that ends in one."""
    suffix = Path(path).suffix
    if suffix not in TABLE_FORMATS:
        raise NasError(f"{path}: a table is written as {' or '.join(TABLE_FORMATS)}, not {suffix or 'no suffix'}")
    return suffix


def write_table(path: Path, table: pd.DataFrame | list[Mapping[str, Any]]) -> None:
    """A table as CSV or Parquet, by the file's suffix, without the index."""
    frame = table if isinstance(table, pd.DataFrame) else pd.DataFrame(table)
    if table_format(path) == ".csv":
        _replace(path, lambda tmp: frame.to_csv(tmp, index=False))
    else:
        _replace(path, lambda tmp: frame.to_parquet(tmp, index=False))


def write_torch(path: Path, obj: Any) -> None:
    _replace(path, lambda tmp: torch.save(obj, tmp))


def copy_file(source: Path, target: Path) -> None:
    _replace(target, lambda tmp: shutil.copyfile(source, tmp))


def read_json(path: Path, *, what: str = "file", advice: str = "remove it to start over") -> Any:
    """A JSON file this tool wrote; a damaged one is an error naming it, not a restart."""
    try:
        return json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise NasError(f"{path}: corrupt {what} ({err}); {advice}") from None


def read_table(path: Path, *, columns: Iterable[str] = ()) -> list[dict[str, Any]]:
    """The rows of a CSV table this tool wrote (none if absent), which must hold ``columns``."""
    path = Path(path)
    if not path.exists():
        return []
    try:
        table = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise NasError(f"{path}: corrupt table ({err}); remove the run directory to start over") from None
    missing = [name for name in columns if name not in table.columns]
    if missing:
        raise NasError(f"{path}: corrupt table (no column {missing[0]!r}); remove the run directory to start over")
    return table.to_dict("records")


def read_checkpoint(path: Path, *, device: str = "cpu", weights_only: bool = True) -> Any:
    """What :func:`torch.load` reads from ``path``; a missing, truncated or foreign file is one line.

    ``weights_only=False`` is for the training checkpoints this project writes itself (they hold
    optimizer and RNG states); files from elsewhere are read with ``weights_only=True``.
    """
    path = Path(path)
    if not path.is_file():
        raise NasError(f"{path}: no such checkpoint")
    try:
        return torch.load(path, map_location=device, weights_only=weights_only)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as err:
        first = str(err).strip().splitlines()
        raise NasError(f"{path}: unreadable checkpoint ({first[0] if first else type(err).__name__})") from None


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``, so a mismatch names the one setting that differs."""
    if not isinstance(tree, Mapping) or not tree:
        return {prefix: tree}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def _plain(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The settings as JSON gives them back (tuples become lists, paths strings)."""
    return json.loads(json.dumps(settings, default=str))


def _free(key: str, may_differ: Iterable[str]) -> bool:
    return any(key == name or key.startswith(name + ".") for name in may_differ)


def check_same(stored: Mapping[str, Any], current: Mapping[str, Any], *, where: Path | str,
               may_differ: Iterable[str] = (), advice: str = ADVICE) -> None:
    """Refuse, naming the first differing setting, unless only ``may_differ`` fields (dotted paths) changed."""
    may_differ = tuple(may_differ)
    old, new = flatten(_plain(stored)), flatten(_plain(current))
    for key in sorted(set(old) | set(new)):
        if not _free(key, may_differ) and old.get(key) != new.get(key):
            raise NasError(f"{where} was started with other settings ({key}: {old.get(key)!r} there, "
                           f"{new.get(key)!r} now); {advice}")


def claim(path: Path, settings: Mapping[str, Any], *, may_differ: Iterable[str] = (),
          advice: str = ADVICE) -> None:
    """Record ``settings`` in ``path`` (JSON) for a new run, or check them against the run already there."""
    path = Path(path)
    if not path.exists():
        write_json(path, _plain(settings))
        return
    stored = read_json(path, what="settings file", advice="remove it or use another --out")
    check_same(stored, settings, where=path.parent, may_differ=may_differ, advice=advice)
