"""Epoch-based training with a recipe: checkpoints every epoch, exact resume, metrics CSV and plot.

BatchNorm statistics warm up like the EMA (TensorFlow's ``num_updates`` rule): the momentum
starts high and settles at the model's own (0.01, the papers') after about 900 steps, so a
short run on a small dataset is not evaluated with statistics still near their initial values.

A resumed run is bit-identical to an uninterrupted one: the learning rate is a pure function of
the step, the shuffle order a pure function of (seed, epoch), and the checkpoint carries the
model, EMA, optimizer and every RNG state. On a GPU it trains in bfloat16 autocast through
``torch.compile``; launched by ``torchrun`` (``WORLD_SIZE`` > 1) it uses DDP, ``--batch-size``
being the global batch.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import pandas as pd
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm import tqdm

from nas import rundir
from nas.arch import ArchSpec
from nas.cli import setting
from nas.errors import NasError
from nas.model import build_model
from nas.train.cityscapes import SegmentationData, load_cityscapes
from nas.train.data import ClassificationData, load_classification
from nas.train.device import default_device
from nas.train.ema import ModelEma, ema_decay
from nas.train.loop import DivergedError, check_loss, evaluate
from nas.train.recipes import Recipe, learning_rate, make_optimizer
from nas.train.segmentation import (
    HEADS, build_segmentation_model, evaluate_segmentation, reduce_tail, segmentation_loss,
)

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.csv"
CURVE = "learning_curve.png"
RESULT = "result.json"


@dataclass(frozen=True)
class FitResult:
    """The finished run: its per-epoch metrics and the final evaluation (the EMA's when there is one)."""

    history: pd.DataFrame
    final: dict[str, float]
    checkpoint: Path
    resumed_from: int = 0


def _is_main(rank: int) -> bool:
    return rank == 0


def _average_buffers(module: nn.Module, world: int) -> None:
    """Average BatchNorm statistics over the processes: DDP syncs gradients, not buffers, so without
    this each process would evaluate (and checkpoint) its own running statistics."""
    for buffer in module.buffers():
        if buffer.is_floating_point():
            dist.all_reduce(buffer)
            buffer.div_(world)


class Task(Protocol):
    """What differs between training tasks: data, network, loss and evaluation."""

    spec: ArchSpec  # the network as trained (the head set to the data's classes, a reduced tail...)
    data: ClassificationData | SegmentationData  # its num_workers serve every loader of the run

    def build(self) -> nn.Module: ...

    def criterion(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor: ...

    def train_set(self) -> Dataset: ...

    def loader(self, split: str, batch_size: int) -> DataLoader | None:
        """``val`` or ``test`` in order; None where the data has no such split."""

    def evaluate(self, model: nn.Module, loader: DataLoader, device: str) -> dict[str, float]: ...


class Classification:
    """Image classification: top-1/top-5 on the held-out split, the test split scored at the end."""

    def __init__(self, config: TrainConfig) -> None:
        self.data = load_classification(config.data, resolution=config.resolution, seed=config.seed,
                                        synthetic_train=config.synthetic_train, synthetic_val=config.synthetic_val,
                                        num_workers=config.num_workers)
        head = replace(config.arch.head, dropout=config.recipe.dropout, num_classes=self.data.num_classes)
        self.spec = replace(config.arch, head=head)
        self._loss = nn.CrossEntropyLoss(label_smoothing=config.recipe.label_smoothing)

    def build(self) -> nn.Module:
        return build_model(self.spec)

    @staticmethod
    def rebuild(spec: ArchSpec, config: dict[str, Any], weights: dict[str, torch.Tensor]) -> nn.Module:
        """The network of a checkpoint, from its stored spec and config."""
        return build_model(spec)

    def criterion(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self._loss(outputs, targets)

    def train_set(self) -> Dataset:
        return self.data.train

    def loader(self, split: str, batch_size: int) -> DataLoader | None:
        if split == "test" and self.data.test is None:
            return None
        return self.data.loader(split, batch_size=batch_size)

    def evaluate(self, model: nn.Module, loader: DataLoader, device: str) -> dict[str, float]:
        result = evaluate(model, loader, device=device)
        return {"top1": result.top1, "top5": result.top5, "loss": result.loss}


class Segmentation:
    """Semantic segmentation on Cityscapes: mIoU on full validation images, one at a time."""

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.data = load_cityscapes(config.data, crop=config.resolution, eval_scale=config.eval_scale,
                                    num_workers=config.num_workers)
        self.spec = reduce_tail(config.arch) if config.reduced_tail else config.arch

    def build(self) -> nn.Module:
        return build_segmentation_model(self.spec, num_classes=self.data.num_classes,
                                        head=self.config.segmentation_head, output_stride=self.config.output_stride)

    @staticmethod
    def rebuild(spec: ArchSpec, config: dict[str, Any], weights: dict[str, torch.Tensor]) -> nn.Module:
        return build_segmentation_model(spec, num_classes=_segmentation_classes(weights),
                                        head=config["segmentation_head"], output_stride=config["output_stride"])

    def criterion(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return segmentation_loss(outputs, targets)

    def train_set(self) -> Dataset:
        return self.data.train

    def loader(self, split: str, batch_size: int) -> DataLoader | None:
        return self.data.loader("val", batch_size=1) if split == "val" else None

    def evaluate(self, model: nn.Module, loader: DataLoader, device: str) -> dict[str, float]:
        result = evaluate_segmentation(model, loader, num_classes=self.data.num_classes, device=device)
        return {"miou": result.miou, "pixel_accuracy": result.pixel_accuracy, "loss": result.loss}


TASKS: dict[str, type[Classification] | type[Segmentation]] = {
    "classification": Classification, "segmentation": Segmentation,
}


def make_task(config: TrainConfig) -> Task:
    if config.task not in TASKS:
        raise NasError(f"unknown task {config.task!r}; known: {', '.join(TASKS)}")
    return TASKS[config.task](config)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a run; a resumed run must be given the same values."""

    arch: ArchSpec
    recipe: Recipe
    data: str
    out: Path
    epochs: int
    batch_size: int = setting(128, "global batch size")
    resolution: int = 32
    task: str = setting("classification", "what the network learns", choices=TASKS)
    seed: int = setting(0, "initial weights, data split and batch order")
    num_workers: int | None = setting(None, "DataLoader worker processes (default: min(4, CPUs - 1) for image "
                                            "folders, 0 for synthetic data and CIFAR-10 batches)", metavar="N")
    segmentation_head: str = setting("lraspp", "segmentation head", choices=HEADS)
    output_stride: int = setting(16, "segmentation: the backbone's output stride", choices=(8, 16))
    reduced_tail: bool = setting(False, "halve the last stage (segmentation)")
    eval_scale: float = setting(1.0, "segmentation: evaluate on images scaled by this factor")
    synthetic_train: int = setting(2000, "synthetic training images")
    synthetic_val: int = setting(500, "synthetic validation images")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["arch"] = self.arch.to_string()
        data["out"] = str(self.out)
        return data


def _batch_norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def _warm_bn_momentum(norms: list, bases: list[float], step: int) -> None:
    for norm, base in zip(norms, bases):
        norm.momentum = 1 - ema_decay(1 - base, step)


def _rng_state(device: str) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if device.startswith("cuda"):
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], device: str) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and device.startswith("cuda"):
        torch.cuda.set_rng_state(state["cuda"], device)


def plot_learning_curve(history: pd.DataFrame, path: Path) -> None:
    """Training loss and validation metrics per epoch, as a PNG."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4))
    ax_loss, ax_metric = fig.subplots(1, 2)
    ax_loss.plot(history["epoch"], history["train_loss"], marker="o", label="train")
    ax_loss.plot(history["epoch"], history["val_loss"], marker="o", label="val")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    metrics = [c for c in history.columns if c.endswith(("top1", "miou"))]
    for column in metrics:
        ax_metric.plot(history["epoch"], history[column], marker="o", label=column)
    ax_metric.set(xlabel="epoch", ylabel="accuracy / mIoU", title="validation")
    for ax in (ax_loss, ax_metric):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def fit(config: TrainConfig, *, resume: bool = False, progress: bool = True, device: str | None = None,
        stop_after: int | None = None) -> FitResult:
    """Train ``config.arch`` with ``config.recipe``; write checkpoint, metrics CSV, curve and result JSON.

    ``stop_after`` ends this invocation after that many epochs (a later ``resume=True`` call goes on).
    Raises :class:`DivergedError` on a NaN loss; the checkpoints of earlier epochs are kept.
    """
    if config.epochs < 1 or config.batch_size < 1:
        raise NasError("epochs and batch size must be positive")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    device = device or default_device()
    if world > 1:
        if config.batch_size % world:
            raise NasError(f"--batch-size {config.batch_size} is not divisible by the {world} processes")
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device == "cuda" else "gloo")
        if device == "cuda":
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
            torch.cuda.set_device(device)
    try:
        return _fit(config, resume=resume, progress=progress and _is_main(rank), device=device, world=world,
                    rank=rank, stop_after=stop_after)
    finally:
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()


@dataclass
class _Run:
    """One training process's objects, built by :func:`_setup`, advanced by :func:`_epoch`."""

    config: TrainConfig
    task: Task
    model: nn.Module
    optimizer: torch.optim.Optimizer
    ema: ModelEma | None
    norms: list[nn.modules.batchnorm._BatchNorm]
    bn_bases: list[float]
    loader: DataLoader
    sampler: DistributedSampler | None
    generator: torch.Generator
    val_loader: DataLoader
    device: str
    world: int
    rank: int
    start_epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def out(self) -> Path:
        return Path(self.config.out)

    @property
    def per_process(self) -> int:
        return self.config.batch_size // self.world

    @property
    def scored(self) -> nn.Module:
        """The network whose metrics are the run's: the EMA where there is one."""
        return self.ema.module if self.ema is not None else self.model


def _fit(config: TrainConfig, *, resume: bool, progress: bool, device: str, world: int, rank: int,
         stop_after: int | None) -> FitResult:
    checkpoint = Path(config.out) / CHECKPOINT
    if checkpoint.exists() and not resume:
        raise NasError(f"{config.out} already holds a run; pass --resume to continue it, or choose another --out")
    if resume and not checkpoint.exists():
        raise NasError(f"--resume: no {CHECKPOINT} in {config.out}")
    run = _setup(config, device=device, world=world, rank=rank)
    if resume:
        _restore(run, checkpoint)
    train_model = _parallel(run)
    if _is_main(rank):
        rundir.write_text(run.out / "spec.json", run.task.spec.to_json(indent=2))
    end_epoch = config.epochs if stop_after is None else min(config.epochs, run.start_epoch + stop_after)
    for epoch in range(run.start_epoch, end_epoch):
        run.history.append(_epoch(run, train_model, epoch, progress))
        _save(run, checkpoint, progress)
    return FitResult(history=pd.DataFrame(run.history), final=_finish(run), checkpoint=checkpoint,
                     resumed_from=run.start_epoch)


def _setup(config: TrainConfig, *, device: str, world: int, rank: int) -> _Run:
    """Data, network, optimizer, EMA and loaders, as a fresh run starts them."""
    torch.manual_seed(config.seed)
    task = make_task(config)
    model = task.build().to(device)
    norms = _batch_norms(model)
    optimizer = make_optimizer(config.recipe, model)
    ema = ModelEma(model, config.recipe.ema_decay) if config.recipe.ema_decay else None
    torch.manual_seed(config.seed + rank)  # augmentation differs per process, the initial weights do not
    train_set = task.train_set()
    per_process = config.batch_size // world
    sampler = DistributedSampler(train_set, num_replicas=world, rank=rank, shuffle=True, seed=config.seed,
                                 drop_last=True) if world > 1 else None
    generator = torch.Generator()
    loader = DataLoader(train_set, batch_size=per_process, shuffle=sampler is None, sampler=sampler,
                        generator=generator, drop_last=len(train_set) >= per_process * world,
                        num_workers=task.data.num_workers, pin_memory=device.startswith("cuda"))
    if len(loader) == 0:
        raise NasError(f"the training set ({len(train_set)} images) is smaller than one batch")
    return _Run(config=config, task=task, model=model, optimizer=optimizer, ema=ema, norms=norms,
                bn_bases=[m.momentum for m in norms], loader=loader, sampler=sampler, generator=generator,
                val_loader=task.loader("val", max(1, per_process)), device=device, world=world, rank=rank)


def _restore(run: _Run, checkpoint: Path) -> None:
    """Continue from the last epoch's checkpoint, which must come from the same settings."""
    state = rundir.read_checkpoint(checkpoint, device=run.device, weights_only=False)
    rundir.check_same(state["config"], run.config.to_dict(), where=checkpoint, may_differ=("num_workers", "out"),
                      advice="resume with the original settings or use a new --out")
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    if run.ema is not None:
        run.ema.load_state_dict(state["ema"])
    run.start_epoch, run.history = state["epoch"], list(state["history"])
    _set_rng_state(state["rng"][run.rank], run.device)


def _parallel(run: _Run) -> nn.Module:
    """The module the steps run through: compiled on a GPU, wrapped in DDP across processes."""
    train_model = run.model
    cuda = run.device.startswith("cuda")
    if cuda:
        train_model = torch.compile(run.model)
    if run.world > 1:
        train_model = nn.parallel.DistributedDataParallel(train_model, device_ids=[run.device] if cuda else None)
    return train_model


def _epoch(run: _Run, train_model: nn.Module, epoch: int, progress: bool) -> dict[str, Any]:
    """Train one epoch and evaluate; the epoch's metrics row."""
    config, device = run.config, run.device
    cuda = device.startswith("cuda")
    steps_per_epoch = len(run.loader)
    run.generator.manual_seed(config.seed * 100_003 + epoch)
    if run.sampler is not None:
        run.sampler.set_epoch(epoch)
    train_model.train()
    losses, images, begin = [], 0, time.perf_counter()
    bar = tqdm(run.loader, desc=f"epoch {epoch + 1}/{config.epochs}", disable=not progress, leave=False)
    for i, (inputs, targets) in enumerate(bar):
        step = epoch * steps_per_epoch + i
        lr = learning_rate(config.recipe, step=step, steps_per_epoch=steps_per_epoch, epochs=config.epochs,
                           batch_size=config.batch_size)
        for group in run.optimizer.param_groups:
            group["lr"] = lr
        _warm_bn_momentum(run.norms, run.bn_bases, step)
        inputs, targets = inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            loss = run.task.criterion(train_model(inputs), targets)
        try:
            losses.append(check_loss(loss, step))
        except DivergedError as err:
            kept = (f"checkpoint of epoch {run.history[-1]['epoch']} kept in {run.out}" if run.history
                    else "no checkpoint yet")
            raise DivergedError(f"{err}; {kept}") from None
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        run.optimizer.step()
        if run.ema is not None:
            run.ema.update(run.model)
        images += len(targets) * run.world
        rate = images / (time.perf_counter() - begin)
        bar.set_postfix(loss=f"{losses[-1]:.3f}", lr=f"{lr:.4g}", img_s=f"{rate:.0f}")
    seconds = time.perf_counter() - begin
    if run.world > 1:
        _average_buffers(run.model, run.world)
        if run.ema is not None:
            _average_buffers(run.ema.module, run.world)
    row: dict[str, Any] = {"epoch": epoch + 1, "step": (epoch + 1) * steps_per_epoch, "lr": lr,
                           "train_loss": sum(losses) / len(losses), "train_images_per_s": images / seconds,
                           "seconds": seconds}
    row.update({f"val_{k}": v for k, v in run.task.evaluate(run.model, run.val_loader, device).items()})
    if run.ema is not None:
        row.update({f"ema_val_{k}": v for k, v in run.task.evaluate(run.ema.module, run.val_loader, device).items()})
    return row


def _save(run: _Run, checkpoint: Path, progress: bool) -> None:
    """Checkpoint the finished epoch (every process's RNG state in it), the metrics CSV and the curve."""
    rng = [_rng_state(run.device)]
    if run.world > 1:
        rng = [None] * run.world
        dist.all_gather_object(rng, _rng_state(run.device))
    if _is_main(run.rank):
        row, config = run.history[-1], run.config
        rundir.write_torch(checkpoint, {
            "epoch": row["epoch"], "model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
            "ema": run.ema.state_dict() if run.ema is not None else None, "rng": rng, "history": run.history,
            "config": json.loads(json.dumps(config.to_dict(), default=str)), "spec": run.task.spec.to_json(),
            "task": config.task})
        frame = pd.DataFrame(run.history)
        rundir.write_table(run.out / METRICS, frame)
        plot_learning_curve(frame, run.out / CURVE)
        if progress:
            shown = ", ".join(f"{k} {v:.4f}" for k, v in row.items() if k.startswith(("val_", "ema_val_")))
            tqdm.write(f"epoch {row['epoch']}/{config.epochs}: train loss {row['train_loss']:.4f}, {shown}")
    if run.world > 1:
        dist.barrier()


def _finish(run: _Run) -> dict[str, float]:
    """The final metrics (the EMA's where there is one), with the test split's once every epoch is done."""
    last = run.history[-1] if run.history else {}
    prefix = "ema_val_" if run.ema is not None else "val_"
    final = {k[len(prefix):]: float(v) for k, v in last.items() if k.startswith(prefix)}
    if not _is_main(run.rank):
        return final
    if len(run.history) == run.config.epochs:
        # The held-out validation split steered nothing here, but search and NetAdapt may have
        # used it; the test split is the number to publish.
        test_loader = run.task.loader("test", max(1, run.per_process))
        if test_loader is not None:
            final.update({f"test_{k}": v for k, v in run.task.evaluate(run.scored, test_loader, run.device).items()})
    if run.history:
        rundir.write_json(run.out / RESULT, {"epochs_done": len(run.history), "final": final,
                                             "evaluated": "ema" if run.ema is not None else "model",
                                             "config": run.config.to_dict()})
    return final


def load_trained(checkpoint: Path, *, use_ema: bool = True, device: str = "cpu") -> tuple[nn.Module, ArchSpec, dict]:
    """The model stored in a checkpoint written by :func:`fit` (its EMA weights when it has them)."""
    checkpoint = Path(checkpoint)
    if checkpoint.is_dir():
        checkpoint = checkpoint / CHECKPOINT
    state = rundir.read_checkpoint(checkpoint, device=device, weights_only=False)
    if not isinstance(state, dict) or "model" not in state or "spec" not in state:
        raise NasError(f"{checkpoint}: not a checkpoint written by python -m nas.train")
    spec = ArchSpec.from_json(state["spec"])
    config = state["config"]
    model = TASKS[state.get("task", "classification")].rebuild(spec, config, state["model"])
    weights = state["ema"]["module"] if use_ema and state.get("ema") else state["model"]
    model.load_state_dict(weights)
    return model.to(device).eval(), spec, config


def _segmentation_classes(weights: dict[str, torch.Tensor]) -> int:
    for name, value in weights.items():
        if name.endswith("classifier.weight") and name.startswith("head."):
            return int(value.shape[0])
    raise NasError("segmentation checkpoint without a classifier")
