"""Both analysis notebooks run headless (nbclient): on the committed results by default, on generated runs via NAS_*.

They are committed executed; the tests execute them into memory and never write the files.
"""

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nas.analysis import front_summary, nadir, reference_latencies
from nas.analysis.notebooks import execute_notebook
from nas.errors import NasError

nbformat = pytest.importorskip("nbformat", reason="notebook tests need the 'notebooks' extra (nbclient, ipykernel)")
pytest.importorskip("nbclient", reason="notebook tests need the 'notebooks' extra (nbclient, ipykernel)")

NOTEBOOKS = Path(__file__).resolve().parents[1] / "experiments" / "notebooks"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FIGURES = {"pareto_fronts.ipynb": 2, "netadapt_trajectory.ipynb": 1}  # one Pareto figure per committed run set


def _execute(name: str, cwd: Path | None = None, **overrides: str):
    """The notebook executed with these NAS_* variables only; the committed file stays as it is."""
    committed = (NOTEBOOKS / name).read_bytes()
    notebook = execute_notebook(NOTEBOOKS / name, overrides=overrides, cwd=cwd)
    assert (NOTEBOOKS / name).read_bytes() == committed
    return notebook


def _outputs(notebook, kind: str) -> list:
    """Every output of the code cells as text (``text``) or as PNG images (``png``)."""
    found = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if kind == "png" and "image/png" in data:
                found.append(data["image/png"])
            elif kind == "text" and "image/png" not in data:
                found.append(output.get("text", data.get("text/plain")))
    return found


def _search_run(root: Path, name: str, controllers: list[str], seed: int, fmt: str) -> pd.DataFrame:
    """A trials table with the search runner's columns, including a failed (diverged) trial."""
    rng = np.random.default_rng(seed)
    n = 12 * len(controllers)
    latency = rng.uniform(20.0, 90.0, n)
    accuracy = np.clip(0.3 + 0.005 * latency + rng.normal(0, 0.03, n), 0, 1)
    status = np.array(["ok"] * n, dtype=object)
    status[3] = "failed"
    accuracy[3] = np.nan
    trials = pd.DataFrame({
        "trial_id": np.arange(n), "controller": [controllers[i % len(controllers)] for i in range(n)],
        "arch": [f"stem_{name}_{i}" for i in range(n)], "latency_ms": latency, "latency_source": "table",
        "accuracy": accuracy, "reward": accuracy * (latency / 60.0) ** -0.07, "params": 3e6, "madds": 2e8,
        "train_s": 1.0, "status": status,
    })
    run = root / name
    run.mkdir()
    if fmt == "parquet":
        trials.to_parquet(run / "trials.parquet", index=False)
    else:
        trials.to_csv(run / "trials.csv", index=False)
    return trials


@pytest.fixture
def search_runs(tmp_path):
    first = _search_run(tmp_path, "run_a", ["rl", "random"], 0, "csv")
    second = _search_run(tmp_path, "run_b", ["tpe"], 1, "parquet")
    return [tmp_path / "run_a", tmp_path / "run_b"], pd.concat([first, second], ignore_index=True)


def test_pareto_notebook_draws_fronts_and_hypervolumes(tmp_path, search_runs):
    run_dirs, trials = search_runs
    references = tmp_path / "references.csv"
    pd.DataFrame({"name": ["mobilenet_v3_large", "mobilenet_v3_small"], "latency_ms": [51.0, 15.0]}).to_csv(
        references, index=False)
    out = tmp_path / "out"
    _execute("pareto_fronts.ipynb", tmp_path, NAS_RUN_DIRS=os.pathsep.join(map(str, run_dirs)),
             NAS_TARGET="pixel-cpu", NAS_REFERENCES=str(references), NAS_OUT=str(out))

    assert (out / "pareto_fronts_runs.png").read_bytes().startswith(PNG_MAGIC)
    summary = pd.read_csv(out / "pareto_summary_runs.csv")
    expected = front_summary(trials, reference=nadir(trials))
    assert summary["controller"].tolist() == ["random", "rl", "tpe"]
    assert summary["valid"].tolist() == [11, 12, 11]
    assert summary["hypervolume"].to_numpy() == pytest.approx(expected["hypervolume"].to_numpy())
    assert summary["per_run_hv_runs"].tolist() == [1, 1, 1]  # random and rl share run_a, tpe has run_b


def test_pareto_notebook_prices_the_zoo_on_the_target(tmp_path, search_runs):
    run_dirs, _ = search_runs
    notebook = _execute("pareto_fronts.ipynb", tmp_path, NAS_RUN_DIRS=str(run_dirs[0]),
                        NAS_TARGET="pixel-cpu")  # shipped table + fitted model: nothing is timed
    assert len(_outputs(notebook, "png")) == 1
    priced = reference_latencies("pixel-cpu").set_index("name")["latency_ms"]
    table = next(text for text in _outputs(notebook, "text") if "mnasnet_a1" in text)
    assert all(f"{name}  " in table and f"{ms:.2f}" in table for name, ms in priced.items())


