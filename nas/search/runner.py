"""Run a platform-aware search: controller -> latency + proxy training -> reward, in parallel, resumable.

The driver (this process) asks the controller for architectures, prices each one's latency at the
deployment resolution with the target's latency model, and hands it to a worker for proxy
training; when the accuracy comes back it computes the objective and tells the controller.
Workers are Ray Tune trials (local Ray with one CPU per worker by default, or a cluster at
``ray_address``); ``workers=0`` evaluates in this process instead, without Ray.

Everything a restart needs is in the run directory: the Optuna study (``study.db`` unless another
SQLAlchemy URL is given) holds every trial and its record, ``controller.pkl`` the controller's
learned state and ``config.json`` the settings the run was started with. Running the same command
again resumes: finished trials are kept, trials a killed run left open are evaluated again under
their own numbers (never duplicated), and the search continues to ``trials`` in total.
"""

from __future__ import annotations

import json
import logging
import math
import os
import pickle
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import numpy as np
import optuna
import pandas as pd
from optuna.trial import TrialState
from sqlalchemy.exc import SQLAlchemyError

from nas.arch import ArchSpec
from nas.cluster import start_ray
from nas.errors import NasError
from nas.search.controllers import Controller, PPOSettings, Proposal, Result, make_controller
from nas.search.evaluate import Evaluation, ProxySettings, evaluate_candidate
from nas.search.objectives import Objective
from nas.train.proxy import open_data

STATE_FILE = "controller.pkl"
CONFIG_FILE = "config.json"
Evaluator = Callable[[ArchSpec, ProxySettings], Evaluation]
TRIAL_COLUMNS = ["trial_id", "controller", "status", "reason", "arch", "latency_ms", "latency_source",
                 "estimated_keys", "accuracy", "reward", "params", "madds", "train_seconds", "steps", "val_loss",
                 "train_loss"]
# Settings that define what a run directory holds; changing one needs a new directory.
_FIXED_SETTINGS = ("target", "space", "controller", "objective", "proxy", "seed", "population", "ppo")


@dataclass(frozen=True)
class SearchConfig:
    """One search. ``workers=0`` runs trials in this process (no Ray); ``storage`` defaults to sqlite in ``out``."""

    out: Path
    objective: Objective
    target: str = "pixel-cpu"
    space: str = "mnasnet"
    controller: str = "rl"
    trials: int = 12
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    proxy: ProxySettings = ProxySettings()
    seed: int = 0
    population: int = 4
    ppo: PPOSettings = PPOSettings()
    storage: str | None = None
    ray_address: str | None = None
    top_k: int = 5
    max_errors: int = 3

    def __post_init__(self) -> None:
        if self.trials < 1:
            raise NasError(f"trials must be positive, got {self.trials}")
        if self.workers < 0:
            raise NasError(f"workers must be 0 (in this process) or more, got {self.workers}")
        if self.population < 1:
            raise NasError(f"population must be positive, got {self.population}")

    @property
    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{Path(self.out).resolve() / 'study.db'}"

    @property
    def study_name(self) -> str:
        """"search" in the run's own database; in a shared one (``storage``) named after the run directory."""
        return "search" if self.storage is None else f"nas.search:{Path(self.out).name}"

    def fixed(self) -> dict[str, Any]:
        """The settings a resumed run must share with the run that made the directory (JSON-able).

        The proxy's ``device`` is left out: where a candidate trains is how the run executes, like
        ``workers``, so a run started on a GPU machine may resume on a CPU one."""
        data = asdict(self)
        return _without_device(json.loads(json.dumps({k: data[k] for k in _FIXED_SETTINGS})))


@dataclass(frozen=True)
class SearchSummary:
    out: Path
    trials: pd.DataFrame
    finished: int
    requested: int
    best: dict[str, Any] | None

    @property
    def complete(self) -> bool:
        return self.finished >= self.requested


def default_out_dir() -> Path:
    return Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S")


def _check_config(config: SearchConfig) -> None:
    """Refuse to resume a directory made with other settings: its trials would not be comparable."""
    path = Path(config.out) / CONFIG_FILE
    current = config.fixed()
    if not path.exists():
        path.write_text(json.dumps({"fixed": current, "trials": config.trials}, indent=2))
        return
    try:
        saved = _without_device(json.loads(path.read_text())["fixed"])
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as err:
        raise NasError(f"{path} is unreadable ({err}); use a new --out directory") from None
    for key in _FIXED_SETTINGS:
        if saved.get(key) != current[key]:
            raise NasError(f"{config.out} holds a search with {key} = {saved.get(key)!r}, not {current[key]!r}; "
                           "rerun with the same settings to resume, or use a new --out directory")


def _without_device(fixed: dict[str, Any]) -> dict[str, Any]:
    proxy = {k: v for k, v in fixed.get("proxy", {}).items() if k != "device"}
    return {**fixed, "proxy": proxy}


