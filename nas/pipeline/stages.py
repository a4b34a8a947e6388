"""The pipeline's stages, each in its own folder of the run directory, each skipped once finished.

A stage is finished when its ``done.json`` exists (written last, atomically); a stage killed
half-way is rerun and resumes through its own tool's resume (search study, NetAdapt history,
training checkpoint). What a stage hands on is a typed record (:class:`StageResult`), and
``done.json`` is that record's :meth:`~StageResult.to_row`.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Protocol, TypeVar

from tqdm import tqdm

from nas import rundir, zoo
from nas.arch import ArchSpec
from nas.errors import NasError
from nas.pipeline.config import Execution, PipelineConfig, with_shared
from nas.pipeline.edits import apply_edits
from nas.profile import profile

if TYPE_CHECKING:
    import torch

DONE = "done.json"
DEPLOY_CLASSES = 1000  # latency, params and MAdds are those of the ImageNet network, as in the paper


def deployed(spec: ArchSpec) -> ArchSpec:
    return replace(spec, head=replace(spec.head, num_classes=DEPLOY_CLASSES))


@dataclass(frozen=True)
class Facts:
    """Predicted latency, params and MAdds of a network as deployed."""

    latency_ms: float
    params: int
    madds: int

    def to_row(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Facts:
        return cls(latency_ms=float(row["latency_ms"]), params=int(row["params"]), madds=int(row["madds"]))


def describe(spec: ArchSpec, latency_model, resolution: int) -> Facts:
    """Params, MAdds and predicted latency of the network as deployed."""
    spec = deployed(spec)
    size = profile(spec, resolution)
    return Facts(latency_ms=float(latency_model.predict(spec, resolution).ms), params=int(size.params),
                 madds=int(size.madds))


class StageResult(Protocol):
    """What a finished stage hands on; ``done.json`` holds its ``to_row()``."""

    def to_row(self) -> dict[str, Any]: ...

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> StageResult: ...


@dataclass(frozen=True)
class SeedResult:
    """The search stage's network: the best trial's, or the fixed ``seed_arch``."""

    source: str
    spec: ArchSpec
    facts: Facts
    reward: float | None = None
    proxy_accuracy: float | None = None

    def to_row(self) -> dict[str, Any]:
        found = {"reward": self.reward, "proxy_accuracy": self.proxy_accuracy} if self.reward is not None else {}
        return {"source": self.source, "spec": self.spec.to_string(), **found, **self.facts.to_row()}

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> SeedResult:
        return cls(source=row["source"], spec=ArchSpec.from_string(row["spec"]), facts=Facts.from_row(row),
                   reward=row.get("reward"), proxy_accuracy=row.get("proxy_accuracy"))


@dataclass(frozen=True)
class EditStep:
    """One manual edit (``seed`` first) and the network it made."""

    edit: str
    spec: ArchSpec
    facts: Facts

    def to_row(self) -> dict[str, Any]:
        return {"edit": self.edit, **self.facts.to_row(), "spec": self.spec.to_string()}

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> EditStep:
        return cls(edit=row["edit"], spec=ArchSpec.from_string(row["spec"]), facts=Facts.from_row(row))


@dataclass(frozen=True)
class EditsResult:
    """Every manual edit in order; the last one's network goes on to NetAdapt."""

    steps: tuple[EditStep, ...]

    @property
    def spec(self) -> ArchSpec:
        return self.steps[-1].spec

    def to_row(self) -> dict[str, Any]:
        return {"steps": [step.to_row() for step in self.steps], "spec": self.spec.to_string()}

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> EditsResult:
        return cls(steps=tuple(EditStep.from_row(step) for step in row["steps"]))


@dataclass(frozen=True)
class AdaptedResult:
    """NetAdapt's network (as deployed) and whether it reached the reference's latency."""

    target_ms: float
    reached: bool
    iterations: int
    short_term_accuracy: float
    spec: ArchSpec
    facts: Facts

    def to_row(self) -> dict[str, Any]:
        return {"target_ms": self.target_ms, "reached": self.reached, "iterations": self.iterations,
                "short_term_accuracy": self.short_term_accuracy, "spec": self.spec.to_string(),
                **self.facts.to_row()}

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> AdaptedResult:
        return cls(target_ms=float(row["target_ms"]), reached=bool(row["reached"]), iterations=int(row["iterations"]),
                   short_term_accuracy=float(row["short_term_accuracy"]), spec=ArchSpec.from_string(row["spec"]),
                   facts=Facts.from_row(row))


