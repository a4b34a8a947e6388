"""The pixel-cpu target: per-op cost model, its named calibrations, their fit, shipped tables and published checks."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nas import zoo
from nas.cli import run
from nas.errors import NasError
from nas.latency.keys import LatencyKey, decompose, parse_key
from nas.latency.pixel import calibrations, fit, materialize, sources
from nas.latency.pixel.__main__ import main
from nas.latency.pixel.model import COEFFICIENTS_FILE, FEATURES, PixelCostModel, calibration_dir, madds, primitives
from nas.latency.pixel.validate import compare, ratios, summarize, validate_published
from nas.latency.table import LatencyTable

PAPER, README = "mobilenetv3-paper", "readme-2018"
NAMES = (PAPER, README)


@pytest.fixture(scope="module")
def model() -> PixelCostModel:
    """The default calibration's model."""
    return PixelCostModel.load()


@pytest.fixture(scope="module")
def models() -> dict[str, PixelCostModel]:
    return {name: PixelCostModel.load(calibration=name) for name in NAMES}


@pytest.fixture(scope="module")
def rows(models) -> dict[str, pd.DataFrame]:
    """Every published row of each calibration's run priced by its model alone (pure numpy, no table)."""
    return {name: compare(models[name], calibrations.get(name), table={}) for name in NAMES}


def _block(**changes) -> LatencyKey:
    key = LatencyKey("ir", 28, 40, 240, 40, kernel=3, stride=1, act="relu", residual=True)
    return replace(key, **changes)


# ---------------------------------------------------------------- the cost model


@pytest.mark.parametrize("name, large, a1", [(PAPER, 52.9618, 72.2816), (README, 60.9878, 80.7259)])
def test_golden_latency_is_pinned(models, name, large, a1):
    """Each calibration's shipped coefficients price MobileNetV3-Large and MnasNet-A1 at 224 to these values."""
    model = models[name]
    assert model.price_many(decompose(zoo.get("mobilenet_v3_large"), 224)).sum() == pytest.approx(large, rel=1e-4)
    assert model.price_many(decompose(zoo.get("mnasnet_a1"), 224)).sum() == pytest.approx(a1, rel=1e-4)


