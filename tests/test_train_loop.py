import pytest
import torch
from torch import nn

from nas.arch import ArchSpec
from nas.errors import NasError
from nas.model import build_model
from nas.train import DivergedError, evaluate, load_classification, train_steps
from nas.train.loop import cosine_lr, parameter_groups, recalibrate_bn

TINY = ArchSpec.from_string(
    "stem_k3_s2_c8_relu ir_k3_s1_e16_c8_relu_skip ir_k3_s2_e24_c16_relu "
    "ir_k3_s2_e48_c24_hse0.25_hswish head_c64_relu_d0.0_n10"
)


def test_train_steps_learns_synthetic_above_chance():
    data = load_classification("synthetic", synthetic_train=400, synthetic_val=200)
    model = build_model(TINY)
    stats = train_steps(model, data.loader("train", batch_size=32), steps=80, lr=0.1)
    assert stats.steps == 80 and len(stats.losses) == 80 and stats.images == 80 * 32
    assert stats.loss < stats.first_loss
    result = evaluate(model, data.loader("val", batch_size=100))
    assert result.images == 200
    assert result.top1 > 0.3  # chance is 0.1
    assert result.top1 <= result.top5 <= 1 and result.images_per_s > 0


def test_evaluate_counts_top1_top5_exactly():
    class Fixed(nn.Module):
        def forward(self, x):
            return x

    logits = torch.tensor([[9., 8, 7, 6, 5, 0], [0., 1, 2, 3, 4, 5], [0., 9, 1, 1, 1, 1]])
    targets = torch.tensor([0, 0, 2])
    result = evaluate(Fixed(), [(logits, targets)])
    assert result.top1 == pytest.approx(1 / 3) and result.top5 == pytest.approx(2 / 3)
    expected = nn.functional.cross_entropy(logits, targets)
    assert result.loss == pytest.approx(float(expected), rel=1e-6)


def test_nan_loss_raises_diverged_with_step():
    class Nan(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(1))

        def forward(self, x):
            return x.flatten(1)[:, :3] * self.w * float("nan")

    loader = [(torch.randn(2, 3, 4, 4), torch.tensor([0, 1]))]
    with pytest.raises(DivergedError, match="step 0"):
        train_steps(Nan(), loader, steps=3)
    assert issubclass(DivergedError, NasError)


def test_empty_loader_is_an_error_not_a_hang():
    with pytest.raises(NasError, match="no batches"):
        train_steps(build_model(TINY), [], steps=2)


def test_cosine_and_no_decay_groups():
    assert cosine_lr(0, 10, 0.4) == pytest.approx(0.4)
    assert cosine_lr(5, 10, 0.4) == pytest.approx(0.2)
    assert cosine_lr(10, 10, 0.4) == pytest.approx(0.0)
    decay, no_decay = parameter_groups(build_model(TINY), 1e-4)
    assert all(p.ndim > 1 for p in decay["params"]) and all(p.ndim == 1 for p in no_decay["params"])
    assert no_decay["weight_decay"] == 0.0


def test_recalibrate_bn_gives_exact_batch_statistics():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4, momentum=0.01))
    batches = [(torch.randn(8, 3, 5, 5) * 3 + 2, torch.zeros(8)) for _ in range(4)]
    recalibrate_bn(model, batches, batches=4)
    with torch.no_grad():
        feats = torch.cat([model[0](x) for x, _ in batches])
    torch.testing.assert_close(model[1].running_mean, feats.mean((0, 2, 3)), atol=1e-5, rtol=1e-5)
    assert model[1].momentum == 0.01 and not model.training
