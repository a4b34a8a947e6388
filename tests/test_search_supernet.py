"""Searching with a weight-sharing supernet: trained as the run's first stage, resumed, reused, refused."""

import json
from dataclasses import replace

import pandas as pd
import pytest
import torch

from nas import zoo
from nas.arch import ArchSpec
from nas.cli import run
from nas.errors import NasError
from nas.search.__main__ import main
from nas.search.evaluators import EvaluatorSettings, SupernetChildEvaluator
from nas.search.runner import run_search
from nas.supernet import SupernetEvaluator, SupernetSettings, train_supernet
from nas.supernet.training import CHECKPOINT, METRICS, SETTINGS
from tests.test_search import TINY, _silent, config, pixel  # noqa: F401 -- pixel is a fixture

SUPERNET = EvaluatorSettings(kind="supernet", epochs=2, rule="uniform")


def supernet_config(out, **changes):
    return config(out, **{"space": "mobilenetv3-shared", "controller": "evolution", "population": 2,
                          "evaluator": SUPERNET, **changes})


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """A tiny supernet search (in this process) whose supernet stage a killed run left half-trained."""
    from nas.latency.predict import get_latency_model

    torch.set_num_threads(1)  # module fixtures run before conftest's per-test setting
    out = tmp_path_factory.mktemp("search")
    run = supernet_config(out, trials=3)
    half = train_supernet(SUPERNET.supernet_settings(TINY, "mobilenetv3-shared"), out / "supernet", progress=False,
                          stop_after=1)
    summary = run_search(run, latency_model=get_latency_model("pixel-cpu"), progress_factory=_silent)
    return out, run, summary, half.history


def test_the_supernet_stage_finishes_then_trials_score_children(searched):
    out, _, summary, half = searched
    history = pd.read_csv(out / "supernet" / METRICS)
    assert list(history["epoch"]) == [1, 2]  # the half-trained supernet was continued, not restarted
    assert history.iloc[0]["train_loss"] == pytest.approx(half.iloc[0]["train_loss"])
    table = pd.read_csv(out / "trials.csv")
    assert summary.complete and sorted(table["trial_id"]) == [0, 1, 2]
    assert (table["status"] == "ok").all() and (table["steps"] == 0).all()
    evaluator = SupernetEvaluator.load(out / "supernet")
    for row in table.itertuples():  # the accuracy is the child's inherited-weight score, nothing else
        assert row.accuracy == evaluator.evaluate(ArchSpec.from_string(row.arch)).accuracy
    fixed = json.loads((out / "config.json").read_text())["fixed"]
    assert fixed["evaluator"] == {"kind": "supernet", "supernet": {"epochs": 2, "rule": "uniform"}}


def test_a_rerun_resumes_the_search_without_retraining_the_supernet(searched, pixel):
    out, run, _, _ = searched
    checkpoint = out / "supernet" / CHECKPOINT
    before = checkpoint.stat().st_mtime_ns
    summary = run_search(replace(run, trials=4), latency_model=pixel, progress_factory=_silent)
    assert checkpoint.stat().st_mtime_ns == before
    assert summary.complete and [r.trial_id for r in summary.records] == [0, 1, 2, 3]
    assert all(r.ok for r in summary.records)


def test_a_trained_supernet_is_reused_and_checked(searched, tmp_path, pixel):
    trained = searched[0] / "supernet"
    reuse = EvaluatorSettings(kind="supernet", supernet=str(trained))
    summary = run_search(supernet_config(tmp_path / "run", trials=2, evaluator=reuse), latency_model=pixel,
                         progress_factory=_silent)
    assert all(r.ok for r in summary.records) and not (tmp_path / "run" / "supernet").exists()
    evaluator = SupernetEvaluator.load(trained)
    assert [r.accuracy for r in summary.records] == [evaluator.evaluate(r.arch).accuracy for r in summary.records]


def test_ray_workers_score_children_of_a_reused_supernet(searched, tmp_path, pixel):
    import ray

    trained = searched[0] / "supernet"
    run = supernet_config(tmp_path, trials=3, workers=2,
                          evaluator=EvaluatorSettings(kind="supernet", supernet=str(trained)))
    summary = run_search(run, latency_model=pixel, progress_factory=_silent)
    assert not ray.is_initialized()
    table = pd.read_parquet(tmp_path / "trials.parquet")
    assert summary.complete and sorted(table["trial_id"]) == [0, 1, 2] and (table["status"] == "ok").all()
    evaluator = SupernetEvaluator.load(trained)
    for row in table.itertuples():
        assert row.accuracy == evaluator.evaluate(ArchSpec.from_string(row.arch)).accuracy


