"""Semantic segmentation on any spec's backbone: MobileNetV3's LR-ASPP head, an FCN head, and mIoU.

The backbone is :func:`nas.model.build_model` at output stride 8 or 16 (later strides dilated),
cut before pooling: the head's 1x1 convolution (960 channels for V3-Large) is its last layer,
as in the paper. LR-ASPP also taps the last block at nominal stride 8 (the low-level features).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nas.arch import ArchSpec, make_divisible
from nas.blocks import ConvBNAct
from nas.errors import NasError
from nas.model import build_model

IGNORE_INDEX = 255
HEADS = ("lraspp", "fcn")


def nominal_strides(spec: ArchSpec) -> list[int]:
    """Cumulative stride after each layer, as if nothing were dilated."""
    stride, out = spec.stem.stride, []
    for layer in spec.layers:
        stride *= layer.stride
        out.append(stride)
    return out


def low_level_index(spec: ArchSpec, stride: int = 8) -> int:
    """Index of the last layer whose output has nominal stride ``stride`` (LR-ASPP's low-level tap)."""
    hits = [i for i, s in enumerate(nominal_strides(spec)) if s == stride]
    if not hits:
        raise NasError(f"the architecture has no layer at stride {stride} to tap low-level features from")
    return hits[-1]


def reduce_tail(spec: ArchSpec) -> ArchSpec:
    """Halve the widths of the last stage (from the last stride-2 layer on) and of the head's 1x1 conv.

    The stage's first expansion keeps its width: it is sized by the (unchanged) stage input.

    The paper's "reduced tail" for segmentation: the last stage feeds a dense head, so its
    width costs more there than in classification.
    """
    last = max((i for i, layer in enumerate(spec.layers) if layer.stride == 2), default=0)
    layers = list(spec.layers)
    for i in range(last, len(layers)):
        layer, in_ch = layers[i], layers[i - 1].out if i > 0 else spec.stem.channels
        out = make_divisible(layer.out / 2, 8)
        exp = {"ds": in_ch, "conv": out}.get(layer.op, layer.exp if i == last else make_divisible(layer.exp / 2, 8))
        layers[i] = replace(layer, exp=exp, out=out)
    head = replace(spec.head, channels=make_divisible(spec.head.channels / 2, 8))
    return replace(spec, layers=tuple(layers), head=head)


class Backbone(nn.Module):
    """Stem, blocks and the head's 1x1 conv of a network; returns (low-level, high-level) features."""

    def __init__(self, spec: ArchSpec, *, output_stride: int) -> None:
        super().__init__()
        network = build_model(spec, output_stride=output_stride)
        self.low_index = low_level_index(spec)
        self.stem, self.blocks, self.head_conv = network.stem, network.blocks, network.head.conv
        self.low_channels = spec.layers[self.low_index].out
        self.high_channels = spec.head.channels

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.stem(x)
        low = x
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i == self.low_index:
                low = x
        return low, self.head_conv(x)


class LRASPP(nn.Module):
    """Lite R-ASPP: a 1x1 conv gated by a pooled squeeze branch, upsampled and added to a
    classifier on the stride-8 features."""

    def __init__(self, low_channels: int, high_channels: int, num_classes: int, inter: int = 128) -> None:
        super().__init__()
        self.conv = ConvBNAct(high_channels, inter, act="relu")
        self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(high_channels, inter, 1, bias=False),
                                  nn.Sigmoid())
        self.high_classifier = nn.Conv2d(inter, num_classes, 1)
        self.low_classifier = nn.Conv2d(low_channels, num_classes, 1)

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        x = self.conv(high) * self.gate(high)
        x = F.interpolate(x, size=low.shape[-2:], mode="bilinear", align_corners=False)
        return self.high_classifier(x) + self.low_classifier(low)


class FCNHead(nn.Module):
    """The FCN head used with MobileNetV2: 3x3 conv to a quarter of the width, dropout, 1x1 classifier."""

    def __init__(self, high_channels: int, num_classes: int) -> None:
        super().__init__()
        inter = max(8, high_channels // 4)
        self.conv = ConvBNAct(high_channels, inter, 3, act="relu")
        self.dropout = nn.Dropout(0.1)
        self.classifier = nn.Conv2d(inter, num_classes, 1)

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.conv(high)))


