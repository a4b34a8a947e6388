"""Pareto sort, fronts and hypervolume as pure functions; the plots and run readers on small tables."""

import itertools

import numpy as np
import pandas as pd
import pytest

from nas import zoo
from nas.analysis import (
    front_summary,
    hypervolume,
    load_history,
    load_trials,
    nadir,
    non_dominated_sort,
    pareto_front,
    plot_netadapt_history,
    plot_pareto,
    reference_latencies,
)
from nas.errors import NasError
from nas.search.records import Status, TrialRecord, trials_frame

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _brute_force_fronts(points, senses):
    """Peel fronts by definition: a point is in the current front if nothing left dominates it."""
    values = np.asarray(points, float) * np.array([1 if s == "min" else -1 for s in senses])
    left, fronts = set(range(len(values))), []
    while left:
        front = sorted(i for i in left if not any(
            (values[j] <= values[i]).all() and (values[j] < values[i]).any() for j in left))
        fronts.append(front)
        left -= set(front)
    return fronts


def _grid_hypervolume(points, reference):
    """Count the unit cells dominated by integer points (minimising), the definition of hypervolume."""
    volume = 0
    for cell in itertools.product(*(range(0, r) for r in reference)):
        volume += any(all(p <= c for p, c in zip(point, cell)) for point in points)
    return volume


def _trials(**columns):
    return pd.DataFrame(columns)


# ---- non_dominated_sort -------------------------------------------------------------------


def test_sort_peels_fronts_in_order_with_mixed_senses():
    points = [[0.9, 30.0], [0.8, 10.0], [0.7, 20.0], [0.6, 40.0], [0.85, 15.0]]
    fronts = non_dominated_sort(points, ["max", "min"])
    assert [f.tolist() for f in fronts] == [[0, 1, 4], [2], [3]]


def test_equal_points_share_a_front_and_every_row_appears_once():
    fronts = non_dominated_sort([[1, 1], [1, 1], [2, 2], [2, 2]], ["min", "min"])
    assert [f.tolist() for f in fronts] == [[0, 1], [2, 3]]


def test_tie_in_one_objective_is_dominated_by_better_other():
    fronts = non_dominated_sort([[1, 5], [1, 4]], ["min", "min"])
    assert [f.tolist() for f in fronts] == [[1], [0]]


def test_single_and_empty_inputs():
    assert [f.tolist() for f in non_dominated_sort([[3.0, 4.0]], ["max", "min"])] == [[0]]
    assert non_dominated_sort(np.empty((0, 2)), ["max", "min"]) == []
    assert non_dominated_sort([], ["max", "min"]) == []


@pytest.mark.parametrize("senses", [["min", "min"], ["max", "min"], ["max", "min", "max"]])
def test_matches_brute_force_on_random_points(senses):
    rng = np.random.default_rng(len(senses))
    points = rng.integers(0, 6, size=(60, len(senses)))  # small range: many ties and duplicates
    fronts = non_dominated_sort(points, senses)
    assert [f.tolist() for f in fronts] == _brute_force_fronts(points, senses)


def test_sort_crosses_the_internal_chunk_boundary():
    rng = np.random.default_rng(0)
    points = rng.random((600, 2))
    fronts = non_dominated_sort(points, ["min", "min"])
    assert sorted(np.concatenate(fronts).tolist()) == list(range(600))
    assert len(fronts[0]) > 1
    for i in fronts[0]:  # nothing in the whole set dominates a first-front point
        assert not ((points <= points[i]).all(1) & (points < points[i]).any(1)).any()


@pytest.mark.parametrize("points, senses, match", [
    ([[1.0, np.nan]], ["max", "min"], "NaN"),
    ([[1.0, 2.0]], ["max", "fastest"], "'max' or 'min'"),
    ([[1.0, 2.0, 3.0]], ["max", "min"], "shape"),
])
def test_sort_rejects_bad_input(points, senses, match):
    with pytest.raises(NasError, match=match):
        non_dominated_sort(points, senses)


