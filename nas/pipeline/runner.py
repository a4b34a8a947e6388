"""Run a pipeline config's stages in order into one directory, then write the comparison report.

::

    OUT/config.json              the effective config (after --quick and --data)
    OUT/search/                  the search run (or the fixed seed), done.json names the seed
    OUT/manual_edits/            edited.json and done.json (every edit with its latency)
    OUT/netadapt/                the NetAdapt run directory
    OUT/train/found/, OUT/train/<reference>/   two training runs with the same budget
    OUT/report.md, comparison.png, layers.png
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import pandas as pd

from nas import zoo
from nas.arch import ArchSpec
from nas.errors import NasError
from nas.pipeline.config import Execution, PipelineConfig
from nas.pipeline.report import write_report
from nas.pipeline.stages import (
    deployed, describe, read_done, run_edits_stage, run_netadapt_stage, run_search_stage, run_train_stage, say,
)


def _claim(config: PipelineConfig, out: Path) -> None:
    """A rerun into ``out`` must use the config that started it (its finished stages are reused)."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "config.json"
    current = json.loads(json.dumps(asdict(config)))
    if not path.exists():
        path.write_text(json.dumps(current, indent=2) + "\n")
        return
    saved = json.loads(path.read_text())
    for key in current:
        if saved.get(key) != current[key]:
            raise NasError(f"{out} holds a pipeline run with another '{key}' setting; rerun with the same config "
                           "and options, or use another --out")


def _stage(folder: Path, run, *args):
    done = read_done(folder)
    if done is not None:
        say(f"{folder.name}: finished earlier, skipped")
        return done
    return run(*args)


def run_pipeline(config: PipelineConfig, out: Path, execution: Execution | None = None) -> Path:
    """Run (or resume) every stage; returns the report's path."""
    from nas.latency.predict import get_latency_model

    execution = execution or Execution()
    out = Path(out)
    _claim(config, out)
    latency_model = get_latency_model(config.target)
    searched = _stage(out / "search", run_search_stage, config, out / "search", latency_model, execution)
    seed = ArchSpec.from_string(searched["spec"])
    edited = _stage(out / "manual_edits", run_edits_stage, config, out / "manual_edits", seed, latency_model)
    adapted = _stage(out / "netadapt", run_netadapt_stage, config, out / "netadapt",
                     ArchSpec.from_string(edited["spec"]), latency_model, execution)
    found = ArchSpec.from_string(adapted["spec"])
    reference = zoo.get(config.reference)
    trained = {}
    for name, spec in (("found", found), (config.reference, reference)):
        folder = out / "train" / name
        say(f"train {name}: {config.train.epochs} epochs ({config.train.recipe})")
        trained[name] = _stage(folder, run_train_stage, config, folder, spec, execution)

    rows = []
    for name, spec in (("found", found), (config.reference, reference)):
        facts = describe(spec, latency_model, config.latency_resolution)
        rows.append({"network": name, "latency_ms": facts["latency_ms"], "params_M": facts["params"] / 1e6,
                     "madds_M": facts["madds"] / 1e6, "val_top1": trained[name].get("top1", float("nan")),
                     "test_top1": trained[name].get("test_top1", float("nan"))})
    summary = pd.DataFrame(rows)
    summary.to_csv(out / "summary.csv", index=False)
    edits = pd.DataFrame(edited["steps"])[["edit", "latency_ms", "params", "madds"]]
    path = write_report(out, name=config.name, target=config.target, reference_name=config.reference,
                        found=deployed(found), reference=reference, summary=summary, edits=edits,
                        seed_source=f"{searched['source']}: {searched['latency_ms']:.2f} ms, "
                                    f"`{searched['spec']}`",
                        netadapt=adapted, train_note=train_note(config))
    print(summary.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"report: {path}")
    return path


def train_note(config: PipelineConfig) -> str:
    """The training budget as the report states it; the data by its folder name, not this machine's path."""
    train = config.train
    return (f"recipe {train.recipe}, {train.epochs} epochs, batch {train.batch_size}, {train.resolution} px, "
            f"data {Path(config.data).name}")


def with_data(config: PipelineConfig, data: str | None) -> PipelineConfig:
    return config if data is None else replace(config, data=data)
