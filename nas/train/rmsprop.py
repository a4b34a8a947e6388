"""RMSProp as TensorFlow 1 applies it, the optimizer behind the MnasNet / MobileNetV3 numbers.

The TPU reference trains with ``tf.compat.v1.train.RMSPropOptimizer`` (kernel ``ApplyRMSProp``):

    ms  <- ms + (g * g - ms) * (1 - decay)          ms starts at ONE
    mom <- momentum * mom + lr * g / sqrt(ms + eps)  eps INSIDE the root, lr inside the momentum
    p   <- p - mom

``torch.optim.RMSprop`` starts ``ms`` at zero (after one step ``0.1 g^2`` against TF's
``0.9 + 0.1 g^2``, so its first steps are far larger) and divides by ``sqrt(ms) + eps``: no torch
``eps`` matches TF's; ``sqrt(1e-3)`` outside the root, the earlier choice here, gives steps up to
sqrt(2) smaller where ``ms`` is near ``eps``. It also applies ``lr`` after the momentum, which
differs from TF whenever the learning rate changes. Weight decay is L2 on the gradient (``g + weight_decay * p``), as the
reference adds ``weight_decay * l2_loss`` to the loss.
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch

from nas.errors import NasError


class TFRMSprop(torch.optim.Optimizer):
    """TensorFlow 1 RMSProp (non-centered); see the module docstring for the update.

    State per parameter: ``ms`` (mean square) and ``mom`` (momentum accumulator, already scaled by
    the learning rate), so ``state_dict()`` / ``load_state_dict()`` resume bit-identically.
    """

    def __init__(self, params: Iterable, *, lr: float, decay: float = 0.9, momentum: float = 0.9,
                 eps: float = 1e-3, weight_decay: float = 0.0) -> None:
        for name, value, low, high in (("lr", lr, 0.0, None), ("decay", decay, 0.0, 1.0),
                                       ("momentum", momentum, 0.0, 1.0), ("eps", eps, 0.0, None),
                                       ("weight_decay", weight_decay, 0.0, None)):
            if value < low or (high is not None and value >= high):
                bounds = f"in [{low}, {high})" if high is not None else f">= {low}"
                raise NasError(f"TFRMSprop: {name} must be {bounds}, got {value}")
        super().__init__(params, dict(lr=lr, decay=decay, momentum=momentum, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, decay, momentum = group["lr"], group["decay"], group["momentum"]
            eps, weight_decay = group["eps"], group["weight_decay"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                if param.grad.is_sparse:
                    raise NasError("TFRMSprop does not support sparse gradients")
                grad = param.grad if weight_decay == 0 else param.grad.add(param, alpha=weight_decay)
                state = self.state[param]
                if not state:
                    state["ms"] = torch.ones_like(param, memory_format=torch.preserve_format)
                    state["mom"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                ms, mom = state["ms"], state["mom"]
                ms.add_((grad * grad - ms) * (1 - decay))
                mom.mul_(momentum).add_(grad * torch.rsqrt(ms + eps), alpha=lr)
                param.sub_(mom)
        return loss