# ---- pareto_front ------------------------------------------------------------------------


def test_front_keeps_non_dominated_rows_sorted_by_latency():
    trials = _trials(trial_id=[0, 1, 2, 3, 4], arch=list("abcde"),
                     accuracy=[0.80, 0.60, 0.70, 0.75, 0.50], latency_ms=[30.0, 12.0, 20.0, 25.0, 40.0])
    front = pareto_front(trials)
    assert front["trial_id"].tolist() == [1, 2, 3, 0]
    assert list(front.index) == [0, 1, 2, 3]
    assert list(front.columns) == list(trials.columns)


def test_front_is_the_first_front_of_the_sort_on_random_tables():
    rng = np.random.default_rng(3)
    trials = _trials(arch=[f"n{i}" for i in range(700)], accuracy=rng.integers(0, 30, 700) / 30,
                     latency_ms=rng.integers(1, 40, 700).astype(float))
    expected = non_dominated_sort(trials[["accuracy", "latency_ms"]].to_numpy(), ["max", "min"])[0]
    assert sorted(pareto_front(trials)["arch"]) == sorted(trials["arch"].iloc[expected])


def test_front_ignores_nan_failed_and_running_rows():
    trials = _trials(trial_id=[0, 1, 2, 3, 4], arch=list("abcde"), accuracy=[0.9, np.nan, 0.5, 0.99, 0.95],
                     latency_ms=[10.0, 5.0, 20.0, 1.0, 2.0], status=["ok", "failed", "ok", "failed", "running"])
    assert pareto_front(trials)["trial_id"].tolist() == [0]


def test_a_status_that_is_not_a_trial_status_is_an_error_not_a_guess():
    trials = _trials(trial_id=[0, 1], arch=list("ab"), accuracy=[0.9, 0.5], latency_ms=[10.0, 5.0],
                     status=["ok", "diverged"])
    with pytest.raises(NasError, match="unknown trial status 'diverged'"):
        pareto_front(trials)


def test_front_dedupes_same_architecture_and_scores_only():
    trials = _trials(trial_id=[0, 1, 2], arch=["a", "a", "b"], accuracy=[0.7, 0.7, 0.7],
                     latency_ms=[10.0, 10.0, 10.0])
    assert pareto_front(trials)["trial_id"].tolist() == [0, 2]  # b is a different network with equal scores
    assert pareto_front(trials, dedupe_on=None)["trial_id"].tolist() == [0, 1, 2]


def test_front_of_single_and_empty_tables():
    one = _trials(trial_id=[7], arch=["a"], accuracy=[0.5], latency_ms=[3.0])
    assert pareto_front(one)["trial_id"].tolist() == [7]
    empty = pareto_front(one.iloc[:0])
    assert empty.empty and list(empty.columns) == list(one.columns)
    all_failed = _trials(trial_id=[1], arch=["a"], accuracy=[np.nan], latency_ms=[3.0])
    assert pareto_front(all_failed).empty


def test_front_with_other_objectives_and_all_maximised():
    trials = _trials(arch=list("abc"), reward=[0.5, 0.6, 0.4], params=[3e6, 5e6, 2e6])
    front = pareto_front(trials, objectives={"reward": "max", "params": "min"})
    assert front["arch"].tolist() == ["c", "a", "b"]
    maxed = pareto_front(trials, objectives={"reward": "max", "params": "max"})
    assert maxed["arch"].tolist() == ["b"]


def test_front_reports_missing_columns():
    trials = _trials(arch=["a"], accuracy=[0.5])
    with pytest.raises(NasError, match="latency_ms"):
        pareto_front(trials)
    with pytest.raises(NasError, match="dedupe"):
        pareto_front(_trials(accuracy=[0.5], latency_ms=[1.0]))


# ---- hypervolume ------------------------------------------------------------------------


