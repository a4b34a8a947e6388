"""The pipeline's stages, each in its own folder of the run directory, each skipped once finished.

A stage is finished when its ``done.json`` exists (written last, atomically); a stage killed
half-way is rerun and resumes through its own tool's resume (search study, NetAdapt history,
training checkpoint).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

from nas import zoo
from nas.arch import ArchSpec
from nas.errors import NasError
from nas.pipeline.config import Execution, PipelineConfig
from nas.pipeline.edits import apply_edits
from nas.profile import profile

DONE = "done.json"
DEPLOY_CLASSES = 1000  # latency, params and MAdds are those of the ImageNet network, as in the paper


def deployed(spec: ArchSpec) -> ArchSpec:
    return replace(spec, head=replace(spec.head, num_classes=DEPLOY_CLASSES))


def read_done(folder: Path) -> dict[str, Any] | None:
    path = folder / DONE
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise NasError(f"{path}: corrupt ({err}); delete it to rerun the stage") from None


def write_done(folder: Path, record: dict[str, Any]) -> dict[str, Any]:
    tmp = folder / (DONE + ".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, folder / DONE)
    return record


def say(message: str) -> None:
    tqdm.write(message, file=sys.stderr)


def describe(spec: ArchSpec, latency_model, resolution: int) -> dict[str, Any]:
    """Params, MAdds and predicted latency of the network as deployed."""
    spec = deployed(spec)
    size = profile(spec, resolution)
    return {"latency_ms": float(latency_model.predict(spec, resolution).ms), "params": int(size.params),
            "madds": int(size.madds)}


def run_search_stage(config: PipelineConfig, folder: Path, latency_model, execution: Execution) -> dict[str, Any]:
    """The seed: the best architecture of a platform-aware search, or the fixed ``seed_arch``."""
    stage = config.search
    folder.mkdir(parents=True, exist_ok=True)
    if stage.seed_arch is not None:
        spec = zoo.get(stage.seed_arch)
        say(f"search: fixed seed {stage.seed_arch} (search skipped by config)")
        return write_done(folder, {"source": stage.seed_arch, "spec": spec.to_string(),
                                   **describe(spec, latency_model, config.latency_resolution)})
    from nas.search.objectives import Objective
    from nas.search.runner import SearchConfig, run_search

    base = Objective.preset(stage.reward, target_ms=stage.target_ms)
    proxy = replace(stage.proxy, data=config.data, seed=config.seed, synthetic_train=config.synthetic_train,
                    synthetic_val=config.synthetic_val, deploy_resolution=config.latency_resolution,
                    device=execution.device)
    search = SearchConfig(out=folder, objective=base, target=config.target, space=stage.space,
                          controller=stage.controller, trials=stage.trials, workers=stage.workers, proxy=proxy,
                          seed=config.seed, ray_address=execution.ray_address)
    say(f"search: {stage.trials} trials in the {stage.space} space, T = {stage.target_ms} ms, "
        f"w = {base.alpha} ({stage.controller})")
    summary = run_search(search, latency_model=latency_model)
    if not summary.complete:
        raise NasError(f"search stopped after {summary.finished}/{summary.requested} trials; rerun to resume")
    if summary.best is None:
        raise NasError(f"search: no trial of {summary.finished} finished successfully; see {folder / 'trials.csv'}")
    spec = ArchSpec.from_dict(summary.best["spec"])
    return write_done(folder, {"source": f"search trial {summary.best['trial_id']}", "spec": spec.to_string(),
                               "reward": summary.best["reward"], "proxy_accuracy": summary.best["accuracy"],
                               **describe(spec, latency_model, config.latency_resolution)})


def run_edits_stage(config: PipelineConfig, folder: Path, seed: ArchSpec, latency_model) -> dict[str, Any]:
    """Apply the manual edits in order, recording each spec with its latency, params and MAdds."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, spec in apply_edits(seed, config.manual_edits):
        rows.append({"edit": name, **describe(spec, latency_model, config.latency_resolution),
                     "spec": spec.to_string()})
        say(f"edit {name}: {rows[-1]['latency_ms']:.2f} ms")
    (folder / "edited.json").write_text(ArchSpec.from_string(rows[-1]["spec"]).to_json(indent=2))
    return write_done(folder, {"steps": rows, "spec": rows[-1]["spec"]})


