"""Run a platform-aware search: controller -> latency + proxy training -> reward, in parallel, resumable.

The driver (this process) asks the controller for architectures, prices each one's latency at the
deployment resolution with the target's latency model, and hands it to a worker for its
accuracy (proxy training, or a child of a weight-sharing supernet: :mod:`nas.search.evaluators`);
when the accuracy comes back it computes the objective and tells the controller.
Workers are Ray Tune trials (local Ray with one CPU per worker by default, or a cluster at
``ray_address``); ``workers=0`` evaluates in this process instead, without Ray.

Everything a restart needs is in the run directory: the Optuna study (``study.db`` unless another
SQLAlchemy URL is given) holds every trial and its record, ``controller.pkl`` the controller's
learned state and ``config.json`` the run's id and the settings it was started with. Running the
same command again resumes: finished trials are kept, trials a killed run left open are evaluated
again under their own numbers (never duplicated), and the search continues to ``trials`` in total.

A run owns its study: the study's user attributes hold the run's id and fixed settings, written
when the run creates it and checked whenever it is opened. So several runs can share one database
(``storage="postgresql://..."``) without ever adding trials to each other's study: a run whose
study name is taken by another run is refused, and a resume must find its own id there.
"""

from __future__ import annotations

import json
import logging
import math
import os
import pickle
import secrets
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import optuna
import pandas as pd
from optuna.trial import TrialState
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, ProgrammingError, SQLAlchemyError

from nas import rundir
from nas.arch import ArchSpec
from nas.cluster import start_ray
from nas.errors import NasError
from nas.search.controllers import Controller, PPOSettings, Proposal, Result, make_controller
from nas.search.evaluate import Evaluation, ProxySettings
from nas.search.evaluators import Evaluator, EvaluatorSettings, check_supernet, make_evaluator, prepare_supernet
from nas.search.objectives import Objective
from nas.search.records import Status, TrialRecord, trials_frame
from nas.train.proxy import open_data

STATE_FILE = "controller.pkl"
CONFIG_FILE = "config.json"
# Settings that define what a run holds; changing one needs a new run.
_FIXED_SETTINGS = ("target", "space", "controller", "objective", "proxy", "seed", "population", "ppo", "evaluator")
# What a run made before the setting existed used.
_EVALUATOR_BEFORE = EvaluatorSettings().fixed()
# Where candidates train: free to change on resume, like ``workers`` (a GPU run may resume on a CPU machine).
_RUNS_ANYWHERE = "proxy.device"
_ADVICE = "rerun with the same settings to resume, or use a new --out directory"
# The study's user attributes that say which run it belongs to.
RUN_ID, FIXED, RUN_OUT = "run_id", "fixed", "out"
# Record fields the study holds already: the trial's number and state, the run's seed and id.
_HELD_BY_THE_STUDY = ("trial_id", "status", "seed", "run_id")
_STATUS = {TrialState.COMPLETE: Status.OK, TrialState.FAIL: Status.FAILED}  # other states: still running
# What to install for a database driver SQLAlchemy cannot import.
DRIVERS = {
    "psycopg": "pip install 'latency-nas[postgres]' (psycopg 3, the driver of postgresql:// URLs)",
    "psycopg2": "pip install psycopg2-binary, or write the URL as postgresql:// and "
                "pip install 'latency-nas[postgres]'",
}


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
    evaluator: EvaluatorSettings = EvaluatorSettings()

    def __post_init__(self) -> None:
        if self.trials < 1:
            raise NasError(f"trials must be positive, got {self.trials}")
        if self.workers < 0:
            raise NasError(f"workers must be 0 (in this process) or more, got {self.workers}")
        if self.population < 1:
            raise NasError(f"population must be positive, got {self.population}")
        if self.evaluator.kind == "supernet":
            from search_spaces import get_space
            from search_spaces.factorized import sharing_obstacle

            obstacle = sharing_obstacle(get_space(self.space))
            if obstacle is not None:
                raise NasError(f"the supernet evaluator needs a weight-sharing space, such as mobilenetv3-shared or "
                               f"mnasnet-shared: in the {self.space} space {obstacle} (README, "
                               f"\"Weight-sharing supernet\")")

    @property
    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{Path(self.out).resolve() / 'study.db'}"

    @property
    def study_name(self) -> str:
        """"search" in the run's own database; in a shared one (``storage``) named after the run directory,
        which another run's study may not have (see :func:`open_run`)."""
        return "search" if self.storage is None else f"nas.search:{Path(self.out).name}"

    def fixed(self) -> dict[str, Any]:
        """The settings a resumed run must share with the run that made the directory (JSON-able).

        The proxy's ``device`` is left out: where a candidate trains is how the run executes, like
        ``workers``, so a run started on a GPU machine may resume on a CPU one."""
        data = {**asdict(self), "evaluator": self.evaluator.fixed()}
        return _without_device(json.loads(json.dumps({k: data[k] for k in _FIXED_SETTINGS})))


