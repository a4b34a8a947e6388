"""Scoring a child with inherited weights: what a search calls instead of training it.

A child is extracted as an ordinary network (``build_model`` + the supernet's slices), its
BatchNorm statistics are re-estimated on ``bn_batches`` training batches (the supernet's running
statistics belong to no child in particular), and it is scored by top-1 on the held-out
validation split that proxy training uses (:func:`nas.train.proxy.open_data`), never the test set.
Every child sees the same images, so an evaluator decodes them once: the BatchNorm batches always,
the held-out split when it fits in ``HELD_OUT_BYTES`` (decoding was a sixth of a child's cost on
CIFAR-10).

    >>> evaluator = SupernetEvaluator.load("runs/supernet")        # doctest: +SKIP
    >>> evaluator.evaluate(spec).accuracy                           # doctest: +SKIP

A search's workers call :func:`open_evaluator`, which loads a run directory once per process.
"""

from __future__ import annotations

import functools
import itertools
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

import torch

from nas.arch import ArchSpec
from nas.model import Network
from nas.supernet.network import Supernet
from nas.train.loop import evaluate, recalibrate_bn
from nas.train.proxy import open_data

if TYPE_CHECKING:
    from nas.supernet.training import SupernetSettings

HELD_OUT_BYTES = 512 * 2**20


@dataclass(frozen=True)
class ChildScore:
    """Held-out top-1 and mean loss of a child with inherited weights, and what scoring it took."""

    accuracy: float
    val_loss: float
    seconds: float


class SupernetEvaluator:
    """Scores children of a trained supernet on the held-out split of its training data.

    A spec's classifier is set to the data's classes first, as proxy training does, so a
    search's specs (built for deployment, e.g. 1000 classes) can be scored as they are.
    Scores are deterministic: every child is recalibrated on the same batches (augmented once,
    under the seed) and scored on the same held-out images; the caller's torch RNG is untouched.
    """

    def __init__(self, supernet: Supernet, settings: SupernetSettings) -> None:
        self.supernet, self.settings = supernet, settings
        self.data = open_data(settings)

    @classmethod
    def load(cls, out: Path | str, *, device: str | None = None) -> SupernetEvaluator:
        """The evaluator of a supernet run directory (``python -m nas.supernet train --out``)."""
        from nas.supernet.training import load_supernet

        supernet, settings = load_supernet(Path(out), device=device or "cpu")
        if device is not None:
            settings = replace(settings, device=device)
        return cls(supernet, settings)

    def child_spec(self, spec: ArchSpec) -> ArchSpec:
        """``spec`` with the data's classifier: the child this evaluator actually scores."""
        return replace(spec, head=replace(spec.head, num_classes=self.data.num_classes))

    def why_not(self, spec: ArchSpec) -> str | None:
        """Why ``spec`` cannot be scored (one line), or None."""
        return self.supernet.why_not(self.child_spec(spec))

    def child(self, spec: ArchSpec) -> Network:
        """The child as a stand-alone network, BatchNorm recalibrated, in eval mode."""
        settings = self.settings
        with torch.random.fork_rng(devices=[]):  # building the network draws weights the slices replace
            model = self.supernet.extract(self.child_spec(spec))
        return recalibrate_bn(model, self._bn_batches, batches=settings.bn_batches, device=settings.device)

    @functools.cached_property
    def _bn_batches(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The training batches that recalibrate every child (augmented under the evaluator's seed)."""
        settings = self.settings
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(settings.seed)
            loader = self.data.loader("train", batch_size=settings.batch_size, seed=settings.seed)
            return list(itertools.islice(loader, settings.bn_batches))

    @functools.cached_property
    def _held_out(self) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        """The held-out batches, decoded once if they fit in ``HELD_OUT_BYTES``, else read each time."""
        loader = self.data.loader("val", batch_size=self.settings.eval_batch_size)
        size = len(self.data.val) * 3 * self.settings.resolution ** 2 * 4
        return list(loader) if size <= HELD_OUT_BYTES else loader

    def score(self, model: Network) -> ChildScore:
        """Top-1 and loss of a stand-alone network on the held-out split (``seconds``: the scoring only)."""
        start = time.perf_counter()
        result = evaluate(model, self._held_out, device=self.settings.device)
        return ChildScore(accuracy=result.top1, val_loss=result.loss, seconds=time.perf_counter() - start)

    def evaluate(self, spec: ArchSpec) -> ChildScore:
        """Inherit, recalibrate BatchNorm, score on the held-out split; :class:`NotAChildError` if not a child.

        ``seconds`` covers all three steps: the cost of one candidate in a search.
        """
        start = time.perf_counter()
        result = self.score(self.child(spec))
        return replace(result, seconds=time.perf_counter() - start)


@functools.lru_cache(maxsize=1)
def open_evaluator(out: str, device: str = "cpu") -> SupernetEvaluator:
    """The evaluator of a run directory, loaded once per process (a Ray worker scores many children)."""
    return SupernetEvaluator.load(out, device=device)
