"""The files of one NetAdapt run, written so that a killed run resumes where it stopped.

::

    OUT/run.json                  the settings; a rerun with other settings is refused
    OUT/history.csv               one row per finished iteration (0 = the seed)
    OUT/proposals.csv             every fine-tuned proposal of every finished iteration
    OUT/checkpoints/iter_NNN.pt   spec + state dict of each iteration's network (+ .json spec)
    OUT/work/iter_NNN/*.pt        proposals of the iteration in progress
    OUT/final_spec.json, OUT/final.pt, OUT/history.png

Every file is replaced atomically, and an iteration counts as finished only once its
history row is written, after its checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any


import pandas as pd  # noqa: E402

from nas.errors import NasError  # noqa: E402


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    pd.DataFrame(rows).to_csv(tmp, index=False)
    os.replace(tmp, path)


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``, so a mismatch names the one setting that differs."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        flat.update(_flatten(value, f"{prefix}.{key}" if prefix else key))
    return flat


class RunDir:
    """Paths and tables of a run directory."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @property
    def history_csv(self) -> Path:
        return self.root / "history.csv"

    @property
    def proposals_csv(self) -> Path:
        return self.root / "proposals.csv"

    @property
    def final_checkpoint(self) -> Path:
        return self.root / "final.pt"

    @property
    def final_spec(self) -> Path:
        return self.root / "final_spec.json"

    @property
    def plot(self) -> Path:
        return self.root / "history.png"

    def checkpoint(self, iteration: int) -> Path:
        return self.root / "checkpoints" / f"iter_{iteration:03d}.pt"

    def work(self, iteration: int) -> Path:
        return self.root / "work" / f"iter_{iteration:03d}"

    def claim(self, settings: dict[str, Any]) -> None:
        """Start a run here, or check that the run already here used the same settings."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / "run.json"
        settings = json.loads(json.dumps(settings))
        if not path.exists():
            _write_text(path, json.dumps(settings, indent=2))
            return
        try:
            stored = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise NasError(f"{path}: corrupt ({err}); remove it or use another --out") from None
        stored, settings = _flatten(stored), _flatten(settings)
        for key in sorted(set(stored) | set(settings)):
            if stored.get(key) != settings.get(key):
                raise NasError(f"{self.root} holds a run with other settings ({key}: {stored.get(key)!r} there, "
                               f"{settings.get(key)!r} now); rerun with the same options or use another --out")

    def read_table(self, path: Path, *, columns: tuple[str, ...]) -> list[dict[str, Any]]:
        """The rows of a table this run wrote (none if absent); a damaged one is an error, not a restart."""
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

    def write_history(self, rows: list[dict[str, Any]]) -> None:
        _write_csv(self.history_csv, rows)

    def write_proposals(self, rows: list[dict[str, Any]]) -> None:
        _write_csv(self.proposals_csv, rows)

    def keep_checkpoint(self, iteration: int, source: Path, spec_json: str) -> None:
        """Copy a proposal's result file to the iteration checkpoint (atomically), with its spec beside it."""
        target = self.checkpoint(iteration)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)
        _write_text(target.with_suffix(".json"), spec_json)

    def write_final_spec(self, spec_json: str) -> None:
        _write_text(self.final_spec, spec_json)

    def clear_work(self, iteration: int) -> None:
        shutil.rmtree(self.work(iteration), ignore_errors=True)
