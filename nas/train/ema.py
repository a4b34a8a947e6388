"""Exponential moving average of a model's weights (the MobileNetV3 recipe evaluates the average)."""

from __future__ import annotations

import copy

import torch
from torch import nn


def ema_decay(decay: float, updates: int) -> float:
    """TensorFlow's ``num_updates`` rule: the average follows quickly at first, then at ``decay``.

    Without it a decay of 0.9999 would keep a short run's average near the initial weights.
    """
    return min(decay, (1 + updates) / (10 + updates))


class ModelEma:
    """A frozen copy of a model whose floating-point state (weights and BN statistics) is averaged."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = ema_decay(self.decay, self.updates)
        self.updates += 1
        source = model.state_dict()
        for name, value in self.module.state_dict().items():
            if value.is_floating_point():
                value.mul_(d).add_(source[name].detach(), alpha=1 - d)
            else:
                value.copy_(source[name])

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "updates": self.updates, "decay": self.decay}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])
        self.decay = float(state["decay"])
