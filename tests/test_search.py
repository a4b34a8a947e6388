"""The search runner end to end: NaN trials, interrupt-and-resume, a real local Ray run, CLI errors."""

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import optuna
import pandas as pd
import pytest
import torch
from optuna.distributions import CategoricalDistribution

from nas import zoo
from nas.arch import ArchSpec
from nas.cli import run
from nas.errors import NasError
from nas.latency.predict import get_latency_model
from nas.search.__main__ import main
from nas.search.evaluate import Evaluation, ProxySettings
from nas.search.objectives import Objective
from nas.search.records import COLUMNS, Status, TrialRecord
from nas.search.runner import SearchConfig, run_search
from search_spaces import get_space

ROOT = Path(__file__).resolve().parents[1]
TINY = ProxySettings(resolution=8, steps=2, batch_size=16, bn_batches=2, synthetic_train=64, synthetic_val=32,
                     deploy_resolution=64)
TINY_ARGS = ["--steps", "2", "--train-resolution", "8", "--batch-size", "16", "--bn-batches", "2",
             "--latency-resolution", "64", "--latency-target", "10"]


@pytest.fixture(scope="module")
def pixel():
    return get_latency_model("pixel-cpu")


def config(out, **changes):
    base = SearchConfig(out=out, objective=Objective(target_ms=10.0), controller="random", trials=2, workers=0,
                        proxy=TINY)
    return replace(base, **changes)


def test_diverging_trials_are_recorded_as_failed_and_the_search_goes_on(tmp_path, pixel):
    summary = run_search(config(tmp_path, proxy=replace(TINY, lr=1e20)), latency_model=pixel,
                         progress_factory=_silent)
    table = pd.read_csv(tmp_path / "trials.csv")
    assert summary.complete and len(table) == 2
    assert (table["status"] == "failed").all()
    assert table["reason"].str.contains("diverged: loss is nan").all()
    assert table["accuracy"].isna().all() and table["latency_ms"].notna().all()
    assert json.loads((tmp_path / "best.json").read_text()) == []
    assert list(table.columns) == list(COLUMNS) and set(table["seed"]) == {0}
    assert set(table["run_id"]) == {json.loads((tmp_path / "config.json").read_text())["run_id"]}
    assert [r.status for r in summary.records] == [Status.FAILED] * 2


@pytest.mark.slow
def test_interrupted_search_resumes_to_exactly_n_unique_trials(tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "nas.search", "--target", "pixel-cpu", "--controller", "rl", "--trials", "5",
               "--workers", "0", "--out", str(out), *TINY_ARGS]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    first = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while _exported_ok(out / "trials.csv") < 2:  # the table the assertions read, not the study it lags
        assert first.poll() is None, "the search ended before it could be interrupted"
        assert time.monotonic() < deadline, "no trial finished within 60 s"
        time.sleep(0.2)
    first.send_signal(signal.SIGKILL)
    first.wait()
    before = pd.read_csv(out / "trials.csv")
    kept = before[before["status"] == "ok"].set_index("trial_id")
    assert 2 <= len(kept) < 5

    second = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stderr
    after = pd.read_csv(out / "trials.csv")
    assert sorted(after["trial_id"]) == [0, 1, 2, 3, 4]
    assert (after["status"] == "ok").all()
    assert after.set_index("trial_id").loc[kept.index, "accuracy"].tolist() == kept["accuracy"].tolist()
    assert all((out / name).is_file() for name in ("best.json", "pareto.csv", "pareto.png", "controller.pkl"))


def _broken_evaluator(spec):
    raise RuntimeError("worker lost its GPU")


def test_repeated_worker_errors_stop_the_search_with_the_reason(tmp_path, pixel):
    with pytest.raises(NasError, match="3 trials in a row failed with errors; last: RuntimeError: worker lost its GPU"):
        run_search(config(tmp_path, trials=10), latency_model=pixel, evaluator=_broken_evaluator,
                   progress_factory=_silent)
    table = pd.read_csv(tmp_path / "trials.csv")
    assert len(table) == 3 and (table["status"] == "failed").all()


