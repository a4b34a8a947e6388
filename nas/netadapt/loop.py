"""The NetAdapt loop (MobileNetV3 section 4.2): propose, fine-tune, select, until the target.

Each iteration shrinks one unit of the current network so that its predicted latency drops
by at least the scheduled reduction, fine-tunes every proposal for a few steps from inherited
weights, and keeps the one with the best accuracy/latency trade-off. When no unit can cut the
scheduled reduction any more (late in a run every unit is small), the iteration's step halves,
up to :data:`STEP_HALVINGS` times, before the run stops as unreachable: a fixed schedule would
otherwise stop a network that many units could still shrink by smaller steps.

The run directory is updated after every iteration, so rerunning the same call resumes after
the last finished one (files written through :mod:`nas.rundir`)::

    OUT/run.json                  the settings; a rerun with other settings is refused
    OUT/history.csv               one row per finished iteration (0 = the seed), see HistoryRow
    OUT/proposals.csv             every fine-tuned proposal of every finished iteration
    OUT/checkpoints/iter_NNN.pt   spec + state dict of each iteration's network (+ .json spec)
    OUT/work/iter_NNN/*.pt        proposals of the iteration in progress
    OUT/final_spec.json, OUT/final.pt, OUT/history.png

An iteration counts as finished only once its history row is written, after its checkpoint.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from nas import rundir
from nas.analysis.plots import plot_netadapt_history
from nas.arch import ArchSpec
from nas.cli import setting
from nas.errors import NasError
from nas.model import build_model
from nas.netadapt.finetune import Job, JobResult, load_checkpoint, run_jobs, save_checkpoint
from nas.netadapt.proposals import CachedLatency, LatencyFn, Proposal, propose, reduction_ms
from nas.netadapt.select import RULES, Outcome, select, slope
from nas.netadapt.units import layer_widths
from nas.train.proxy import ProxyTraining, score, train


STEP_HALVINGS = 3  # the smallest step tried is 1/8 of the scheduled one


@dataclass(frozen=True)
class LatencyTarget:
    """The latency NetAdapt must reach: ``ms`` absolute, or ``ratio`` of the seed's (exactly one)."""

    ms: float | None = setting(None, "absolute latency target in ms", metavar="X")
    ratio: float | None = setting(None, "target as a fraction of the seed's latency", metavar="R")

    def __post_init__(self) -> None:
        if (self.ms is None) == (self.ratio is None):
            raise NasError("give exactly one latency target: an absolute one in ms or a ratio of the seed's")
        if self.ms is not None and not self.ms > 0:
            raise NasError(f"the latency target must be positive, got {self.ms} ms")
        if self.ratio is not None and not 0 < self.ratio <= 1:
            raise NasError(f"the latency ratio must lie in (0, 1], got {self.ratio}")

    def resolve(self, seed_ms: float) -> float:
        return self.ms if self.ms is not None else self.ratio * seed_ms


@dataclass(frozen=True)
class Settings:
    """How NetAdapt shrinks a network; the command line and pipeline configs read these fields."""

    delta_ratio: float = setting(0.01, "latency cut per iteration as a fraction of the seed's", metavar="D")
    delta_decay: float = setting(1.0, "NetAdapt schedule: the cut is multiplied by F each iteration", metavar="F")
    short_term_steps: int = setting(10000, "fine-tuning steps per proposal, the paper's number by default", metavar="T")
    long_term_steps: int = setting(0, "fine-tuning steps of the final network", metavar="N")
    pretrain_steps: int | None = setting(
        None, "training steps of the seed before adapting it (default: short-term-steps for a seed without "
              "trained weights, 0 for one with them)", metavar="N")
    selection: str = setting("slope", "slope: best accuracy change per ms saved (MobileNetV3); accuracy: best "
                                      "accuracy (original NetAdapt)", choices=RULES)
    divisor: int = setting(8, "widths stay multiples of this")
    max_proposals: int | None = setting(
        None, "fine-tune only K proposals per iteration, drawn at random (default: all)", metavar="K")
    seed: int = setting(0, "data split, batch order and proposal draws")

    def __post_init__(self) -> None:
        if self.selection not in RULES:
            raise NasError(f"unknown selection rule {self.selection!r}; choose from {', '.join(RULES)}")
        for name in ("short_term_steps", "long_term_steps", "pretrain_steps"):
            if (getattr(self, name) or 0) < 0:
                raise NasError(f"{name.replace('_', '-')} must not be negative")
        if self.divisor < 1:
            raise NasError(f"divisor must be positive, got {self.divisor}")
        if self.max_proposals is not None and self.max_proposals < 1:
            raise NasError(f"max-proposals must be at least 1, got {self.max_proposals}")
        reduction_ms(1.0, ratio=self.delta_ratio, decay=self.delta_decay, iteration=1)

    def with_pretraining(self, *, trained_seed: bool) -> Settings:
        """``pretrain_steps`` decided: as given, else the short-term steps for an untrained seed, else none."""
        if self.pretrain_steps is not None:
            return self
        return replace(self, pretrain_steps=0 if trained_seed else self.short_term_steps)


@dataclass(frozen=True)
class HistoryRow:
    """One finished iteration (0 = the seed); a row of ``history.csv`` adds the spec's layer widths."""

    iteration: int
    unit: str
    old_width: int
    width: int
    latency_ms: float
    cut_ms: float
    step_ms: float
    accuracy: float
    proposals: int
    spec: ArchSpec

    def to_row(self) -> dict[str, Any]:
        row = {f.name: getattr(self, f.name) for f in fields(self)}
        return {**row, "spec": self.spec.to_string(), **layer_widths(self.spec)}

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> HistoryRow:
        """Read back :meth:`to_row` (the width columns follow from the spec)."""
        return cls(iteration=int(row["iteration"]), unit=str(row["unit"]), old_width=int(row["old_width"]),
                   width=int(row["width"]), latency_ms=float(row["latency_ms"]), cut_ms=float(row["cut_ms"]),
                   step_ms=float(row["step_ms"]), accuracy=float(row["accuracy"]),
                   proposals=int(row["proposals"]), spec=ArchSpec.from_string(row["spec"]))


HISTORY_COLUMNS = tuple(f.name for f in fields(HistoryRow))


@dataclass(frozen=True)
class Result:
    """The final network of a run and how it got there."""

    spec: ArchSpec
    latency_ms: float
    accuracy: float
    seed_ms: float
    target_ms: float
    reached: bool
    history: tuple[HistoryRow, ...]


class TargetUnreachable(NasError):
    """No unit can be shrunk far enough; the best network found is written out and in ``result``."""

    def __init__(self, message: str, *, result: Result) -> None:
        super().__init__(message)
        self.result = result


@dataclass(frozen=True)
class RunFiles:
    """The paths of one NetAdapt run directory (see the module docstring)."""

    root: Path

    @property
    def settings(self) -> Path:
        return self.root / "run.json"

    @property
    def history_csv(self) -> Path:
        return self.root / "history.csv"

    @property
    def proposals_csv(self) -> Path:
        return self.root / "proposals.csv"

    @property
    def final_checkpoint(self) -> Path:
        return self.root / "final.pt"

    @property
    def final_spec(self) -> Path:
        return self.root / "final_spec.json"

    @property
    def plot(self) -> Path:
        return self.root / "history.png"

    def checkpoint(self, iteration: int) -> Path:
        return self.root / "checkpoints" / f"iter_{iteration:03d}.pt"

    def work(self, iteration: int) -> Path:
        return self.root / "work" / f"iter_{iteration:03d}"


