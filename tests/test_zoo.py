"""Contract tests over the whole registry: published sizes, forward, backward."""

import pytest
import torch

from nas import zoo
from nas.model import build_model
from nas.profile import count_params, profile

PUBLISHED = {  # name: (params, MAdds at 224 px in millions)
    "mobilenet_v3_large": (5_483_032, 216.6),
    "mobilenet_v3_small": (2_542_856, 56.5),
    "mnasnet_a1": (3_887_038, 311.6),
    "mnasnet_b1": (4_383_312, 314.4),
    "mobilenet_v2": (3_504_872, 300.8),
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_params_exact_and_madds_within_one_percent(name):
    params, madds = PUBLISHED[name]
    stats = profile(zoo.get(name))
    assert stats.params == params
    assert abs(stats.madds / 1e6 - madds) / madds < 0.01


# Exact MAdds at 224 px as fvcore counted them (BatchNorm and elementwise ops zeroed) before
# nas.profile moved to torch's FlopCounterMode: the counter must give the same integers.
FVCORE_MADDS = {
    "mnasnet_a1": 311_579_072, "mnasnet_b1": 314_415_872, "mobilenet_v2": 300_774_272,
    "mobilenet_v3_large": 216_589_760, "mobilenet_v3_large_050": 69_247_600, "mobilenet_v3_large_075": 154_560_624,
    "mobilenet_v3_large_minimalistic": 209_136_704, "mobilenet_v3_small": 56_510_400,
    "mobilenet_v3_small_050": 21_052_560, "mobilenet_v3_small_075": 43_399_344,
    "mobilenet_v3_small_minimalistic": 52_288_448, "proxylessnas_mobile": 304_227_008,
}


def test_madds_are_exactly_the_integers_fvcore_counted():
    assert sorted(FVCORE_MADDS) == zoo.names()
    assert {name: profile(zoo.get(name)).madds for name in FVCORE_MADDS} == FVCORE_MADDS
    assert profile(zoo.get("mobilenet_v3_large"), 160).madds == 112_472_000


@pytest.mark.parametrize("name, width, params_m", [
    ("mobilenet_v3_large", 0.75, 3.99), ("mobilenet_v3_large_minimalistic", 1.0, 3.92),
    ("mobilenet_v3_small_minimalistic", 1.0, 2.04), ("mnasnet_a1", 1.4, 6.1), ("mnasnet_a1", 0.35, 1.7),
    ("mobilenet_v2", 1.4, 6.1), ("mobilenet_v2", 0.35, 1.7),
])
def test_width_multipliers_match_published_sizes(name, width, params_m):
    model = build_model(zoo.get(name, width))
    assert abs(count_params(model) / 1e6 - params_m) < 0.05


def test_tf_slim_width_rule_keeps_the_head():
    small = zoo.get("mobilenet_v3_large", 0.75)
    assert small.head.hidden == 1280 and small.head.channels == 720
    assert small.stem.channels == 16 and small.layers[1].out == 24
    assert small.layers[1].exp == 64  # make_divisible(16 * 4): scaled input x ratio, rounded
    assert small.layers[2].exp == 72  # make_divisible(24 * 3)
    assert zoo.get("mnasnet_a1", 1.4).head.channels == 1280
    assert zoo.get("mobilenet_v2", 1.4).head.channels == 1792


def test_v3_large_has_the_published_odd_widths():
    exps = [layer.exp for layer in zoo.get("mobilenet_v3_large").layers]
    assert exps == [16, 64, 72, 72, 120, 120, 240, 200, 184, 184, 480, 672, 672, 960, 960]


@pytest.mark.parametrize("name", zoo.names())
def test_forward_and_backward_reach_every_parameter(name):
    model = build_model(zoo.get(name, num_classes=7)).train()
    out = model(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    out.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing
