"""Measurement harness (real, tiny), incremental builds, the predictor and the CLI's bad-input errors."""

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from nas import zoo
from nas.arch import ArchSpec, HeadSpec, LayerSpec, StemSpec
from nas.errors import NasError
from nas.latency.__main__ import main
from nas.latency.calibrate import Calibration
from nas.latency.keys import decompose
from nas.latency.measure import Protocol, Timing, build_table, key_module, measure_keys, measure_networks
from nas.latency.predict import default_table_dir, get_latency_model, resolve_target
from nas.latency.table import LatencyTable
from nas.model import build_model, fuse_bn

FAST = Protocol(rounds=3, passes=1, warmup=1, max_copies=2, chunk=4)


def _tiny() -> ArchSpec:
    return ArchSpec(StemSpec(8), (LayerSpec("ds", 3, 1, 8, 8, residual=True), LayerSpec("ir", 3, 2, 24, 16, 0.25),
                                  LayerSpec("conv", 3, 1, 16, 16, act="hswish", residual=True)),
                    HeadSpec(32, hidden=48, num_classes=10))


def _fake(calls):
    def measure(keys):
        calls.append([str(k) for k in keys])
        return [Timing(0.01 * len(str(k)), 0.001, 3) for k in keys]
    return measure


def test_key_modules_are_the_network_parts():
    spec = zoo.get("mobilenet_v3_small")
    net = fuse_bn(build_model(spec))
    parts = [net.stem, *net.blocks, net.head]
    for key, part in zip(decompose(spec), parts):
        module = key_module(key)
        assert sum(p.numel() for p in module.parameters()) == sum(p.numel() for p in part.parameters()), key
    for key in decompose(_tiny(), 32)[:-1]:
        assert key_module(key)(torch.randn(1, key.cin, key.hw, key.hw)).shape[-1] == key.out_hw


def test_real_measurement_is_positive_and_ordered():
    small, large = decompose(_tiny(), 16)[1], decompose(_tiny(), 256)[1]
    timings = measure_keys([small, large], protocol=replace(FAST, rounds=5))
    assert all(t.ms > 0 and t.n == 5 and t.spread_ms >= 0 for t in timings)
    assert timings[1].ms > timings[0].ms  # 256x the pixels: about 2x the time, a margin a busy CI keeps
    (net,) = measure_networks([_tiny()], 32, protocol=FAST, progress=False)
    assert net.ms > 0 and net.n >= 3


def test_interrupted_build_keeps_what_it_measured_and_resumes(tmp_path):
    keys = [str(k) for k in decompose(zoo.get("mobilenet_v3_small"))]
    distinct = list(dict.fromkeys(keys))
    calls = []

    def dies_on_third_chunk(chunk):
        if len(calls) == 2:
            raise KeyboardInterrupt
        return _fake(calls)(chunk)

    with pytest.raises(KeyboardInterrupt):
        build_table(keys, tmp_path, protocol=FAST, measure=dies_on_third_chunk, progress=False)
    saved = LatencyTable.load(tmp_path)
    assert sorted(saved.as_dict()) == sorted(distinct[:8])
    calls.clear()
    table = build_table(keys, tmp_path, protocol=FAST, measure=_fake(calls), progress=False)
    assert [k for chunk in calls for k in chunk] == distinct[8:]
    assert len(table) == len(distinct) and len(LatencyTable.load(tmp_path)) == len(distinct)
    calls.clear()
    build_table(keys, tmp_path, protocol=FAST, measure=_fake(calls), progress=False)
    assert calls == []