def test_a_run_made_before_run_ids_and_option_values_resumes(tmp_path, pixel):
    """A run directory of before: config.json without an id, a study without one, option indices as parameters."""
    run = config(tmp_path, trials=3)
    fixed = {**run.fixed(), "proxy": {**run.fixed()["proxy"], "device": "cpu"}}  # runs then recorded the device
    del fixed["evaluator"]  # and trained every candidate, without saying so
    (tmp_path / "config.json").write_text(json.dumps({"fixed": fixed, "trials": 2}))
    study = optuna.create_study(storage=run.storage_url, study_name="search", direction="maximize")
    space = get_space("mnasnet")
    indexed = {c.name: CategoricalDistribution(list(range(len(c.options)))) for c in space.choices()}
    for accuracy in (0.1, 0.2):
        trial = study.ask(indexed)
        spec = space.decode([trial.params[c.name] for c in space.choices()])
        for key, value in {"controller": "random", "arch": spec.to_string(), "status": "ok", "accuracy": accuracy,
                           "latency_ms": 5.0, "reward": accuracy}.items():
            trial.set_user_attr(key, value)
        study.tell(trial, accuracy)
    summary = run_search(run, latency_model=pixel, progress_factory=_silent)
    run_id = json.loads((tmp_path / "config.json").read_text())["run_id"]
    assert summary.complete and [(r.trial_id, r.run_id) for r in summary.records] == [(n, run_id) for n in range(3)]
    assert [r.accuracy for r in summary.records[:2]] == [0.1, 0.2]
    new = optuna.load_study(storage=run.storage_url, study_name="search").trials[2]
    assert new.distributions == indexed  # the study keeps the encoding it was begun with
    assert summary.records[2].arch == space.decode([new.params[c.name] for c in space.choices()])


def test_the_study_holds_option_values_and_the_run_that_owns_it(tmp_path, pixel):
    summary = run_search(config(tmp_path, trials=1), latency_model=pixel, progress_factory=_silent)
    study = optuna.load_study(storage=f"sqlite:///{tmp_path / 'study.db'}", study_name="search")
    space = get_space("mnasnet")
    [trial] = study.trials
    assert all(trial.params[c.name] in c.options for c in space.choices())
    assert space.decode([c.options.index(trial.params[c.name]) for c in space.choices()]) == summary.records[0].arch
    assert study.user_attrs["run_id"] == summary.records[0].run_id
    assert study.user_attrs["fixed"]["controller"] == "random"


def test_evaluations_and_records_say_failure_once_and_round_trip():
    failed = Evaluation.failed("RuntimeError: lost", error=True, steps=3)
    assert Evaluation.from_dict({**failed.to_dict(), "time_this_iter_s": 1.0}) == failed
    assert failed.to_dict()["status"] == "failed" and Evaluation.from_dict({"status": "ok"}).ok
    for bad in ({"status": "ok", "reason": "why"}, {"status": "failed"}, {"status": "running"},
                {"status": "diverged", "reason": "nan"}):
        with pytest.raises(NasError):
            Evaluation(**bad)
    spec = zoo.get("mnasnet_a1")
    record = TrialRecord(trial_id=4, controller="rl", status=Status.OK, arch=spec,
                         latency_ms=5.0, accuracy=0.5, params=10, seed=2, run_id="r")
    assert TrialRecord.from_row(record.to_row()) == record
    assert record.to_row()["arch"] == spec.to_string() and list(record.to_row()) == list(COLUMNS)


def test_resume_with_other_settings_is_refused(tmp_path, pixel):
    run_search(config(tmp_path, trials=1), latency_model=pixel, progress_factory=_silent)
    with pytest.raises(NasError, match=r"was started with other settings "
                                       r"\(fixed.controller: 'random' there, 'tpe' now\)"):
        run_search(config(tmp_path, controller="tpe"), latency_model=pixel, progress_factory=_silent)