@dataclass(frozen=True)
class TrainedResult:
    """One final training: its budget and final metrics (``top1``, ``test_top1``...)."""

    epochs: int
    recipe: str
    final: dict[str, float]

    def to_row(self) -> dict[str, Any]:
        return {"epochs": self.epochs, "recipe": self.recipe, **self.final}

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> TrainedResult:
        final = {k: float(v) for k, v in row.items() if k not in ("epochs", "recipe")}
        return cls(epochs=int(row["epochs"]), recipe=row["recipe"], final=final)


R = TypeVar("R", SeedResult, EditsResult, AdaptedResult, TrainedResult)


def read_done(folder: Path, kind: type[R]) -> R | None:
    """The record of a stage finished earlier in ``folder``, or None."""
    path = folder / DONE
    if not path.exists():
        return None
    row = rundir.read_json(path, what="stage record", advice="delete it to rerun the stage")
    try:
        return kind.from_row(row)
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise NasError(f"{path}: corrupt stage record ({type(err).__name__}: {err}); delete it to rerun the stage") \
            from None


def write_done(folder: Path, result: R) -> R:
    rundir.write_json(folder / DONE, result.to_row())
    return result


def say(message: str) -> None:
    tqdm.write(message, file=sys.stderr)


def run_search_stage(config: PipelineConfig, folder: Path, latency_model, execution: Execution) -> SeedResult:
    """The seed: the best architecture of a platform-aware search, or the fixed ``seed_arch``."""
    stage = config.search
    folder.mkdir(parents=True, exist_ok=True)
    if stage.seed_arch is not None:
        spec = zoo.get(stage.seed_arch)
        say(f"search: fixed seed {stage.seed_arch} (search skipped by config)")
        return write_done(folder, SeedResult(source=stage.seed_arch, spec=spec,
                                             facts=describe(spec, latency_model, config.latency_resolution)))
    from nas.search.objectives import Objective
    from nas.search.runner import SearchConfig, run_search

    base = Objective.preset(stage.reward, target_ms=stage.target_ms)
    proxy = with_shared(config, stage.proxy, device=execution.device)
    search = SearchConfig(out=folder, objective=base, target=config.target, space=stage.space,
                          controller=stage.controller, trials=stage.trials, workers=stage.workers, proxy=proxy,
                          seed=config.seed, ray_address=execution.ray_address,
                          evaluator=stage.evaluator_settings())
    say(f"search: {stage.trials} trials in the {stage.space} space, T = {stage.target_ms} ms, "
        f"w = {base.alpha} ({stage.controller}, evaluator {stage.evaluator})")
    summary = run_search(search, latency_model=latency_model)
    if not summary.complete:
        raise NasError(f"search stopped after {summary.finished}/{summary.requested} trials; rerun to resume")
    best = summary.best
    if best is None:
        raise NasError(f"search: no trial of {summary.finished} finished successfully; see {folder / 'trials.csv'}")
    return write_done(folder, SeedResult(source=f"search trial {best.trial_id}", spec=best.arch,
                                         facts=describe(best.arch, latency_model, config.latency_resolution),
                                         reward=best.reward, proxy_accuracy=best.accuracy))


def run_edits_stage(config: PipelineConfig, folder: Path, seed: ArchSpec, latency_model) -> EditsResult:
    """Apply the manual edits in order, recording each spec with its latency, params and MAdds."""
    steps = []
    for name, spec in apply_edits(seed, config.manual_edits):
        steps.append(EditStep(edit=name, spec=spec, facts=describe(spec, latency_model, config.latency_resolution)))
        say(f"edit {name}: {steps[-1].facts.latency_ms:.2f} ms")
    result = EditsResult(steps=tuple(steps))
    rundir.write_text(folder / "edited.json", result.spec.to_json(indent=2))
    return write_done(folder, result)


