"""Plain building blocks of every network in the space, and the parameters each declares.

Every block class says, without being built, which state-dict entries it has and which of
its channel groups (:class:`Channels`) each tensor dimension indexes (``params``). Weight
inheritance, checkpoint conversion and a weight-sharing supernet read these declarations
instead of writing the names down again; :func:`slice_channels` cuts any declared tensor
to other widths.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Hashable, Mapping, Sequence, TypeVar

import torch
from torch import nn

from nas.arch import HeadSpec, LayerSpec

# TensorFlow's defaults, used by the MnasNet and MobileNetV3 papers.
BN_EPS = 1e-3
BN_MOMENTUM = 0.01

_ACTIVATIONS = {"relu": nn.ReLU, "relu6": nn.ReLU6, "hswish": nn.Hardswish}


def make_act(name: str | None) -> nn.Module:
    return nn.Identity() if name is None else _ACTIVATIONS[name](inplace=True)


class Channels(Enum):
    """A block's channel groups: every channel dimension of its parameters indexes one of them."""

    INPUT = "input"
    EXPANDED = "expanded"  # the depthwise width of an inverted residual; a head's 1x1 conv width
    SQUEEZE = "squeeze"  # squeeze-excite's reduced width
    OUTPUT = "output"
    HIDDEN = "hidden"  # the linear layer of MobileNetV3's efficient head


G = TypeVar("G", bound=Hashable)


@dataclass(frozen=True)
class Param:
    """One state-dict entry of a block: its name under the block and, per dimension, the channel
    group it indexes (None for a size no width changes: kernel, a depthwise conv's 1, classes)."""

    name: str
    dims: tuple[Channels | None, ...]

    def indexing(self, groups: Mapping[Channels, G]) -> tuple[G | None, ...]:
        """Per dimension, what ``groups`` maps its channel group to."""
        return tuple(None if group is None else groups[group] for group in self.dims)


def nested(prefix: str, params: Sequence[Param], groups: Mapping[Channels, Channels]) -> tuple[Param, ...]:
    """A sub-module's declarations as its parent sees them: under ``prefix``, with its groups renamed."""
    return tuple(Param(f"{prefix}.{param.name}", param.indexing(groups)) for param in params)


def slice_channels(tensor: torch.Tensor, dims: Sequence[G | None],
                   keep: Mapping[G, int | torch.Tensor]) -> torch.Tensor:
    """``tensor`` cut along each channel dimension to ``keep[group]``: an int keeps the first that
    many channels (a view, as a weight-sharing supernet wants), a tensor the channels at those
    indices (as weight inheritance wants)."""
    for axis, group in enumerate(dims):
        if group is not None:
            chosen = keep[group]
            tensor = tensor.narrow(axis, 0, chosen) if isinstance(chosen, int) else \
                tensor.index_select(axis, chosen.to(tensor.device))
    return tensor


def filter_norms(tensor: torch.Tensor) -> torch.Tensor:
    """The L2 norm of each filter (each index of the first dimension), in float64: the channel
    importance NetAdapt's inheritance and the supernet's channel sorting sum over a group's producers."""
    return tensor.detach().double().flatten(1).norm(dim=1)


def _affine(name: str, out: Channels | None, inp: Channels, kernel: bool) -> tuple[Param, ...]:
    """A layer with a bias: a linear layer, or (``kernel``) a 1x1 convolution."""
    return Param(f"{name}.weight", (out, inp) + ((None, None) if kernel else ())), Param(f"{name}.bias", (out,))


