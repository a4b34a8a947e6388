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
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm import tqdm

from nas.arch import ArchSpec
from nas.errors import NasError
from nas.model import build_model
from nas.train.cityscapes import load_cityscapes
from nas.train.data import load_classification
from nas.train.device import default_device
from nas.train.ema import ModelEma, ema_decay
from nas.train.loop import DivergedError, check_loss, evaluate
from nas.train.recipes import Recipe, learning_rate, make_optimizer
from nas.train.segmentation import build_segmentation_model, evaluate_segmentation, reduce_tail, segmentation_loss

TASKS = ("classification", "segmentation")
CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.csv"
CURVE = "learning_curve.png"
RESULT = "result.json"


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a run; a resumed run must be given the same values."""

    arch: ArchSpec
    recipe: Recipe
    data: str
    out: Path
    epochs: int
    batch_size: int
    resolution: int = 32
    task: str = "classification"
    seed: int = 0
    num_workers: int = 0
    segmentation_head: str = "lraspp"
    output_stride: int = 16
    reduced_tail: bool = False
    eval_scale: float = 1.0
    synthetic_train: int = 2000
    synthetic_val: int = 500

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["arch"] = self.arch.to_string()
        data["out"] = str(self.out)
        return data


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


class _Task:
    """What differs between classification and segmentation: data, model, loss, evaluation."""

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        recipe = config.recipe
        if config.task == "classification":
            self.data = load_classification(config.data, resolution=config.resolution, seed=config.seed,
                                            synthetic_train=config.synthetic_train,
                                            synthetic_val=config.synthetic_val, num_workers=config.num_workers)
            head = replace(config.arch.head, dropout=recipe.dropout, num_classes=self.data.num_classes)
            self.spec = replace(config.arch, head=head)
            self.criterion: Callable = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
        elif config.task == "segmentation":
            self.data = load_cityscapes(config.data, crop=config.resolution, eval_scale=config.eval_scale,
                                        num_workers=config.num_workers)
            self.spec = reduce_tail(config.arch) if config.reduced_tail else config.arch
            self.criterion = segmentation_loss
        else:
            raise NasError(f"unknown task {config.task!r}; known: {', '.join(TASKS)}")

    def build(self) -> nn.Module:
        if self.config.task == "classification":
            return build_model(self.spec)
        return build_segmentation_model(self.spec, num_classes=self.data.num_classes,
                                        head=self.config.segmentation_head,
                                        output_stride=self.config.output_stride)

    def val_loader(self, batch_size: int) -> DataLoader:
        if self.config.task == "classification":
            return self.data.loader("val", batch_size=batch_size)
        return self.data.loader("val", batch_size=1)

    def evaluate(self, model: nn.Module, loader: DataLoader, device: str) -> dict[str, float]:
        if self.config.task == "classification":
            r = evaluate(model, loader, device=device)
            return {"top1": r.top1, "top5": r.top5, "loss": r.loss}
        s = evaluate_segmentation(model, loader, num_classes=self.data.num_classes, device=device)
        return {"miou": s.miou, "pixel_accuracy": s.pixel_accuracy, "loss": s.loss}


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


def _save_atomic(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _check_same_config(saved: dict[str, Any], config: TrainConfig) -> None:
    current = json.loads(json.dumps(config.to_dict(), default=str))
    for key in sorted(set(saved) | set(current)):
        if key in ("num_workers", "out"):
            continue
        if saved.get(key) != current.get(key):
            raise NasError(f"--resume: {key} differs from the checkpoint's ({saved.get(key)!r} vs {current.get(key)!r});"
                           " resume with the original settings or use a new --out")


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


def _fit(config: TrainConfig, *, resume: bool, progress: bool, device: str, world: int, rank: int,
         stop_after: int | None) -> FitResult:
    out = Path(config.out)
    checkpoint_path = out / CHECKPOINT
    if checkpoint_path.exists() and not resume:
        raise NasError(f"{out} already holds a run; pass --resume to continue it, or choose another --out")
    if resume and not checkpoint_path.exists():
        raise NasError(f"--resume: no {CHECKPOINT} in {out}")
    torch.manual_seed(config.seed)
    task = _Task(config)
    model = task.build().to(device)
    recipe = config.recipe
    optimizer = make_optimizer(recipe, model)
    ema = ModelEma(model, recipe.ema_decay) if recipe.ema_decay else None
    norms = _batch_norms(model)
    bn_bases = [m.momentum for m in norms]
    torch.manual_seed(config.seed + rank)  # augmentation differs per process, the initial weights do not

    start_epoch, history = 0, []
    if resume:
        state = torch.load(checkpoint_path, map_location=device, weights_only=False)
        _check_same_config(state["config"], config)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        start_epoch, history = state["epoch"], list(state["history"])
        _set_rng_state(state["rng"][rank], device)

    train_set: Dataset = task.data.train
    per_process = config.batch_size // world
    sampler = DistributedSampler(train_set, num_replicas=world, rank=rank, shuffle=True, seed=config.seed,
                                 drop_last=True) if world > 1 else None
    generator = torch.Generator()
    loader = DataLoader(train_set, batch_size=per_process, shuffle=sampler is None, sampler=sampler,
                        generator=generator, drop_last=len(train_set) >= per_process * world,
                        num_workers=config.num_workers, pin_memory=device.startswith("cuda"))
    steps_per_epoch = len(loader)
    if steps_per_epoch == 0:
        raise NasError(f"the training set ({len(train_set)} images) is smaller than one batch")
    val_loader = task.val_loader(max(1, per_process))
    train_model: nn.Module = model
    cuda = device.startswith("cuda")
    if cuda:
        train_model = torch.compile(model)
    if world > 1:
        train_model = nn.parallel.DistributedDataParallel(train_model, device_ids=[device] if cuda else None)

    if _is_main(rank):
        out.mkdir(parents=True, exist_ok=True)
        (out / "spec.json").write_text(task.spec.to_json(indent=2))
    end_epoch = config.epochs if stop_after is None else min(config.epochs, start_epoch + stop_after)
    for epoch in range(start_epoch, end_epoch):
        generator.manual_seed(config.seed * 100_003 + epoch)
        if sampler is not None:
            sampler.set_epoch(epoch)
        train_model.train()
        losses, images, begin = [], 0, time.perf_counter()
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{config.epochs}", disable=not progress, leave=False)
        for i, (inputs, targets) in enumerate(bar):
            step = epoch * steps_per_epoch + i
            lr = learning_rate(recipe, step=step, steps_per_epoch=steps_per_epoch, epochs=config.epochs,
                               batch_size=config.batch_size)
            for group in optimizer.param_groups:
                group["lr"] = lr
            _warm_bn_momentum(norms, bn_bases, step)
            inputs, targets = inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
                loss = task.criterion(train_model(inputs), targets)
            try:
                losses.append(check_loss(loss, step))
            except DivergedError as err:
                kept = f"checkpoint of epoch {history[-1]['epoch']} kept in {out}" if history else "no checkpoint yet"
                raise DivergedError(f"{err}; {kept}") from None
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if ema is not None:
                ema.update(model)
            images += len(targets) * world
            rate = images / (time.perf_counter() - begin)
            bar.set_postfix(loss=f"{losses[-1]:.3f}", lr=f"{lr:.4g}", img_s=f"{rate:.0f}")
        seconds = time.perf_counter() - begin
        if world > 1:
            _average_buffers(model, world)
            if ema is not None:
                _average_buffers(ema.module, world)
        row: dict[str, Any] = {"epoch": epoch + 1, "step": (epoch + 1) * steps_per_epoch, "lr": lr,
                               "train_loss": sum(losses) / len(losses), "train_images_per_s": images / seconds,
                               "seconds": seconds}
        row.update({f"val_{k}": v for k, v in task.evaluate(model, val_loader, device).items()})
        if ema is not None:
            row.update({f"ema_val_{k}": v for k, v in task.evaluate(ema.module, val_loader, device).items()})
        history.append(row)
        rng = [_rng_state(device)]
        if world > 1:
            rng = [None] * world
            dist.all_gather_object(rng, _rng_state(device))
        if _is_main(rank):
            _save_atomic({"epoch": epoch + 1, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                          "ema": ema.state_dict() if ema is not None else None, "rng": rng, "history": history,
                          "config": json.loads(json.dumps(config.to_dict(), default=str)),
                          "spec": task.spec.to_json(), "task": config.task}, checkpoint_path)
            frame = pd.DataFrame(history)
            frame.to_csv(out / METRICS, index=False)
            plot_learning_curve(frame, out / CURVE)
            if progress:
                shown = ", ".join(f"{k} {v:.4f}" for k, v in row.items() if k.startswith(("val_", "ema_val_")))
                tqdm.write(f"epoch {epoch + 1}/{config.epochs}: train loss {row['train_loss']:.4f}, {shown}")
        if world > 1:
            dist.barrier()

    frame = pd.DataFrame(history)
    last = history[-1] if history else {}
    prefix = "ema_val_" if ema is not None else "val_"
    final = {k[len(prefix):]: float(v) for k, v in last.items() if k.startswith(prefix)}
    finished = len(history) == config.epochs
    if _is_main(rank) and finished and config.task == "classification" and task.data.test is not None:
        # The held-out validation split steered nothing here, but search and NetAdapt may have
        # used it; the test split is the number to publish.
        scored = ema.module if ema is not None else model
        test_loader = task.data.loader("test", batch_size=max(1, per_process))
        final.update({f"test_{k}": v for k, v in task.evaluate(scored, test_loader, device).items()})
    if _is_main(rank) and history:
        (out / RESULT).write_text(json.dumps({"epochs_done": len(history), "final": final,
                                              "evaluated": "ema" if ema is not None else "model",
                                              "config": config.to_dict()}, indent=2))
    return FitResult(history=frame, final=final, checkpoint=checkpoint_path, resumed_from=start_epoch)


def load_trained(checkpoint: Path, *, use_ema: bool = True, device: str = "cpu") -> tuple[nn.Module, ArchSpec, dict]:
    """The model stored in a checkpoint written by :func:`fit` (its EMA weights when it has them)."""
    checkpoint = Path(checkpoint)
    if checkpoint.is_dir():
        checkpoint = checkpoint / CHECKPOINT
    if not checkpoint.is_file():
        raise NasError(f"{checkpoint}: no such checkpoint")
    try:
        state = torch.load(checkpoint, map_location=device, weights_only=False)
    except Exception as err:  # a truncated or foreign file: say which, not a pickle traceback
        raise NasError(f"{checkpoint}: not a readable checkpoint ({type(err).__name__})") from None
    if not isinstance(state, dict) or "model" not in state or "spec" not in state:
        raise NasError(f"{checkpoint}: not a checkpoint written by python -m nas.train")
    spec = ArchSpec.from_json(state["spec"])
    config = state["config"]
    if state.get("task") == "segmentation":
        model = build_segmentation_model(spec, num_classes=_segmentation_classes(state["model"]),
                                         head=config["segmentation_head"], output_stride=config["output_stride"])
    else:
        model = build_model(spec)
    weights = state["ema"]["module"] if use_ema and state.get("ema") else state["model"]
    model.load_state_dict(weights)
    return model.to(device).eval(), spec, config


def _segmentation_classes(weights: dict[str, torch.Tensor]) -> int:
    for name, value in weights.items():
        if name.endswith("classifier.weight") and name.startswith("head."):
            return int(value.shape[0])
    raise NasError("segmentation checkpoint without a classifier")