class SegmentationModel(nn.Module):
    """Backbone + head; logits at the input's size."""

    def __init__(self, spec: ArchSpec, *, num_classes: int, head: str = "lraspp", output_stride: int = 16,
                 reduced_tail: bool = False) -> None:
        super().__init__()
        if head not in HEADS:
            raise NasError(f"unknown segmentation head {head!r}; known: {', '.join(HEADS)}")
        if output_stride not in (8, 16):
            raise NasError(f"segmentation output stride must be 8 or 16, got {output_stride}")
        self.spec = reduce_tail(spec) if reduced_tail else spec
        self.backbone = Backbone(self.spec, output_stride=output_stride)
        if head == "lraspp":
            self.head = LRASPP(self.backbone.low_channels, self.backbone.high_channels, num_classes)
        else:
            self.head = FCNHead(self.backbone.high_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.head(*self.backbone(x))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


def build_segmentation_model(spec: ArchSpec, *, num_classes: int, head: str = "lraspp", output_stride: int = 16,
                             reduced_tail: bool = False) -> SegmentationModel:
    """LR-ASPP (MobileNetV3) or FCN (MobileNetV2) on a dilated backbone of ``spec``."""
    return SegmentationModel(spec, num_classes=num_classes, head=head, output_stride=output_stride,
                             reduced_tail=reduced_tail)


# ------------------------------------------------------------------ metrics (pure numpy)


def confusion_matrix(pred: np.ndarray, target: np.ndarray, num_classes: int,
                     ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """``C x C`` counts, rows = ground truth, columns = prediction; ignored pixels are skipped."""
    pred, target = np.asarray(pred).ravel(), np.asarray(target).ravel()
    keep = target != ignore_index
    pred, target = pred[keep].astype(np.int64), target[keep].astype(np.int64)
    if target.size and (target.max() >= num_classes or target.min() < 0):
        raise NasError(f"label {int(target.max())} outside 0..{num_classes - 1} (and not {ignore_index})")
    return np.bincount(target * num_classes + pred, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def class_iou(conf: np.ndarray) -> np.ndarray:
    """Intersection over union per class; NaN for a class absent from both prediction and truth."""
    conf = np.asarray(conf, dtype=np.float64)
    inter = np.diag(conf)
    union = conf.sum(0) + conf.sum(1) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, np.nan)


def mean_iou(conf: np.ndarray) -> float:
    """Mean IoU over the classes that occur (the Cityscapes benchmark's mIoU)."""
    iou = class_iou(conf)
    return float(np.nanmean(iou)) if np.isfinite(iou).any() else 0.0


def pixel_accuracy(conf: np.ndarray) -> float:
    total = conf.sum()
    return float(np.trace(conf) / total) if total else 0.0


@dataclass(frozen=True)
class SegmentationResult:
    miou: float
    pixel_accuracy: float
    loss: float
    images_per_s: float
    iou: tuple[float, ...]
    images: int


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX)


@torch.no_grad()
def evaluate_segmentation(model: nn.Module, loader: Iterable, *, num_classes: int,
                          device: str = "cpu") -> SegmentationResult:
    """mIoU, pixel accuracy and mean loss of ``model`` over the loader (images of any size)."""
    model.to(device).eval()
    conf = np.zeros((num_classes, num_classes), dtype=np.int64)
    loss_sum, images, seconds = 0.0, 0, 0.0
    for inputs, targets in loader:
        inputs, targets = inputs.to(device), targets.to(device)
        start = time.perf_counter()
        logits = model(inputs)
        seconds += time.perf_counter() - start
        if logits.shape[-2:] != targets.shape[-2:]:
            raise NasError(f"prediction size {tuple(logits.shape[-2:])} != label size {tuple(targets.shape[-2:])}")
        loss = segmentation_loss(logits.float(), targets)
        if math.isfinite(float(loss)):
            loss_sum += float(loss) * len(targets)
        conf += confusion_matrix(logits.argmax(1).cpu().numpy(), targets.cpu().numpy(), num_classes)
        images += len(targets)
    if images == 0:
        raise NasError("evaluation loader is empty")
    return SegmentationResult(miou=mean_iou(conf), pixel_accuracy=pixel_accuracy(conf), loss=loss_sum / images,
                              images_per_s=images / seconds if seconds > 0 else 0.0,
                              iou=tuple(float(v) for v in class_iou(conf)), images=images)

