"""``build_model(spec)``: one model class for every architecture the spec can describe."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from nas.arch import ArchSpec, iter_layers
from nas.blocks import ConvBNAct, Param, block_params, head_params, make_block, make_head


class Network(nn.Module):
    """Stem, a flat sequence of blocks, head. ``spec`` is kept so a model can say what it is."""

    def __init__(self, spec: ArchSpec, output_stride: int = 32) -> None:
        super().__init__()
        if output_stride not in (8, 16, 32):
            raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
        self.spec = spec
        self.stem = ConvBNAct(3, spec.stem.channels, spec.stem.kernel, spec.stem.stride, act=spec.stem.act)
        stride, dilation, blocks = spec.stem.stride, 1, []
        for _, in_ch, layer in iter_layers(spec):
            if stride * layer.stride > output_stride:
                dilation *= layer.stride
            else:
                stride *= layer.stride
            blocks.append(make_block(layer, in_ch, dilation))
        self.blocks = nn.Sequential(*blocks)
        self.head = make_head(spec.head, spec.last_channels())
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


def build_model(spec: ArchSpec, output_stride: int = 32) -> Network:
    """Build the network a spec describes; ``output_stride`` < 32 dilates the late blocks (segmentation)."""
    return Network(spec, output_stride)


@dataclass(frozen=True)
class Part:
    """One piece of a :class:`Network` and the parameters it declares (names relative to ``prefix``)."""

    prefix: str  # "stem", "blocks.3", "head"
    kind: str  # "stem", the layer's op ("ds", "ir", "conv"), "head"
    layer: int | None  # the block's index in ``spec.layers``; None for stem and head
    params: tuple[Param, ...]


def network_parts(spec: ArchSpec) -> list[Part]:
    """The stem, blocks and head of ``build_model(spec)`` in order, read from the spec without building it."""
    parts = [Part("stem", "stem", None, ConvBNAct.params())]
    parts += [Part(f"blocks.{i}", layer.op, i, block_params(layer, in_ch)) for i, in_ch, layer in iter_layers(spec)]
    parts.append(Part("head", "head", None, head_params(spec.head)))
    return parts


def init_weights(model: nn.Module) -> None:
    """One initialisation for every network of ours, stand-alone or supernet, so a child starts where its twin does."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0, 0.01)
            nn.init.zeros_(module.bias)


def fuse_bn(model: nn.Module) -> nn.Module:
    """An inference copy with every BatchNorm folded into the convolution before it."""
    fused = copy.deepcopy(model).eval()
    for module in fused.modules():
        if isinstance(module, ConvBNAct) and isinstance(module.bn, nn.BatchNorm2d):
            conv, bn = module.conv, module.bn
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            folded = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                               conv.padding, conv.dilation, conv.groups, bias=True)
            with torch.no_grad():
                folded.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
                bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
                folded.bias.copy_((bias - bn.running_mean) * scale + bn.bias)
            module.conv, module.bn = folded, nn.Identity()
    return fused
