"""Run a pipeline config's stages in order into one directory, then write the comparison report.

::

    OUT/config.json              the effective config (after --quick and --data)
    OUT/search/                  the search run (or the fixed seed), done.json names the seed
    OUT/manual_edits/            edited.json and done.json (every edit with its latency)
    OUT/netadapt/                the NetAdapt run directory
    OUT/train/found/, OUT/train/<reference>/   two training runs with the same budget
    OUT/report.md, comparison.png, layers.png, learning_curves.png
"""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

import pandas as pd

from nas import rundir, zoo
from nas.pipeline.config import Execution, PipelineConfig
from nas.pipeline.report import write_run_report
from nas.pipeline.stages import (
    R, AdaptedResult, EditsResult, SeedResult, TrainedResult, describe, read_done, run_edits_stage,
    run_netadapt_stage, run_search_stage, run_train_stage, say,
)


def _stage(folder: Path, kind: type[R], run, *args) -> R:
    done = read_done(folder, kind)
    if done is not None:
        say(f"{folder.name}: finished earlier, skipped")
        return done
    return run(*args)


def run_pipeline(config: PipelineConfig, out: Path, execution: Execution | None = None) -> Path:
    """Run (or resume) every stage; returns the report's path."""
    from nas.latency.predict import get_latency_model

    execution = execution or Execution()
    out = Path(out)
    # a rerun into ``out`` must use the config that started it (its finished stages are reused)
    rundir.claim(out / "config.json", asdict(config),
                 advice="rerun with the same config and options, or use another --out")
    latency_model = get_latency_model(config.target)
    searched = _stage(out / "search", SeedResult, run_search_stage, config, out / "search", latency_model,
                      execution)
    edited = _stage(out / "manual_edits", EditsResult, run_edits_stage, config, out / "manual_edits", searched.spec,
                    latency_model)
    adapted = _stage(out / "netadapt", AdaptedResult, run_netadapt_stage, config, out / "netadapt", edited.spec,
                     latency_model, execution)
    found = adapted.spec
    reference = zoo.get(config.reference)
    trained = {}
    for name, spec in (("found", found), (config.reference, reference)):
        folder = out / "train" / name
        say(f"train {name}: {config.train.epochs} epochs ({config.train.recipe})")
        trained[name] = _stage(folder, TrainedResult, run_train_stage, config, folder, spec, execution)

    rows = []
    for name, spec in (("found", found), (config.reference, reference)):
        facts = describe(spec, latency_model, config.latency_resolution)
        rows.append({"network": name, "latency_ms": facts.latency_ms, "params_M": facts.params / 1e6,
                     "madds_M": facts.madds / 1e6, "val_top1": trained[name].final.get("top1", float("nan")),
                     "test_top1": trained[name].final.get("test_top1", float("nan"))})
    summary = pd.DataFrame(rows)
    rundir.write_table(out / "summary.csv", summary)
    path = write_run_report(config, out)
    print(summary.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"report: {path}")
    return path


def with_data(config: PipelineConfig, data: str | None) -> PipelineConfig:
    return config if data is None else replace(config, data=data)
