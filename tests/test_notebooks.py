"""Both analysis notebooks run headless (nbclient) on small generated runs and write their figures."""

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nas.analysis import front_summary, nadir

nbformat = pytest.importorskip("nbformat", reason="notebook tests need the 'notebooks' extra (nbclient, ipykernel)")
nbclient = pytest.importorskip("nbclient", reason="notebook tests need the 'notebooks' extra (nbclient, ipykernel)")

NOTEBOOKS = Path(__file__).resolve().parents[1] / "experiments" / "notebooks"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _execute(name: str, cwd: Path) -> None:
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=60, kernel_name="python3",
                                     resources={"metadata": {"path": str(cwd)}})
    client.execute()


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


def test_pareto_notebook_draws_fronts_and_hypervolumes(tmp_path, search_runs, monkeypatch):
    run_dirs, trials = search_runs
    references = tmp_path / "references.csv"
    pd.DataFrame({"name": ["mobilenet_v3_large", "mobilenet_v3_small"], "latency_ms": [51.0, 15.0]}).to_csv(
        references, index=False)
    out = tmp_path / "out"
    monkeypatch.setenv("NAS_RUN_DIRS", os.pathsep.join(map(str, run_dirs)))
    monkeypatch.setenv("NAS_TARGET", "pixel-cpu")
    monkeypatch.setenv("NAS_REFERENCES", str(references))
    monkeypatch.setenv("NAS_OUT", str(out))
    _execute("pareto_fronts.ipynb", tmp_path)

    assert (out / "pareto_fronts.png").read_bytes().startswith(PNG_MAGIC)
    summary = pd.read_csv(out / "pareto_summary.csv")
    expected = front_summary(trials, reference=nadir(trials))
    assert summary["controller"].tolist() == ["random", "rl", "tpe"]
    assert summary["valid"].tolist() == [11, 12, 11]
    assert summary["hypervolume"].to_numpy() == pytest.approx(expected["hypervolume"].to_numpy())


def test_pareto_notebook_prices_the_zoo_on_the_target(tmp_path, search_runs, monkeypatch):
    run_dirs, _ = search_runs
    monkeypatch.setenv("NAS_RUN_DIRS", str(run_dirs[0]))
    monkeypatch.setenv("NAS_TARGET", "pixel-cpu")  # shipped table + fitted model: nothing is timed
    monkeypatch.delenv("NAS_REFERENCES", raising=False)
    monkeypatch.setenv("NAS_OUT", str(tmp_path))
    _execute("pareto_fronts.ipynb", tmp_path)
    assert (tmp_path / "pareto_fronts.png").read_bytes().startswith(PNG_MAGIC)


def test_netadapt_notebook_plots_the_trajectory(tmp_path, monkeypatch):
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
    monkeypatch.setenv("NAS_HISTORY", str(run))
    monkeypatch.setenv("NAS_LATENCY_TARGET", "48")
    monkeypatch.setenv("NAS_OUT", str(out))
    _execute("netadapt_trajectory.ipynb", tmp_path)
    assert (out / "netadapt_trajectory.png").read_bytes().startswith(PNG_MAGIC)


def test_a_bad_run_directory_fails_the_notebook_with_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("NAS_RUN_DIRS", str(tmp_path / "missing"))
    monkeypatch.setenv("NAS_OUT", str(tmp_path))
    with pytest.raises(nbclient.exceptions.CellExecutionError, match="does not exist"):
        _execute("pareto_fronts.ipynb", tmp_path)
    assert not (tmp_path / "pareto_fronts.png").exists()


@pytest.mark.parametrize("name", ["pareto_fronts.ipynb", "netadapt_trajectory.ipynb"])
def test_notebooks_are_valid_and_stored_without_outputs(name):
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(not cell.outputs and cell.execution_count is None for cell in code)