def test_the_cli_searches_with_a_reused_supernet(searched, tmp_path, capsys):
    trained = searched[0] / "supernet"
    out = tmp_path / "run"
    argv = ["--space", "mobilenetv3-shared", "--evaluator", "supernet", "--supernet", str(trained), "--controller",
            "evolution", "--trials", "2", "--workers", "0", "--train-resolution", "8", "--latency-resolution", "64",
            "--latency-target", "10", "--out", str(out)]
    assert run(main, argv) == 0
    table = pd.read_csv(out / "trials.csv")
    assert len(table) == 2 and (table["status"] == "ok").all() and set(table["controller"]) == {"evolution"}
    fixed = json.loads((out / "config.json").read_text())["fixed"]
    assert fixed["evaluator"] == {"kind": "supernet", "supernet": str(trained.resolve())}
    assert run(main, argv[:4] + argv[6:]) == 2  # the same run, now to train a supernet of its own
    assert "(fixed.evaluator.supernet: " in capsys.readouterr().err.strip().splitlines()[-1]


def test_a_spec_that_is_not_a_child_is_a_failed_trial_with_the_reason(searched):
    evaluation = SupernetChildEvaluator(supernet=str(searched[0] / "supernet"), deploy_resolution=64)(
        zoo.get("mnasnet_a1"))
    assert not evaluation.ok and not evaluation.error and evaluation.accuracy != evaluation.accuracy  # NaN
    assert evaluation.reason.startswith("NotAChildError: not a child of the supernet: ")
    assert evaluation.params > 0


def test_resuming_with_another_evaluator_is_refused_in_one_line(tmp_path, pixel):
    shared = "mobilenetv3-shared"
    run_search(config(tmp_path, trials=1, space=shared), latency_model=pixel, progress_factory=_silent)
    with pytest.raises(NasError, match=r"\(fixed.evaluator.kind: 'train' there, 'supernet' now\)"):
        run_search(config(tmp_path, trials=1, space=shared, evaluator=SUPERNET), latency_model=pixel,
                   progress_factory=_silent)
    assert not (tmp_path / "supernet").exists()  # refused before the supernet stage


def _settings_only(folder, **changes):
    """A supernet directory as far as the checks read it (settings, trained epochs): no training needed."""
    folder.mkdir(parents=True)
    settings = SupernetSettings(**{"epochs": 1, **changes})
    (folder / SETTINGS).write_text(json.dumps(settings.to_dict()))
    return folder


@pytest.mark.parametrize("argv,message", [
    (["--evaluator", "oracle"], "unknown evaluator 'oracle'"),
    (["--supernet-epochs", "2"], "--supernet-epochs needs --evaluator supernet"),
    (["--evaluator", "supernet", "--supernet-rule", "greedy"], "unknown supernet sampling rule 'greedy'"),
    (["--evaluator", "supernet", "--supernet-epochs", "0"], "supernet epochs must be at least 1"),
    (["--evaluator", "supernet", "--supernet", "SPACE"], "was trained over the 'mnasnet' space, this search is "
                                                         "over 'mobilenetv3-shared'"),
    (["--evaluator", "supernet", "--supernet", "HALF"], "is trained for 0 of its 1 epochs"),
    (["--evaluator", "supernet", "--supernet", "SPACE", "--supernet-epochs", "3"], "--supernet reuses"),
    (["--evaluator", "supernet", "--controller", "evolution", "--objective", "pareto"], "needs a scalar reward"),
    (["--evaluator", "supernet", "--space", "mobilenetv3"], "needs a weight-sharing space, such as "
                                                            "mobilenetv3-shared or mnasnet-shared: in the mobilenetv3 "
                                                            "space block1 mixes ops"),
])
def test_bad_supernet_options_are_one_line_and_make_no_run(tmp_path, capsys, argv, message):
    folders = {"SPACE": _settings_only(tmp_path / "mnasnet", space="mnasnet"),
               "HALF": _settings_only(tmp_path / "half", space="mobilenetv3-shared")}
    argv = [str(folders.get(a, a)) for a in argv]
    code = run(main, ["--out", str(tmp_path / "run"), "--workers", "0", "--space", "mobilenetv3-shared",
                      "--latency-target", "10", *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0
    assert err[-1].startswith("error: ") and message in err[-1]
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_quick_supernet_search_runs_and_explicit_options_win(tmp_path):
    out = tmp_path / "quick"
    assert run(main, ["--space", "mobilenetv3-shared", "--evaluator", "supernet", "--quick", "--trials", "3",
                      "--latency-target", "20", "--out", str(out)]) == 0
    table = pd.read_csv(out / "trials.csv")
    assert len(table) == 3 and (table["status"] == "ok").all()  # --trials 3 given: it wins over quick's 4
    fixed = json.loads((out / "config.json").read_text())["fixed"]
    assert fixed["evaluator"] == {"kind": "supernet", "supernet": {"epochs": 1, "rule": "sandwich"}}
    assert fixed["proxy"]["resolution"] == 8 and fixed["proxy"]["bn_batches"] == 2
    assert len(pd.read_csv(out / "supernet" / "metrics.csv")) == 1