def run_netadapt_stage(config: PipelineConfig, folder: Path, seed: ArchSpec, latency_model,
                       execution: Execution) -> AdaptedResult:
    """Shrink the edited network to the reference network's predicted latency on the same target."""
    from nas.netadapt.loop import LatencyTarget, TargetUnreachable, netadapt
    from nas.train.proxy import open_data

    stage = config.netadapt
    target_ms = describe(zoo.get(config.reference), latency_model, config.latency_resolution).latency_ms
    training = with_shared(config, stage.training, device=execution.device)
    settings = with_shared(config, stage.settings)
    classes = open_data(training).num_classes
    seed = replace(seed, head=replace(seed.head, num_classes=classes))
    resolution = config.latency_resolution
    say(f"netadapt: to {target_ms:.2f} ms ({config.reference} on {config.target})")
    seed_state = supernet_seed_state(config, folder.parent, seed, device=execution.device)
    try:
        result = netadapt(seed, target=LatencyTarget(ms=target_ms),
                          latency=lambda spec: latency_model.predict(deployed(spec), resolution).ms,
                          training=training, settings=settings, out=folder, seed_state=seed_state,
                          workers=stage.workers, ray_address=execution.ray_address,
                          identity={"target": config.target, "resolution": resolution,
                                    "latency_classes": DEPLOY_CLASSES,
                                    "seed_weights": "supernet" if seed_state is not None else "pretrained"})
    except TargetUnreachable as err:
        say(f"netadapt: {err}")
        result = err.result
    finally:
        if "ray" in sys.modules and sys.modules["ray"].is_initialized():
            sys.modules["ray"].shutdown()
    return write_done(folder, AdaptedResult(target_ms=target_ms, reached=result.reached,
                                            iterations=len(result.history) - 1,
                                            short_term_accuracy=result.history[-1].accuracy,
                                            spec=deployed(result.spec),
                                            facts=describe(result.spec, latency_model, resolution)))


def supernet_seed_state(config: PipelineConfig, out: Path, seed: ArchSpec, *,
                        device: str = "cpu") -> dict[str, torch.Tensor] | None:
    """NetAdapt's starting weights when the search scored with a supernet: the seed's slice of it,
    BatchNorm recalibrated, as the search scored it (instead of ``pretrain_steps`` from scratch).

    None (NetAdapt pretrains the seed, and says why) when the search trained candidates, the seed is
    a fixed ``seed_arch``, or the manual edits made the seed something the supernet cannot run.
    """
    from nas.supernet.evaluator import SupernetEvaluator

    search = config.search
    if search.evaluator != "supernet" or search.seed_arch is not None:
        return None
    folder = search.evaluator_settings().supernet_folder(out / "search")
    evaluator = SupernetEvaluator.load(folder, device=device)
    reason = evaluator.why_not(seed)
    if reason is not None:
        say(f"netadapt: the edited seed is not a child of the supernet ({reason}); it is pretrained instead")
        return None
    say(f"netadapt: the seed starts from its weights in the supernet ({folder.name}), BatchNorm recalibrated")
    return {name: tensor.cpu() for name, tensor in evaluator.child(seed).state_dict().items()}


def training_runs(config: PipelineConfig) -> list[tuple[int, str]]:
    """(seed, folder under ``train/<network>/``) of each final training of one network."""
    if config.train.seeds is None:
        return [(config.seed, "")]
    return [(seed, f"seed{seed}") for seed in config.train.seeds]


def run_train_stage(config: PipelineConfig, folder: Path, spec: ArchSpec, execution: Execution,
                    seed: int) -> TrainedResult:
    """Train one network from scratch with the stage's recipe (the same for found and reference)."""
    from nas.train.recipes import get_recipe
    from nas.train.trainer import CHECKPOINT, TrainConfig, fit

    stage = config.train
    recipe = get_recipe(stage.recipe).with_overrides(**stage.recipe_overrides)
    train = TrainConfig(arch=spec, recipe=recipe, data=config.data, out=folder,
                        epochs=stage.epochs, batch_size=stage.batch_size, resolution=stage.resolution,
                        seed=seed, synthetic_train=config.synthetic_train,
                        synthetic_val=config.synthetic_val)
    result = fit(train, resume=(folder / CHECKPOINT).exists(), device=execution.device)
    return write_done(folder, TrainedResult(epochs=stage.epochs, recipe=recipe.name, final=result.final))