def netadapt(seed: ArchSpec, *, target: LatencyTarget, latency: LatencyFn, training: ProxyTraining,
             settings: Settings, out: Path, seed_state: dict | None = None, workers: int = 1,
             ray_address: str | None = None, progress: bool = True, identity: dict[str, Any] | None = None) -> Result:
    """Adapt ``seed`` until its predicted latency meets ``target``; results go to ``out``.

    ``training`` is the data and recipe of every fine-tune (a rerun must match it, the device
    aside). ``seed_state`` holds trained weights for the seed (else it is trained ``pretrain_steps``
    from scratch). ``identity`` adds what else defines the run (latency target, checkpoint
    path) to the settings a rerun must match. ``workers > 1`` fine-tunes on a local Ray,
    ``ray_address`` on that Ray cluster, started or joined here if this process has no Ray yet
    (the caller shuts it down). Raises :class:`TargetUnreachable`, holding the best network's
    :class:`Result`, after writing that network when no unit can cut the scheduled reduction any more.
    """
    files = RunFiles(Path(out))
    latency = CachedLatency(latency)
    settings = settings.with_pretraining(trained_seed=seed_state is not None)
    seed_ms = latency(seed)
    target_ms = target.resolve(seed_ms)
    # target_* sit among the settings, where runs written before LatencyTarget existed keep them
    claimed = {"target_ms": target.ms, "target_ratio": target.ratio, **asdict(settings)}
    rundir.claim(files.settings, {"seed": seed.to_string(), "settings": claimed, "training": asdict(training),
                                  **(identity or {})},
                 may_differ=("training.device",), advice="rerun with the same options or use another --out")
    history = [HistoryRow.from_row(row) for row in rundir.read_table(files.history_csv, columns=HISTORY_COLUMNS)]
    if not history:
        history.append(_start(seed, seed_state, seed_ms, files, training, settings))
        _write_history(files, history)
    finished = history[-1].iteration  # proposals of an iteration cut short are redone
    proposals_log = [row for row in rundir.read_table(files.proposals_csv, columns=("iteration",))
                     if row["iteration"] <= finished]
    say = tqdm.write if progress else (lambda _: None)
    if len(history) > 1:
        say(f"resuming after iteration {history[-1].iteration} ({history[-1].latency_ms:.3f} ms)")
    say(f"seed: {seed_ms:.3f} ms predicted, accuracy {history[0].accuracy:.4f}; target {target_ms:.3f} ms")
    current = history[-1].spec
    stuck = None
    while latency(current) > target_ms:
        iteration = history[-1].iteration + 1
        scheduled = reduction_ms(seed_ms, ratio=settings.delta_ratio, decay=settings.delta_decay,
                                 iteration=iteration)
        for halvings in range(STEP_HALVINGS + 1):
            reduction = scheduled / 2 ** halvings
            found = _cap(propose(current, latency=latency, reduction=reduction, divisor=settings.divisor),
                         settings, iteration)
            if found:
                break
        if not found:
            stuck = reduction
            break
        if halvings:
            say(f"iteration {iteration}: no unit can cut {scheduled:.3f} ms; step cut to {reduction:.3f} ms")
        parent = Outcome(latency(current), history[-1].accuracy)
        results = _fine_tune(found, files, iteration, training, settings, workers, ray_address, progress)
        ok = [i for i, result in enumerate(results) if result.error is None]
        if not ok:
            raise NasError(f"iteration {iteration}: every proposal diverged ({results[0].error})")
        outcomes = [Outcome(found[i].latency_ms, results[i].accuracy) for i in ok]
        chosen = ok[select(outcomes, parent=parent, rule=settings.selection)]
        proposal, result = found[chosen], results[chosen]
        rundir.copy_file(result.path, files.checkpoint(iteration))
        rundir.write_text(files.checkpoint(iteration).with_suffix(".json"), proposal.spec.to_json(indent=2))
        proposals_log += [_proposal_row(iteration, p, r, parent, i == chosen) for i, (p, r) in
                          enumerate(zip(found, results))]
        rundir.write_table(files.proposals_csv, proposals_log)
        history.append(HistoryRow(iteration=iteration, unit=proposal.unit.name, old_width=proposal.old_width,
                                  width=proposal.width, latency_ms=proposal.latency_ms,
                                  cut_ms=parent.latency_ms - proposal.latency_ms, step_ms=reduction,
                                  accuracy=result.accuracy, proposals=len(found), spec=proposal.spec))
        _write_history(files, history)
        shutil.rmtree(files.work(iteration), ignore_errors=True)
        current = proposal.spec
        say(f"iteration {iteration}: {proposal.unit.name} {proposal.old_width} -> {proposal.width}: "
            f"{proposal.latency_ms:.3f} ms, accuracy {result.accuracy:.4f} ({len(found)} proposals)")
    spec, accuracy = _finish(files, history, training, settings, target_ms, progress)
    result = Result(spec=spec, latency_ms=latency(spec), accuracy=accuracy, seed_ms=seed_ms, target_ms=target_ms,
                    reached=stuck is None, history=tuple(history))
    if stuck is not None:
        raise TargetUnreachable(
            f"target {target_ms:.3f} ms is unreachable: no unit of the {result.latency_ms:.3f} ms network can cut "
            f"another {stuck:.3f} ms (after {len(history) - 1} iterations); the best network found is in "
            f"{files.final_spec} and {files.final_checkpoint}", result=result)
    return result


def _write_history(files: RunFiles, history: list[HistoryRow]) -> None:
    rundir.write_table(files.history_csv, [row.to_row() for row in history])