@dataclass(frozen=True)
class SearchSummary:
    """A run's outcome: its records, the same as a table, and ``best``, the record of the top trial in ``best.json``."""

    out: Path
    records: tuple[TrialRecord, ...]
    trials: pd.DataFrame
    finished: int
    requested: int
    best: TrialRecord | None

    @property
    def complete(self) -> bool:
        return self.finished >= self.requested


def default_out_dir() -> Path:
    return Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S")


def new_run_id() -> str:
    """Unique among runs, and sortable by start time."""
    return f"{datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(4)}"


def open_run(config: SearchConfig) -> tuple[optuna.Study, str]:
    """The run's study and id; refuses a study that is another run's or holds other settings.

    A new run writes its id to ``config.json`` and creates its study, which records the id and the
    fixed settings. A resumed run (its id in ``config.json``) must find them in the study, whatever
    the folder is called now. A run directory made before runs had ids adopts its study.
    """
    path = Path(config.out) / CONFIG_FILE
    fresh, run_id = not path.exists(), new_run_id()
    if not fresh:
        _add_evaluator(path)
    current = config.fixed()
    rundir.claim(path, {RUN_ID: run_id, FIXED: current, "trials": config.trials},
                 may_differ=(RUN_ID, "trials", f"{FIXED}.{_RUNS_ANYWHERE}"), advice=_ADVICE)
    if fresh:
        try:
            study = _open_study(config, create=True)
        except NasError:
            path.unlink()  # the run never started: leave the folder as it was
            raise
        _stamp(study, run_id, config)
        return study, run_id
    saved = rundir.read_json(path)
    study = _open_study(config, create=False)
    run_id = saved.get(RUN_ID)
    owner = study.user_attrs.get(RUN_ID)
    if owner is None and (run_id is None or not study.get_trials(deepcopy=False)):
        # a run from before ids, or this run killed between creating its study and recording its id
        run_id = run_id or new_run_id()
        _stamp(study, run_id, config)
        rundir.write_json(path, {**saved, RUN_ID: run_id})
    elif owner != run_id:
        raise _taken(config, study)
    rundir.check_same(_with_evaluator(study.user_attrs[FIXED]), current, where=f"study {config.study_name!r} in "
                      f"{_shown(config.storage_url)}", may_differ=(_RUNS_ANYWHERE,), advice=_ADVICE)
    return study, run_id


def _with_evaluator(fixed: dict[str, Any]) -> dict[str, Any]:
    """Fixed settings of a run made before runs chose their evaluator: it trained every candidate."""
    return fixed if "evaluator" in fixed else {**fixed, "evaluator": _EVALUATOR_BEFORE}


def _add_evaluator(path: Path) -> None:
    """Write the evaluator into an older run's ``config.json``, so that it resumes as what it was."""
    saved = rundir.read_json(path, what="settings file", advice="remove it or use another --out")
    if isinstance(saved, dict) and isinstance(saved.get(FIXED), dict) and "evaluator" not in saved[FIXED]:
        rundir.write_json(path, {**saved, FIXED: _with_evaluator(saved[FIXED])})