def run_netadapt_stage(config: PipelineConfig, folder: Path, seed: ArchSpec, latency_model,
                       execution: Execution) -> dict[str, Any]:
    """Shrink the edited network to the reference network's predicted latency on the same target."""
    from nas.netadapt.loop import Settings, TargetUnreachable, netadapt
    from nas.train.proxy import ProxyTraining, open_data

    stage = config.netadapt
    target_ms = describe(zoo.get(config.reference), latency_model, config.latency_resolution)["latency_ms"]
    training = ProxyTraining(data=config.data, resolution=stage.resolution, seed=config.seed,
                             synthetic_train=config.synthetic_train, synthetic_val=config.synthetic_val,
                             batch_size=stage.batch_size, lr=stage.lr, bn_batches=stage.bn_batches,
                             device=execution.device)
    classes = open_data(training).num_classes
    seed = replace(seed, head=replace(seed.head, num_classes=classes))
    settings = Settings(target_ms=target_ms, delta_ratio=stage.delta_ratio, delta_decay=stage.delta_decay,
                        short_term_steps=stage.short_term_steps, long_term_steps=stage.long_term_steps,
                        pretrain_steps=stage.pretrain_steps, selection=stage.selection,
                        max_proposals=stage.max_proposals, seed=config.seed)
    resolution = config.latency_resolution
    say(f"netadapt: to {target_ms:.2f} ms ({config.reference} on {config.target})")
    reached = True
    try:
        result = netadapt(seed, latency=lambda spec: latency_model.predict(deployed(spec), resolution).ms,
                          training=training, settings=settings, out=folder, workers=stage.workers,
                          ray_address=execution.ray_address,
                          identity={"target": config.target, "resolution": resolution,
                                    "latency_classes": DEPLOY_CLASSES})
        spec, accuracy, iterations = result.spec, result.accuracy, len(result.history) - 1
    except TargetUnreachable as err:
        say(f"netadapt: {err}")
        reached = False
        final = json.loads((folder / "final_spec.json").read_text())
        history = pd.read_csv(folder / "history.csv")
        spec, accuracy, iterations = ArchSpec.from_dict(final), float(history["accuracy"].iloc[-1]), len(history) - 1
    finally:
        if "ray" in sys.modules and sys.modules["ray"].is_initialized():
            sys.modules["ray"].shutdown()
    return write_done(folder, {"target_ms": target_ms, "reached": reached, "iterations": iterations,
                               "short_term_accuracy": accuracy, "spec": deployed(spec).to_string(),
                               **describe(spec, latency_model, resolution)})


def run_train_stage(config: PipelineConfig, folder: Path, spec: ArchSpec, execution: Execution) -> dict[str, Any]:
    """Train one network from scratch with the stage's recipe (the same for found and reference)."""
    from nas.train.recipes import get_recipe
    from nas.train.trainer import CHECKPOINT, TrainConfig, fit

    stage = config.train
    recipe = get_recipe(stage.recipe).with_overrides(**stage.recipe_overrides)
    train = TrainConfig(arch=spec, recipe=recipe, data=config.data, out=folder,
                        epochs=stage.epochs, batch_size=stage.batch_size, resolution=stage.resolution,
                        seed=config.seed, synthetic_train=config.synthetic_train,
                        synthetic_val=config.synthetic_val)
    result = fit(train, resume=(folder / CHECKPOINT).exists(), device=execution.device)
    return write_done(folder, {"epochs": stage.epochs, "recipe": recipe.name, **result.final})
