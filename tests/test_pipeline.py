"""The MobileNetV3 pipeline: strict configs, the manual edits as pure functions, a tiny end-to-end run."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from nas import zoo
from nas.cli import run
from nas.errors import NasError
from nas.pipeline.__main__ import main
from nas.pipeline.config import Execution, TrainStage, load_config, parse_config, read_yaml
from nas.pipeline.edits import apply_edits, efficient_last_stage, hswish_late, output_strides, stem_16
from nas.pipeline.report import train_note
from search_spaces import get_space
from search_spaces.factorized import sharing_obstacle

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
SMALL = ROOT / "experiments" / "mobilenetv3_small.yaml"
LARGE = ROOT / "experiments" / "mobilenetv3_large.yaml"
CONFIGS = sorted((ROOT / "experiments").glob("*.yaml"))


# ---------------------------------------------------------------- config


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
@pytest.mark.parametrize("quick", [False, True])
def test_shipped_configs_load(path, quick):
    config = load_config(path, quick=quick)
    assert config.target == "pixel-cpu"
    if config.search.evaluator == "supernet":  # the run refuses a space a supernet does not train well over
        assert sharing_obstacle(get_space(config.search.space)) is None and config.train.seeds == (0, 1)
        assert config.manual_edits == ()  # the mobilenetv3-shared space searches what the edits would change
    else:
        assert config.manual_edits == ("hswish_late", "efficient_last_stage", "stem_16")
        assert config.search.space == "mnasnet"
    if quick:
        assert config.search.trials < load_config(path).search.trials


def test_large_and_small_rewards():
    assert load_config(LARGE).search.reward == "soft" and load_config(LARGE).search.target_ms == 72.3
    assert load_config(SMALL).search.reward == "small"


@pytest.mark.parametrize("section, key", [("", "colour"), ("search", "trails"), ("netadapt", "steps"),
                                          ("quick", "epochz")])
def test_unknown_key_is_named(section, key):
    data = read_yaml(SMALL)
    target = data if not section else data.setdefault(section, {})
    target[key] = 1
    with pytest.raises(NasError, match=f"unknown config key '.*{key}'"):
        parse_config(data)


def test_netadapt_stage_embeds_the_library_settings_and_refuses_the_old_flat_keys():
    from nas.netadapt.__main__ import parse_args
    from nas.netadapt.loop import Settings
    from nas.train.proxy import ProxyTraining

    stage = load_config(SMALL).netadapt
    assert isinstance(stage.settings, Settings) and isinstance(stage.training, ProxyTraining)
    assert stage.settings.divisor == Settings().divisor and stage.training.lr == ProxyTraining().lr
    _, _, settings, training = parse_args(["--arch", "mnasnet_a1", "--latency-ratio", "0.5", "--out", "x"])
    assert settings == Settings() and training == replace(ProxyTraining(), device=training.device)
    data = read_yaml(SMALL)
    data["netadapt"]["delta_ratio"] = 0.02
    with pytest.raises(NasError, match=r"^config key 'netadapt.delta_ratio' is now 'netadapt.settings.delta_ratio'$"):
        parse_config(data)
    data = read_yaml(SMALL)
    data["quick"]["netadapt"]["training"]["seed"] = 3
    with pytest.raises(NasError, match="'netadapt.training.seed' is set at the top level"):
        parse_config(data)


def test_the_train_stage_defaults_are_the_trainers():
    from dataclasses import MISSING, fields

    from nas.pipeline.config import TrainStage
    from nas.train.trainer import TrainConfig

    trainer = {f.name: f.default for f in fields(TrainConfig) if f.default is not MISSING}  # epochs has none
    shared = [f for f in fields(TrainStage) if f.name in trainer]
    assert {f.name for f in shared} == {"batch_size", "resolution"}
    assert all(f.default == trainer[f.name] for f in shared)
    data = read_yaml(SMALL)
    data["train"] = {key: value for key, value in data["train"].items() if key not in ("batch_size", "resolution")}
    assert parse_config(data).train.batch_size == trainer["batch_size"]


def test_proxy_keys_set_once_at_top_level():
    data = read_yaml(SMALL)
    data["search"]["proxy"]["data"] = "/elsewhere"
    with pytest.raises(NasError, match="search.proxy.data"):
        parse_config(data)


def test_device_is_an_execution_option_not_a_config_key():
    data = read_yaml(SMALL)
    data["search"]["proxy"]["device"] = "cuda"
    with pytest.raises(NasError, match="search.proxy.device.*--device"):
        parse_config(data)


def test_overrides_are_typed_by_the_field_and_win_over_the_quick_section():
    config = load_config(SMALL, quick=True, overrides=[
        "search.trials=5", "search.proxy.lr=0.2", "search.seed_arch=none", "netadapt.settings.max_proposals=none",
        "train.recipe_overrides.nesterov=true", "manual_edits=hswish_late,stem_16", "calibration=readme-2018"])
    assert config.search.trials == 5 and isinstance(config.search.trials, int)
    assert config.search.proxy.lr == 0.2 and config.search.seed_arch is None
    assert config.netadapt.settings.max_proposals is None
    assert config.train.recipe_overrides["nesterov"] is True
    assert config.train.recipe_overrides["warmup_epochs"] == load_config(SMALL, quick=True).train.recipe_overrides[
        "warmup_epochs"]  # one recipe key set, the quick section's others kept
    assert config.manual_edits == ("hswish_late", "stem_16") and config.target == "pixel-cpu:readme-2018"
    assert load_config(SMALL, overrides=["netadapt.settings.delta_ratio=0.02"]).netadapt.settings.delta_ratio == 0.02
    assert load_config(SMALL, quick=True) == load_config(SMALL, quick=True, overrides=[])


@pytest.mark.parametrize("override, message", [
    ("search.trails=3", "override search.trails=3: unknown config key 'search.trails' (known: controller, evaluator, proxy,"),
    ("colour=red", "unknown config key 'colour'"),
    ("train.recipe_overrides.speed=2", "unknown config key 'train.recipe_overrides.speed'"),
    ("search.trials=many", "override search.trials=many: expected an integer"),
    ("search.proxy.lr=fast", "expected a number"),
    ("search.proxy.lr=nan", "expected a finite number"),
    ("train.recipe_overrides.nesterov=maybe", "expected true or false"),
    ("search=3", "'search' is a section"),
    ("search.trials.x=3", "'search.trials' holds a value"),
    ("search.proxy.seed=3", "'search.proxy.seed' is set at the top level"),
    ("trials", "expected KEY=VALUE"),
])
def test_a_bad_override_is_one_line(override, message, tmp_path, capsys):
    assert run(main, [str(SMALL), override, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not (tmp_path / "out").exists()


def test_overrides_are_recorded_and_a_resume_with_other_ones_is_refused(tmp_path, monkeypatch, capsys):
    import nas.latency.predict

    def stop(*args, **kwargs):
        raise NasError("stop after the claim")

    monkeypatch.setattr(nas.latency.predict, "get_latency_model", stop)
    out = tmp_path / "run"
    assert run(main, [str(SMALL), "--quick", "search.trials=3", "--out", str(out), "train.epochs=2"]) == 2
    assert "stop after the claim" in capsys.readouterr().err
    recorded = json.loads((out / "config.json").read_text())
    assert recorded["search"]["trials"] == 3 and recorded["train"]["epochs"] == 2
    assert run(main, [str(SMALL), "--quick", "search.trials=4", "--out", str(out), "train.epochs=2"]) == 2
    err = capsys.readouterr().err
    assert "error: " in err and "(search.trials: 3 there, 4 now)" in err and "stop after the claim" not in err
    assert run(main, [str(SMALL), "--quick", "train.epochs=2", "search.trials=3", "--out", str(out)]) == 2
    assert "stop after the claim" in capsys.readouterr().err  # the same overrides resume


def test_execution_reaches_the_search_and_netadapt_stages(tmp_path, monkeypatch):
    import nas.netadapt.loop
    import nas.search.runner
    from nas.latency.predict import get_latency_model
    from nas.pipeline.stages import run_netadapt_stage, run_search_stage

    seen = {}

    def stop_here(name):
        def fake(*args, **kwargs):
            seen[name] = (args, kwargs)
            raise NasError("stop here")
        return fake

    monkeypatch.setattr(nas.search.runner, "run_search", stop_here("search"))
    monkeypatch.setattr(nas.netadapt.loop, "netadapt", stop_here("netadapt"))
    execution = Execution(device="cuda:1", ray_address="ray://head:10001")
    with pytest.raises(NasError, match="stop here"):
        run_search_stage(load_config(SMALL), tmp_path, latency_model=None, execution=execution)
    with pytest.raises(NasError, match="stop here"):
        run_netadapt_stage(load_config(SMALL), tmp_path, zoo.get("mobilenet_v3_small"), get_latency_model("pixel-cpu"),
                           execution=execution)
    search = seen["search"][0][0]
    assert search.ray_address == "ray://head:10001" and search.proxy.device == "cuda:1"
    netadapt = seen["netadapt"][1]
    assert netadapt["ray_address"] == "ray://head:10001" and netadapt["training"].device == "cuda:1"


def test_the_search_evaluator_is_a_config_key_passed_to_the_search(tmp_path, monkeypatch):
    import nas.search.runner
    from nas.pipeline.stages import run_search_stage

    seen = []

    def fake(config, **kwargs):
        seen.append(config)
        raise NasError("stop here")

    monkeypatch.setattr(nas.search.runner, "run_search", fake)
    config = load_config(SMALL, quick=True, overrides=["search.evaluator=supernet", "search.space=mobilenetv3-shared",
                                                       "search.supernet_epochs=2", "search.supernet_rule=uniform"])
    with pytest.raises(NasError, match="stop here"):
        run_search_stage(config, tmp_path, latency_model=None, execution=Execution(device="cpu"))
    assert seen[0].evaluator.fixed() == {"kind": "supernet", "supernet": {"epochs": 2, "rule": "uniform"}}
    assert load_config(SMALL, quick=True).search.evaluator_settings().kind == "train"  # the default stays
    with pytest.raises(NasError, match="unknown evaluator 'oracle'"):
        load_config(SMALL, overrides=["search.evaluator=oracle"])


def test_cli_errors_are_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    typo = tmp_path / "typo.yaml"
    typo.write_text(SMALL.read_text().replace("trials: 48", "trails: 48"))
    for path, message, extra in ((tmp_path / "missing.yaml", "no such config file", []),
                                 (bad, "not valid YAML", []), (typo, "search.trails", []),
                                 (SMALL, "unknown device 'gpu'", ["--device", "gpu"])):
        assert run(main, [str(path), "--out", str(tmp_path / "out"), *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]


def test_stage_records_read_back_the_shipped_run_exactly():
    from nas.pipeline.stages import AdaptedResult, EditsResult, SeedResult, TrainedResult, read_done

    run = ROOT / "experiments" / "results" / "mobilenetv3_small_cifar10"
    for folder, kind in (("search", SeedResult), ("manual_edits", EditsResult), ("netadapt", AdaptedResult),
                         ("train/found", TrainedResult)):
        record = read_done(run / folder, kind)
        assert isinstance(record, kind) and record.to_row() == json.loads((run / folder / "done.json").read_text())
    assert read_done(run / "netadapt", AdaptedResult).spec.head.num_classes == 1000


# ---------------------------------------------------------------- edits


def test_hswish_late_changes_exactly_the_stride_16_layers():
    seed = zoo.get("mnasnet_a1")
    edited = hswish_late(seed)
    strides = output_strides(seed)
    for before, after, stride in zip(seed.layers, edited.layers, strides):
        assert after.act == ("hswish" if stride >= 16 else before.act)
        assert after == replace(before, act=after.act)
    assert edited.stem == seed.stem and edited.head.act == "hswish"
    # The same layers as MobileNetV3-Large's own h-swish layers: from the first stride-16 stage on.
    v3 = zoo.get("mobilenet_v3_large")
    first = next(i for i, s in enumerate(output_strides(v3)) if s >= 16)
    assert v3.layers[first].act == "hswish" and v3.layers[first - 1].act == "relu"


def test_stem_16_changes_only_the_stem_and_first_block_input():
    seed = zoo.get("mnasnet_a1")
    edited = stem_16(seed)
    assert (edited.stem.channels, edited.stem.act) == (16, "hswish")
    assert edited.layers[1:] == seed.layers[1:] and edited.head == seed.head
    assert edited.layers[0].exp == 16 and edited.layers[0].out == seed.layers[0].out  # ds: width follows input
    assert edited.in_channels()[0] == 16


def test_efficient_last_stage_pools_before_the_wide_layer():
    seed = zoo.get("mnasnet_a1")
    edited = efficient_last_stage(seed)
    assert edited.layers == seed.layers[:-1]
    assert (edited.head.channels, edited.head.hidden) == (seed.layers[-1].exp, seed.head.channels)
    with pytest.raises(NasError, match="already"):
        efficient_last_stage(edited)


@pytest.mark.parametrize("width, pre_pool", [(40, 240), (400, 1280)])
def test_efficient_last_stage_without_a_removable_block_never_widens(width, pre_pool):
    seed = zoo.get("mnasnet_a1")
    last = replace(seed.layers[-1], op="conv", exp=width, out=width, residual=False)
    edited = efficient_last_stage(replace(seed, layers=(*seed.layers[:-1], last)))
    assert edited.layers[-1] == last and (edited.head.channels, edited.head.hidden) == (pre_pool, 1280)


def test_edits_make_mnasnet_a1_look_like_v3_large_and_cheaper():
    from nas.latency.predict import get_latency_model

    steps = apply_edits(zoo.get("mnasnet_a1"), ("hswish_late", "efficient_last_stage", "stem_16"))
    assert [name for name, _ in steps] == ["seed", "hswish_late", "efficient_last_stage", "stem_16"]
    final = steps[-1][1]
    v3 = zoo.get("mobilenet_v3_large")
    assert (final.stem, final.head.channels, final.head.hidden) == (v3.stem, v3.head.channels, v3.head.hidden)
    model = get_latency_model("pixel-cpu")
    assert model.predict(final).ms < model.predict(steps[0][1]).ms
    with pytest.raises(NasError, match="unknown manual edit"):
        apply_edits(final, ("hswish_everywhere",))


# ---------------------------------------------------------------- end to end


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_quick_small_pipeline_end_to_end_and_resume(tmp_path, capsys):
    data = read_yaml(SMALL)
    data["quick"] = {
        "synthetic_train": 128, "synthetic_val": 32,
        "search": {"trials": 2, "workers": 0, "proxy": {"steps": 2, "batch_size": 32, "bn_batches": 1}},
        "netadapt": {"settings": {"delta_ratio": 0.1, "short_term_steps": 1, "pretrain_steps": 1, "max_proposals": 1},
                     "training": {"batch_size": 32, "bn_batches": 1}, "workers": 1},
        "train": {"epochs": 1, "batch_size": 64, "recipe_overrides": {"warmup_epochs": 0}, "seeds": [0, 1]},
    }
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(data))
    out = tmp_path / "run"
    assert run(main, [str(config), "--quick", "--out", str(out), "--data", "synthetic"]) == 0
    report = (out / "report.md").read_text()
    assert "found" in report and "mobilenet_v3_small" in report
    for result in ("report.md", "search/trials.csv", "search/best.json", "search/references.csv"):
        text = (out / result).read_text()
        assert str(ROOT) not in text and str(tmp_path) not in text, result  # no absolute path of this machine
    assert "fitted table latency_tables/pixel-cpu (" in (out / "search/trials.csv").read_text()
    for name in ("hswish_late", "efficient_last_stage", "stem_16"):
        assert name in report
    for png in ("comparison.png", "layers.png"):
        assert (out / png).stat().st_size > 1000
    summary = pd.read_csv(out / "summary.csv").set_index("network")
    assert summary[["val_top1", "test_top1"]].notna().all().all()  # synthetic data has a test split
    for name in ("found", "mobilenet_v3_small"):  # the mean of the two seeds' runs, each recorded
        runs = [json.loads((out / "train" / name / f"seed{s}" / "done.json").read_text()) for s in (0, 1)]
        assert summary.loc[name, "test_top1"] == pytest.approx(np.mean([r["test_top1"] for r in runs]))
        assert summary.loc[name, "test_top1_seed1"] == pytest.approx(runs[1]["test_top1"])
    assert "**Verdict: the found network " in report and "mean test top-1 over 2 seeds" in report
    for stage in ("search", "manual_edits", "netadapt"):
        assert (out / stage / "done.json").exists()
    checkpoint = out / "train" / "found" / "seed0" / "checkpoint.pt"
    stamp = checkpoint.stat().st_mtime_ns
    capsys.readouterr()
    assert run(main, [str(config), "--quick", "--out", str(out)]) == 0
    assert capsys.readouterr().err.count("finished earlier, skipped") == 7
    assert checkpoint.stat().st_mtime_ns == stamp


# ---------------------------------------------------------------- no machine paths in results

ABSOLUTE_PATH = re.compile(r"(?:^|[\s(`'\"])/(?:work|tmp|home|root|Users|mnt|data|scratch)/")


def test_verdict_needs_equal_or_higher_mean_top1_at_equal_or_lower_latency():
    from nas.pipeline.report import verdict

    def summary(found_top1, found_ms):
        return pd.DataFrame({"network": ["found", "ref"], "test_top1": [found_top1, 0.6],
                             "latency_ms": [found_ms, 20.0], "test_top1_seed0": [found_top1, 0.6]})

    assert "matches or beats the reference**: mean test top-1 over 1 seed 60.00 % vs 60.00 % (+0.00 points)" in \
        verdict(summary(0.6, 20.0), "ref")
    slower, worse = verdict(summary(0.61, 20.5), "ref"), verdict(summary(0.59, 19.0), "ref")
    assert "falls short" in slower and "(slower)" in slower
    assert "falls short" in worse and "(-1.00 points)" in worse


@pytest.mark.parametrize("seeds", [[], [0, 0], ["a"], [1.5], [True]])
def test_train_seeds_must_be_distinct_integers(seeds):
    with pytest.raises(NasError, match="train.seeds: expected a list of distinct integers"):
        TrainStage(seeds=seeds)


def test_train_seeds_from_yaml_and_overrides():
    assert load_config(SMALL, overrides=["train.seeds=3,4"]).train.seeds == (3, 4)
    assert load_config(SMALL).train.seeds is None  # one run per network, with the pipeline's seed
    with pytest.raises(NasError, match="train.seeds: expected a list of distinct integers, got \\['0', '0'\\]"):
        load_config(SMALL, overrides=["train.seeds=0,0"])


def test_train_note_names_the_data_folder_not_its_path():
    config = replace(load_config(SMALL), data="/tmp/cifar/cifar10_jpg")
    assert train_note(config).endswith(", data cifar10_jpg")


def test_committed_latency_sources_and_reports_hold_no_absolute_path():
    results = ROOT / "experiments" / "results"
    files = [*results.rglob("report.md"), *results.rglob("best.json"), *results.rglob("*.csv")]
    assert len(files) > 20
    for path in files:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            assert not ABSOLUTE_PATH.search(line), f"{path.relative_to(ROOT)}:{number}: {line[:200]}"
    for path in results.rglob("trials.parquet"):  # the binary twin of trials.csv
        for source in pd.read_parquet(path)["latency_source"]:
            assert not ABSOLUTE_PATH.search(source), f"{path.relative_to(ROOT)}: {source[:200]}"


def test_netadapt_starts_from_the_supernet_weights_when_the_search_scored_with_one(tmp_path, capsys):
    from nas.model import build_model
    from nas.pipeline.stages import supernet_seed_state
    from nas.supernet.evaluator import SupernetEvaluator
    from nas.supernet.training import SupernetSettings, train_supernet

    folder = tmp_path / "search" / "supernet"
    train_supernet(SupernetSettings(space="mobilenetv3-shared", epochs=1, resolution=8, synthetic_train=64,
                                    synthetic_val=32, batch_size=32, bn_batches=1, eval_batch_size=32),
                   folder, progress=False)
    config = load_config(SMALL, overrides=["search.evaluator=supernet", "search.space=mobilenetv3-shared"])
    small = zoo.get("mobilenet_v3_small")
    seed = replace(small, head=replace(small.head, num_classes=10))
    state = supernet_seed_state(config, tmp_path, seed)
    evaluator = SupernetEvaluator.load(folder)
    expected, raw = evaluator.child(seed).state_dict(), evaluator.supernet.child_state(seed)
    assert state.keys() == expected.keys() and all(torch.equal(state[k], expected[k]) for k in state)
    assert not torch.equal(state["blocks.3.dw.bn.running_mean"], raw["blocks.3.dw.bn.running_mean"])  # recalibrated
    build_model(seed).load_state_dict(state, strict=True)
    a1 = zoo.get("mnasnet_a1")
    assert supernet_seed_state(config, tmp_path, replace(a1, head=replace(a1.head, num_classes=10))) is None
    assert "not a child of the supernet" in capsys.readouterr().err
    assert supernet_seed_state(load_config(SMALL), tmp_path, seed) is None  # candidates were trained: no supernet