def _without_device(fixed: dict[str, Any]) -> dict[str, Any]:
    proxy = {k: v for k, v in fixed.get("proxy", {}).items() if k != "device"}
    return {**fixed, "proxy": proxy}


def _stamp(study: optuna.Study, run_id: str, config: SearchConfig) -> None:
    study.set_user_attr(RUN_ID, run_id)
    study.set_user_attr(FIXED, config.fixed())
    study.set_user_attr(RUN_OUT, str(Path(config.out).resolve()))


def _taken(config: SearchConfig, study: optuna.Study) -> NasError:
    attrs = study.user_attrs
    if RUN_ID in attrs:
        owner = (f"run {attrs[RUN_ID]} of {attrs.get(RUN_OUT, '?')}, controller "
                 f"{attrs.get(FIXED, {}).get('controller', '?')}")
    else:
        owner = "a run from before runs had ids"
    return NasError(f"study {config.study_name!r} in {_shown(config.storage_url)} belongs to {owner}; "
                    f"this run (controller {config.controller}) needs its own: use an --out folder with another "
                    "name")


def _shown(url: str) -> str:
    """The storage URL without its password, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except SQLAlchemyError:
        return url


def _open_study(config: SearchConfig, *, create: bool) -> optuna.Study:
    """Open (``create``: only create) the run's study, with a one-line error for what the storage lacks."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = config.storage_url
    try:
        _check_driver(url)
        storage = _rdb_storage(url)
        study = optuna.create_study(storage=storage, study_name=config.study_name, load_if_exists=not create,
                                    directions=list(config.objective.directions))
    except optuna.exceptions.DuplicatedStudyError:
        raise _taken(config, optuna.load_study(storage=storage, study_name=config.study_name)) from None
    except (ValueError, ImportError, optuna.exceptions.OptunaError, SQLAlchemyError) as err:
        first_line = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise NasError(f"cannot open the study storage {_shown(url)}: {first_line}") from None
    directions = [d.name.lower() for d in study.directions]
    if directions != list(config.objective.directions):
        raise NasError(f"the study in {_shown(url)} has directions {directions}, not "
                       f"{list(config.objective.directions)}; use a new --out directory")
    return study


def _rdb_storage(url: str, attempts: int = 3) -> optuna.storages.RDBStorage:
    """Optuna's storage at ``url``. Runs that start together on an empty database race to create
    Optuna's tables (optuna#1092); a loser finds them made when it tries again."""
    for attempt in range(1, attempts):
        try:
            return optuna.storages.RDBStorage(url)
        except (IntegrityError, ProgrammingError):
            time.sleep(0.2 * attempt)
    return optuna.storages.RDBStorage(url)


def _check_driver(url: str) -> None:
    """Name the package to install for a database driver that is missing (SQLAlchemy only says it is)."""
    try:
        make_url(url).get_dialect().import_dbapi()
    except ModuleNotFoundError as err:
        hint = DRIVERS.get(err.name, f"pip install the package that provides {err.name!r}")
        raise NasError(f"the database driver {err.name!r} for {_shown(url)} is not installed: {hint}") from None


def _save_state(controller: Controller, out: Path) -> None:
    rundir.write_bytes(out / STATE_FILE, pickle.dumps(controller.state_dict()))


