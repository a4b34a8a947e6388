"""Plain building blocks of every network in the space.

Module names are part of the contract: checkpoint conversion and NetAdapt's weight
inheritance address parameters by them (``expand``, ``dw``, ``se``, ``project`` ...).
"""

from __future__ import annotations

import torch
from torch import nn

from nas.arch import HeadSpec, LayerSpec

# TensorFlow's defaults, used by the MnasNet and MobileNetV3 papers.
BN_EPS = 1e-3
BN_MOMENTUM = 0.01

_ACTIVATIONS = {"relu": nn.ReLU, "relu6": nn.ReLU6, "hswish": nn.Hardswish}


def make_act(name: str | None) -> nn.Module:
    return nn.Identity() if name is None else _ACTIVATIONS[name](inplace=True)


class ConvBNAct(nn.Sequential):
    """Convolution without bias, batch norm, optional activation."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 1, stride: int = 1, groups: int = 1,
                 act: str | None = None, dilation: int = 1) -> None:
        padding = (kernel - 1) // 2 * dilation
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, stride, padding, dilation=dilation, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_ch, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.act = make_act(act)


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
        self.expand = ConvBNAct(in_ch, layer.exp, act=layer.act) if layer.exp != in_ch else nn.Identity()
        stride = 1 if dilation > 1 else layer.stride
        self.dw = ConvBNAct(layer.exp, layer.exp, layer.kernel, stride, groups=layer.exp, act=layer.act,
                            dilation=dilation)
        self.se = make_se(layer, in_ch, layer.exp)
        self.project = ConvBNAct(layer.exp, layer.out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.se(self.dw(self.expand(x))))
        return x + y if self.residual else y


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


def make_block(layer: LayerSpec, in_ch: int, dilation: int = 1) -> nn.Module:
    if layer.op == "conv":
        return ConvBlock(layer, in_ch, dilation)
    return InvertedResidual(layer, in_ch, dilation)


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


def make_head(head: HeadSpec, in_ch: int) -> nn.Module:
    return EfficientHead(head, in_ch) if head.efficient else ClassicHead(head, in_ch)
