"""Run a pipeline config's stages in order into one directory, then write the comparison report.

::

    OUT/config.json              the effective config (after --quick and --data)
    OUT/search/                  the search run (or the fixed seed), done.json names the seed
    OUT/manual_edits/            edited.json and done.json (every edit with its latency)
    OUT/netadapt/                the NetAdapt run directory
    OUT/train/found/, OUT/train/<reference>/   the training runs, one budget (seed<k>/ per train.seeds entry)
    OUT/report.md, comparison.png, layers.png, learning_curves.png
"""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd

from nas import rundir, zoo
from nas.pipeline.config import Execution, PipelineConfig
from nas.pipeline.report import write_run_report
from nas.pipeline.stages import (
    R, AdaptedResult, EditsResult, Facts, SeedResult, TrainedResult, describe, read_done, run_edits_stage,
    run_netadapt_stage, run_search_stage, run_train_stage, say, training_runs,
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
    networks = {"found": found, config.reference: reference}
    runs = training_runs(config)
    trained: dict[str, dict[int, TrainedResult]] = {name: {} for name in networks}
    for seed, sub in runs:  # seed by seed, so an interrupted run already holds comparable pairs
        for name, spec in networks.items():
            folder = out / "train" / name / sub
            say(f"train {name}{f' ({sub})' if sub else ''}: {config.train.epochs} epochs ({config.train.recipe})")
            trained[name][seed] = _stage(folder, TrainedResult, run_train_stage, config, folder, spec, execution,
                                         seed)
    facts = {name: describe(spec, latency_model, config.latency_resolution) for name, spec in networks.items()}
    summary = summarize(facts, trained, per_seed=config.train.seeds is not None)
    rundir.write_table(out / "summary.csv", summary)
    path = write_run_report(config, out)
    print(summary.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"report: {path}")
    return path


def summarize(facts: dict[str, Facts], trained: dict[str, dict[int, TrainedResult]], *,
              per_seed: bool) -> pd.DataFrame:
    """One row per network: its size and latency, and its top-1 averaged over the training seeds
    (``per_seed`` adds each seed's test top-1 and the spread)."""
    rows = []
    for name, runs in trained.items():
        val = [run.final.get("top1", float("nan")) for run in runs.values()]
        test = [run.final.get("test_top1", float("nan")) for run in runs.values()]
        row = {"network": name, "latency_ms": facts[name].latency_ms, "params_M": facts[name].params / 1e6,
               "madds_M": facts[name].madds / 1e6, "val_top1": float(np.mean(val)), "test_top1": float(np.mean(test))}
        if per_seed:
            row.update({f"test_top1_seed{seed}": value for seed, value in zip(runs, test)})
            row["test_top1_spread"] = float(np.max(test) - np.min(test))
        rows.append(row)
    return pd.DataFrame(rows)


def with_data(config: PipelineConfig, data: str | None) -> PipelineConfig:
    return config if data is None else replace(config, data=data)