class Driver:
    """The search's bookkeeping, shared by the Ray and in-process executors.

    ``next()`` gives the next proposal to evaluate with its latency priced; ``finish()`` turns a
    worker's :class:`Evaluation` into the trial record and tells the controller.
    """

    def __init__(self, config: SearchConfig, controller: Controller, latency_model, progress,
                 evaluator: Evaluator, *, run_id: str) -> None:
        self.config = config
        self.run_id = run_id
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
        reward = objective.reward(evaluation.accuracy, prediction.ms) if evaluation.ok else math.nan
        record = TrialRecord(
            trial_id=proposal.number, controller=self.controller.name, status=evaluation.status,
            reason=evaluation.reason, arch=proposal.spec, latency_ms=float(prediction.ms),
            latency_source=prediction.source, estimated_keys=len(prediction.estimated_keys),
            accuracy=evaluation.accuracy, reward=reward, params=evaluation.params, madds=evaluation.madds,
            train_seconds=evaluation.train_seconds, steps=evaluation.steps, val_loss=evaluation.val_loss,
            train_loss=evaluation.train_loss, seed=self.config.seed, run_id=self.run_id)
        if evaluation.ok:
            result = Result.ok(objective.values(evaluation.accuracy, prediction.ms), attrs=_trial_attrs(record))
            self.best_reward = max(self.best_reward, reward)
        else:
            result = Result.failed(attrs=_trial_attrs(record))
            self.failed += 1
        self.controller.tell(proposal, result)
        _save_state(self.controller, self.out)
        self.errors = self.errors + [evaluation.reason] if evaluation.error else []
        self.finished += 1
        export_trials(trial_records(self.controller.study), self.out)
        self.progress.update(1)
        best = f"{self.best_reward:.4f}" if math.isfinite(self.best_reward) else "-"
        self.progress.set_postfix_str(f"best reward {best}, failed {self.failed}", refresh=True)


def _trial_attrs(record: TrialRecord) -> dict[str, Any]:
    """What the study keeps with a trial: the record without what the trial's state and the study hold.

    Optuna's JSON storage cannot hold NaN: unknown numbers are left out (they read back as NaN).
    """
    return {k: v for k, v in record.to_row().items()
            if k not in _HELD_BY_THE_STUDY and v is not None and not (isinstance(v, float) and not math.isfinite(v))}


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
            driver.finish(proposal, _evaluate_safely(driver.evaluator, proposal.spec))
    finally:
        torch.set_num_threads(threads)


def _evaluate_safely(evaluator: Evaluator, spec: ArchSpec) -> Evaluation:
    """Any error of one candidate becomes its failed record; the driver aborts on repeated errors."""
    try:
        return evaluator(spec)
    except Exception as err:  # noqa: BLE001 -- reported with the trial, and repeated errors stop the search
        return Evaluation.failed(f"{type(err).__name__}: {err}", error=True)


def report(metrics: dict[str, Any]) -> None:
    """Report a trial's final metrics to Ray Tune (the one place that knows the API's current name)."""
    from ray import tune

    tune.report(metrics)


def _ray_trial(config: dict[str, Any], evaluator: Evaluator) -> None:
    """A Ray Tune function trainable: evaluate one architecture and report its evaluation."""
    import torch

    torch.set_num_threads(1)
    report(_evaluate_safely(evaluator, config["spec"]).to_dict())


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
            return {"number": proposal.number, "spec": proposal.spec}

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
            proposal = self.live.pop(trial_id)
            if error or not result or "status" not in result:
                evaluation = Evaluation.failed("the Ray worker died or raised before reporting (see the Ray logs "
                                               "under /tmp/ray/session_latest/logs)", error=True)
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
        trainable = tune.with_parameters(_ray_trial, evaluator=driver.evaluator)
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


def trial_records(study: optuna.Study) -> list[TrialRecord]:
    """One record per trial of the study; the trial's state says its status (open trials are RUNNING)."""
    run_id = study.user_attrs.get(RUN_ID, "")
    seed = study.user_attrs.get(FIXED, {}).get("seed")
    records = []
    for trial in study.get_trials(deepcopy=False):
        if trial.state == TrialState.WAITING:
            continue
        status = _STATUS.get(trial.state, Status.RUNNING)
        records.append(TrialRecord.from_row({**trial.user_attrs, "trial_id": trial.number, "status": status,
                                             "seed": seed, "run_id": run_id}))
    return records


def export_trials(records: list[TrialRecord], out: Path) -> pd.DataFrame:
    """Write ``trials.csv`` and ``trials.parquet`` (rewritten whole: a kill never leaves a torn row)."""
    table = trials_frame(records)
    for name in ("trials.csv", "trials.parquet"):
        rundir.write_table(out / name, table)
    return table


