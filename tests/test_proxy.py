"""Proxy training (nas.train.proxy): one dataset per data definition, checked fields, train and score."""

import math
from dataclasses import replace

import pytest
import torch

from nas import zoo
from nas.errors import NasError
from nas.model import build_model
from nas.search.evaluate import ProxySettings
from nas.train.proxy import ProxyTraining, open_data, score, train

TINY = ProxyTraining(resolution=8, synthetic_train=48, synthetic_val=16, batch_size=16, bn_batches=1)


def test_settings_differing_only_in_the_recipe_share_one_dataset():
    data = open_data(TINY)
    assert open_data(replace(TINY, lr=0.5, bn_batches=3)) is data
    assert open_data(ProxySettings(resolution=8, synthetic_train=48, synthetic_val=16)) is data
    assert open_data(replace(TINY, seed=1)) is not data


@pytest.mark.parametrize("field,value", [
    ("batch_size", 0), ("lr", 0.0), ("lr", -0.1), ("lr", math.nan), ("bn_batches", -1), ("resolution", 4),
])
def test_a_bad_field_is_one_error_naming_it(field, value):
    with pytest.raises(NasError, match=f"^{field} must") as error:
        ProxyTraining(**{field: value})
    assert "\n" not in str(error.value)
    with pytest.raises(NasError, match=f"^{field} must"):
        ProxySettings(**{field: value})


def test_search_settings_are_proxy_training_with_their_own_defaults():
    settings = ProxySettings()
    assert isinstance(settings, ProxyTraining)
    assert (settings.batch_size, settings.lr) == (64, 0.05)
    assert (ProxyTraining().batch_size, ProxyTraining().lr) == (32, 0.01)
    with pytest.raises(NasError, match="^deploy_resolution must"):
        ProxySettings(deploy_resolution=4)


def test_training_is_fixed_by_its_seed_and_scored_on_the_validation_split():
    spec = zoo.get("mobilenet_v3_small", width=0.35, num_classes=open_data(TINY).num_classes)
    torch.manual_seed(0)
    start = build_model(spec).state_dict()
    runs = []
    for _ in range(2):
        model = build_model(spec)
        model.load_state_dict(start)
        torch.rand(7)  # what ran before does not matter
        stats = train(model, TINY, steps=2, seed=3)
        runs.append((stats.losses, score(model, TINY)))
    assert runs[0] == runs[1]
    top1, loss = runs[0][1]
    assert 0 <= top1 <= 1 and math.isfinite(loss)