def test_hypervolume_two_objectives_by_hand():
    trials = _trials(arch=list("abc"), accuracy=[0.7, 0.6, 0.8], latency_ms=[10.0, 12.0, 15.0])
    # latency in [10, 15): best accuracy 0.7; [15, 20): 0.8
    assert hypervolume(trials, reference={"accuracy": 0.0, "latency_ms": 20.0}) == pytest.approx(0.7 * 5 + 0.8 * 5)


def test_hypervolume_edge_cases():
    ref = [10.0, 10.0]
    assert hypervolume(np.empty((0, 2)), objectives=["min", "min"], reference=ref) == 0.0
    assert hypervolume([[4.0, 6.0]], objectives=["min", "min"], reference=ref) == pytest.approx(24.0)
    # duplicates and dominated points add nothing; points beyond the reference add nothing
    assert hypervolume([[4.0, 6.0], [4.0, 6.0], [5.0, 7.0], [11.0, 0.0], [0.0, 10.0]],
                       objectives=["min", "min"], reference=ref) == pytest.approx(24.0)
    # ties in the first objective: only the better second value counts
    assert hypervolume([[4.0, 6.0], [4.0, 3.0]], objectives=["min", "min"], reference=ref) == pytest.approx(42.0)


def test_hypervolume_ignores_failed_rows_of_a_table():
    trials = _trials(arch=list("ab"), accuracy=[0.5, np.nan], latency_ms=[10.0, 1.0], status=["ok", "failed"])
    assert hypervolume(trials, reference={"accuracy": 0.0, "latency_ms": 20.0}) == pytest.approx(5.0)


@pytest.mark.parametrize("dims", [1, 2, 3, 4])
def test_hypervolume_matches_cell_count(dims):
    rng = np.random.default_rng(dims)
    points = rng.integers(0, 5, size=(8, dims))
    reference = [5] * dims
    expected = _grid_hypervolume(points.tolist(), reference)
    got = hypervolume(points, objectives=["min"] * dims, reference=reference)
    assert got == pytest.approx(expected)


def test_hypervolume_senses_mirror_each_other():
    points = np.array([[1.0, 4.0], [2.0, 2.0], [3.0, 1.0]])
    as_min = hypervolume(points, objectives=["min", "min"], reference=[5.0, 5.0])
    as_max = hypervolume(-points, objectives=["max", "max"], reference=[-5.0, -5.0])
    assert as_min == pytest.approx(as_max) == pytest.approx(4 * 1 + 3 * 2 + 2 * 1)


@pytest.mark.parametrize("kwargs, match", [
    ({"reference": {"accuracy": 0.0}}, "latency_ms"),
    ({"reference": [0.0, float("nan")]}, "finite"),
    ({"reference": [0.0]}, "2 finite"),
    ({"objectives": ["max", "min"], "reference": [0.0, 1.0]}, "map column names"),
])
def test_hypervolume_rejects_bad_reference(kwargs, match):
    trials = _trials(arch=["a"], accuracy=[0.5], latency_ms=[1.0])
    with pytest.raises(NasError, match=match):
        hypervolume(trials, **kwargs)


# ---- nadir, per-group summary -------------------------------------------------------------


def test_nadir_is_worst_value_pushed_out_by_margin():
    trials = _trials(arch=list("abc"), accuracy=[0.5, 0.9, np.nan], latency_ms=[10.0, 30.0, 100.0])
    assert nadir(trials) == pytest.approx({"accuracy": 0.46, "latency_ms": 32.0})
    with pytest.raises(NasError, match="no valid trials"):
        nadir(trials.iloc[2:])


def test_front_summary_per_controller():
    trials = _trials(controller=["rl", "rl", "rl", "random", "random"], arch=list("abcde"),
                     accuracy=[0.8, 0.6, np.nan, 0.7, 0.5], latency_ms=[20.0, 10.0, 5.0, 20.0, 10.0])
    summary = front_summary(trials, reference={"accuracy": 0.0, "latency_ms": 30.0})
    assert summary["controller"].tolist() == ["random", "rl"]
    assert summary["trials"].tolist() == [2, 3] and summary["valid"].tolist() == [2, 2]
    assert summary["front_size"].tolist() == [2, 2]
    assert summary["hypervolume"].tolist() == pytest.approx([0.5 * 10 + 0.7 * 10, 0.6 * 10 + 0.8 * 10])