@pytest.mark.slow
def test_tiny_search_through_local_ray(tmp_path, pixel):
    import ray

    summary = run_search(config(tmp_path, controller="tpe", trials=3, workers=2), latency_model=pixel,
                         progress_factory=_silent)
    assert not ray.is_initialized()  # the Ray the search started is shut down with it
    table = pd.read_parquet(tmp_path / "trials.parquet")
    assert summary.complete and sorted(table["trial_id"]) == [0, 1, 2]
    assert (table["status"] == "ok").all() and table["accuracy"].between(0, 1).all()
    for row in table.itertuples():  # every reported latency is the search's latency model, at deployment size
        assert row.latency_ms == pytest.approx(pixel.predict(ArchSpec.from_string(row.arch), 64).ms)
        assert row.reward == pytest.approx(Objective(target_ms=10.0).reward(row.accuracy, row.latency_ms))
    best = json.loads((tmp_path / "best.json").read_text())
    assert best[0]["reward"] == pytest.approx(table["reward"].max())
    assert ArchSpec.from_dict(best[0]["spec"]) == ArchSpec.from_string(best[0]["arch"])
    assert len(pd.read_csv(tmp_path / "pareto.csv")) >= 1
    assert (tmp_path / "pareto.png").stat().st_size > 10_000
    assert "mobilenet_v3_large" in pd.read_csv(tmp_path / "references.csv")["name"].tolist()


@pytest.mark.parametrize("argv,message", [
    (["--space", "darts"], "unknown search space 'darts'"),
    (["--controller", "anneal"], "unknown controller 'anneal'"),
    (["--target", "tpu"], "unknown target 'tpu'"),
    (["--latency-target", "0"], "--latency-target must be a positive"),
    (["--data", "/no/such/dataset"], "no such dataset directory"),
    (["--controller", "rl", "--objective", "pareto"], "needs a scalar reward"),
    (["--device", "tpu"], "unknown device 'tpu'"),
    (["--ray-address", "127.0.0.1:1"], "cannot reach the Ray cluster at 127.0.0.1:1: Connection refused"),
    (["--ray-address", "head"], "malformed Ray address 'head'"),
])
def test_bad_input_is_one_line_and_non_zero(tmp_path, capsys, argv, message):
    code = run(main, ["--out", str(tmp_path / "run"), "--workers", "0", *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0
    assert err[-1].startswith("error: ") and message in err[-1]
    assert not (tmp_path / "run").exists()


def _exported_ok(table: Path) -> int:
    """Finished trials in the run's exported table (replaced atomically, so never torn)."""
    if not table.exists():
        return 0
    return int((pd.read_csv(table)["status"] == "ok").sum())


class _silent:
    """A progress bar that draws nothing (tests)."""

    def __init__(self, **kwargs):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self, n):
        pass

    def set_postfix_str(self, text, refresh=True):
        pass


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_cuda_device_without_a_gpu_is_one_line(tmp_path, capsys):
    assert run(main, ["--out", str(tmp_path / "run"), "--workers", "0", "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "no CUDA GPU" in err[-1]


def test_device_is_not_part_of_a_runs_identity_and_cuda_trials_share_the_gpu(tmp_path):
    from nas.search.runner import _trial_resources

    objective = Objective(target_ms=20.0)
    on_cpu = SearchConfig(out=tmp_path, objective=objective, workers=4)
    on_gpu = replace(on_cpu, proxy=replace(on_cpu.proxy, device="cuda"))
    assert on_cpu.fixed() == on_gpu.fixed() and "device" not in on_cpu.fixed()["proxy"]
    assert on_cpu.fixed() != replace(on_cpu, proxy=replace(on_cpu.proxy, lr=0.1)).fixed()
    assert _trial_resources(on_cpu, local_gpus=2) == {"cpu": 1}
    assert _trial_resources(on_gpu, local_gpus=1) == {"cpu": 1, "gpu": 0.25}
    assert _trial_resources(on_gpu, local_gpus=8) == {"cpu": 1, "gpu": 1.0}
    assert _trial_resources(replace(on_gpu, ray_address="auto"), local_gpus=0) == {"cpu": 1, "gpu": 1}


def test_device_names_are_checked_and_cuda_only_where_the_work_runs():
    from nas.train.device import check_device

    with pytest.raises(NasError, match="unknown device 'gpu'"):
        check_device("gpu", here=False)
    assert check_device("cuda:3", here=False) == "cuda:3"  # a cluster's nodes may have what this one lacks
    assert check_device("cpu") == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(NasError, match="no CUDA GPU"):
            check_device("cuda")
