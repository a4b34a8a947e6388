"""Training a supernet on the proxy data, checkpointed every epoch and resumable bit-identically.

Each SGD step runs the children that :func:`nas.supernet.sampling.step_children` draws and
averages their gradients, so ``lr`` means what it means for one network under either rule (summed,
the sandwich's four children took steps four times as large: at the search's proxy rate of 0.05
the held-out top-1 lagged far behind, ``experiments/results/supernet_ranking_cifar10_10k_small/``).
The learning rate is a cosine of the global step, the batch order a pure
function of (seed, epoch), the children a pure function of (seed, epoch) through their own
generator, and the checkpoint carries the weights, the optimizer and torch's RNG state: two
epochs in one go equal one epoch plus a resumed one, bit for bit (on the CPU).

After every epoch the channels are sorted by importance (``reorder``, see
:meth:`~nas.supernet.network.Supernet.reorder_channels`) and the largest and smallest child of
every skeleton are scored on the held-out split, so ``metrics.csv`` shows the training progress.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from nas import rundir
from nas.arch import ArchSpec
from nas.errors import NasError
from nas.supernet.evaluator import SupernetEvaluator
from nas.supernet.network import Supernet
from nas.supernet.sampling import RULES, extreme_child, step_children
from nas.train.loop import check_loss, cosine_lr, parameter_groups
from nas.train.proxy import ProxyTraining, open_data
from search_spaces import SPACES, get_space

CHECKPOINT = "supernet.pt"
METRICS = "metrics.csv"
SETTINGS = "settings.json"


@dataclass(frozen=True)
class SupernetSettings(ProxyTraining):
    """The proxy data and recipe of :class:`~nas.train.proxy.ProxyTraining`, plus the supernet's own.

    ``rule`` picks the children of each step (``uniform`` or ``sandwich``, see
    :mod:`nas.supernet.sampling`; why sandwich is the default: README, "Weight-sharing supernet");
    ``sandwich_random`` is the number of random children beside
    the largest and smallest. ``bn_batches`` training batches recalibrate BatchNorm for every
    child scored. The defaults are the batch and rate of the search's proxy training.
    """

    space: str = "mobilenetv3-shared"
    epochs: int = 5
    batch_size: int = 64
    lr: float = 0.05
    rule: str = "sandwich"
    sandwich_random: int = 2
    reorder: bool = True
    eval_batch_size: int = 256

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.space not in SPACES:
            raise NasError(f"unknown search space {self.space!r}; known: {', '.join(SPACES)}")
        if self.rule not in RULES:
            raise NasError(f"unknown sampling rule {self.rule!r}; known: {', '.join(RULES)}")
        if self.epochs < 1:
            raise NasError(f"epochs must be at least 1, got {self.epochs}")
        if self.sandwich_random < 0:
            raise NasError(f"sandwich_random must be 0 or more, got {self.sandwich_random}")
        if self.bn_batches < 1:
            raise NasError(f"bn_batches must be at least 1 (children are scored after recalibrating BatchNorm), "
                           f"got {self.bn_batches}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SupernetSettings:
        return cls(**data)


@dataclass(frozen=True)
class SupernetRun:
    """A trained (or partly trained) supernet and its per-epoch metrics."""

    supernet: Supernet
    settings: SupernetSettings
    history: pd.DataFrame
    out: Path


def soft_cross_entropy(logits: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against the teacher's probabilities (in-place distillation)."""
    return -(teacher.softmax(1) * logits.log_softmax(1)).sum(1).mean()


def backward_children(supernet: Supernet, children: list[ArchSpec], inputs: torch.Tensor, targets: torch.Tensor,
                      criterion: nn.Module) -> torch.Tensor:
    """Accumulate the mean gradient of one step's children: the first against the labels, the others
    distilled from its predictions. Returns the first child's loss."""
    logits = supernet(inputs, children[0])
    loss = criterion(logits, targets)
    (loss / len(children)).backward()
    teacher = logits.detach()
    for child in children[1:]:
        (soft_cross_entropy(supernet(inputs, child), teacher) / len(children)).backward()
    return loss.detach()


def epochs_trained(out: Path | str) -> int:
    """Epochs a supernet directory holds (its checkpoint and metrics are written together, every epoch)."""
    out = Path(out)
    return len(rundir.read_table(out / METRICS)) if (out / CHECKPOINT).is_file() else 0


def read_settings(out: Path) -> SupernetSettings:
    """The settings a run directory was trained with."""
    path = Path(out) / SETTINGS
    if not path.is_file():
        raise NasError(f"{out}: not a supernet run directory (no {SETTINGS})")
    data = rundir.read_json(path, what="supernet settings", advice="remove the run directory to start over")
    try:
        return SupernetSettings.from_dict(data)
    except TypeError as err:
        raise NasError(f"{path}: unreadable supernet settings ({err})") from None


def load_supernet(out: Path, *, device: str = "cpu") -> tuple[Supernet, SupernetSettings]:
    """The supernet of a run directory (its last checkpoint) and its settings."""
    settings = read_settings(out)
    path = Path(out) / CHECKPOINT
    if not path.is_file():
        raise NasError(f"{out}: no {CHECKPOINT} yet (train at least one epoch)")
    data = open_data(settings)
    supernet = Supernet(get_space(settings.space, num_classes=data.num_classes))
    _load_weights(supernet, rundir.read_checkpoint(path, weights_only=False)["model"], path)
    return supernet.to(device), settings


