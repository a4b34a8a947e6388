"""Parameters and MAdds of a spec.

Convention (named, as the papers use it): **one multiply-add counts once; BatchNorm,
activations, residual adds and SE gating count as zero.** MobileNetV3-Large is then
216.6M MAdds at 224 px, the published figure. Counted by fvcore on the real module.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from fvcore.nn import FlopCountAnalysis

from nas.arch import ArchSpec
from nas.model import build_model

# Ops that carry no multiply-add under our convention; anything else unhandled is an error.
_ZERO_COST_OPS = (
    "aten::batch_norm", "aten::add", "aten::add_", "aten::mul", "aten::mul_", "aten::hardswish",
    "aten::hardswish_", "aten::hardsigmoid", "aten::sigmoid", "aten::relu", "aten::relu_",
    "aten::hardtanh", "aten::hardtanh_", "aten::dropout", "aten::mean", "aten::adaptive_avg_pool2d",
    "aten::flatten",
)


@dataclass(frozen=True)
class Profile:
    params: int
    madds: int
    resolution: int


def _zero(inputs: list[Any], outputs: list[Any]) -> int:
    return 0


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_madds(model: torch.nn.Module, resolution: int = 224) -> int:
    model = model.eval()
    analysis = FlopCountAnalysis(model, torch.zeros(1, 3, resolution, resolution))
    for op in _ZERO_COST_OPS:
        analysis.set_op_handle(op, _zero)
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    logging.getLogger("fvcore").setLevel(logging.ERROR)
    total = analysis.total()
    unexpected = set(analysis.unsupported_ops())
    if unexpected:
        raise RuntimeError(f"MAdds convention does not cover ops {sorted(unexpected)}")
    return int(total)


def profile(spec: ArchSpec, resolution: int = 224) -> Profile:
    """Params and MAdds of the network a spec describes, at a square input of ``resolution``."""
    model = build_model(spec)
    return Profile(params=count_params(model), madds=count_madds(model, resolution), resolution=resolution)
