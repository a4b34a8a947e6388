"""Proxy training: a short run of SGD on a classification dataset, scored on its held-out split.

The search trains every candidate this way from scratch and NetAdapt fine-tunes every proposal
this way from inherited weights, so both read one :class:`ProxyTraining`. Scores come from the
validation split carved out of the training images, never from the test set.

A process trains many networks on the same data (NetAdapt fine-tunes dozens of proposals per
iteration), so what does not change between them is prepared once per process while it fits in
:data:`CACHE_BYTES`: the synthetic images are drawn once instead of at every access, and the
held-out split is turned into its batches of tensors once (its transform is deterministic).
Batches and their order are the same as without the cache.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace
from typing import Iterable

import numpy as np
import torch
from torch.utils.data import Dataset

from nas.cli import setting
from nas.errors import NasError
from nas.train.data import ArrayImages, ClassificationData, Split, load_classification
from nas.train.loop import TrainStats, evaluate, train_steps

CACHE_BYTES = 512 * 2**20  # data held in memory per process, at most (decoded images or held-out batches)


@dataclass(frozen=True)
class ProxyTraining:
    """Which data (see :func:`nas.train.data.load_classification`) and which SGD recipe.

    ``bn_batches`` training batches re-estimate the BatchNorm statistics after training: a short
    run leaves the running averages far behind the weights and would score every network badly.
    """

    data: str = setting("synthetic", "training data: built-in synthetic images, an ImageFolder or CIFAR-10 "
                                     "directory", metavar="synthetic|PATH")
    resolution: int = setting(32, "image size for training and evaluation", metavar="PX")
    val_fraction: float = setting(0.1, "share of the training images held out for scoring")
    seed: int = setting(0, "validation split and batch order")
    synthetic_train: int = setting(2000, "synthetic training images", metavar="N")
    synthetic_val: int = setting(500, "synthetic held-out images", metavar="N")
    batch_size: int = setting(32, "batch size")
    lr: float = setting(0.01, "learning rate, cosine-decayed")
    weight_decay: float = setting(4e-5, "SGD weight decay")
    momentum: float = setting(0.9, "SGD momentum")
    label_smoothing: float = setting(0.0, "label smoothing of the loss")
    bn_batches: int = setting(20, "batches that re-estimate BN statistics after training", metavar="N")
    device: str = setting("cpu", "training device")

    def __post_init__(self) -> None:
        if self.resolution < 8:
            raise NasError(f"resolution must be at least 8 pixels, got {self.resolution}")
        if self.batch_size < 1:
            raise NasError(f"batch_size must be positive, got {self.batch_size}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise NasError(f"lr must be positive, got {self.lr}")
        if self.bn_batches < 0:
            raise NasError(f"bn_batches must be 0 or more, got {self.bn_batches}")


def open_data(settings: ProxyTraining) -> ClassificationData:
    """The dataset, opened once per process (a Ray worker trains many networks on it).

    Keyed on the fields that define the data only, so settings that differ in the recipe share it.
    """
    return _open(settings.data, settings.resolution, settings.val_fraction, settings.seed,
                 settings.synthetic_train, settings.synthetic_val)


@functools.lru_cache(maxsize=2)
def _open(source: str, resolution: int, val_fraction: float, seed: int, synthetic_train: int,
          synthetic_val: int) -> ClassificationData:
    data = load_classification(source, resolution=resolution, val_fraction=val_fraction, seed=seed,
                               synthetic_train=synthetic_train, synthetic_val=synthetic_val)
    if source != "synthetic" or (synthetic_train + synthetic_val) * 3 * resolution ** 2 > CACHE_BYTES:
        return data
    pool = _drawn_once(data.train.source)  # train and val are two splits of one synthetic pool
    return replace(data, train=Split(pool, data.train.indices, data.train.transform),
                   val=Split(pool, data.val.indices, data.val.transform))


def _drawn_once(source: Dataset) -> ArrayImages:
    """``source``'s images in memory: a synthetic image is otherwise drawn anew at every access."""
    images = np.stack([source[i][0].numpy().transpose(1, 2, 0) for i in range(len(source))])
    return ArrayImages(images, [source.label(i) for i in range(len(source))])


def train(model: torch.nn.Module, settings: ProxyTraining, *, steps: int, seed: int) -> TrainStats:
    """Train ``model`` in place for ``steps`` SGD steps; raises :class:`~nas.train.loop.DivergedError`.

    ``seed`` fixes the batch order and torch's random draws (augmentation, dropout), so the
    result does not depend on what ran before in this process (a Ray worker's state is arbitrary).
    """
    torch.manual_seed(seed)
    loader = open_data(settings).loader("train", batch_size=settings.batch_size, seed=seed)
    return train_steps(model, loader, steps=steps, lr=settings.lr, weight_decay=settings.weight_decay,
                       momentum=settings.momentum, label_smoothing=settings.label_smoothing,
                       device=settings.device, bn_batches=settings.bn_batches)


def score(model: torch.nn.Module, settings: ProxyTraining) -> tuple[float, float]:
    """Top-1 and mean loss on the held-out validation split."""
    result = evaluate(model, _held_out(settings), device=settings.device)
    return result.top1, result.loss


def _held_out(settings: ProxyTraining) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    """The validation batches: built once per process where they fit in :data:`CACHE_BYTES`, else streamed."""
    data = open_data(settings)
    if len(data.val) * 3 * data.resolution ** 2 * 4 > CACHE_BYTES:
        return data.loader("val", batch_size=settings.batch_size)
    return _held_out_batches(settings.data, settings.resolution, settings.val_fraction, settings.seed,
                             settings.synthetic_train, settings.synthetic_val, settings.batch_size)


@functools.lru_cache(maxsize=2)
def _held_out_batches(source: str, resolution: int, val_fraction: float, seed: int, synthetic_train: int,
                      synthetic_val: int, batch_size: int) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
    data = _open(source, resolution, val_fraction, seed, synthetic_train, synthetic_val)
    return tuple(data.loader("val", batch_size=batch_size))
