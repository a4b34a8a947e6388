"""Named training recipes: the hyper-parameters behind the published numbers, as data.

``mobilenetv3``: the MobileNetV3 paper's setup as in the TensorFlow TPU reference
(tensorflow/tpu ``models/official/mnasnet``): TensorFlow's RMSProp (decay 0.9, momentum 0.9,
epsilon 1e-3 inside the square root, mean square starting at one: :class:`nas.train.rmsprop.TFRMSprop`),
learning rate 0.016 per 256 images, 5 warm-up epochs, then x0.97 every 2.4 epochs, weight
decay 1e-5, dropout 0.2, label smoothing 0.1, EMA of the weights with decay 0.9999, 350 epochs.

``dli14``: the PyTorch reproduction d-li14/mobilenetv3.pytorch: SGD momentum 0.9, learning
rate 0.4 at batch 1024 after a linear 5-epoch warm-up from 0.1, cosine decay, weight decay
4e-5 not on biases or BatchNorm, dropout 0.2, label smoothing 0.1 (its Large model; its Small
used none: pass ``--label-smoothing 0``), 150 epochs.

Both scale the learning rate linearly with the batch size. The learning rate is a pure
function of the step (:func:`learning_rate`), so a resumed run needs no scheduler state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any

import torch
from torch import nn

from nas.errors import NasError
from nas.train.loop import parameter_groups
from nas.train.rmsprop import TFRMSprop


@dataclass(frozen=True)
class Recipe:
    """One training recipe. Learning rates are given at ``reference_batch`` images per step."""

    name: str
    optimizer: str  # "rmsprop" (TensorFlow's, :class:`TFRMSprop`) | "sgd"
    lr: float
    reference_batch: int
    warmup_epochs: float
    warmup_start_lr: float  # at reference_batch; the warm-up ramps linearly from it to ``lr``
    schedule: str  # "exponential" (x decay_rate every decay_epochs) | "cosine"
    epochs: int
    weight_decay: float
    momentum: float = 0.9
    rmsprop_decay: float = 0.9
    rmsprop_eps: float = 1e-3  # inside the square root, as TensorFlow applies it
    nesterov: bool = False
    decay_rate: float = 0.97
    decay_epochs: float = 2.4
    dropout: float = 0.2
    label_smoothing: float = 0.1
    ema_decay: float = 0.0  # 0: no EMA of the weights

    def scaled_lr(self, batch_size: int) -> float:
        return self.lr * batch_size / self.reference_batch

    def with_overrides(self, **changes: Any) -> Recipe:
        """A copy with some fields changed; ``None`` values are ignored, unknown names are errors."""
        names = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise NasError(f"recipe {self.name}: unknown setting {unknown[0]!r}")
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


RECIPES: dict[str, Recipe] = {
    "mobilenetv3": Recipe(
        name="mobilenetv3", optimizer="rmsprop", lr=0.016, reference_batch=256, warmup_epochs=5,
        warmup_start_lr=0.0, schedule="exponential", epochs=350, weight_decay=1e-5, ema_decay=0.9999),
    "dli14": Recipe(
        name="dli14", optimizer="sgd", lr=0.4, reference_batch=1024, warmup_epochs=5, warmup_start_lr=0.1,
        schedule="cosine", epochs=150, weight_decay=4e-5),
}


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise NasError(f"unknown recipe {name!r}; known: {', '.join(sorted(RECIPES))}")
    return RECIPES[name]


def learning_rate(recipe: Recipe, *, step: int, steps_per_epoch: int, epochs: int, batch_size: int) -> float:
    """The learning rate at a (0-based) optimizer step: linear warm-up, then the recipe's decay."""
    peak = recipe.scaled_lr(batch_size)
    start = recipe.warmup_start_lr * batch_size / recipe.reference_batch
    epoch = step / steps_per_epoch
    warmup = min(recipe.warmup_epochs, epochs / 2)  # short runs still get a decay phase
    if epoch < warmup:
        return start + (peak - start) * epoch / warmup
    if recipe.schedule == "cosine":
        progress = (epoch - warmup) / max(1e-9, epochs - warmup)
        return 0.5 * peak * (1 + math.cos(math.pi * min(1.0, progress)))
    return peak * recipe.decay_rate ** math.floor((epoch - warmup) / recipe.decay_epochs)


def make_optimizer(recipe: Recipe, model: nn.Module) -> torch.optim.Optimizer:
    """The recipe's optimizer over ``model``; weight decay spares biases and BatchNorm."""
    groups = parameter_groups(model, recipe.weight_decay)
    if recipe.optimizer == "rmsprop":
        return TFRMSprop(groups, lr=recipe.lr, decay=recipe.rmsprop_decay, momentum=recipe.momentum,
                         eps=recipe.rmsprop_eps)
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=recipe.lr, momentum=recipe.momentum, nesterov=recipe.nesterov)
    raise NasError(f"recipe {recipe.name}: unknown optimizer {recipe.optimizer!r}")
