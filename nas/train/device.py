"""Which torch device to train on: ``cuda`` where a GPU exists, else ``cpu``; checked up front.

A device named on the command line is checked before any work starts, so ``--device cuda`` on a
machine without a GPU is one clear error rather than a traceback from inside a worker.
"""

from __future__ import annotations

import re

import torch

from nas.errors import NasError

_DEVICE = re.compile(r"cpu|cuda(:\d+)?")


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def check_device(name: str, *, here: bool = True) -> str:
    """``name`` if it names a device (and, with ``here``, this machine can train on it), else
    :class:`NasError`. ``here=False`` (work sent to a Ray cluster) checks the name only: the
    cluster's nodes may have GPUs that the machine driving it lacks."""
    if not _DEVICE.fullmatch(name):
        raise NasError(f"unknown device {name!r}; use cpu, cuda or cuda:N")
    if here and name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise NasError(f"device {name!r} requested, but torch sees no CUDA GPU here (use --device cpu)")
        index = int(name.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise NasError(f"device {name!r} requested, but this machine has {torch.cuda.device_count()} GPU(s)")
    return name
