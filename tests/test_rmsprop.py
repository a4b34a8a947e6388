"""TFRMSprop against TensorFlow 1's ApplyRMSProp update, written out here in numpy."""

import io

import numpy as np
import pytest
import torch
from torch import nn

from nas.errors import NasError
from nas.train.recipes import get_recipe, make_optimizer
from nas.train.rmsprop import TFRMSprop

DECAY, MOMENTUM, EPS = 0.9, 0.9, 1e-3


def _problem(seed: int = 0):
    """A least-squares loss, so each step's gradient depends on where the previous steps went."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(6, 4)), rng.normal(size=6), rng.normal(size=4)


def _grad(a: np.ndarray, b: np.ndarray, x: np.ndarray) -> np.ndarray:
    return a.T @ (a @ x - b)


def _tf_reference(x: np.ndarray, a, b, lrs, weight_decay: float) -> list[np.ndarray]:
    """tf.compat.v1.train.RMSPropOptimizer (centered=False), loss + weight_decay * l2_loss(x)."""
    ms, mom, path = np.ones_like(x), np.zeros_like(x), []
    for lr in lrs:
        g = _grad(a, b, x) + weight_decay * x
        ms = ms + (g * g - ms) * (1 - DECAY)
        mom = MOMENTUM * mom + lr * g / np.sqrt(ms + EPS)
        x = x - mom
        path.append(x)
    return path


def _torch_path(optimizer_cls, x0, a, b, lrs, **options) -> list[np.ndarray]:
    x = torch.tensor(x0, dtype=torch.float64, requires_grad=True)
    opt = optimizer_cls([x], lr=lrs[0], **options)
    at, bt, path = torch.tensor(a), torch.tensor(b), []
    for lr in lrs:
        opt.param_groups[0]["lr"] = lr
        opt.zero_grad()
        (0.5 * ((at @ x - bt) ** 2).sum()).backward()
        opt.step()
        path.append(x.detach().numpy().copy())
    return path


@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
def test_every_step_matches_tensorflow_update(weight_decay):
    a, b, x0 = _problem()
    lrs = [0.01 * (1 + i) for i in range(5)] + [0.05 * 0.97 ** i for i in range(15)]  # warm-up, then decay
    ours = _torch_path(TFRMSprop, x0, a, b, lrs, decay=DECAY, momentum=MOMENTUM, eps=EPS, weight_decay=weight_decay)
    for step, (got, want) in enumerate(zip(ours, _tf_reference(x0, a, b, lrs, weight_decay))):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14, err_msg=f"step {step}")


def test_torch_rmsprop_is_not_the_tensorflow_update():
    """The reason for the class: torch's RMSprop (ms from zero, eps outside the root) takes other steps."""
    a, b, x0 = _problem()
    a, b = 0.1 * a, 0.1 * b  # gradients well below one, as in a deep network
    lrs = [0.01] * 3
    want = _tf_reference(x0, a, b, lrs, 0.0)[0]
    torch_first = _torch_path(torch.optim.RMSprop, x0, a, b, lrs, alpha=DECAY, momentum=MOMENTUM, eps=EPS)[0]
    ratio = np.abs(torch_first - x0) / np.abs(want - x0)
    assert ratio.min() > 2  # after one step torch's mean square is 0.1 g^2, TF's 0.9 + 0.1 g^2


def test_state_dict_round_trip_resumes_bit_identically():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.BatchNorm1d(7), nn.ReLU(), nn.Linear(7, 3))
    data, target = torch.randn(16, 5), torch.randint(0, 3, (16,))

    def train(m: nn.Module, opt: torch.optim.Optimizer, steps: int) -> None:
        for _ in range(steps):
            opt.zero_grad()
            nn.functional.cross_entropy(m(data), target).backward()
            opt.step()

    recipe = get_recipe("mobilenetv3")
    straight = make_optimizer(recipe, model)
    clone = nn.Sequential(nn.Linear(5, 7), nn.BatchNorm1d(7), nn.ReLU(), nn.Linear(7, 3))
    clone.load_state_dict(model.state_dict())
    train(model, straight, 4)
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": straight.state_dict()}, buffer)
    train(model, straight, 4)

    buffer.seek(0)
    saved = torch.load(buffer, weights_only=False)
    clone.load_state_dict(saved["model"])
    resumed = make_optimizer(recipe, clone)
    resumed.load_state_dict(saved["optimizer"])
    train(clone, resumed, 4)
    for (name, p), q in zip(model.named_parameters(), clone.parameters()):
        assert torch.equal(p, q), name
    for group in resumed.state.values():
        assert set(group) == {"ms", "mom"}


def test_mobilenetv3_recipe_uses_tensorflow_rmsprop():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    opt = make_optimizer(get_recipe("mobilenetv3"), model)
    assert isinstance(opt, TFRMSprop)
    decayed, exempt = opt.param_groups
    assert (decayed["decay"], decayed["momentum"], decayed["eps"]) == (0.9, 0.9, 1e-3)
    assert (decayed["weight_decay"], exempt["weight_decay"]) == (1e-5, 0.0)
    assert [p.ndim for p in decayed["params"]] == [4]  # conv weight only; bias and BatchNorm exempt


@pytest.mark.parametrize("bad", [dict(lr=-1.0), dict(lr=0.1, decay=1.0), dict(lr=0.1, eps=-1e-3),
                                 dict(lr=0.1, momentum=1.5)])
def test_bad_settings_are_one_line_errors(bad):
    with pytest.raises(NasError, match="TFRMSprop: "):
        TFRMSprop([nn.Parameter(torch.zeros(2))], **bad)