def _start(seed: ArchSpec, state: dict | None, seed_ms: float, files: RunFiles, config: ProxyTraining,
           settings: Settings) -> HistoryRow:
    """Iteration 0: the seed (trained ``pretrain_steps`` unless weights were given), evaluated and saved."""
    torch.manual_seed(settings.seed)  # the seed's initial weights, when none are given
    model = build_model(seed)
    if state is not None:
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as err:
            detail = " ".join(line.strip() for line in str(err).splitlines()[:2])
            raise NasError(f"the checkpoint does not fit the architecture: {detail}") from None
    if settings.pretrain_steps > 0:
        train(model, config, steps=settings.pretrain_steps, seed=settings.seed)
    top1, _ = score(model, config)
    save_checkpoint(files.checkpoint(0), seed, model.state_dict(), accuracy=top1)
    rundir.write_text(files.checkpoint(0).with_suffix(".json"), seed.to_json(indent=2))
    return HistoryRow(iteration=0, unit="seed", old_width=0, width=0, latency_ms=seed_ms, cut_ms=0.0, step_ms=0.0,
                      accuracy=top1, proposals=0, spec=seed)


def _cap(found: list[Proposal], settings: Settings, iteration: int) -> list[Proposal]:
    """At most ``max_proposals`` of them, drawn reproducibly per iteration (all by default)."""
    if settings.max_proposals is None or len(found) <= settings.max_proposals:
        return found
    rng = np.random.default_rng([settings.seed, iteration])
    keep = sorted(rng.choice(len(found), settings.max_proposals, replace=False))
    return [found[i] for i in keep]


def _fine_tune(found: list[Proposal], files: RunFiles, iteration: int, config: ProxyTraining, settings: Settings,
               workers: int, ray_address: str | None, progress: bool) -> list[JobResult]:
    """Fine-tune every proposal, reusing those a killed run had already finished."""
    parent = files.checkpoint(iteration - 1)
    jobs = [Job(name=p.unit.name, spec=p.spec, parent=parent,
                result=files.work(iteration) / f"{p.unit.name.replace('+', '_')}_{p.width}.pt",
                steps=settings.short_term_steps, seed=settings.seed * 1_000_003 + iteration * 1009 + i)
            for i, p in enumerate(found)]
    results: dict[int, JobResult] = {}
    for i, job in enumerate(jobs):
        if job.result.exists():
            done = load_checkpoint(job.result)
            if done["spec"] == job.spec:
                results[i] = JobResult(job.name, float(done["accuracy"]), float(done["loss"]), job.result)
    todo = [i for i in range(len(jobs)) if i not in results]
    finished = run_jobs([jobs[i] for i in todo], config, workers=workers, ray_address=ray_address, progress=progress)
    for i, result in zip(todo, finished):
        results[i] = result
    return [results[i] for i in range(len(jobs))]


def _finish(files: RunFiles, history: list[HistoryRow], config: ProxyTraining, settings: Settings,
            target_ms: float, progress: bool) -> tuple[ArchSpec, float]:
    """Write the final network (after the optional long-term fine-tune) and the plot; its spec and accuracy."""
    spec = history[-1].spec
    kept = load_checkpoint(files.final_checkpoint) if files.final_checkpoint.exists() else None
    if kept is not None and kept["spec"] == spec:
        accuracy = float(kept["accuracy"])
    else:
        last = load_checkpoint(files.checkpoint(history[-1].iteration))
        state, accuracy = last["state_dict"], float(last["accuracy"])
        if settings.long_term_steps > 0:
            model = build_model(spec)
            model.load_state_dict(state)
            if progress:
                tqdm.write(f"long-term fine-tune: {settings.long_term_steps} steps")
            train(model, config, steps=settings.long_term_steps, seed=settings.seed + 1)
            accuracy, _ = score(model, config)
            state = model.state_dict()
        save_checkpoint(files.final_checkpoint, spec, state, accuracy=accuracy,
                        long_term_steps=settings.long_term_steps)
    rundir.write_text(files.final_spec, spec.to_json(indent=2))
    proposals = pd.read_csv(files.proposals_csv) if files.proposals_csv.exists() else None
    plot_netadapt_history(pd.DataFrame([row.to_row() for row in history]), files.plot, proposals=proposals,
                          latency_target=target_ms)
    return spec, accuracy


def _proposal_row(iteration: int, proposal: Proposal, result: JobResult, parent: Outcome,
                  selected: bool) -> dict[str, Any]:
    outcome = Outcome(proposal.latency_ms, result.accuracy)
    return {"iteration": iteration, "unit": proposal.unit.name, "old_width": proposal.old_width,
            "width": proposal.width, "latency_ms": proposal.latency_ms, "accuracy": result.accuracy,
            "loss": result.loss, "slope": slope(outcome, parent=parent) if result.error is None else float("nan"),
            "selected": selected, "error": result.error or ""}