def open_study(config: SearchConfig) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(storage=config.storage_url, study_name=config.study_name, load_if_exists=True,
                                    directions=list(config.objective.directions))
    except (ValueError, ImportError, optuna.exceptions.OptunaError, SQLAlchemyError) as err:
        first_line = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise NasError(f"cannot open the study storage {config.storage_url}: {first_line}") from None
    if [d.name.lower() for d in study.directions] != list(config.objective.directions):
        raise NasError(f"the study in {config.storage_url} optimises {len(study.directions)} objective(s), "
                       f"not {len(config.objective.directions)}; use a new --out directory")
    return study


def _save_state(controller: Controller, out: Path) -> None:
    """Atomically replace the controller's state file (a kill never leaves half a file)."""
    path = out / STATE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(pickle.dumps(controller.state_dict()))
    os.replace(tmp, path)


class Driver:
    """The search's bookkeeping, shared by the Ray and in-process executors.

    ``next()`` gives the next proposal to evaluate with its latency priced; ``finish()`` turns a
    worker's :class:`Evaluation` into the trial record and tells the controller.
    """

    def __init__(self, config: SearchConfig, controller: Controller, latency_model, progress,
                 evaluator: Evaluator = evaluate_candidate) -> None:
        self.config = config
        self.evaluator = evaluator
        self.controller = controller
        self.latency_model = latency_model
        self.progress = progress
        self.out = Path(config.out)
        self.retry = controller.interrupted()
        self.finished = _count_finished(controller.study)
        self.launched = self.finished
        self.errors: list[str] = []
        self.best_reward = _best_reward(controller.study)
        self.failed = len(controller.study.get_trials(deepcopy=False, states=(TrialState.FAIL,)))
        self.latency: dict[int, Any] = {}

    def more(self) -> bool:
        return self.launched < self.config.trials and not self.aborted()

    def aborted(self) -> bool:
        return len(self.errors) >= self.config.max_errors

    def next(self) -> Proposal:
        proposal = self.retry.pop(0) if self.retry else self.controller.ask(1)[0]
        self.latency[proposal.number] = self.latency_model.predict(proposal.spec, self.config.proxy.deploy_resolution)
        self.launched += 1
        _save_state(self.controller, self.out)
        return proposal

    def finish(self, proposal: Proposal, evaluation: Evaluation) -> None:
        prediction = self.latency.pop(proposal.number)
        objective = self.config.objective
        record: dict[str, Any] = {
            "latency_ms": float(prediction.ms), "latency_source": prediction.source,
            "estimated_keys": len(prediction.estimated_keys), **_finite(evaluation.to_dict()),
        }
        if evaluation.ok:
            record["reward"] = objective.reward(evaluation.accuracy, prediction.ms)
            result = Result(values=objective.values(evaluation.accuracy, prediction.ms), attrs=record)
            self.best_reward = max(self.best_reward, record["reward"])
        else:
            result = Result(values=None, attrs=record, reason=evaluation.reason)
            self.failed += 1
        self.controller.tell(proposal, result)
        _save_state(self.controller, self.out)
        self.errors = self.errors + [evaluation.reason] if evaluation.kind == "error" else []
        self.finished += 1
        export_trials(self.controller.study, self.out)
        self.progress.update(1)
        best = f"{self.best_reward:.4f}" if math.isfinite(self.best_reward) else "-"
        self.progress.set_postfix_str(f"best reward {best}, failed {self.failed}", refresh=True)


def _finite(data: dict[str, Any]) -> dict[str, Any]:
    """Optuna's JSON storage cannot hold NaN: drop unknown numbers (they read back as NaN)."""
    return {k: v for k, v in data.items() if not (isinstance(v, float) and not math.isfinite(v)) and k != "kind"}


def _count_finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL)))