def best_records(records: list[TrialRecord], k: int) -> list[TrialRecord]:
    """The top ``k`` finished trials by reward (the earlier trial first on a tie)."""
    return sorted((r for r in records if r.ok), key=lambda r: (-r.reward, r.trial_id))[:k]


def best_trials(records: list[TrialRecord], k: int) -> list[dict[str, Any]]:
    """The top ``k`` finished trials by reward, as ``best.json`` lists them (with each spec as JSON)."""
    return [{**{name: _plain(value) for name, value in r.to_row().items() if name not in ("status", "reason")},
             "spec": r.arch.to_dict()} for r in best_records(records, k)]


def _plain(value: Any) -> Any:
    """JSON for best.json: an unknown number is null."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def write_outputs(config: SearchConfig, records: list[TrialRecord], latency_model) -> pd.DataFrame:
    """trials.csv/parquet, best.json (top k by reward), pareto.csv and pareto.png (with the zoo's networks)."""
    from nas.analysis.pareto import pareto_front
    from nas.analysis.references import reference_latencies

    out = Path(config.out)
    table = export_trials(records, out)
    rundir.write_json(out / "best.json", best_trials(records, config.top_k))
    rundir.write_table(out / "pareto.csv", pareto_front(table))
    references = reference_latencies(config.target, resolution=config.proxy.deploy_resolution,
                                     latency_model=latency_model)
    rundir.write_table(out / "references.csv", references)
    draw_pareto(table, out, references, space=config.space, target=config.target, controller=config.controller,
                target_ms=config.objective.target_ms)
    return table


def draw_pareto(table: pd.DataFrame, out: Path, references: pd.DataFrame, *, space: str, target: str,
                controller: str, target_ms: float | None) -> Path:
    """``pareto.png`` of a search's trials with the zoo's networks (also how a report redraws it)."""
    from nas.analysis.plots import plot_pareto

    path = Path(out) / "pareto.png"
    plot_pareto(table, path, reference_points=references, by="controller",
                title=f"{space} search on {target} ({controller}, {len(table)} trials)",
                target=target, latency_target=target_ms)
    return path


# ------------------------------------------------------------------ entry point


def run_search(config: SearchConfig, *, latency_model=None, evaluator: Evaluator | None = None,
               progress_factory: Callable[..., Any] | None = None) -> SearchSummary:
    """Run (or resume) the search described by ``config``; returns the trials table and the best trial.

    ``latency_model`` defaults to ``get_latency_model(config.target)``; pass one to reuse it.
    ``evaluator`` scores one candidate (by default the one ``config.evaluator`` names; picklable, so
    Ray can ship it to workers). With the supernet evaluator the run's first stage trains (or
    finishes) the supernet, or checks the reused one. ``progress_factory`` makes the progress bar
    (tqdm by default).
    """
    from search_spaces import get_space

    space = get_space(config.space)
    if latency_model is None:
        from nas.latency.predict import get_latency_model

        latency_model = get_latency_model(config.target)
    elif latency_model.target != config.target:
        raise NasError(f"latency model is for {latency_model.target!r}, not {config.target!r}")
    open_data(config.proxy)  # a missing or unreadable dataset fails here, once, not in every worker
    if config.evaluator.supernet is not None:
        check_supernet(config.evaluator.supernet, space=config.space)  # before the run directory is made
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    study, run_id = open_run(config)
    if evaluator is None:
        supernet = prepare_supernet(config) if config.evaluator.kind == "supernet" else None
        evaluator = make_evaluator(config, supernet)
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
        driver = Driver(config, controller, latency_model, progress, evaluator, run_id=run_id)
        try:
            if driver.more():
                (_run_serial if config.workers == 0 else _run_ray)(driver)
        finally:
            records = trial_records(study)
            table = write_outputs(config, records, latency_model)
    if driver.aborted():
        raise NasError(f"stopped after {len(driver.errors)} trials in a row failed with errors; last: "
                       f"{driver.errors[-1]}")
    best = best_records(records, 1)
    return SearchSummary(out=out, records=tuple(records), trials=table, finished=_count_finished(study),
                         requested=config.trials, best=best[0] if best else None)
