"""Elastic layers: one weight tensor at the largest size, run at any smaller size by slicing.

Channels are taken by prefix and kernels by centre crop. Every tensor dimension that can be
sliced belongs to a named channel *group* (:class:`Axis`): all the tensors that index the same
channels, across layers tied by residuals, share one group, so a permutation of a group
(:func:`nas.supernet.network.Supernet.reorder_channels`) keeps the full network's function.

Each layer slices its tensors in one method (``tensors``) that both the forward pass and child
extraction use, so a child's extracted weights are exactly the ones the supernet ran it with.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from nas.blocks import BN_EPS, BN_MOMENTUM

_ACTIVATIONS = {"relu": F.relu, "relu6": F.relu6, "hswish": F.hardswish}
_BN = ("weight", "bias", "running_mean", "running_var")


@dataclass(frozen=True)
class Axis:
    """Dimension ``dim`` of the tensor at ``path`` (relative to the supernet) indexes ``group``."""

    path: str
    dim: int
    group: str


def activate(x: torch.Tensor, act: str | None) -> torch.Tensor:
    return x if act is None else _ACTIVATIONS[act](x)


def centre_crop(weight: torch.Tensor, kernel: int) -> torch.Tensor:
    """The central ``kernel`` x ``kernel`` window of a larger (odd) square kernel."""
    offset = (weight.shape[-1] - kernel) // 2
    return weight[..., offset:offset + kernel, offset:offset + kernel]


class ElasticConvBN(nn.Module):
    """Convolution (no bias) + BatchNorm at their largest size; ``depthwise`` convolves per channel.

    A depthwise layer's output width is its input width; a regular one takes a prefix of both.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: int, *, in_group: str | None, out_group: str,
                 depthwise: bool = False) -> None:
        super().__init__()
        self.depthwise, self.in_group, self.out_group = depthwise, in_group, out_group
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, groups=out_ch if depthwise else 1, bias=False)
        self.bn = nn.BatchNorm2d(out_ch, eps=BN_EPS, momentum=BN_MOMENTUM)
        if depthwise and in_ch != out_ch:
            raise ValueError("a depthwise layer has equal input and output widths")

    def axes(self, prefix: str) -> list[Axis]:
        found = [Axis(f"{prefix}.conv.weight", 0, self.out_group)]
        if not self.depthwise and self.in_group is not None:
            found.append(Axis(f"{prefix}.conv.weight", 1, self.in_group))
        return found + [Axis(f"{prefix}.bn.{name}", 0, self.out_group) for name in _BN]

    def tensors(self, in_ch: int, out_ch: int, kernel: int) -> dict[str, torch.Tensor]:
        """Views of the weights a (in_ch -> out_ch, kernel) child uses, named as in ``ConvBNAct``."""
        weight = self.conv.weight[:out_ch] if self.depthwise else self.conv.weight[:out_ch, :in_ch]
        views = {"conv.weight": centre_crop(weight, kernel)}
        views.update({f"bn.{name}": getattr(self.bn, name)[:out_ch] for name in _BN})
        views["bn.num_batches_tracked"] = self.bn.num_batches_tracked
        return views

    def forward(self, x: torch.Tensor, *, out_ch: int, kernel: int, stride: int, act: str | None) -> torch.Tensor:
        in_ch = x.shape[1]
        out_ch = in_ch if self.depthwise else out_ch
        views = self.tensors(in_ch, out_ch, kernel)
        y = F.conv2d(x, views["conv.weight"], None, stride, (kernel - 1) // 2, 1, in_ch if self.depthwise else 1)
        y = F.batch_norm(y, views["bn.running_mean"], views["bn.running_var"], views["bn.weight"],
                         views["bn.bias"], self.training, self.bn.momentum, self.bn.eps)
        return activate(y, act)


class ElasticSE(nn.Module):
    """Squeeze-excite with elastic channel and squeeze widths; the gate is chosen per call."""

    def __init__(self, channels: int, squeeze: int, *, channel_group: str, squeeze_group: str) -> None:
        super().__init__()
        self.channel_group, self.squeeze_group = channel_group, squeeze_group
        self.reduce = nn.Conv2d(channels, squeeze, 1)
        self.expand = nn.Conv2d(squeeze, channels, 1)

    def axes(self, prefix: str) -> list[Axis]:
        c, s = self.channel_group, self.squeeze_group
        return [Axis(f"{prefix}.reduce.weight", 0, s), Axis(f"{prefix}.reduce.weight", 1, c),
                Axis(f"{prefix}.reduce.bias", 0, s), Axis(f"{prefix}.expand.weight", 0, c),
                Axis(f"{prefix}.expand.weight", 1, s), Axis(f"{prefix}.expand.bias", 0, c)]

    def tensors(self, channels: int, squeeze: int) -> dict[str, torch.Tensor]:
        return {"reduce.weight": self.reduce.weight[:squeeze, :channels], "reduce.bias": self.reduce.bias[:squeeze],
                "expand.weight": self.expand.weight[:channels, :squeeze], "expand.bias": self.expand.bias[:channels]}

    def forward(self, x: torch.Tensor, *, squeeze: int, hard: bool) -> torch.Tensor:
        views = self.tensors(x.shape[1], squeeze)
        scale = F.relu(F.conv2d(x.mean((2, 3), keepdim=True), views["reduce.weight"], views["reduce.bias"]))
        scale = F.conv2d(scale, views["expand.weight"], views["expand.bias"])
        return x * (F.hardsigmoid(scale) if hard else torch.sigmoid(scale))


class ElasticLinear(nn.Module):
    """A linear layer with elastic input and (unless ``out_group`` is None) output widths."""

    def __init__(self, in_features: int, out_features: int, *, in_group: str, out_group: str | None) -> None:
        super().__init__()
        self.in_group, self.out_group = in_group, out_group
        self.linear = nn.Linear(in_features, out_features)

    def axes(self, prefix: str) -> list[Axis]:
        found = [Axis(f"{prefix}.linear.weight", 1, self.in_group)]
        if self.out_group is not None:
            found += [Axis(f"{prefix}.linear.weight", 0, self.out_group),
                      Axis(f"{prefix}.linear.bias", 0, self.out_group)]
        return found

    def tensors(self, in_features: int, out_features: int) -> dict[str, torch.Tensor]:
        return {"weight": self.linear.weight[:out_features, :in_features], "bias": self.linear.bias[:out_features]}

    def forward(self, x: torch.Tensor, *, out_features: int) -> torch.Tensor:
        views = self.tensors(x.shape[1], out_features)
        return F.linear(x, views["weight"], views["bias"])

