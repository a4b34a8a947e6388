"""A child's tensors cut from the supernet's largest blocks, and the forward pass that runs them.

The supernet holds ordinary :mod:`nas.blocks` modules at their largest size. What a child takes
of one is read from the block's own parameter declarations (:func:`nas.blocks.block_params`,
:func:`~nas.blocks.head_params`): every declared tensor is cut with :func:`~nas.blocks.slice_channels`
to the child's widths (a prefix of each channel group, a view) and its kernel is the centre crop
of the largest. The same cut tensors run the child here (:func:`run_layer`, :func:`run_head`) and
are what extraction copies into ``build_model(spec)``, so an extracted child computes what the
supernet ran.

Channel groups tie dimensions across layers (a block's output is the next one's input, and
residuals tie every layer of a block): :class:`Axis` names the group each sliceable dimension
indexes, so :meth:`~nas.supernet.network.Supernet.reorder_channels` permutes a group everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import reduce
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nas.arch import HeadSpec, LayerSpec, StemSpec
from nas.blocks import BN_EPS, BN_MOMENTUM, Channels, Param, slice_channels

_ACTIVATIONS = {"relu": F.relu, "relu6": F.relu6, "hswish": F.hardswish}
Tensors = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Axis:
    """Dimension ``dim`` of the tensor at ``path`` (relative to the supernet) indexes ``group``."""

    path: str
    dim: int
    group: str


def axes(prefix: str, params: Sequence[Param], groups: Mapping[Channels, str | None]) -> list[Axis]:
    """The sliceable dimensions of a module's declared tensors, each with its supernet-wide group."""
    return [Axis(f"{prefix}.{param.name}", dim, group)
            for param in params for dim, group in enumerate(param.indexing(groups)) if group is not None]


def centre_crop(weight: torch.Tensor, kernel: int) -> torch.Tensor:
    """The central ``kernel`` x ``kernel`` window of a larger (odd) square kernel."""
    offset = (weight.shape[-1] - kernel) // 2
    return weight[..., offset:offset + kernel, offset:offset + kernel]


def cut(module: nn.Module, params: Sequence[Param], keep: Mapping[Channels, int], kernel: int) -> Tensors:
    """``module``'s declared tensors cut to the widths in ``keep``; spatial kernels cropped to ``kernel``.

    A block has one spatial kernel (its depthwise or regular convolution), the child's ``kernel``.
    """
    views = {}
    for param in params:
        tensor = slice_channels(reduce(getattr, param.name.split("."), module), param.dims, keep)
        views[param.name] = centre_crop(tensor, kernel) if tensor.dim() == 4 and tensor.shape[-1] > 1 else tensor
    return views


def activate(x: torch.Tensor, act: str | None) -> torch.Tensor:
    return x if act is None else _ACTIVATIONS[act](x)


def conv_bn(x: torch.Tensor, t: Tensors, prefix: str, *, stride: int, act: str | None, training: bool,
            depthwise: bool = False) -> torch.Tensor:
    """``ConvBNAct`` (under ``prefix``; "" for the stem's own tensors) from cut tensors; BatchNorm
    statistics update the supernet's own (views)."""
    at = f"{prefix}." if prefix else ""
    weight = t[f"{at}conv.weight"]
    groups = x.shape[1] if depthwise else 1
    y = F.conv2d(x, weight, None, stride, (weight.shape[-1] - 1) // 2, 1, groups)
    y = F.batch_norm(y, t[f"{at}bn.running_mean"], t[f"{at}bn.running_var"], t[f"{at}bn.weight"],
                     t[f"{at}bn.bias"], training, BN_MOMENTUM, BN_EPS)
    return activate(y, act)


def squeeze_excite(x: torch.Tensor, t: Tensors, *, hard: bool) -> torch.Tensor:
    scale = F.relu(F.conv2d(x.mean((2, 3), keepdim=True), t["se.reduce.weight"], t["se.reduce.bias"]))
    scale = F.conv2d(scale, t["se.expand.weight"], t["se.expand.bias"])
    return x * (F.hardsigmoid(scale) if hard else torch.sigmoid(scale))


def run_stem(x: torch.Tensor, t: Tensors, stem: StemSpec, *, training: bool) -> torch.Tensor:
    """The stem (a ``ConvBNAct``) on its cut tensors ``t``."""
    return conv_bn(x, t, "", stride=stem.stride, act=stem.act, training=training)


def run_layer(x: torch.Tensor, t: Tensors, layer: LayerSpec, *, training: bool) -> torch.Tensor:
    """``make_block(layer, ...)``'s forward pass on the cut tensors ``t``."""
    if layer.op == "conv":
        y = conv_bn(x, t, "conv", stride=layer.stride, act=layer.act, training=training)
    else:
        y = conv_bn(x, t, "expand", stride=1, act=layer.act, training=training) if "expand.conv.weight" in t else x
        y = conv_bn(y, t, "dw", stride=layer.stride, act=layer.act, training=training, depthwise=True)
    if layer.has_se:
        y = squeeze_excite(y, t, hard=layer.se_style == "v3")
    if layer.op != "conv":
        y = conv_bn(y, t, "project", stride=1, act=None, training=training)
    return x + y if layer.residual else y


def run_head(x: torch.Tensor, t: Tensors, head: HeadSpec, *, training: bool) -> torch.Tensor:
    """``make_head(head, ...)``'s forward pass on the cut tensors ``t``."""
    x = conv_bn(x, t, "conv", stride=1, act=head.act, training=training).mean((2, 3))
    if head.efficient:
        x = activate(F.linear(x, t["hidden.weight"], t["hidden.bias"]), head.act)
    x = F.dropout(x, head.dropout, training)
    return F.linear(x, t["classifier.weight"], t["classifier.bias"])