class ConvBNAct(nn.Sequential):
    """Convolution without bias, batch norm, optional activation."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 1, stride: int = 1, groups: int = 1,
                 act: str | None = None, dilation: int = 1) -> None:
        padding = (kernel - 1) // 2 * dilation
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, stride, padding, dilation=dilation, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_ch, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.act = make_act(act)

    @staticmethod
    def params(*, depthwise: bool = False) -> tuple[Param, ...]:
        """``depthwise``: the convolution has one group per channel, so its input is not a dimension."""
        out = Channels.OUTPUT
        conv = Param("conv.weight", (out, None if depthwise else Channels.INPUT, None, None))
        stats = tuple(Param(f"bn.{name}", (out,)) for name in ("weight", "bias", "running_mean", "running_var"))
        return conv, *stats, Param("bn.num_batches_tracked", ())


class SqueezeExcite(nn.Module):
    """Channel gating: pool, reduce, ReLU, expand, gate (sigmoid for MnasNet, hard-sigmoid for V3)."""

    def __init__(self, channels: int, squeeze: int, gate: str) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, squeeze, 1)
        self.act = nn.ReLU(inplace=True)
        self.expand = nn.Conv2d(squeeze, channels, 1)
        self.gate = nn.Hardsigmoid() if gate == "hard" else nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = x.mean((2, 3), keepdim=True)
        scale = self.gate(self.expand(self.act(self.reduce(scale))))
        return x * scale

    @staticmethod
    def params() -> tuple[Param, ...]:
        """The gated channels are its INPUT (and output); the reduced ones its SQUEEZE."""
        return (*_affine("reduce", Channels.SQUEEZE, Channels.INPUT, kernel=True),
                *_affine("expand", Channels.INPUT, Channels.SQUEEZE, kernel=True))


def make_se(layer: LayerSpec, in_ch: int, channels: int) -> nn.Module:
    if not layer.has_se:
        return nn.Identity()
    return SqueezeExcite(channels, layer.se_channels(in_ch), "hard" if layer.se_style == "v3" else "sigmoid")


class InvertedResidual(nn.Module):
    """MBConv (``ir``) and depthwise-separable (``ds``) blocks: [expand] -> depthwise -> [SE] -> project.

    The 1x1 expansion is absent when the expanded width equals the input width.
    """

    def __init__(self, layer: LayerSpec, in_ch: int, dilation: int = 1) -> None:
        super().__init__()
        self.residual = layer.residual
        self.expand = ConvBNAct(in_ch, layer.exp, act=layer.act) if self.expands(layer, in_ch) else nn.Identity()
        stride = 1 if dilation > 1 else layer.stride
        self.dw = ConvBNAct(layer.exp, layer.exp, layer.kernel, stride, groups=layer.exp, act=layer.act,
                            dilation=dilation)
        self.se = make_se(layer, in_ch, layer.exp)
        self.project = ConvBNAct(layer.exp, layer.out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.se(self.dw(self.expand(x))))
        return x + y if self.residual else y

    @staticmethod
    def expands(layer: LayerSpec, in_ch: int) -> bool:
        return layer.exp != in_ch

    @classmethod
    def params(cls, layer: LayerSpec, in_ch: int) -> tuple[Param, ...]:
        inp, exp = Channels.INPUT, Channels.EXPANDED
        expand = nested("expand", ConvBNAct.params(), {inp: inp, Channels.OUTPUT: exp}) \
            if cls.expands(layer, in_ch) else ()
        se = nested("se", SqueezeExcite.params(), {inp: exp, Channels.SQUEEZE: Channels.SQUEEZE}) \
            if layer.has_se else ()
        return (*expand, *nested("dw", ConvBNAct.params(depthwise=True), {Channels.OUTPUT: exp}), *se,
                *nested("project", ConvBNAct.params(), {inp: exp, Channels.OUTPUT: Channels.OUTPUT}))


class ConvBlock(nn.Module):
    """A regular kxk convolution block (MnasNet's ``conv`` op) with optional SE and residual."""

    def __init__(self, layer: LayerSpec, in_ch: int, dilation: int = 1) -> None:
        super().__init__()
        self.residual = layer.residual
        stride = 1 if dilation > 1 else layer.stride
        self.conv = ConvBNAct(in_ch, layer.out, layer.kernel, stride, act=layer.act, dilation=dilation)
        self.se = make_se(layer, in_ch, layer.out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.se(self.conv(x))
        return x + y if self.residual else y

    @staticmethod
    def params(layer: LayerSpec) -> tuple[Param, ...]:
        out = Channels.OUTPUT
        se = nested("se", SqueezeExcite.params(), {Channels.INPUT: out, Channels.SQUEEZE: Channels.SQUEEZE}) \
            if layer.has_se else ()
        return *nested("conv", ConvBNAct.params(), {Channels.INPUT: Channels.INPUT, out: out}), *se


def make_block(layer: LayerSpec, in_ch: int, dilation: int = 1) -> nn.Module:
    if layer.op == "conv":
        return ConvBlock(layer, in_ch, dilation)
    return InvertedResidual(layer, in_ch, dilation)


def block_expands(layer: LayerSpec, in_ch: int) -> bool:
    """Whether ``make_block(layer, in_ch)`` has a 1x1 expansion conv (a ``conv`` block never has one)."""
    return layer.op != "conv" and InvertedResidual.expands(layer, in_ch)


def block_params(layer: LayerSpec, in_ch: int) -> tuple[Param, ...]:
    """What ``make_block(layer, in_ch)`` declares."""
    return ConvBlock.params(layer) if layer.op == "conv" else InvertedResidual.params(layer, in_ch)


class ClassicHead(nn.Module):
    """1x1 conv, BN, activation, global pooling, dropout, linear (MnasNet, MobileNetV2)."""

    def __init__(self, head: HeadSpec, in_ch: int) -> None:
        super().__init__()
        self.conv = ConvBNAct(in_ch, head.channels, act=head.act)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(head.dropout)
        self.classifier = nn.Linear(head.channels, head.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.conv(x)).flatten(1)
        return self.classifier(self.dropout(x))

    @staticmethod
    def params() -> tuple[Param, ...]:
        return *_head_conv(), *_affine("classifier", None, Channels.EXPANDED, kernel=False)


class EfficientHead(nn.Module):
    """MobileNetV3's efficient last stage: the wide layers run after pooling, on a 1x1 map."""

    def __init__(self, head: HeadSpec, in_ch: int) -> None:
        super().__init__()
        self.conv = ConvBNAct(in_ch, head.channels, act=head.act)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.hidden = nn.Linear(head.channels, head.hidden)
        self.act = make_act(head.act)
        self.dropout = nn.Dropout(head.dropout)
        self.classifier = nn.Linear(head.hidden, head.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.conv(x)).flatten(1)
        return self.classifier(self.dropout(self.act(self.hidden(x))))

    @staticmethod
    def params() -> tuple[Param, ...]:
        hidden = Channels.HIDDEN
        return (*_head_conv(), *_affine("hidden", hidden, Channels.EXPANDED, kernel=False),
                *_affine("classifier", None, hidden, kernel=False))


def _head_conv() -> tuple[Param, ...]:
    """A head's 1x1 convolution: INPUT is the last block's output, EXPANDED its own width."""
    return nested("conv", ConvBNAct.params(), {Channels.INPUT: Channels.INPUT, Channels.OUTPUT: Channels.EXPANDED})


def make_head(head: HeadSpec, in_ch: int) -> nn.Module:
    return EfficientHead(head, in_ch) if head.efficient else ClassicHead(head, in_ch)


def head_params(head: HeadSpec) -> tuple[Param, ...]:
    """What ``make_head(head, ...)`` declares."""
    return EfficientHead.params() if head.efficient else ClassicHead.params()