def _load_weights(supernet: Supernet, state: dict, path: Path) -> None:
    """The checkpoint's weights, or one line when they are laid out for another version of the supernet."""
    try:
        supernet.load_state_dict(state)
    except RuntimeError:
        theirs, ours = set(state), set(supernet.state_dict())
        differs = (sorted(theirs - ours) or sorted(ours - theirs) or ["a tensor's shape"])[0]
        raise NasError(f"{path}: its weights do not fit this version's supernet ({differs}): it was trained by an "
                       "older version of nas.supernet or for another space; train it again into another --out") \
            from None


def train_supernet(settings: SupernetSettings, out: Path, *, resume: bool = False, progress: bool = True,
                   stop_after: int | None = None) -> SupernetRun:
    """Train a supernet into ``out``; ``stop_after`` ends this call after that many epochs.

    ``resume`` continues from ``out``'s checkpoint (the settings must match, the device may differ).
    """
    out = Path(out)
    checkpoint = out / CHECKPOINT
    if checkpoint.exists() and not resume:
        raise NasError(f"{out} already holds a supernet; pass --resume to continue it, or choose another --out")
    if resume and not checkpoint.exists():
        raise NasError(f"--resume: no {CHECKPOINT} in {out}")
    data = open_data(settings)
    space = get_space(settings.space, num_classes=data.num_classes)
    device = settings.device
    torch.manual_seed(settings.seed)
    supernet = Supernet(space).to(device)
    optimizer = torch.optim.SGD(parameter_groups(supernet, settings.weight_decay), lr=settings.lr,
                                momentum=settings.momentum, nesterov=True)
    start, history = 0, []
    if resume:
        state = rundir.read_checkpoint(checkpoint, device=device, weights_only=False)
        rundir.check_same(state["settings"], settings.to_dict(), where=out, may_differ=("device",),
                          advice="resume with the original settings or choose another --out")
        _load_weights(supernet, state["model"], checkpoint)
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        start, history = state["epoch"], list(state["history"])
    out.mkdir(parents=True, exist_ok=True)
    rundir.write_json(out / SETTINGS, settings.to_dict())

    steps_per_epoch = len(data.train) // settings.batch_size
    if steps_per_epoch < 1:
        raise NasError(f"the training split ({len(data.train)} images) is smaller than one batch "
                       f"({settings.batch_size})")
    total = settings.epochs * steps_per_epoch
    criterion = nn.CrossEntropyLoss(label_smoothing=settings.label_smoothing)
    last = settings.epochs if stop_after is None else min(settings.epochs, start + stop_after)
    for epoch in range(start, last):
        loader = data.loader("train", batch_size=settings.batch_size, seed=settings.seed * 100_003 + epoch,
                             drop_last=True)
        children_rng = np.random.default_rng([settings.seed, epoch])
        supernet.train()
        begin, losses = time.perf_counter(), []
        bar = tqdm(loader, desc=f"supernet epoch {epoch + 1}/{settings.epochs}", unit="batch",
                   disable=not progress, leave=False)
        for step, (inputs, targets) in enumerate(bar):
            lr = cosine_lr(epoch * steps_per_epoch + step, total, settings.lr)
            for group in optimizer.param_groups:
                group["lr"] = lr
            inputs, targets = inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)
            children = step_children(space, children_rng, rule=settings.rule, random=settings.sandwich_random)
            optimizer.zero_grad(set_to_none=True)
            loss = backward_children(supernet, children, inputs, targets, criterion)
            losses.append(check_loss(loss, epoch * steps_per_epoch + step))
            optimizer.step()
            bar.set_postfix(loss=f"{losses[-1]:.3f}", lr=f"{lr:.4g}")
        bar.close()
        if settings.reorder:
            supernet.reorder_channels(optimizer)
        row = {"epoch": epoch + 1, "step": (epoch + 1) * steps_per_epoch, "lr": lr,
               "train_loss": sum(losses) / len(losses), "seconds": time.perf_counter() - begin}
        row.update(_extremes_top1(supernet, settings))
        history.append(row)
        rundir.write_torch(checkpoint, {"epoch": epoch + 1, "model": supernet.state_dict(), "optimizer": optimizer.state_dict(),
                      "rng": torch.get_rng_state(), "history": history, "settings": settings.to_dict()})
        rundir.write_table(out / METRICS, history)
        if progress:
            shown = ", ".join(f"{k} {v:.4f}" for k, v in row.items() if k.startswith("val_"))
            tqdm.write(f"epoch {epoch + 1}/{settings.epochs}: train loss {row['train_loss']:.4f}, {shown}")
    return SupernetRun(supernet=supernet, settings=settings, history=pd.DataFrame(history), out=out)


def _extremes_top1(supernet: Supernet, settings: SupernetSettings) -> dict[str, float]:
    """Held-out top-1 of the largest and smallest child of every skeleton (fixed unsized choices)."""
    evaluator = SupernetEvaluator(supernet, settings)
    space = supernet.space
    row = {}
    for skeleton in space.skeletons:
        for largest in (True, False):
            child = extreme_child(space, np.random.default_rng(settings.seed), largest=largest, skeleton=skeleton)
            row[f"val_top1_{skeleton}_{'largest' if largest else 'smallest'}"] = evaluator.evaluate(child).accuracy
    return row