def _best_reward(study: optuna.Study) -> float:
    rewards = [t.user_attrs.get("reward") for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    return max((r for r in rewards if r is not None), default=-math.inf)


# ------------------------------------------------------------------ executors


def _run_serial(driver: Driver) -> None:
    """Evaluate one candidate at a time in this process (debugging, tests, ``--workers 0``).

    One torch thread, as in a Ray worker: timings compare, and a loaded machine does not thrash.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        while driver.more():
            proposal = driver.next()
            driver.finish(proposal, _evaluate_safely(driver.evaluator, proposal.spec, driver.config.proxy))
    finally:
        torch.set_num_threads(threads)


def _evaluate_safely(evaluator: Evaluator, spec: ArchSpec, settings: ProxySettings) -> Evaluation:
    """Any error of one candidate becomes its failed record; the driver aborts on repeated errors."""
    try:
        return evaluator(spec, settings)
    except Exception as err:  # noqa: BLE001 -- reported with the trial, and repeated errors stop the search
        return Evaluation.failed(f"{type(err).__name__}: {err}", kind="error")


def report(metrics: dict[str, Any]) -> None:
    """Report a trial's final metrics to Ray Tune (the one place that knows the API's current name)."""
    from ray import tune

    tune.report(metrics)


def _ray_trial(config: dict[str, Any], settings: ProxySettings, evaluator: Evaluator) -> None:
    """A Ray Tune function trainable: proxy-train one architecture and report its evaluation."""
    import torch

    torch.set_num_threads(1)
    report(_evaluate_safely(evaluator, ArchSpec.from_string(config["arch"]), settings).to_dict())


def _trial_resources(config: SearchConfig, local_gpus: int = 0) -> dict[str, float]:
    """One core per trial; on cuda, a local run spreads its concurrent trials over this machine's
    GPUs (several trials share one: proxy networks are small), a cluster gives each trial a GPU."""
    if not config.proxy.device.startswith("cuda"):
        return {"cpu": 1}
    if config.ray_address:
        return {"cpu": 1, "gpu": 1}
    return {"cpu": 1, "gpu": min(1.0, max(local_gpus, 1) / max(config.workers, 1))}


def _local_gpus() -> int:
    import torch

    return torch.cuda.device_count()


def _trial_dirname(trial) -> str:
    return f"trial_{trial.config['number']:05d}"


def _quiet_ray() -> None:
    """No usage-stats upload (a fresh machine may be offline), no TensorBoard loggers, no tables."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    for name in ("ray", "ray.tune", "ray.train", "ray.air"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def _run_ray(driver: Driver) -> None:
    """Run the remaining trials as Ray Tune trials, ``workers`` at a time."""
    _quiet_ray()
    import ray
    from ray import tune
    from ray.tune.search import Searcher

    class ControllerSearcher(Searcher):
        """Tune's view of our driver: suggest = next proposal, complete = finish.

        An exception here would be logged and swallowed by Tune's loop; it is kept instead, the
        search winds down (running trials finish and are recorded) and it is raised after ``fit``.
        """

        def __init__(self) -> None:
            super().__init__(metric="accuracy", mode="max")
            self.live: dict[str, Proposal] = {}
            self.error: BaseException | None = None

        def suggest(self, trial_id: str):
            if self.error is not None or not driver.more():
                return Searcher.FINISHED
            try:
                proposal = driver.next()
            except Exception as err:  # noqa: BLE001 -- re-raised after fit
                self.error = err
                return Searcher.FINISHED
            self.live[trial_id] = proposal
            return {"number": proposal.number, "arch": proposal.spec.to_string()}

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
            proposal = self.live.pop(trial_id)
            if error or not result or "status" not in result:
                evaluation = Evaluation.failed("the Ray worker died or raised before reporting (see the Ray logs "
                                               "under /tmp/ray/session_latest/logs)", kind="error")
            else:
                evaluation = Evaluation.from_dict(result)
            try:
                driver.finish(proposal, evaluation)
            except Exception as err:  # noqa: BLE001 -- re-raised after fit
                self.error = self.error or err

    config = driver.config
    started = start_ray(config.workers, config.ray_address)
    try:
        searcher = ControllerSearcher()
        trainable = tune.with_parameters(_ray_trial, settings=config.proxy, evaluator=driver.evaluator)
        tuner = tune.Tuner(
            tune.with_resources(trainable, _trial_resources(config, _local_gpus())),
            tune_config=tune.TuneConfig(search_alg=searcher, num_samples=-1,
                                        max_concurrent_trials=config.workers, reuse_actors=True,
                                        trial_dirname_creator=_trial_dirname),
            run_config=tune.RunConfig(name=datetime.now().strftime("tune-%Y%m%d-%H%M%S"),
                                      storage_path=str((Path(config.out) / "ray").resolve()), verbose=0,
                                      failure_config=tune.FailureConfig(max_failures=0)),
        )
        tuner.fit()
        if searcher.error is not None:
            raise searcher.error
    finally:
        if started:
            ray.shutdown()


# ------------------------------------------------------------------ outputs


def trials_table(study: optuna.Study) -> pd.DataFrame:
    """One row per trial from the study's records; open trials show status "running"."""
    rows = []
    for trial in study.get_trials(deepcopy=False):
        if trial.state == TrialState.WAITING:
            continue
        attrs = trial.user_attrs
        status = attrs.get("status", "running") if trial.state.is_finished() else "running"
        row = {column: attrs.get(column) for column in TRIAL_COLUMNS}
        row.update(trial_id=trial.number, status=status, reason=attrs.get("reason", ""))
        rows.append(row)
    table = pd.DataFrame.from_records(rows, columns=TRIAL_COLUMNS)
    for column in ("latency_ms", "accuracy", "reward", "train_seconds", "val_loss", "train_loss"):
        table[column] = pd.to_numeric(table[column], errors="coerce").astype(float)
    for column in ("params", "madds", "steps", "estimated_keys"):
        table[column] = pd.to_numeric(table[column], errors="coerce").astype("Int64")
    return table


