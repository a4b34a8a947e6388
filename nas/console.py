"""The console scripts that ``setup.cfg`` declares: ``nas-search`` is ``python -m nas.search``, and so on.

Each runs its tool's own ``main`` through :func:`nas.cli.run`, so an error stays one line on
stderr and the exit status is the same as under ``python -m``. A tool's module is imported only
when its script starts, so ``nas-arch`` does not pay for Ray or Optuna.
"""

from __future__ import annotations

import importlib
from typing import Callable

from nas.cli import run

# script name -> the module whose ``main`` it runs (what ``python -m`` would run)
SCRIPTS = {
    "nas-arch": "nas.arch.__main__",
    "nas-spaces": "search_spaces.__main__",
    "nas-latency": "nas.latency.__main__",
    "nas-pixel": "nas.latency.pixel.__main__",
    "nas-search": "nas.search.__main__",
    "nas-netadapt": "nas.netadapt.__main__",
    "nas-supernet": "nas.supernet.__main__",
    "nas-train": "nas.train.__main__",
    "nas-evaluate": "nas.evaluate",
    "nas-convert": "nas.convert",
    "nas-pipeline": "nas.pipeline.__main__",
    "nas-notebooks": "nas.analysis.notebooks",
}


def _script(name: str) -> Callable[[], int]:
    def start() -> int:
        return run(importlib.import_module(SCRIPTS[name]).main)  # main reads sys.argv, as under python -m

    start.__name__ = start.__qualname__ = name.removeprefix("nas-")
    start.__doc__ = f"``{name}``: ``python -m {SCRIPTS[name].removesuffix('.__main__')}``."
    return start


arch = _script("nas-arch")
spaces = _script("nas-spaces")
latency = _script("nas-latency")
pixel = _script("nas-pixel")
search = _script("nas-search")
netadapt = _script("nas-netadapt")
supernet = _script("nas-supernet")
train = _script("nas-train")
evaluate = _script("nas-evaluate")
convert = _script("nas-convert")
pipeline = _script("nas-pipeline")
notebooks = _script("nas-notebooks")
