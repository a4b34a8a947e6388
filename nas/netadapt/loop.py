"""The NetAdapt loop (MobileNetV3 section 4.2): propose, fine-tune, select, until the target.

Each iteration shrinks one unit of the current network so that its predicted latency drops
by at least the scheduled reduction, fine-tunes every proposal for a few steps from inherited
weights, and keeps the one with the best accuracy/latency trade-off. When no unit can cut the
scheduled reduction any more (late in a run every unit is small), the iteration's step halves,
up to :data:`STEP_HALVINGS` times, before the run stops as unreachable: a fixed schedule would
otherwise stop a network that many units could still shrink by smaller steps. The run directory
(:class:`~nas.netadapt.rundir.RunDir`) is updated after every iteration, so rerunning the
same call resumes after the last finished one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from nas.analysis.plots import plot_netadapt_history
from nas.arch import ArchSpec
from nas.errors import NasError
from nas.model import build_model
from nas.netadapt.finetune import Job, JobResult, load_checkpoint, run_jobs, save_checkpoint
from nas.netadapt.proposals import CachedLatency, LatencyFn, Proposal, propose, reduction_ms
from nas.netadapt.rundir import RunDir
from nas.netadapt.select import RULES, Outcome, select, slope
from nas.netadapt.units import layer_widths
from nas.train.proxy import ProxyTraining, score, train


STEP_HALVINGS = 3  # the smallest step tried is 1/8 of the scheduled one


class TargetUnreachable(NasError):
    """No unit can be shrunk far enough; the best network found is still written out."""


@dataclass(frozen=True)
class Settings:
    """What NetAdapt does. Give exactly one of ``target_ms`` and ``target_ratio`` (of the seed's latency)."""

    target_ms: float | None = None
    target_ratio: float | None = None
    delta_ratio: float = 0.01
    delta_decay: float = 1.0
    short_term_steps: int = 10000
    long_term_steps: int = 0
    pretrain_steps: int = 0
    selection: str = "slope"
    divisor: int = 8
    max_proposals: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if (self.target_ms is None) == (self.target_ratio is None):
            raise NasError("give exactly one latency target: an absolute one in ms or a ratio of the seed's")
        if self.target_ms is not None and not self.target_ms > 0:
            raise NasError(f"the latency target must be positive, got {self.target_ms} ms")
        if self.target_ratio is not None and not 0 < self.target_ratio <= 1:
            raise NasError(f"the latency ratio must lie in (0, 1], got {self.target_ratio}")
        if self.selection not in RULES:
            raise NasError(f"unknown selection rule {self.selection!r}; choose from {', '.join(RULES)}")
        for name in ("short_term_steps", "long_term_steps", "pretrain_steps"):
            if getattr(self, name) < 0:
                raise NasError(f"{name.replace('_', '-')} must not be negative")
        if self.divisor < 1:
            raise NasError(f"divisor must be positive, got {self.divisor}")
        if self.max_proposals is not None and self.max_proposals < 1:
            raise NasError(f"max-proposals must be at least 1, got {self.max_proposals}")
        reduction_ms(1.0, ratio=self.delta_ratio, decay=self.delta_decay, iteration=1)

    def target(self, seed_ms: float) -> float:
        return self.target_ms if self.target_ms is not None else self.target_ratio * seed_ms


@dataclass(frozen=True)
class Result:
    """The final network of a run and how it got there (``history`` rows as in ``history.csv``)."""

    spec: ArchSpec
    latency_ms: float
    accuracy: float
    seed_ms: float
    target_ms: float
    reached: bool
    history: tuple[dict[str, Any], ...]


def netadapt(seed: ArchSpec, *, latency: LatencyFn, training: ProxyTraining, settings: Settings, out: Path,
             seed_state: dict | None = None, workers: int = 1, ray_address: str | None = None,
             progress: bool = True, identity: dict[str, Any] | None = None) -> Result:
    """Adapt ``seed`` until its predicted latency meets the target; results go to ``out``.

    ``training`` is the data and recipe of every fine-tune (a rerun must match it, the device
    aside). ``seed_state`` holds trained weights for the seed (else it is trained ``pretrain_steps``
    from scratch). ``identity`` adds what else defines the run (latency target, checkpoint
    path) to the settings a rerun must match. ``workers > 1`` fine-tunes on a local Ray,
    ``ray_address`` on that Ray cluster, started or joined here if this process has no Ray yet
    (the caller shuts it down). Raises :class:`TargetUnreachable` after writing the best network
    when no unit can cut the scheduled reduction any more.
    """
    run = RunDir(out)
    latency = CachedLatency(latency)
    seed_ms = latency(seed)
    target = settings.target(seed_ms)
    run.claim({"seed": seed.to_string(), "settings": asdict(settings),
               "training": {k: v for k, v in asdict(training).items() if k != "device"}, **(identity or {})})
    history = run.read_table(run.history_csv, columns=("iteration", "latency_ms", "accuracy", "spec"))
    if not history:
        history.append(_start(seed, seed_state, seed_ms, run, training, settings))
        run.write_history(history)
    finished = int(history[-1]["iteration"])  # proposals of an iteration cut short are redone
    proposals_log = [row for row in run.read_table(run.proposals_csv, columns=("iteration",))
                     if row["iteration"] <= finished]
    say = tqdm.write if progress else (lambda _: None)
    if len(history) > 1:
        say(f"resuming after iteration {history[-1]['iteration']} ({history[-1]['latency_ms']:.3f} ms)")
    say(f"seed: {seed_ms:.3f} ms predicted, accuracy {history[0]['accuracy']:.4f}; target {target:.3f} ms")
    current = load_checkpoint(run.checkpoint(int(history[-1]["iteration"])))["spec"]
    stuck = None
    while latency(current) > target:
        iteration = int(history[-1]["iteration"]) + 1
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
        parent = Outcome(latency(current), float(history[-1]["accuracy"]))
        results = _fine_tune(found, run, iteration, training, settings, workers, ray_address, progress)
        ok = [i for i, result in enumerate(results) if result.error is None]
        if not ok:
            raise NasError(f"iteration {iteration}: every proposal diverged ({results[0].error})")
        outcomes = [Outcome(found[i].latency_ms, results[i].accuracy) for i in ok]
        chosen = ok[select(outcomes, parent=parent, rule=settings.selection)]
        proposal, result = found[chosen], results[chosen]
        run.keep_checkpoint(iteration, result.path, proposal.spec.to_json(indent=2))
        proposals_log += [_proposal_row(iteration, p, r, parent, i == chosen) for i, (p, r) in
                          enumerate(zip(found, results))]
        run.write_proposals(proposals_log)
        history.append(_history_row(iteration, proposal.unit.name, proposal.old_width, proposal.width,
                                    proposal.spec, proposal.latency_ms, result.accuracy,
                                    parent.latency_ms - proposal.latency_ms, reduction, len(found)))
        run.write_history(history)
        run.clear_work(iteration)
        current = proposal.spec
        say(f"iteration {iteration}: {proposal.unit.name} {proposal.old_width} -> {proposal.width}: "
            f"{proposal.latency_ms:.3f} ms, accuracy {result.accuracy:.4f} ({len(found)} proposals)")
    final = _finish(run, history, training, settings, target, progress)
    result = Result(spec=final["spec"], latency_ms=latency(final["spec"]), accuracy=final["accuracy"],
                    seed_ms=seed_ms, target_ms=target, reached=stuck is None, history=tuple(history))
    if stuck is not None:
        raise TargetUnreachable(
            f"target {target:.3f} ms is unreachable: no unit of the {result.latency_ms:.3f} ms network can cut "
            f"another {stuck:.3f} ms (after {len(history) - 1} iterations); the best network found is in "
            f"{run.final_spec} and {run.final_checkpoint}")
    return result


def _start(seed: ArchSpec, state: dict | None, seed_ms: float, run: RunDir, config: ProxyTraining,
           settings: Settings) -> dict[str, Any]:
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
    save_checkpoint(run.checkpoint(0), seed, model.state_dict(), accuracy=top1)
    run.checkpoint(0).with_suffix(".json").write_text(seed.to_json(indent=2))
    return _history_row(0, "seed", 0, 0, seed, seed_ms, top1, 0.0, 0.0, 0)


def _cap(found: list[Proposal], settings: Settings, iteration: int) -> list[Proposal]:
    """At most ``max_proposals`` of them, drawn reproducibly per iteration (all by default)."""
    if settings.max_proposals is None or len(found) <= settings.max_proposals:
        return found
    rng = np.random.default_rng([settings.seed, iteration])
    keep = sorted(rng.choice(len(found), settings.max_proposals, replace=False))
    return [found[i] for i in keep]


def _fine_tune(found: list[Proposal], run: RunDir, iteration: int, config: ProxyTraining, settings: Settings,
               workers: int, ray_address: str | None, progress: bool) -> list[JobResult]:
    """Fine-tune every proposal, reusing those a killed run had already finished."""
    parent = run.checkpoint(iteration - 1)
    jobs = [Job(name=p.unit.name, spec=p.spec, parent=parent,
                result=run.work(iteration) / f"{p.unit.name.replace('+', '_')}_{p.width}.pt",
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


def _finish(run: RunDir, history: list[dict[str, Any]], config: ProxyTraining, settings: Settings,
            target: float, progress: bool) -> dict[str, Any]:
    """Write the final network (after the optional long-term fine-tune) and the plot."""
    last = load_checkpoint(run.checkpoint(int(history[-1]["iteration"])))
    spec, top1 = last["spec"], float(last["accuracy"])
    if run.final_checkpoint.exists() and load_checkpoint(run.final_checkpoint)["spec"] == spec:
        final = load_checkpoint(run.final_checkpoint)
    else:
        state = last["state_dict"]
        if settings.long_term_steps > 0:
            model = build_model(spec)
            model.load_state_dict(state)
            if progress:
                tqdm.write(f"long-term fine-tune: {settings.long_term_steps} steps")
            train(model, config, steps=settings.long_term_steps, seed=settings.seed + 1)
            top1, _ = score(model, config)
            state = model.state_dict()
        save_checkpoint(run.final_checkpoint, spec, state, accuracy=top1,
                        long_term_steps=settings.long_term_steps)
        final = load_checkpoint(run.final_checkpoint)
    run.write_final_spec(spec.to_json(indent=2))
    proposals = pd.read_csv(run.proposals_csv) if run.proposals_csv.exists() else None
    plot_netadapt_history(pd.DataFrame(history), run.plot, proposals=proposals, latency_target=target)
    return {"spec": final["spec"], "accuracy": float(final["accuracy"])}


def _history_row(iteration: int, unit: str, old: int, new: int, spec: ArchSpec, latency_ms: float,
                 top1: float, cut_ms: float, step_ms: float, proposals: int) -> dict[str, Any]:
    return {"iteration": iteration, "unit": unit, "old_width": old, "width": new, "latency_ms": latency_ms,
            "cut_ms": cut_ms, "step_ms": step_ms, "accuracy": top1, "proposals": proposals, "spec": spec.to_string(),
            **layer_widths(spec)}


def _proposal_row(iteration: int, proposal: Proposal, result: JobResult, parent: Outcome,
                  selected: bool) -> dict[str, Any]:
    outcome = Outcome(proposal.latency_ms, result.accuracy)
    return {"iteration": iteration, "unit": proposal.unit.name, "old_width": proposal.old_width,
            "width": proposal.width, "latency_ms": proposal.latency_ms, "accuracy": result.accuracy,
            "loss": result.loss, "slope": slope(outcome, parent=parent) if result.error is None else float("nan"),
            "selected": selected, "error": result.error or ""}
