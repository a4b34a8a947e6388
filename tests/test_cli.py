"""Command-line conventions: one meaning per flag, old spellings refused in one line, console scripts."""

from __future__ import annotations

import configparser
import importlib
import json
import re
import sys
from pathlib import Path

import pytest

from nas import console
from nas.cli import run

ROOT = Path(__file__).resolve().parents[1]
TINY = ("stem_k3_s2_c8_relu ir_k3_s1_e16_c8_relu_skip ir_k3_s2_e24_c16_relu "
        "ir_k3_s2_e48_c24_hse0.25_hswish head_c64_relu_d0.0_n10")


def _main(module: str):
    return importlib.import_module(module).main


@pytest.mark.parametrize("module, argv, successor", [
    ("nas.search.__main__", ["--resolution", "8"], "--train-resolution"),
    ("nas.netadapt.__main__", ["--arch", "mnasnet_a1", "--latency-ratio", "0.5", "--out", "x", "--resolution", "192"],
     "--latency-resolution"),
    ("nas.train.__main__", ["--arch", "mnasnet_a1", "--out", "x", "--resolution", "32"], "--train-resolution"),
    ("nas.train.__main__", ["--arch", "mnasnet_a1", "--out", "x", "--workers", "2"], "--loader-workers"),
    ("nas.evaluate", ["--checkpoint", "x", "--resolution", "32"], "--eval-resolution"),
    ("nas.evaluate", ["--checkpoint", "x", "--json", "result.json"], "--json-out result.json"),
    ("nas.latency.__main__", ["predict", "mnasnet_a1", "--resolution", "160"], "--latency-resolution"),
    ("nas.latency.__main__", ["build", "--resolution", "160"], "--latency-resolution"),
    ("nas.latency.__main__", ["measure", "mnasnet_a1", "--resolution", "160"], "--latency-resolution"),
    ("nas.latency.__main__", ["validate", "--resolution", "160"], "--latency-resolution"),
    ("nas.arch.__main__", ["show", "mnasnet_a1", "--resolution", "160"], "--latency-resolution"),
])
def test_an_old_spelling_is_refused_in_one_line_naming_the_new_flag(module, argv, successor, capsys):
    assert run(_main(module), argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {argv[-2]} ") and successor in lines[0], captured.err
    assert captured.out == ""


@pytest.mark.parametrize("module, argv", [
    ("nas.search.__main__", []), ("nas.netadapt.__main__", []), ("nas.train.__main__", []),
    ("nas.evaluate", []), ("nas.arch.__main__", ["show"]),
    *[("nas.latency.__main__", [command]) for command in ("build", "predict", "measure", "validate")],
])
def test_help_names_only_the_new_spellings(module, argv, capsys):
    with pytest.raises(SystemExit) as stop:
        _main(module)([*argv, "--help"])
    assert stop.value.code == 0
    text = capsys.readouterr().out
    assert re.search(r"(?<![\w-])--resolution\b", text) is None and "-resolution PX" in text
    assert re.search(r"--json [A-Z]", text) is None  # --json takes no value; a file is --json-out PATH


def test_arch_show_counts_madds_at_the_latency_resolution(capsys):
    main = _main("nas.arch.__main__")
    sizes = {}
    for px in (224, 112):
        assert main(["show", "mnasnet_a1", "--latency-resolution", str(px), "--json"]) == 0
        shown = json.loads(capsys.readouterr().out)
        assert shown["resolution"] == px
        sizes[px] = shown["madds"]
    assert sizes[112] < sizes[224] / 3


def test_latency_predict_defaults_to_pixel_cpu_at_the_latency_resolution(capsys):
    main = _main("nas.latency.__main__")
    found = {}
    for px in (224, 160):
        assert main(["predict", "mnasnet_a1", "--latency-resolution", str(px), "--json"]) == 0
        found[px] = json.loads(capsys.readouterr().out)
    assert found[160]["target"].startswith("pixel-cpu") and found[160]["resolution"] == 160
    assert found[160]["latency_ms"] < found[224]["latency_ms"]


def test_netadapt_and_search_read_the_two_resolutions_apart():
    from nas.netadapt.__main__ import parse_args
    from nas.search.__main__ import _parser

    args, _, _, training = parse_args(["--arch", "mnasnet_a1", "--latency-ratio", "0.5", "--out", "x",
                                       "--latency-resolution", "192", "--train-resolution", "16", "--workers", "0"])
    assert (args.latency_resolution, training.resolution, args.workers) == (192, 16, 0)
    search = _parser().parse_args(["--latency-resolution", "192", "--train-resolution", "16"])
    assert (search.latency_resolution, search.train_resolution) == (192, 16)


def test_train_and_evaluate_with_the_new_flags(tmp_path, capsys):
    out = tmp_path / "run"
    assert _main("nas.train.__main__")([
        "--arch", TINY, "--out", str(out), "--epochs", "1", "--batch-size", "16", "--synthetic-train", "32",
        "--synthetic-val", "16", "--train-resolution", "16", "--loader-workers", "0", "--recipe", "dli14",
        "--device", "cpu", "--quiet"]) == 0
    recorded = json.loads((out / "result.json").read_text())["config"]
    assert recorded["resolution"] == 16 and recorded["num_workers"] == 0
    capsys.readouterr()
    written = tmp_path / "eval.json"
    assert _main("nas.evaluate")(["--checkpoint", str(out), "--eval-resolution", "24", "--device", "cpu", "--json",
                                  "--json-out", str(written), "--loader-workers", "0"]) == 0
    printed = json.loads(capsys.readouterr().out)  # stdout is the JSON object alone
    assert printed == json.loads(written.read_text()) and printed["images"] == 16 and 0 <= printed["top1"] <= 1
    assert run(_main("nas.train.__main__"), ["--arch", TINY, "--out", str(tmp_path / "x"), "--loader-workers",
                                             "-1"]) == 2
    assert "--loader-workers must be 0 or more" in capsys.readouterr().err


# ---------------------------------------------------------------- console scripts


def _declared_scripts() -> dict[str, str]:
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    lines = parser["options.entry_points"]["console_scripts"].strip().splitlines()
    return dict(tuple(part.strip() for part in line.split("=")) for line in lines)


def test_console_scripts_are_declared_for_every_tool_and_resolve_to_callables():
    declared = _declared_scripts()
    assert set(declared) == set(console.SCRIPTS) >= {"nas-search", "nas-netadapt", "nas-train", "nas-evaluate",
                                                     "nas-latency", "nas-pipeline", "nas-arch", "nas-convert",
                                                     "nas-spaces"}
    for name, target in declared.items():
        module, attr = target.split(":")
        assert callable(getattr(importlib.import_module(module), attr)), name
        assert callable(importlib.import_module(console.SCRIPTS[name]).main), name


@pytest.mark.parametrize("name", sorted(console.SCRIPTS))
def test_each_console_script_runs_its_tools_main(name, monkeypatch, capsys):
    module, attr = _declared_scripts()[name].split(":")
    script = getattr(importlib.import_module(module), attr)
    monkeypatch.setattr(sys, "argv", [name, "--help"])
    with pytest.raises(SystemExit) as stop:
        script()
    assert stop.value.code == 0 and capsys.readouterr().out.startswith("usage:")


def test_a_console_script_reports_bad_input_in_one_line(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["nas-arch", "show", "no_such_net"])
    assert console.arch() == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "no_such_net" in err[0]


def test_latency_validate_refuses_measured_options_on_the_pixel_cpu_default(monkeypatch, capsys):
    import nas.latency.__main__ as latency

    main = _main("nas.latency.__main__")
    for option in (["--space", "zoo"], ["--samples", "5"], ["--latency-resolution", "96"], ["--recalibrate"]):
        assert run(main, ["validate", *option]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"error: {option[0]} applies to a measured target"), err
    seen = []
    monkeypatch.setattr(latency, "validate_measured", lambda settings, out: seen.append(settings))
    assert main(["validate", "--target", "host-cpu", "--space", "zoo", "--latency-resolution", "96"]) == 0
    assert main(["validate", "--target", "host-cpu"]) == 0
    assert (seen[0].sets, seen[0].resolution, seen[0].samples) == (("zoo",), 96, 50)
    assert (seen[1].sets, seen[1].resolution) == (("mnasnet",), 224)