def test_netadapt_notebook_plots_the_trajectory(tmp_path):
    run = tmp_path / "netadapt"
    run.mkdir()
    latency = [60.0, 55.5, 51.0, 47.2]
    pd.DataFrame({
        "iteration": range(4), "unit": ["seed", "block3", "block7", "head"], "old_width": [0, 72, 240, 960],
        "width": [0, 64, 224, 896], "latency_ms": latency, "cut_ms": [0.0, 4.5, 4.5, 3.8],
        "accuracy": [0.70, 0.69, 0.685, 0.67], "proposals": [0, 3, 3, 3], "spec": "stem_x",
    }).to_csv(run / "history.csv", index=False)
    pd.DataFrame({
        "iteration": [1, 1, 2, 2, 3, 3], "unit": "u", "old_width": 1, "width": 1,
        "latency_ms": [55.5, 55.0, 51.0, 50.5, 47.2, 46.9], "accuracy": [0.69, 0.66, 0.685, np.nan, 0.67, 0.6],
        "loss": 1.0, "slope": 0.0, "selected": [True, False, True, False, True, False],
        "error": ["", "", "", "diverged", "", ""],
    }).to_csv(run / "proposals.csv", index=False)
    out = tmp_path / "out"
    notebook = _execute("netadapt_trajectory.ipynb", tmp_path, NAS_HISTORY=str(run), NAS_LATENCY_TARGET="48",
                        NAS_OUT=str(out))
    assert (out / "netadapt_trajectory.png").read_bytes().startswith(PNG_MAGIC)
    assert "3 iterations after the seed; 6 proposals; latency target 48.00 ms\n" in _outputs(notebook, "text")


def test_a_bad_run_directory_fails_the_notebook_with_a_clear_error(tmp_path):
    with pytest.raises(NasError, match="pareto_fronts.ipynb: a cell failed: .*run directory .*missing does not exist"):
        _execute("pareto_fronts.ipynb", tmp_path, NAS_RUN_DIRS=str(tmp_path / "missing"), NAS_OUT=str(tmp_path))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", FIGURES)
def test_notebooks_are_committed_executed_and_small(name):
    path = NOTEBOOKS / name
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert [cell.execution_count for cell in code] == list(range(1, len(code) + 1))
    assert not any(output.output_type == "error" for cell in code for output in cell.outputs)
    assert len(_outputs(notebook, "png")) == FIGURES[name]
    assert path.stat().st_size < 1_000_000


def test_pareto_notebook_defaults_to_the_committed_searches(tmp_path):
    notebook = _execute("pareto_fronts.ipynb", NAS_OUT=str(tmp_path))  # defaults; OUT only adds the files
    for name, controllers in (("search_efficiency_64", ["random", "rl", "tpe"]), ("mobilenetv3_small_cifar10", ["rl"])):
        summary = pd.read_csv(tmp_path / f"pareto_summary_{name}.csv")
        assert summary["controller"].tolist() == controllers
        assert (summary["front_size"] > 0).all() and (summary["hypervolume"] > 0).all()
        assert (tmp_path / f"pareto_fronts_{name}.png").read_bytes().startswith(PNG_MAGIC)
    assert pd.read_csv(tmp_path / "pareto_summary_search_efficiency_64.csv")["per_run_hv_runs"].tolist() == [6, 6, 6]
    committed = nbformat.read(NOTEBOOKS / "pareto_fronts.ipynb", as_version=4)
    assert _outputs(notebook, "text") == _outputs(committed, "text"), \
        "committed outputs are stale: python -m nas.analysis.notebooks experiments/notebooks/pareto_fronts.ipynb"


def test_netadapt_notebook_defaults_to_the_committed_pipeline_run(tmp_path):
    notebook = _execute("netadapt_trajectory.ipynb", NAS_OUT=str(tmp_path))
    target = json.loads((NOTEBOOKS.parent / "results" / "mobilenetv3_small_cifar10" / "netadapt" / "run.json")
                        .read_text())["settings"]["target_ms"]
    assert f"13 iterations after the seed; 54 proposals; latency target {target:.2f} ms\n" in _outputs(notebook, "text")
    assert (tmp_path / "netadapt_trajectory.png").read_bytes().startswith(PNG_MAGIC)
    committed = nbformat.read(NOTEBOOKS / "netadapt_trajectory.ipynb", as_version=4)
    assert _outputs(notebook, "text") == _outputs(committed, "text"), \
        "committed outputs are stale: python -m nas.analysis.notebooks experiments/notebooks/netadapt_trajectory.ipynb"


def test_the_executor_cli_names_a_missing_notebook_in_one_line(tmp_path, capsys):
    from nas.analysis.notebooks import main
    from nas.cli import run

    assert run(main, [str(tmp_path / "missing.ipynb")]) == 2
    assert capsys.readouterr().err == f"error: notebook {tmp_path / 'missing.ipynb'} does not exist\n"