def test_build_sweeps_every_key_passes_times_and_keeps_the_lowest(tmp_path):
    keys = list(dict.fromkeys(str(k) for k in decompose(_tiny(), 32)))
    calls = []

    def sweep_time(chunk):  # every key takes 2 ms in the first sweep, 1 ms in the second, 3 ms in the third
        calls.append([str(k) for k in chunk])
        ms = (2.0, 1.0, 3.0)[(len(calls) - 1) // 2]
        return [Timing(ms, 0.1 * ms, 3) for _ in chunk]

    protocol = replace(FAST, passes=3, chunk=len(keys) // 2 + 1)  # two chunks per sweep
    table = build_table(keys, tmp_path, protocol=protocol, measure=sweep_time, progress=False)
    assert len(calls) == 6 and all(sorted(calls[i] + calls[i + 1]) == sorted(keys) for i in (0, 2, 4))
    assert all(table.ms(k) == 1.0 for k in keys)
    assert set(table.frame["n"]) == {9} and table.frame["spread_ms"].tolist() == pytest.approx([0.1] * len(keys))
    calls.clear()
    build_table(keys, tmp_path, protocol=protocol, measure=sweep_time, progress=False)
    assert calls == []  # complete: nothing re-measured


def test_steady_allocator_stops_per_call_page_faults():
    resource = pytest.importorskip("resource")
    from nas.latency.measure import allocator_policy, steady_allocator

    if allocator_policy() == "system default":
        pytest.skip("not glibc")
    assert steady_allocator() == allocator_policy() and Protocol().to_dict()["allocator"] == allocator_policy()
    x = torch.randn(1, 160, 256, 256)  # 42 MB: glibc's default maps and unmaps it on every call
    faults = lambda: resource.getrusage(resource.RUSAGE_THREAD).ru_minflt  # noqa: E731
    with torch.inference_mode():
        for _ in range(3):  # the heap grows to its steady size
            torch.relu(x * 2)
        before = faults()
        for _ in range(5):
            torch.relu(x * 2)
        # glibc's default: ~20,000 faults (2 x 42 MB) per call, 100,000 in all; steady: a heap growth or two
        assert faults() - before < 30_000


def _model(tmp_path, specs, resolution=224):
    keys = [k for spec in specs for k in decompose(spec, resolution)]
    build_table(keys, tmp_path, measure=_fake([]), progress=False)
    Calibration(1.1, 0.5).save(tmp_path)
    return get_latency_model("host-cpu", table_dir=tmp_path, measure_missing=False)


def test_predict_many_matches_predict_and_the_table_sum(tmp_path):
    rng = np.random.default_rng(0)
    names = zoo.names()
    specs = [zoo.get(names[i]) for i in rng.integers(0, len(names), 30)]
    model = _model(tmp_path, specs)
    many = model.predict_many(specs)
    single = [model.predict(spec) for spec in specs]
    assert many == pytest.approx([p.ms for p in single])
    table = model.table
    expected = sum(table.ms(k) for k in decompose(specs[0]))
    assert single[0].ms == pytest.approx(1.1 * expected + 0.5)
    assert sum(single[0].per_key.values()) == pytest.approx(expected)
    assert single[0].estimated_keys == () and "host-cpu" in single[0].source
    assert f"table {tmp_path.name} (" in single[0].source and str(tmp_path) not in single[0].source
    with pytest.raises(NasError, match="has no key 'stem_r96"):
        model.predict(specs[0], resolution=96)


def test_predictor_measures_missing_keys_on_demand_and_calibrates(tmp_path):
    with pytest.raises(NasError, match="no latency table"):
        get_latency_model("host-cpu", table_dir=tmp_path, measure_missing=False)
    model_dir = tmp_path / "built"
    build_table([str(k) for k in decompose(_tiny(), 32)], model_dir, measure=_fake([]), progress=False)
    Calibration().save(model_dir)
    model = get_latency_model("host-cpu", table_dir=model_dir)
    before = len(model.table)
    spec = replace(_tiny(), head=HeadSpec(40, num_classes=10))
    prediction = model.predict(spec, 32)  # a new head key: measured for real, then saved
    assert len(LatencyTable.load(model_dir)) == before + 1 and prediction.ms > 0
    calibration = model.calibrate(["mobilenet_v3_small_050"], 32, progress=False)
    assert calibration.scale > 0 and Calibration.load(model_dir) == calibration
    assert calibration.networks[0]["arch"] == zoo.get("mobilenet_v3_small_050").to_string()


def test_metadata_mismatch_refused_by_the_model_unless_forced(tmp_path):
    _model(tmp_path, [_tiny()])
    meta = tmp_path / "meta.json"
    data = json.loads(meta.read_text())
    meta.write_text(json.dumps({**data, "torch_version": "0.1"}))
    with pytest.raises(NasError, match="torch_version '0.1'"):
        get_latency_model("host-cpu", table_dir=tmp_path, measure_missing=False)
    assert get_latency_model("host-cpu", table_dir=tmp_path, measure_missing=False, force=True).predict(_tiny()).ms > 0


def test_pixel_cpu_prices_missing_keys_with_the_cost_model():
    model = get_latency_model("pixel-cpu")
    assert model.target == "pixel-cpu"
    odd = ArchSpec(StemSpec(24), (LayerSpec("ir", 7, 2, 200, 56, 0.5, "v3", "hswish"),), HeadSpec(1000))
    prediction = model.predict(odd, 200)
    assert prediction.ms > 0 and set(prediction.estimated_keys) == set(prediction.per_key)
    assert prediction.source.startswith("pixel-cpu: fitted table latency_tables/pixel-cpu (")  # no machine path
    assert model.predict_many([odd, odd], 200) == pytest.approx([prediction.ms] * 2)


def test_unknown_target_is_an_error():
    with pytest.raises(NasError, match="unknown latency target 'tpu'"):
        get_latency_model("tpu")


@pytest.mark.parametrize("argv, message", [
    (["predict", "--target", "tpu", "mobilenet_v3_large"], "invalid choice: 'tpu'"),
    (["predict", "--target", "host-cpu", "no_such_net", "--no-measure"], "no_such_net"),
    (["build", "--threads", "0"], "positive integer"),
    (["build", "--archs", "/no/such/file"], "no such file"),
])
def test_cli_bad_input_is_one_line_and_exit_2(capsys, tmp_path, argv, message):
    from nas.cli import run

    assert run(main, argv + ["--table-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_cli_predict_json(tmp_path, capsys):
    _model(tmp_path, [zoo.get("mobilenet_v3_small")], 224)
    assert main(["predict", "--target", "host-cpu", "mobilenet_v3_small", "--json", "--no-measure", "--table-dir",
                 str(tmp_path)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["latency_ms"] == pytest.approx(1.1 * sum(data["per_key"].values()) + 0.5)
    assert data["estimated_keys"] == [] and data["target"] == "host-cpu"


@pytest.mark.slow
def test_validate_measures_several_sets_in_one_window(tmp_path, monkeypatch):
    from nas.latency import validate

    builds, sweeps, said = [], [], []
    real_build, real_sweep = validate.build_table, validate.measure_networks
    monkeypatch.setattr(validate, "build_table",
                        lambda keys, *a, **kw: builds.append(len(keys)) or real_build(keys, *a, **kw))
    monkeypatch.setattr(validate, "measure_networks",
                        lambda specs, *a, **kw: sweeps.append(len(specs)) or real_sweep(specs, *a, **kw))
    table_dir, out = tmp_path / "table", tmp_path / "out"
    table_dir.mkdir()
    Calibration().save(table_dir)  # identity: predictions are the key sums, no calibration run
    settings = validate.MeasuredValidation(sets=("mnasnet", "mobilenetv3"), samples=2, resolution=32,
                                           table_dir=table_dir)
    frame = validate.validate_measured(settings, out, say=said.append)
    assert len(builds) == 1 and sweeps == [4]  # both sets in one table build and one network sweep
    assert list(frame["set"]) == ["mnasnet"] * 2 + ["mobilenetv3"] * 2
    assert (frame["measured_ms"] > 0).all() and np.allclose(frame["predicted_ms"], frame["key_sum_ms"])
    for space in ("mnasnet", "mobilenetv3"):
        assert len(pd.read_csv(out / f"validate_host-cpu_{space}_32.csv")) == 2
        assert (out / f"validate_host-cpu_{space}_32.png").stat().st_size > 0
    assert any(line.startswith("host-cpu mobilenetv3 (2 archs, 32px)") for line in said)


@pytest.mark.parametrize("settings, message", [
    ({"target": "pixel-cpu"}, "not measured here"), ({"sets": ("zoo", "imagenet")}, "unknown set"),
    ({"samples": 0}, "positive"),
])
def test_measured_validation_refuses_bad_settings(settings, message):
    from nas.latency.validate import MeasuredValidation

    with pytest.raises(NasError, match=message):
        MeasuredValidation(**settings)


def test_calibration_qualifies_the_pixel_target_and_nothing_else():
    assert resolve_target("pixel-cpu", None) == "pixel-cpu"
    assert resolve_target("pixel-cpu", "mobilenetv3-paper") == "pixel-cpu"  # the default is the plain name
    assert resolve_target("pixel-cpu", "readme-2018") == "pixel-cpu:readme-2018"
    assert resolve_target("host-cpu", None) == "host-cpu"
    with pytest.raises(NasError, match="pixel-cpu only"):
        resolve_target("host-cpu", "readme-2018")
    with pytest.raises(NasError, match="unknown pixel-cpu calibration 'v9'"):
        resolve_target("pixel-cpu", "v9")
    with pytest.raises(NasError, match="unknown latency target 'host-cpu:readme-2018'"):
        get_latency_model("host-cpu:readme-2018")


def test_each_pixel_calibration_is_its_own_model():
    default, readme = get_latency_model("pixel-cpu"), get_latency_model("pixel-cpu:readme-2018")
    assert readme.target == "pixel-cpu:readme-2018" and "calibration readme-2018" in readme.source
    a1 = zoo.get("mnasnet_a1")
    # the MobileNetV3 paper's run is faster than the README's (MnasNet-A1: 71 vs 78 ms published)
    assert default.predict(a1).ms < 0.95 * readme.predict(a1).ms


def test_a_pixel_table_is_refused_under_another_calibration():
    with pytest.raises(NasError, match="calibration 'readme-2018', not 'mobilenetv3-paper'"):
        get_latency_model("pixel-cpu", table_dir=default_table_dir("pixel-cpu:readme-2018"))


@pytest.mark.parametrize("argv", [["predict", "--target", "host-cpu", "--calibration", "readme-2018", "mnasnet_a1"],
                                  ["predict", "--target", "pixel-cpu", "--calibration", "v9", "mnasnet_a1"]])
def test_cli_refuses_a_calibration_it_cannot_use_in_one_line(capsys, argv):
    from nas.cli import run

    assert run(main, argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "calibration" in err and err.count("\n") == 1


def test_cli_predicts_with_the_calibration_asked_for(capsys):
    assert main(["predict", "--target", "pixel-cpu", "--calibration", "readme-2018", "mnasnet_a1", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["target"] == "pixel-cpu:readme-2018"
    assert data["latency_ms"] == pytest.approx(get_latency_model("pixel-cpu:readme-2018").predict(zoo.get("mnasnet_a1")).ms)
