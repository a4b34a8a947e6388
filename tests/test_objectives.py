"""The MnasNet reward and the two-objective mode: pure maths, checked against hand values."""

import math

import numpy as np
import pytest

from nas.errors import NasError
from nas.search.objectives import PRESETS, Objective, mnas_reward


def test_reward_at_target_is_accuracy():
    for alpha, beta in PRESETS.values():
        assert mnas_reward(0.7, 50.0, target_ms=50.0, alpha=alpha, beta=beta) == pytest.approx(0.7)


def test_soft_preset_trades_about_5_percent_for_half_the_latency():
    # MnasNet's soft constraint: 2x faster is worth 2**0.07 - 1 = 4.97 % relative accuracy.
    fast = mnas_reward(0.70, 40.0, target_ms=80.0)
    assert fast == pytest.approx(0.70 * 2 ** 0.07)
    assert mnas_reward(0.70 * 2 ** 0.07, 160.0, target_ms=80.0) == pytest.approx(0.70 * 2 ** 0.07 * 2 ** -0.07)


def test_hard_preset_gives_no_bonus_below_target_and_a_steep_penalty_above():
    alpha, beta = PRESETS["hard"]
    assert mnas_reward(0.8, 10.0, target_ms=80.0, alpha=alpha, beta=beta) == pytest.approx(0.8)
    assert mnas_reward(0.8, 160.0, target_ms=80.0, alpha=alpha, beta=beta) == pytest.approx(0.4)


def test_small_preset_uses_w_minus_015_on_both_sides():
    alpha, beta = PRESETS["small"]
    assert (alpha, beta) == (-0.15, -0.15)
    assert mnas_reward(0.5, 20.0, target_ms=10.0, alpha=alpha, beta=beta) == pytest.approx(0.5 * 2 ** -0.15)


def test_reward_is_elementwise_on_arrays():
    acc = np.array([0.5, 0.6, 0.7])
    lat = np.array([10.0, 20.0, 40.0])
    rewards = mnas_reward(acc, lat, target_ms=20.0, alpha=0.0, beta=-1.0)
    np.testing.assert_allclose(rewards, [0.5, 0.6, 0.35])


@pytest.mark.parametrize("target", [0.0, -5.0, math.nan, math.inf])
def test_bad_latency_target_is_a_user_error(target):
    with pytest.raises(NasError, match="latency target"):
        mnas_reward(0.5, 10.0, target_ms=target)
    with pytest.raises(NasError, match="latency target"):
        Objective(target_ms=target)


def test_non_positive_latency_is_rejected():
    with pytest.raises(NasError, match="latency must be positive"):
        mnas_reward(0.5, 0.0, target_ms=10.0)


def test_objective_modes_and_directions():
    scalar = Objective.preset("soft", target_ms=50.0)
    assert scalar.directions == ("maximize",)
    assert scalar.values(0.6, 25.0) == pytest.approx((0.6 * 2 ** 0.07,))
    pareto = Objective.preset("hard", target_ms=50.0, mode="pareto")
    assert pareto.directions == ("maximize", "minimize")
    assert pareto.values(0.6, 25.0) == (0.6, 25.0)
    assert pareto.reward(0.6, 100.0) == pytest.approx(0.3)


def test_objective_rejects_unknown_preset_mode_and_positive_exponent():
    with pytest.raises(NasError, match="unknown reward preset"):
        Objective.preset("medium", target_ms=10.0)
    with pytest.raises(NasError, match="unknown objective mode"):
        Objective(target_ms=10.0, mode="both")
    with pytest.raises(NasError, match="alpha"):
        Objective(target_ms=10.0, alpha=0.1)
