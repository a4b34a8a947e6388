"""NetAdapt's speed-ups change no result: cached data, weights inherited without a parent network."""

import pandas as pd
import torch

from nas.arch import ArchSpec
from nas.model import build_model
from nas.netadapt import LatencyTarget, Settings, netadapt
from nas.netadapt.finetune import Job, fine_tune
from nas.netadapt.inherit import inherit
from nas.netadapt.units import units, with_width
from nas.train import proxy
from nas.train.data import load_classification
from nas.train.loop import evaluate
from nas.train.proxy import ProxyTraining, open_data, score
from netadapt_toys import toy_latency

SMALL = ArchSpec.from_string(
    "stem_k3_s2_c16_hswish ds_k3_s1_e16_c16_relu_skip ir_k3_s2_e48_c24_hse0.25_hswish "
    "ir_k5_s1_e72_c24_relu_skip conv_k3_s2_e32_c32_se0.25_relu ir_k3_s1_e96_c40_hse0.25_hswish "
    "head_c64_h80_hswish_d0.2_n10"
)
TINY = ProxyTraining(synthetic_train=48, synthetic_val=24, batch_size=16, bn_batches=2, seed=3)


def _uncached(settings: ProxyTraining):
    return load_classification(settings.data, resolution=settings.resolution, val_fraction=settings.val_fraction,
                               seed=settings.seed, synthetic_train=settings.synthetic_train,
                               synthetic_val=settings.synthetic_val)


def test_cached_synthetic_data_yields_the_same_batches_as_drawing_each_image():
    cached, drawn = open_data(TINY), _uncached(TINY)
    for split in ("train", "val"):
        torch.manual_seed(5)  # augmentation draws from torch's global stream
        first = list(cached.loader(split, batch_size=16, seed=7))
        torch.manual_seed(5)
        second = list(drawn.loader(split, batch_size=16, seed=7))
        assert len(first) == len(second) > 0
        for (x1, y1), (x2, y2) in zip(first, second):
            assert torch.equal(x1, x2) and torch.equal(y1, y2)


def test_score_on_the_cached_held_out_batches_equals_a_fresh_loader():
    torch.manual_seed(0)
    model = build_model(SMALL).eval()
    reference = evaluate(model, _uncached(TINY).loader("val", batch_size=TINY.batch_size))
    assert score(model, TINY) == (reference.top1, reference.loss)
    assert score(model, TINY) == (reference.top1, reference.loss)  # the cached batches are not consumed


def test_fine_tune_without_a_parent_network_matches_inheriting_from_one():
    torch.manual_seed(0)
    parent_model = build_model(SMALL)
    parent = {"spec": SMALL, "state_dict": parent_model.state_dict()}
    unit = units(SMALL)[2]
    child = with_width(SMALL, unit, 8)
    job = Job(name=unit.name, spec=child, parent=None, result=None, steps=2, seed=11)
    result, state = fine_tune(job, TINY, parent)
    reference = inherit(parent_model, child)
    proxy.train(reference, TINY, steps=2, seed=11)
    assert (result.accuracy, result.loss) == score(reference, TINY)
    assert all(torch.equal(state[name], value) for name, value in reference.state_dict().items())


def test_a_run_is_the_same_with_and_without_the_data_caches(tmp_path, monkeypatch):
    settings = Settings(delta_ratio=0.1, short_term_steps=2, pretrain_steps=2, max_proposals=3)
    runs = []
    for name, limit in (("cached", proxy.CACHE_BYTES), ("streamed", 0)):
        monkeypatch.setattr(proxy, "CACHE_BYTES", limit)
        proxy._open.cache_clear()
        netadapt(SMALL, target=LatencyTarget(ratio=0.8), latency=toy_latency, training=TINY, settings=settings,
                 out=tmp_path / name, progress=False)
        runs.append([pd.read_csv(tmp_path / name / table) for table in ("history.csv", "proposals.csv")])
    proxy._open.cache_clear()
    assert len(runs[0][0]) > 2
    for cached, streamed in zip(*runs):
        pd.testing.assert_frame_equal(cached, streamed)