@pytest.mark.parametrize("name", zoo.names())
def test_every_zoo_network_prices_at_every_width_and_resolution(model, name):
    widths = (1.0,) if name in zoo.FIXED else (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
    for width in widths:
        totals = [model.price_many(decompose(zoo.get(name, width=width), r)).sum() for r in range(96, 257, 32)]
        assert np.all(np.isfinite(totals)) and min(totals) > 0
        assert np.all(np.diff(totals) > 0), f"{name} x{width}: latency must grow with resolution"


@pytest.mark.parametrize("kind,exp,act", [("ir", 240, "relu"), ("ds", 40, "relu6"), ("ir", 120, "hswish")])
def test_larger_kernels_cost_more(model, kind, exp, act):
    prices = [model.price(_block(kind=kind, exp=exp, act=act, kernel=k)) for k in (3, 5, 7)]
    assert prices[0] < prices[1] < prices[2]


def test_stride_two_block_is_priced_on_its_input_size(model):
    strided = _block(hw=56, stride=2, residual=False)
    expand = primitives(strided)[0]
    assert expand.kind == "pw" and expand.macs == 56 * 56 * 40 * 240  # the expansion runs at the input size
    assert model.price(_block(hw=28, stride=1, residual=False)) < model.price(strided)
    assert model.price(strided) < model.price(_block(hw=56, stride=1, residual=False))


def test_se_and_hswish_add_cost(model):
    plain = _block()
    assert model.price(replace(plain, se=10)) > model.price(plain)
    assert model.price(replace(plain, act="hswish")) > model.price(plain)
    assert model.price(replace(plain, act="relu6")) == model.price(plain)  # fused into the convolution


def test_se_costs_what_nn_meter_pixel1_says(model):
    """Median SE / no-SE ratio over nn-Meter's Pixel 1 block pairs, model vs measured."""
    measured = {m.key: m.ms for m in sources.nn_meter_blocks()}
    pairs = [(k, replace(k, se=0, se_hard=False)) for k in measured if k.se]
    pairs = [(a, b) for a, b in pairs if b in measured]
    assert len(pairs) > 50
    observed = np.median([measured[a] / measured[b] for a, b in pairs])
    predicted = np.median([model.price(a) / model.price(b) for a, b in pairs])
    assert 1.03 < observed < 1.10
    assert predicted == pytest.approx(observed, abs=0.01)


@pytest.mark.parametrize("name", NAMES)
def test_hswish_costs_what_nn_meter_pixel1_blocks_say(models, name):
    """h-swish per element: the joint fit of nn-Meter's Pixel 1 blocks on the calibrated model's scale,
    about a convolution's own activation traffic (Note10's h-swish / ADD ratio priced it twice that)."""
    model = models[name]
    assert model.coefficients["hswish_mem"] == pytest.approx(fit.hswish_cost(model.vector, sources.nn_meter_blocks()),
                                                             rel=1e-9)
    assert 0.8 < model.coefficients["hswish_mem"] / model.coefficients["act_mem"] < 1.5
    note10 = fit._fit_alone(sources.note10_blocks())
    hswish, add = FEATURES.index("hswish_mem"), FEATURES.index("eltwise_mem")
    assert model.coefficients["hswish_mem"] / model.coefficients["eltwise_mem"] < 0.7 * note10[hswish] / note10[add]


@pytest.mark.parametrize("name", NAMES)
def test_mobilenet_v3_minimalistic_ratios_are_within_3_percent_of_published(models, name):
    table = ratios(models[name], name, table={}).set_index("family")
    assert table.loc["mobilenet_v3_large", "published_ratio"] == pytest.approx(1.161, abs=1e-3)
    assert table.loc["mobilenet_v3_small", "published_ratio"] == pytest.approx(1.295, abs=1e-3)
    assert (table["ratio_error_pct"].abs() <= 3.0).all(), table


def test_madds_of_keys_match_the_profile_convention():
    from nas.profile import profile

    spec = zoo.get("mobilenet_v3_small")
    assert sum(madds(k) for k in decompose(spec, 160)) == profile(spec, 160).madds


def test_corrupt_coefficients_are_one_clear_error(tmp_path):
    path = tmp_path / COEFFICIENTS_FILE
    path.write_text("{not json")
    with pytest.raises(NasError, match="corrupt pixel-cpu coefficients"):
        PixelCostModel.load(path)
    path.write_text(json.dumps({"coefficients": {"pw_mac": 1.0}}))
    with pytest.raises(NasError, match="missing"):
        PixelCostModel.load(path)
    with pytest.raises(NasError, match="finite"):
        PixelCostModel({**PixelCostModel.load().coefficients, "dw_mac": float("nan")})


# ---------------------------------------------------------------- the calibrations


def test_both_calibrations_load_and_record_their_name(models):
    assert calibrations.DEFAULT == PAPER and PixelCostModel.load().calibration == PAPER
    for name, model in models.items():
        assert model.calibration == name
        assert LatencyTable.load(calibration_dir(name)).meta.protocol["calibration"] == name
    assert calibration_dir(PAPER) != calibration_dir(README)


@pytest.mark.parametrize("file_of, asked", [(README, PAPER), (PAPER, README)])
def test_coefficients_of_one_calibration_are_refused_under_the_other_name(file_of, asked):
    path = calibration_dir(file_of) / COEFFICIENTS_FILE
    with pytest.raises(NasError, match=f"are of calibration '{file_of}', not '{asked}'"):
        PixelCostModel.load(path, calibration=asked)
    assert PixelCostModel.load(path).calibration == file_of  # a bare path takes what it records


def test_coefficients_that_record_no_calibration_are_refused_by_name(tmp_path):
    data = json.loads((calibration_dir(PAPER) / COEFFICIENTS_FILE).read_text())
    del data["calibration"]
    (tmp_path / COEFFICIENTS_FILE).write_text(json.dumps(data))
    with pytest.raises(NasError, match="record no calibration, not 'mobilenetv3-paper'"):
        PixelCostModel.load(tmp_path / COEFFICIENTS_FILE, calibration=PAPER)


def test_cli_refuses_another_calibrations_coefficients_in_one_line(tmp_path, capsys):
    shutil.copy(calibration_dir(README) / COEFFICIENTS_FILE, tmp_path / COEFFICIENTS_FILE)
    assert run(main, ["table", "--dir", str(tmp_path), "--samples", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "'readme-2018', not 'mobilenetv3-paper'" in err and "\n" not in err


# ---------------------------------------------------------------- the fit


@pytest.mark.parametrize("name", NAMES)
def test_fit_reproduces_the_shipped_coefficients(models, name):
    refit = fit.fit_from_sources(calibration=name)
    assert refit.calibration == name
    assert refit.coefficients == pytest.approx(models[name].coefficients, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("name, held_out", [(README, "mnasnet_a1"), (PAPER, "mnasnet_a1")])
def test_held_out_rows_never_reach_the_fit(tmp_path, models, name, held_out):
    """Calibration refuses held-out rows; scrambling them in the sources changes nothing."""
    chosen = calibrations.get(name)
    published = sources.published(filename=chosen.source)
    with pytest.raises(NasError, match="held out"):
        fit.calibrate(np.ones(len(FEATURES)), published, chosen)
    copy = tmp_path / "sources"
    shutil.copytree(sources.SOURCES_DIR, copy)
    _scale_rows(copy / chosen.source, lambda model: model == held_out, 10)
    scrambled = sources.published(copy, chosen.source).set_index(["model", "width_mult", "resolution"])["pixel1_ms"]
    original = published.set_index(["model", "width_mult", "resolution"])["pixel1_ms"]
    assert (scrambled[held_out] == 10 * original[held_out]).all()
    assert fit.fit_from_sources(copy, name).coefficients == pytest.approx(models[name].coefficients, rel=1e-12)


@pytest.mark.parametrize("name, other", [(PAPER, README), (README, PAPER)])
def test_the_two_runs_are_never_pooled(tmp_path, models, name, other):
    """Every row of the other calibration's run, scaled 3x, leaves this calibration's fit as it is."""
    copy = tmp_path / "sources"
    shutil.copytree(sources.SOURCES_DIR, copy)
    _scale_rows(copy / calibrations.get(other).source, lambda model: True, 3)
    assert fit.fit_from_sources(copy, other).coefficients != pytest.approx(models[other].coefficients, rel=1e-3)
    assert fit.fit_from_sources(copy, name).coefficients == pytest.approx(models[name].coefficients, rel=1e-12)


def _scale_rows(path, which, factor: float) -> None:
    """Multiply ``pixel1_ms`` of the rows ``which(model)`` selects in a copied published CSV."""
    lines = path.read_text().splitlines()
    header = next(i for i, line in enumerate(lines) if not line.startswith("#"))
    column = lines[header].split(",").index("pixel1_ms")
    for i in range(header + 1, len(lines)):
        fields = lines[i].split(",")
        if which(fields[0]) and fields[column]:
            fields[column] = str(float(fields[column]) * factor)
        lines[i] = ",".join(fields)
    path.write_text("\n".join(lines) + "\n")


def test_nnls_matches_the_unconstrained_solution_when_it_is_positive():
    rng = np.random.default_rng(0)
    a = rng.uniform(0.1, 1, (30, 4))
    truth = np.array([0.5, 0.0, 2.0, 1.0])
    assert fit.nnls(a, a @ truth) == pytest.approx(truth, abs=1e-9)
    assert (fit.nnls(a, -a @ truth) == 0).all()  # no non-negative x helps: all stay at zero


def test_lad_fit_ignores_an_outlier_that_bends_least_squares():
    rng = np.random.default_rng(1)
    a = rng.uniform(0.1, 1, (21, 2))
    truth = np.array([1.5, 0.5])
    b = a @ truth
    b[0] += 5.0  # one row far off the trend
    assert fit.lad_nnls(a, b) == pytest.approx(truth, abs=1e-3)
    assert np.abs(fit.nnls(a, b) - truth).max() > 0.05
    assert (fit.lad_nnls(a, -b) == 0).all()


# ---------------------------------------------------------------- the published check


def test_readme_calibration_held_out_mnasnet_and_proxylessnas_figures(rows):
    frame = rows[README]
    summary = summarize(frame).set_index("set")
    held = summary.loc["held-out: mnasnet_a1"]
    assert held["n"] == 25
    assert held["model_median_abs_pct"] <= 5.0
    assert held["model_spearman"] >= 0.98
    # every held-out MnasNet row but one within 13 %; the exception, 0.75 x 96 (17 ms, slower than
    # its neighbours suggest), is missed by the MAdds baseline as well
    errors = frame.loc[frame["model"] == "mnasnet_a1", "error_pct"].abs().sort_values()
    assert errors.iloc[-2] <= 13.0
    assert abs(frame.loc[frame["model"] == "proxylessnas_mobile", "error_pct"].item()) <= 15.0


def test_paper_calibration_held_out_rows_within_8_percent(rows):
    frame = rows[PAPER]
    assert set(frame.loc[frame["set"] == "calibration", "model"]) == {"mobilenet_v2", "proxylessnas_mobile"}
    assert set(frame.loc[frame["set"] == "held-out", "model"]) == {"mnasnet_a1"}
    assert "mnas_small" in frame.attrs["unpriced"] and "mnas_small" not in set(frame["model"])
    summary = summarize(frame).set_index("set")
    assert summary.loc["held-out: all", "model_median_abs_pct"] <= 8.0
    assert summary.loc["calibration: mobilenet_v2, proxylessnas_mobile", "model_max_abs_pct"] <= 8.0


def test_per_op_model_beats_the_madds_baseline(rows):
    summary = summarize(rows[README]).set_index("set")
    for name in ("held-out: mnasnet_a1", "held-out: mnasnet_a1 small (w<=0.5, r<=128)"):
        assert summary.loc[name, "model_median_abs_pct"] < summary.loc[name, "baseline_median_abs_pct"]
        assert summary.loc[name, "model_max_abs_pct"] < summary.loc[name, "baseline_max_abs_pct"]
    small = summary.loc["held-out: mnasnet_a1 small (w<=0.5, r<=128)"]
    assert small["baseline_max_abs_pct"] > 25 > 2 * small["model_max_abs_pct"]


def test_validate_published_writes_csv_png_and_summary_per_calibration(tmp_path):
    results = validate_published(tmp_path)
    assert set(results) == set(NAMES)
    for name, count in ((README, 48), (PAPER, 4)):
        written = pd.read_csv(tmp_path / name / "validation.csv")
        assert len(written) == len(results[name][0]) == count and set(written["calibration"]) == {name}
        assert {"published_ms", "predicted_ms", "error_pct", "baseline_ms", "baseline_error_pct", "set"} <= set(written)
        assert set(written["set"]) == {"calibration", "held-out"}
        assert (tmp_path / name / "validation.png").stat().st_size > 10_000
        assert "held-out: all" in set(pd.read_csv(tmp_path / name / "validation_summary.csv")["set"])
        assert len(pd.read_csv(tmp_path / name / "ratios.csv")) == 2


def test_latency_cli_validates_each_calibration_or_the_one_named(tmp_path, capsys):
    from nas.latency.__main__ import main as latency_main

    assert latency_main(["validate", "--target", "pixel-cpu", "--calibration", README, "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "== pixel-cpu calibration readme-2018 ==" in out and PAPER not in out
    assert sorted(p.name for p in tmp_path.iterdir()) == [README]


# ---------------------------------------------------------------- the shipped table


@pytest.mark.parametrize("name", NAMES)
def test_shipped_table_is_the_model_at_every_row(models, name):
    directory = calibration_dir(name)
    table = LatencyTable.load(directory)
    frame = table.frame
    assert (directory / "table.csv").stat().st_size < 2_000_000
    assert table.meta.target == "pixel-cpu" and table.meta.kind == "fitted"
    assert set(frame["provenance"]) == {"measured", "fitted"}
    assert (frame.loc[frame["provenance"] == "measured", "n"] > 0).all()
    sample = frame.sample(300, random_state=0)
    priced = models[name].price_many(parse_key(k) for k in sample["key"])
    assert sample["ms"].to_numpy() == pytest.approx(priced, rel=1e-5)
    proxyless_keys = {str(m.key) for m in sources.proxyless_blocks()}
    assert proxyless_keys <= set(frame.loc[frame["provenance"] == "measured", "key"])


@pytest.mark.parametrize("name", NAMES)
def test_shipped_table_covers_the_zoo_at_published_widths_and_resolutions(name):
    table = LatencyTable.load(calibration_dir(name))
    for network, width, spec in materialize.zoo_specs():
        for resolution in materialize.RESOLUTIONS:
            assert not table.missing(decompose(spec, resolution)), (network, width, resolution)


def test_cli_reports_bad_input_in_one_line(tmp_path, capsys):
    (tmp_path / COEFFICIENTS_FILE).write_text("[]")
    assert run(main, ["table", "--dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err


# ---------------------------------------------------------------- T of the pipeline configs


@pytest.mark.parametrize("config, network, factor", [("mobilenetv3_large.yaml", "mnasnet_a1", 1.0),
                                                     ("mobilenetv3_small.yaml", "mobilenet_v3_small", 1.25),
                                                     ("mobilenetv3_small_cifar10.yaml", "mobilenet_v3_small", 1.25)])
def test_pipeline_t_is_restated_for_the_calibration_in_force(config, network, factor):
    """Each YAML's T is its documented rule applied on the calibration it names (the default here)."""
    from nas.latency.predict import get_latency_model
    from nas.pipeline.config import load_config

    loaded = load_config(Path(__file__).resolve().parents[1] / "experiments" / config)
    expected = factor * get_latency_model(loaded.target).predict(zoo.get(network), loaded.latency_resolution).ms
    assert loaded.search.target_ms == pytest.approx(expected, abs=0.1)


def test_a_pipeline_config_names_its_calibration():
    from nas.pipeline.config import parse_config, read_yaml

    data = read_yaml(Path(__file__).resolve().parents[1] / "experiments" / "mobilenetv3_large.yaml")
    assert parse_config(data).target == "pixel-cpu"
    assert parse_config({**data, "calibration": README}).target == "pixel-cpu:readme-2018"
    with pytest.raises(NasError, match="pixel-cpu only"):
        parse_config({**data, "target": "host-cpu", "calibration": README})


def test_search_and_netadapt_command_lines_take_a_calibration():
    from nas.netadapt.__main__ import parse_args
    from nas.search.__main__ import _parser

    assert _parser().parse_args(["--calibration", README]).calibration == README
    argv = ["--arch", "mnasnet_a1", "--latency-ratio", "0.8", "--out", "x", "--calibration", README]
    assert parse_args(argv)[0].calibration == README