def export_trials(study: optuna.Study, out: Path) -> pd.DataFrame:
    """Write ``trials.csv`` and ``trials.parquet`` (rewritten whole: a kill never leaves a torn row)."""
    table = trials_table(study)
    for name, write in (("trials.csv", lambda p: table.to_csv(p, index=False)),
                        ("trials.parquet", lambda p: table.to_parquet(p, index=False))):
        tmp = out / f".{name}.tmp"
        write(tmp)
        os.replace(tmp, out / name)
    return table


def best_trials(table: pd.DataFrame, k: int) -> list[dict[str, Any]]:
    ok = table[table["status"] == "ok"].sort_values(["reward", "trial_id"], ascending=[False, True]).head(k)
    records = []
    for row in ok.to_dict("records"):
        spec = ArchSpec.from_string(row["arch"])
        records.append({**{k: _plain(v) for k, v in row.items() if k not in ("status", "reason")},
                        "spec": spec.to_dict()})
    return records


def _plain(value: Any) -> Any:
    if value is pd.NA:
        return None
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    return value


def write_outputs(config: SearchConfig, study: optuna.Study, latency_model) -> pd.DataFrame:
    """trials.csv/parquet, best.json (top k by reward), pareto.csv and pareto.png (with the zoo's networks)."""
    from nas.analysis.pareto import pareto_front
    from nas.analysis.plots import plot_pareto
    from nas.analysis.references import reference_latencies

    out = Path(config.out)
    table = export_trials(study, out)
    (out / "best.json").write_text(json.dumps(best_trials(table, config.top_k), indent=2) + "\n")
    pareto_front(table).to_csv(out / "pareto.csv", index=False)
    references = reference_latencies(config.target, resolution=config.proxy.deploy_resolution,
                                     latency_model=latency_model)
    references.to_csv(out / "references.csv", index=False)
    plot_pareto(table, out / "pareto.png", reference_points=references, by="controller",
                title=f"{config.space} search on {config.target} ({config.controller}, {len(table)} trials)",
                target=config.target, latency_target=config.objective.target_ms)
    return table


# ------------------------------------------------------------------ entry point


def run_search(config: SearchConfig, *, latency_model=None, evaluator: Evaluator = evaluate_candidate,
               progress_factory: Callable[..., Any] | None = None) -> SearchSummary:
    """Run (or resume) the search described by ``config``; returns the trials table and the best trial.

    ``latency_model`` defaults to ``get_latency_model(config.target)``; pass one to reuse it.
    ``evaluator`` scores one candidate (proxy training by default; a module-level function, so
    Ray can ship it to workers). ``progress_factory`` makes the progress bar (tqdm by default).
    """
    from search_spaces import get_space

    space = get_space(config.space)
    if latency_model is None:
        from nas.latency.predict import get_latency_model

        latency_model = get_latency_model(config.target)
    elif latency_model.target != config.target:
        raise NasError(f"latency model is for {latency_model.target!r}, not {config.target!r}")
    open_data(config.proxy)  # a missing or unreadable dataset fails here, once, not in every worker
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    _check_config(config)
    study = open_study(config)
    controller = make_controller(config.controller, space=space, study=study, seed=config.seed,
                                 population=config.population, ppo=config.ppo)
    state_path = out / STATE_FILE
    if state_path.exists():
        try:
            state = pickle.loads(state_path.read_bytes())
        except (pickle.UnpicklingError, EOFError, AttributeError, ValueError, TypeError) as err:
            raise NasError(f"{state_path} is corrupt ({err}); delete it to rebuild the controller from the study") \
                from None
        controller.load_state_dict(state)
    controller.sync()

    if progress_factory is None:
        from tqdm import tqdm as progress_factory
    finished = _count_finished(study)
    with progress_factory(total=max(config.trials, finished), initial=finished, desc=f"search {config.controller}",
                          unit="trial", dynamic_ncols=True) as progress:
        driver = Driver(config, controller, latency_model, progress, evaluator)
        try:
            if driver.more():
                (_run_serial if config.workers == 0 else _run_ray)(driver)
        finally:
            table = write_outputs(config, study, latency_model)
    if driver.aborted():
        raise NasError(f"stopped after {len(driver.errors)} trials in a row failed with errors; last: "
                       f"{driver.errors[-1]}")
    best = best_trials(table, 1)
    return SearchSummary(out=out, trials=table, finished=_count_finished(study), requested=config.trials,
                         best=best[0] if best else None)
