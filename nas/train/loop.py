"""The two primitives everything else trains with: a fixed number of SGD steps, and evaluation.

Proxy training in the search and NetAdapt's short-term fine-tune call :func:`train_steps`
directly; the full recipes (``nas.train.trainer``) share :func:`evaluate` and the loss checks.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Iterable, Iterator

import torch
from torch import nn

from nas.errors import NasError


class DivergedError(NasError):
    """The training loss became NaN or infinite."""


@dataclass(frozen=True)
class TrainStats:
    """What a run of :func:`train_steps` did. ``loss`` is the mean over the last tenth of the steps."""

    steps: int
    loss: float
    first_loss: float
    images: int
    seconds: float
    images_per_s: float
    losses: tuple[float, ...]


@dataclass(frozen=True)
class EvalResult:
    """Top-1 / top-5 accuracy in [0, 1], mean cross-entropy, and inference throughput."""

    top1: float
    top5: float
    loss: float
    images_per_s: float
    images: int = 0


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Decay weights only: biases and BatchNorm/LayerNorm parameters (1-D tensors) are exempt."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (no_decay if param.ndim <= 1 else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def cosine_lr(step: int, total: int, base_lr: float) -> float:
    """Cosine decay from ``base_lr`` at step 0 to 0 after ``total`` steps."""
    return 0.5 * base_lr * (1 + math.cos(math.pi * min(step, total) / max(1, total)))


def check_loss(loss: torch.Tensor, step: int) -> float:
    value = float(loss.detach())
    if not math.isfinite(value):
        raise DivergedError(f"training diverged: loss is {value} at step {step} (lower the learning rate?)")
    return value


def _cycle(loader: Iterable) -> Iterator:
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise NasError("the training loader yields no batches (dataset smaller than one batch?)")


def train_steps(model: nn.Module, loader: Iterable, *, steps: int, lr: float = 0.05, weight_decay: float = 4e-5,
                momentum: float = 0.9, label_smoothing: float = 0.0, device: str = "cpu",
                bn_batches: int = 20) -> TrainStats:
    """Train ``model`` in place for ``steps`` SGD steps with a cosine learning rate.

    The loader is restarted as often as needed. Afterwards the BatchNorm statistics are
    re-estimated over ``bn_batches`` training batches (0: keep the running averages), because
    a short run leaves them far behind the weights (see :func:`recalibrate_bn`).
    Raises :class:`DivergedError` on a NaN/inf loss.
    """
    if steps < 1:
        raise NasError(f"steps must be positive, got {steps}")
    model.to(device).train()
    optimizer = torch.optim.SGD(parameter_groups(model, weight_decay), lr=lr, momentum=momentum, nesterov=True)
    criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    losses, images = [], 0
    start = time.perf_counter()
    batches = _cycle(loader)
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(step, steps, lr)
        inputs, targets = next(batches)
        inputs, targets = inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        loss = criterion(model(inputs), targets)
        losses.append(check_loss(loss, step))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        images += len(targets)
    if bn_batches:
        recalibrate_bn(model, loader, batches=bn_batches, device=device)
    seconds = time.perf_counter() - start
    tail = losses[-max(1, steps // 10):]
    return TrainStats(steps=steps, loss=sum(tail) / len(tail), first_loss=losses[0], images=images,
                      seconds=seconds, images_per_s=images / seconds if seconds > 0 else 0.0,
                      losses=tuple(losses))


@torch.no_grad()
def recalibrate_bn(model: nn.Module, loader: Iterable, *, batches: int = 20, device: str = "cpu") -> nn.Module:
    """Re-estimate BatchNorm running statistics as an exact average over ``batches`` batches.

    With the papers' BN momentum of 0.01 the running statistics lag far behind the weights after
    a few hundred steps, so a short proxy training evaluates badly unless they are re-estimated.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    model.to(device).train()
    for i, (inputs, _) in enumerate(_cycle(loader)):
        if i == batches:
            break
        model(inputs.to(device))
    for m, momentum in zip(norms, saved):
        m.momentum = momentum
    return model.eval()


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, *, device: str = "cpu") -> EvalResult:
    """Accuracy and loss of ``model`` (put in eval mode) over the whole loader."""
    model.to(device).eval()
    correct1 = correct5 = images = 0
    loss_sum, seconds = 0.0, 0.0
    for inputs, targets in loader:
        inputs, targets = inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        start = time.perf_counter()
        logits = model(inputs)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds += time.perf_counter() - start
        loss_sum += float(nn.functional.cross_entropy(logits.float(), targets, reduction="sum"))
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        hits = top.eq(targets[:, None])
        correct1 += int(hits[:, 0].sum())
        correct5 += int(hits.any(dim=1).sum())
        images += len(targets)
    if images == 0:
        raise NasError("evaluation loader is empty")
    return EvalResult(top1=correct1 / images, top5=correct5 / images, loss=loss_sum / images,
                      images_per_s=images / seconds if seconds > 0 else 0.0, images=images)
