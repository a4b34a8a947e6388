"""Short-term fine-tuning of proposals: in this process, on a local Ray, or on a Ray cluster.

A :class:`Job` names files: the parent checkpoint and the result file. This process reads the
parent once and, on Ray, ships its weights to the workers through the object store; each worker
builds the child with inherited weights, fine-tunes it, evaluates it on the held-out split and
returns the child's weights, which this process writes (atomically) as each one arrives. Workers
thus need no shared filesystem, and a run killed mid-iteration keeps every proposal that had
finished.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from nas import rundir
from nas.arch import ArchSpec
from nas.cluster import start_ray
from nas.errors import NasError
from nas.model import build_model
from nas.netadapt.inherit import inherit_state
from nas.train.loop import DivergedError
from nas.train.proxy import ProxyTraining, score, train


@dataclass(frozen=True)
class Job:
    """Fine-tune ``spec`` for ``steps`` starting from the weights it inherits from ``parent``."""

    name: str
    spec: ArchSpec
    parent: Path  # a checkpoint written by :func:`save_checkpoint`
    result: Path
    steps: int
    seed: int


@dataclass(frozen=True)
class JobResult:
    """``accuracy`` is held-out top-1; ``error`` says why a proposal has none (it diverged)."""

    name: str
    accuracy: float
    loss: float
    path: Path
    error: str | None = None


def save_checkpoint(path: Path, spec: ArchSpec, state: dict[str, torch.Tensor], **extra: Any) -> None:
    """Write ``{"spec": json, "state_dict": ..., **extra}`` atomically (a kill leaves the old file or none)."""
    rundir.write_torch(path, {"spec": spec.to_json(), "state_dict": {k: v.detach().cpu() for k, v in state.items()},
                              **extra})


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint written by :func:`save_checkpoint`, with ``spec`` decoded."""
    data = rundir.read_checkpoint(path)
    if not isinstance(data, dict) or "spec" not in data or "state_dict" not in data:
        raise NasError(f"{path}: not a NetAdapt checkpoint (needs 'spec' and 'state_dict')")
    return {**data, "spec": ArchSpec.from_json(data["spec"])}


def fine_tune(job: Job, config: ProxyTraining, parent: dict[str, Any]) -> tuple[JobResult, dict | None]:
    """Inherit from ``parent`` (a loaded checkpoint), fine-tune and evaluate, in memory.

    Returns the result and the child's weights (None if it diverged); nothing is read or written,
    so this runs on any Ray node, shared filesystem or not.
    """
    torch.set_num_threads(1)
    child = build_model(job.spec)  # the parent's weights are sliced as they are: no parent network is built
    child.load_state_dict(inherit_state(parent["spec"], parent["state_dict"], job.spec, child.state_dict()))
    try:
        if job.steps > 0:
            train(child, config, steps=job.steps, seed=job.seed)
    except DivergedError as err:
        return JobResult(job.name, float("nan"), float("nan"), job.result, error=str(err)), None
    top1, loss = score(child, config)
    return JobResult(job.name, top1, loss, job.result), {k: v.detach().cpu() for k, v in child.state_dict().items()}


def _save(job: Job, result: JobResult, state: dict | None) -> JobResult:
    if state is not None:
        save_checkpoint(job.result, job.spec, state, accuracy=result.accuracy, loss=result.loss)
    return result


def run_job(job: Job, config: ProxyTraining) -> JobResult:
    """Inherit, fine-tune, evaluate and save one proposal, in this process."""
    return _save(job, *fine_tune(job, config, load_checkpoint(job.parent)))


def run_jobs(jobs: list[Job], config: ProxyTraining, *, workers: int = 1, ray_address: str | None = None,
             progress: bool = True) -> list[JobResult]:
    """Run every job, in order of ``jobs``; a failed worker raises :class:`NasError` naming the job.

    ``workers > 1`` fine-tunes on a local Ray of that many CPUs; ``ray_address`` on that cluster
    (each result is saved here as it arrives, so a kill keeps every finished proposal).
    """
    if workers < 1:
        raise NasError(f"workers must be at least 1, got {workers}")
    bar = tqdm(total=len(jobs), desc="fine-tune proposals", unit="proposal", disable=not progress, leave=False)
    with bar:
        if ray_address is None and (workers == 1 or len(jobs) <= 1):
            results = []
            for job in jobs:
                results.append(run_job(job, config))
                bar.update()
            return results
        return _run_on_ray(jobs, config, workers=workers, address=ray_address, bar=bar)


def _run_on_ray(jobs: list[Job], config: ProxyTraining, *, workers: int, address: str | None,
                bar: tqdm) -> list[JobResult]:
    import ray

    start_ray(workers, address)
    on_gpu = config.device.startswith("cuda")
    gpus = (1 if address else 1 / workers) if on_gpu else 0
    task = ray.remote(num_cpus=1, num_gpus=gpus, max_retries=0)(fine_tune)
    parents = {path: ray.put(load_checkpoint(path)) for path in {job.parent for job in jobs}}
    pending = {task.remote(job, config, parents[job.parent]): i for i, job in enumerate(jobs)}
    results: list[JobResult | None] = [None] * len(jobs)
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            index = pending.pop(done[0])
            try:
                outcome = ray.get(done[0])
            except ray.exceptions.RayError as err:
                raise NasError(f"proposal {jobs[index].name}: fine-tuning worker failed: "
                               f"{_cause(err)}") from None
            results[index] = _save(jobs[index], *outcome)
            bar.update()
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)
    return [result for result in results if result is not None]


def _cause(err: Exception) -> str:
    cause = getattr(err, "cause", None)
    text = str(cause if cause is not None else err).strip().splitlines()
    return text[-1] if text else type(err).__name__
