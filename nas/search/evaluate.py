"""Proxy training of one candidate: MnasNet's cheap stand-in for its real accuracy.

Each candidate is trained from scratch for a few epochs (or a fixed number of steps) on the
training split *minus* a fixed held-out validation split, and scored by top-1 on that split, so
the search never looks at the test set. Training runs at the proxy resolution (32 px by default,
fast on a CPU); params and MAdds are counted for the network as deployed (its own classes, the
deployment resolution), which is also where the runner prices latency.

A run whose loss turns NaN/inf is a failed trial with its reason, never an exception: the search
goes on. Everything here is plain functions of an :class:`~nas.arch.ArchSpec` so a Ray worker,
the serial runner and a notebook evaluate the same way.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, replace
from typing import Any, Mapping

import torch

from nas.arch import ArchSpec
from nas.errors import NasError
from nas.model import build_model
from nas.profile import profile
from nas.search.records import Status
from nas.train.loop import DivergedError, evaluate, train_steps
from nas.train.proxy import ProxyTraining, open_data


@dataclass(frozen=True)
class ProxySettings(ProxyTraining):
    """How a candidate is trained: a :class:`~nas.train.proxy.ProxyTraining` with a budget.

    ``steps``, when set, replaces ``epochs`` (a count of SGD steps). ``deploy_resolution`` is where
    params and MAdds are counted. Training from scratch takes a larger batch and rate than
    NetAdapt's fine-tuning, hence the other defaults.
    """

    batch_size: int = 64
    lr: float = 0.05
    epochs: float = 1.0
    steps: int | None = None
    deploy_resolution: int = 224

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (self.epochs > 0 and math.isfinite(self.epochs)):
            raise NasError(f"epochs must be positive, got {self.epochs}")
        if self.steps is not None and self.steps < 1:
            raise NasError(f"steps must be positive, got {self.steps}")
        if self.deploy_resolution < 8:
            raise NasError(f"deploy_resolution must be at least 8 pixels, got {self.deploy_resolution}")

    def step_count(self, train_images: int) -> int:
        if self.steps is not None:
            return self.steps
        return max(1, math.ceil(self.epochs * train_images / self.batch_size))


@dataclass(frozen=True)
class Evaluation:
    """What proxy training found: the scores, or (``status`` FAILED) the ``reason`` it failed.

    ``error`` tells a failure that is the system's fault (a worker that crashed) from the
    candidate's own (a run that diverged): repeated errors stop a search, divergence does not.
    """

    status: Status = Status.OK
    reason: str = ""
    error: bool = False
    accuracy: float = math.nan
    val_loss: float = math.nan
    train_loss: float = math.nan
    steps: int = 0
    train_seconds: float = 0.0
    params: int = 0
    madds: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", Status.parse(self.status))
        if self.status is Status.RUNNING:
            raise NasError("an evaluation is finished: its status is ok or failed")
        if (self.status is Status.FAILED) != bool(self.reason) or (self.error and self.status is Status.OK):
            raise NasError(f"an evaluation has a reason (and may be an error) exactly when it failed; got "
                           f"status {self.status.value!r}, reason {self.reason!r}, error {self.error}")

    @property
    def ok(self) -> bool:
        return self.status is Status.OK

    @classmethod
    def failed(cls, reason: str, *, error: bool = False, **fields: Any) -> Evaluation:
        return cls(status=Status.FAILED, reason=reason, error=error, **fields)

    def to_dict(self) -> dict[str, Any]:
        """Plain values, as a Ray worker reports them."""
        return {**asdict(self), "status": self.status.value}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Evaluation:
        """Read back :meth:`to_dict` from a mapping that may hold extra keys (Ray adds its own)."""
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in names})


def evaluate_candidate(spec: ArchSpec, settings: ProxySettings) -> Evaluation:
    """Train ``spec`` from scratch on the proxy task and score it on the held-out validation split."""
    data = open_data(settings)
    deployed = profile(spec, settings.deploy_resolution)
    trained = replace(spec, head=replace(spec.head, num_classes=data.num_classes))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        model = build_model(trained)
        steps = settings.step_count(len(data.train))
        start = time.perf_counter()
        # Not nas.train.proxy.train, which reseeds torch: here dropout and augmentation continue the
        # stream that drew the initial weights, so searches stay reproducible against earlier runs.
        try:
            stats = train_steps(model, data.loader("train", batch_size=settings.batch_size, seed=settings.seed),
                                steps=steps, lr=settings.lr, weight_decay=settings.weight_decay,
                                momentum=settings.momentum, label_smoothing=settings.label_smoothing,
                                device=settings.device, bn_batches=settings.bn_batches)
        except DivergedError as err:
            return Evaluation.failed(str(err), steps=steps, train_seconds=time.perf_counter() - start,
                                     params=deployed.params, madds=deployed.madds)
        seconds = time.perf_counter() - start
        result = evaluate(model, data.loader("val", batch_size=256), device=settings.device)
    if not math.isfinite(result.loss):
        return Evaluation.failed(f"validation loss is {result.loss}", steps=steps, train_seconds=seconds,
                                 params=deployed.params, madds=deployed.madds)
    return Evaluation(accuracy=result.top1, val_loss=result.loss, train_loss=stats.loss, steps=steps,
                      train_seconds=seconds, params=deployed.params, madds=deployed.madds)
