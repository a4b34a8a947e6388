"""Run the analysis notebooks headless, the way they are committed: with their default parameters.

The notebooks under ``experiments/notebooks/`` are stored executed, so their figures show on the
repository page. ``python -m nas.analysis.notebooks NOTEBOOK...`` re-executes them in place after
a change to the code or the committed results; the tests execute them the same way into memory.
The kernel runs in the notebook's folder with every ``NAS_*`` override removed from its
environment, and no execution timestamps are recorded, so a rerun changes only what changed.

Needs the ``notebooks`` extra (nbclient, nbformat, ipykernel).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from nas.cli import run
from nas.errors import NasError

OVERRIDE_PREFIX = "NAS_"  # the notebooks' parameters read NAS_RUN_DIRS, NAS_HISTORY, NAS_OUT, ...
TIMEOUT_S = 300  # per cell


def _jupyter():
    """nbclient and nbformat, or one clear error naming the extra that brings them."""
    try:
        import nbclient
        import nbformat
    except ImportError as err:
        raise NasError(f"executing notebooks needs the 'notebooks' extra (nbclient, nbformat, ipykernel): {err}")
    return nbclient, nbformat


def execute_notebook(path: str | Path, *, overrides: Mapping[str, str] | None = None, cwd: str | Path | None = None):
    """The notebook at ``path`` executed (an ``nbformat`` node; the file is not written).

    ``overrides`` are the only ``NAS_*`` variables the kernel sees (none: the defaults);
    ``cwd`` defaults to the notebook's folder, which its default paths are relative to.
    """
    nbclient, nbformat = _jupyter()
    path = Path(path)
    if not path.is_file():
        raise NasError(f"notebook {path} does not exist")
    env = {key: value for key, value in os.environ.items() if not key.startswith(OVERRIDE_PREFIX)}
    env.update(overrides or {})
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=TIMEOUT_S, kernel_name="python3", record_timing=False,
                                     resources={"metadata": {"path": str(cwd or path.parent)}})
    try:
        client.execute(env=env)
    except nbclient.exceptions.CellExecutionError as err:
        raise NasError(f"{path}: a cell failed: {str(err).strip().splitlines()[-1]}") from err
    return notebook


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m nas.analysis.notebooks",
        description="Execute analysis notebooks with their default parameters (NAS_* variables ignored) and "
                    "save them in place with their outputs, as they are committed.",
        epilog="example: python -m nas.analysis.notebooks experiments/notebooks/*.ipynb")
    parser.add_argument("notebooks", nargs="+", type=Path, metavar="NOTEBOOK", help=".ipynb files to execute")
    args = parser.parse_args(argv)
    _, nbformat = _jupyter()
    for path in args.notebooks:
        nbformat.write(execute_notebook(path), path)
        print(f"{path}: executed, {path.stat().st_size / 1e3:.0f} kB", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
