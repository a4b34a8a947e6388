"""Where latency tables live: the shipped ones (package data) and the ones built on this machine.

The top-level ``latency_tables`` package ships ``pixel-cpu/`` (table, meta, coefficients and the
public measurements it was fitted to). Tables measured here (``host-cpu``, ``host-cpu-Nt``,
``cuda``) are written under :func:`user_tables_root`:

1. ``$LATENCY_NAS_TABLES`` when set;
2. else, in a source checkout (``latency_tables/`` beside ``setup.cfg``, editable installs
   included), ``latency_tables/`` itself, as always;
3. else (a wheel install: never write into site-packages) ``$XDG_CACHE_HOME/latency-nas/latency_tables``
   (``~/.cache/...`` by default): a measured table is per machine and can always be rebuilt.
"""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

from nas.errors import NasError

TABLES_ENV = "LATENCY_NAS_TABLES"
PIXEL_TARGET = "pixel-cpu"


def shipped_root() -> Path:
    """The installed (or checked-out) ``latency_tables`` package folder."""
    try:
        return Path(str(files("latency_tables")))
    except ModuleNotFoundError:
        raise NasError("the latency_tables package is not installed (an editable install made before it "
                       "became a package); reinstall: pip install -e .") from None


def pixel_table_dir() -> Path:
    """The shipped pixel-cpu table: ``table.csv``, ``meta.json``, ``coefficients.json``."""
    return shipped_root() / PIXEL_TARGET


def pixel_sources_dir() -> Path:
    """The public Pixel 1 measurements the pixel-cpu model is fitted to."""
    return pixel_table_dir() / "sources"


def user_tables_root() -> Path:
    """Where tables measured on this machine go (see the module docstring for the order)."""
    if os.environ.get(TABLES_ENV):
        return Path(os.environ[TABLES_ENV]).expanduser()
    root = shipped_root()
    if (root.parent / "setup.cfg").is_file():
        return root
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "latency-nas" / "latency_tables"


def default_table_dir(target: str, threads: int = 1) -> Path:
    """``<root>/<target>``; a host-cpu table for N > 1 threads gets its own ``host-cpu-Nt``; a
    pixel-cpu calibration (``pixel-cpu:NAME``) its shipped folder under ``pixel-cpu/``."""
    base, _, calibration = target.partition(":")
    if base == PIXEL_TARGET:
        from nas.latency.pixel import calibrations

        return pixel_table_dir() / calibrations.get(calibration or None).folder
    if target == "host-cpu" and threads != 1:
        return user_tables_root() / f"host-cpu-{threads}t"
    return user_tables_root() / target


def table_label(table_dir: Path) -> str:
    """A table folder as result files record it: ``latency_tables/<name>`` for the default places,
    else the folder's own name, never an absolute path of this machine."""
    table_dir = Path(table_dir).resolve()
    for root in (shipped_root().resolve(), user_tables_root().resolve()):
        if table_dir.is_relative_to(root) and table_dir != root:
            return f"latency_tables/{table_dir.relative_to(root).as_posix()}"
    return table_dir.name
