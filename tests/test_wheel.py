"""A regular (non-editable) install predicts: build a wheel, install it into a fresh venv, run the CLI elsewhere."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from nas import zoo
from nas.latency.predict import get_latency_model

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("setup.cfg", "pyproject.toml", "README.md", "nas", "search_spaces", "latency_tables")


def _run(args: list, **kwargs) -> str:
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=300, **kwargs)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.fixture(scope="module")
def venv_python(tmp_path_factory) -> Path:
    """A venv over the system packages (torch & co., nothing downloaded) holding only the wheel of this tree."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"  # a copy, so the build leaves no build/ or egg-info in the checkout
    source.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / name, source / name)
    measured = source / "latency_tables" / "host-cpu"
    (measured / "table.csv").write_text("key,ms,spread_ms,n,provenance\n")  # a table built in this checkout
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w",
          tmp / "dist", source])
    (wheel,) = (tmp / "dist").glob("latency_nas-*.whl")
    shipped = [n for n in zipfile.ZipFile(wheel).namelist() if n.startswith("latency_tables/")]
    assert {f"latency_tables/pixel-cpu/{f}" for f in ("table.csv", "meta.json", "coefficients.json",
                                                    "sources/pixel1_published.csv")} <= set(shipped)
    assert not [n for n in shipped if "host-cpu" in n]  # measured tables are never packaged
    _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", tmp / "venv"])
    python = tmp / "venv" / "bin" / "python"
    # --ignore-installed: never touch the editable install of the system site-packages
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index",
          "--ignore-installed", wheel])
    return python


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "LATENCY_NAS_TABLES")}
    return {**env, **extra}


def test_wheel_install_predicts_pixel_cpu_from_another_folder(venv_python, tmp_path):
    env = _env(XDG_CACHE_HOME=str(tmp_path / "cache"))
    where = _run([venv_python, "-c", "import nas, latency_tables; print(nas.__file__); print(latency_tables.__file__)"],
                 cwd=tmp_path, env=env).split()
    site = venv_python.parents[1]
    assert all(Path(path).is_relative_to(site) for path in where), where  # the wheel's copy, not the checkout's

    out = json.loads(_run([venv_python, "-m", "nas.latency", "predict", "--target", "pixel-cpu", "mnasnet_a1",
                           "--json"], cwd=tmp_path, env=env))
    expected = get_latency_model("pixel-cpu").predict(zoo.get("mnasnet_a1")).ms
    assert out["latency_ms"] == pytest.approx(expected, rel=1e-12)
    assert out["latency_ms"] == pytest.approx(72.282, abs=1e-3)
    assert out["source"].startswith("pixel-cpu: fitted table latency_tables/pixel-cpu (")
    assert str(site) not in out["source"]  # result files get no absolute path of this machine

    # the console script the wheel installs runs the same main (pixel-cpu is the default target)
    scripted = json.loads(_run([venv_python.parent / "nas-latency", "predict", "mnasnet_a1", "--json"], cwd=tmp_path,
                               env=env))
    assert scripted["latency_ms"] == out["latency_ms"] and scripted["target"] == out["target"]

    older = json.loads(_run([venv_python, "-m", "nas.latency", "predict", "--target", "pixel-cpu", "--calibration",
                             "readme-2018", "mnasnet_a1", "--json"], cwd=tmp_path, env=env))
    assert older["latency_ms"] == pytest.approx(80.726, abs=1e-3)  # the second calibration ships too
    assert "latency_tables/pixel-cpu/readme-2018 (" in older["source"]


def test_wheel_install_writes_measured_tables_outside_site_packages(venv_python, tmp_path):
    script = "from nas.latency.locations import default_table_dir as d; print(d('host-cpu')); print(d('cuda', 2))"
    cached = _run([venv_python, "-c", script], cwd=tmp_path, env=_env(XDG_CACHE_HOME=str(tmp_path / "cache"))).split()
    assert cached == [str(tmp_path / "cache" / "latency-nas" / "latency_tables" / t) for t in ("host-cpu", "cuda")]
    chosen = _run([venv_python, "-c", script], cwd=tmp_path, env=_env(LATENCY_NAS_TABLES=str(tmp_path / "t"))).split()
    assert chosen == [str(tmp_path / "t" / "host-cpu"), str(tmp_path / "t" / "cuda")]


def test_source_checkout_keeps_tables_in_latency_tables(monkeypatch, tmp_path):
    from nas.latency.locations import TABLES_ENV, default_table_dir, table_label

    monkeypatch.delenv(TABLES_ENV, raising=False)
    assert default_table_dir("host-cpu") == ROOT / "latency_tables" / "host-cpu"
    assert default_table_dir("host-cpu", 4) == ROOT / "latency_tables" / "host-cpu-4t"
    assert default_table_dir("pixel-cpu") == ROOT / "latency_tables" / "pixel-cpu"
    assert table_label(default_table_dir("host-cpu")) == "latency_tables/host-cpu"
    assert table_label(tmp_path / "mine") == "mine"
    monkeypatch.setenv(TABLES_ENV, str(tmp_path))
    assert default_table_dir("cuda") == tmp_path / "cuda"
    assert default_table_dir("pixel-cpu") == ROOT / "latency_tables" / "pixel-cpu"  # shipped, whatever the env
    assert table_label(tmp_path / "cuda") == "latency_tables/cuda"