# ---- plots ------------------------------------------------------------------------------


def _search_trials():
    rng = np.random.default_rng(0)
    n = 24
    latency = rng.uniform(20, 80, n)
    return _trials(trial_id=range(n), controller=["rl", "random"] * (n // 2), arch=[f"net{i}" for i in range(n)],
                   latency_ms=latency, accuracy=0.4 + 0.004 * latency + rng.normal(0, 0.02, n),
                   status=["ok"] * (n - 1) + ["failed"])


def test_plot_pareto_draws_a_front_per_group_and_the_references(tmp_path):
    trials = _search_trials()
    refs = pd.DataFrame({"name": ["mobilenet_v3_large", "mnasnet_a1"], "latency_ms": [50.0, 70.0],
                         "accuracy": [0.62, np.nan]})
    fig = plot_pareto(trials, tmp_path / "out" / "pareto.png", reference_points=refs, target="pixel-cpu",
                      latency_target=60.0)
    assert (tmp_path / "out" / "pareto.png").read_bytes().startswith(PNG_MAGIC)
    ax = fig.axes[0]
    labels = ax.get_legend_handles_labels()[1]
    assert sum("front" in label for label in labels) == 2
    assert "random: 11/12 valid trials" in labels and "T = 60 ms" in labels
    front_line = next(line for line in ax.lines if line.get_label().startswith("rl front"))
    expected = pareto_front(trials[trials.controller == "rl"])
    assert front_line.get_xdata().tolist() == pytest.approx(expected["latency_ms"].tolist())
    texts = [t.get_text() for t in ax.texts]
    assert "mobilenet_v3_large" in texts and "mnasnet_a1" in texts  # star label; vertical-line label
    assert ax.get_xlabel() == "latency on pixel-cpu (ms)"


def test_plot_pareto_without_groups_and_without_valid_trials(tmp_path):
    trials = _search_trials().assign(accuracy=np.nan)
    fig = plot_pareto(trials, tmp_path / "p.png", by=None)
    assert "no valid trials" in [t.get_text() for t in fig.axes[0].texts]
    with pytest.raises(NasError, match="'run'"):
        plot_pareto(trials, tmp_path / "q.png", by="run")
    assert not (tmp_path / "q.png").exists()


def test_plot_netadapt_history_draws_the_kept_networks_in_iteration_order(tmp_path):
    history = pd.DataFrame({"iteration": [3, 0, 1, 2], "latency_ms": [44.0, 60.0, 55.0, 48.0],
                            "accuracy": [0.66, 0.70, 0.69, 0.67]})
    proposals = pd.DataFrame({"iteration": [1, 1, 2, 2, 3], "latency_ms": [55.0, 52.0, 48.0, 47.0, 44.0],
                              "accuracy": [0.69, 0.66, 0.67, np.nan, 0.66], "selected": [1, 0, 1, 0, 1]})
    fig = plot_netadapt_history(history, tmp_path / "history.png", proposals=proposals, latency_target=45.0)
    assert (tmp_path / "history.png").read_bytes().startswith(PNG_MAGIC)
    ax = fig.axes[0]
    assert ax.lines[0].get_xdata().tolist() == [60.0, 55.0, 48.0, 44.0]
    assert ax.get_legend_handles_labels()[1] == ["proposals (4)", "target 45 ms"]  # the NaN proposal is left out
    plain = plot_netadapt_history(history, tmp_path / "plain.png")
    assert plain.axes[0].get_legend() is None
    with pytest.raises(NasError, match="accuracy"):
        plot_netadapt_history(history.drop(columns="accuracy"), tmp_path / "bad.png")
    with pytest.raises(NasError, match="no rows"):
        plot_netadapt_history(history.iloc[:0], tmp_path / "empty.png")


# ---- run readers ------------------------------------------------------------------------


def test_load_trials_concatenates_runs_and_names_them(tmp_path):
    trials = _search_trials()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    trials.iloc[:10].to_csv(tmp_path / "a" / "trials.csv", index=False)
    trials.iloc[10:].to_parquet(tmp_path / "b" / "trials.parquet", index=False)
    loaded = load_trials([tmp_path / "a", tmp_path / "b"])
    assert len(loaded) == len(trials) and loaded["run"].tolist() == ["a"] * 10 + ["b"] * 14
    assert loaded["trial_id"].tolist() == trials["trial_id"].tolist()


def test_load_trials_reads_what_the_search_writes(tmp_path):
    records = [TrialRecord(trial_id=0, controller="rl", status=Status.OK, arch=zoo.get("mnasnet_a1"), accuracy=0.7,
                           latency_ms=70.0, reward=0.7, params=3_900_000, seed=1, run_id="r1"),
               TrialRecord(trial_id=1, controller="rl", status=Status.FAILED, reason="loss is nan", seed=1, run_id="r1"),
               TrialRecord(trial_id=2, controller="rl", seed=1, run_id="r1")]
    (tmp_path / "run").mkdir()
    trials_frame(records).to_csv(tmp_path / "run" / "trials.csv", index=False)
    loaded = load_trials(tmp_path / "run")
    assert [TrialRecord.from_row(row) for row in loaded.drop(columns="run").to_dict("records")] == records
    assert pareto_front(loaded)["trial_id"].tolist() == [0]
    loaded.assign(status=["ok", "error", "ok"]).to_csv(tmp_path / "run" / "trials.csv", index=False)
    with pytest.raises(NasError, match=r"trials.csv: unknown trial status 'error' \(known: ok, failed, running\)"):
        load_trials(tmp_path / "run")


@pytest.mark.parametrize("setup, match", [
    (lambda d: None, "does not exist"),
    (lambda d: d.mkdir(), "no trials.parquet or trials.csv"),
    (lambda d: (d.mkdir(), (d / "trials.parquet").write_bytes(b"not parquet")), "cannot read"),
])
def test_load_trials_reports_bad_runs(tmp_path, setup, match):
    run = tmp_path / "run"
    setup(run)
    with pytest.raises(NasError, match=match):
        load_trials(run)


def test_load_history_checks_columns(tmp_path):
    pd.DataFrame({"iteration": [0], "latency_ms": [5.0], "accuracy": [0.5]}).to_csv(tmp_path / "history.csv")
    assert load_history(tmp_path)["latency_ms"].tolist() == [5.0]
    pd.DataFrame({"iteration": [0]}).to_csv(tmp_path / "other.csv")
    with pytest.raises(NasError, match="latency_ms"):
        load_history(tmp_path / "other.csv")
    with pytest.raises(NasError, match="does not exist"):
        load_history(tmp_path / "missing.csv")


# ---- zoo reference points ------------------------------------------------------------------


def test_reference_latencies_prices_the_zoo_on_pixel_cpu():
    from nas.latency import predict
    model = predict.get_latency_model("pixel-cpu")
    refs = reference_latencies("pixel-cpu", ["mobilenet_v3_large", "mobilenet_v3_small"], latency_model=model)
    assert refs["name"].tolist() == ["mobilenet_v3_large", "mobilenet_v3_small"]
    large, small = refs["latency_ms"]
    assert large == pytest.approx(model.predict(zoo.get("mobilenet_v3_large")).ms)
    assert 0 < small < large
    with pytest.raises(NasError, match="not 'cuda'"):
        reference_latencies("cuda", ["mobilenet_v3_large"], latency_model=model)
    with pytest.raises(NasError, match="unknown architecture"):
        reference_latencies("pixel-cpu", ["no_such_net"], latency_model=model)


def test_reading_records_does_not_import_torch():
    """nas.analysis reads the search's Status and records; that must not pull in torch (notebooks, CI)."""
    import subprocess
    import sys

    code = "import sys, nas.analysis, nas.search.records; assert 'torch' not in sys.modules, 'torch imported'"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
