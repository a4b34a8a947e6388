"""Does a supernet rank architectures as stand-alone training does, and better than the 20-step proxy?

``--children`` random architectures of the space, spread evenly over its latency range (drawn
from a pool of ``--pool`` x as many, sorted by predicted ``--target`` latency at 224 px, taken at
evenly spaced ranks), are scored three ways:

* **stand-alone** (the ground truth): trained from scratch for ``--standalone-epochs`` epochs on
  the training split minus the held-out validation split, BatchNorm recalibrated, scored by
  top-1 on the **test** split, under each of ``--standalone-seeds`` (fresh weights and batch
  order); the seed-to-seed Spearman says how well this budget itself ranks;
* **proxy**: the search's stand-alone proxy (``nas.search.evaluate.evaluate_candidate``) at
  ``--proxy-steps`` SGD steps, scored on the validation split;
* **supernet**: a supernet per ``--rules`` entry trained for ``--supernet-epochs``, each child
  scored with inherited, BatchNorm-recalibrated weights on the validation split;
  ``--trained-supernets DIR ...`` scores supernets trained elsewhere (``python -m nas.supernet
  train``, other budgets or learning rates) the same way, when they were trained over the same
  space, data, resolution and held-out split (their settings and metrics are copied into ``--out``).

It prints the Spearman and Kendall (tau-b) correlation of each method with the stand-alone mean,
and each method's seconds per candidate, and writes ``results.csv``, ``summary.csv`` and
``ranking.png`` (each method's score against the stand-alone mean) to ``--out``. Every result is
cached under ``--out`` (one JSON per child and method, the supernets as resumable runs), so an
interrupted run picks up where it stopped; rerun the same command. Several processes may share
one ``--out`` (a lock file per result keeps them from computing it twice): ``--parts`` gives each
some of the work (say ``--parts standalone`` and ``--parts proxy supernet``), ``--from-end`` takes
the runs in reverse order. The report is printed once every result is cached (``--partial``: as
soon as the proxy and supernet scores are, into ``*_partial`` files, saying which stand-alone runs
it lacks).

    # smoke scale (synthetic, minutes on 2 cores):
    python experiments/benchmarks/supernet_ranking.py --children 4 --train-resolution 16 --synthetic-train 256 \\
        --synthetic-val 64 --standalone-epochs 1 --supernet-epochs 1 --proxy-steps 5 --out runs/ranking_smoke
    # full scale on real CIFAR-10 (tar -xf cifar10_jpg.tar -C /tmp/cifar):
    python experiments/benchmarks/supernet_ranking.py --data /tmp/cifar/cifar10_jpg --children 16 \\
        --standalone-epochs 10 --supernet-epochs 30 --rules uniform sandwich --out runs/ranking_cifar
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from nas import rundir
from nas.arch import ArchSpec
from nas.cli import run
from nas.errors import NasError
from nas.latency.calibrate import spearman
from nas.latency.predict import get_latency_model
from nas.model import build_model
from nas.search.evaluate import ProxySettings, evaluate_candidate
from nas.supernet.evaluator import SupernetEvaluator
from nas.supernet.sampling import RULES, random_child
from nas.supernet.training import (CHECKPOINT, METRICS, SETTINGS, SupernetSettings, epochs_trained, load_supernet,
                                   read_settings, train_supernet)
from nas.train.loop import evaluate
from nas.train.proxy import open_data, train
from search_spaces import SPACES, get_space


def kendall_tau(a: np.ndarray, b: np.ndarray) -> float:
    """Kendall's tau-b (ties counted as neither concordant nor discordant); NaN if a side is constant."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    i, j = np.triu_indices(len(a), k=1)
    sa, sb = np.sign(a[i] - a[j]), np.sign(b[i] - b[j])
    denominator = np.sqrt(np.count_nonzero(sa) * np.count_nonzero(sb))
    return float((sa * sb).sum() / denominator) if denominator > 0 else float("nan")


def spread_over_latency(latencies: np.ndarray, count: int) -> list[int]:
    """Indices of ``count`` entries at evenly spaced latency ranks (fastest and slowest included)."""
    order = np.argsort(latencies, kind="stable")
    return [int(order[k]) for k in np.linspace(0, len(order) - 1, count).round().astype(int)]


# Options that may change between reruns on one --out: they change no cached result.
_FREE = ("rules", "trained_supernets", "device", "threads", "out", "parts", "from_end", "partial")
# What a supernet trained elsewhere must share with this benchmark for its scores to be comparable.
_SAME_SPLIT = ("space", "data", "resolution", "val_fraction", "seed", "synthetic_train", "synthetic_val")
PARTS = ("standalone", "proxy", "supernet")


def plot_ranking(table: pd.DataFrame, methods: dict[str, str], summary: pd.DataFrame, path: Path) -> None:
    """One panel per method: its score (x) against the stand-alone mean top-1 (y), Spearman in the title."""
    from matplotlib.figure import Figure

    from nas.analysis.plots import PNG_METADATA

    fig = Figure(figsize=(4 * len(methods) + 1, 3.8), layout="constrained")
    truth, latency = 100 * table["standalone_mean"], table.columns[1]
    axes = fig.subplots(1, len(methods), squeeze=False)[0]
    for ax, (column, label), rho in zip(axes, methods.items(), summary["spearman"].iloc[-len(methods):]):
        points = ax.scatter(100 * table[column], truth, c=table[latency], cmap="viridis", s=28)
        ax.set(xlabel=f"{label} top-1 (%)", ylabel="stand-alone test top-1 (%)")
        ax.set_title(f"{label}\nSpearman {rho:.2f}", fontsize=10)
        ax.grid(alpha=0.3)
    fig.colorbar(points, ax=list(axes), label=latency.replace("latency_ms_", "latency (ms) on "))
    fig.savefig(path, dpi=100, metadata=PNG_METADATA)


def _claim(path: Path) -> bool:
    """Whether this process computes ``path`` now: no other live process holds its lock file."""
    lock = path.with_suffix(".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            with open(lock, "x") as file:
                file.write(str(os.getpid()))
            return True
        except FileExistsError:
            holder = lock.read_text().strip()
            try:
                os.kill(int(holder), 0)
                return False  # another process is computing it
            except (ValueError, ProcessLookupError):
                lock.unlink(missing_ok=True)  # left by a process that died: take it over
    return False


def _cached(path: Path, compute) -> dict | None:
    """The cached result, or ``compute()``'s (then cached), or None while another process computes it."""
    if path.is_file():
        return rundir.read_json(path, what="cached result", advice="delete it to compute it again")
    if not _claim(path):
        return None
    try:
        result = compute()
        rundir.write_json(path, result)
    finally:
        path.with_suffix(".lock").unlink(missing_ok=True)
    return result


def _standalone(spec: ArchSpec, settings: ProxySettings, seed: int) -> dict:
    data = open_data(settings)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(spec)
        start = time.perf_counter()
        stats = train(model, settings, steps=settings.step_count(len(data.train)), seed=seed)
        result = evaluate(model, data.loader("test", batch_size=256), device=settings.device)
    return {"top1": result.top1, "loss": result.loss, "train_loss": stats.loss, "seconds": time.perf_counter() - start}


def _check_trained(folder: Path, base: ProxySettings, space: str) -> SupernetSettings:
    """A supernet trained elsewhere, fully, on this benchmark's space, data and held-out split."""
    settings = read_settings(folder)
    ours = {**vars(base), "space": space}
    differs = next((key for key in _SAME_SPLIT if getattr(settings, key) != ours[key]), None)
    if differs is not None:
        raise NasError(f"--trained-supernets {folder}: trained with {differs} {getattr(settings, differs)!r}, this "
                       f"benchmark uses {ours[differs]!r}; its scores would not be comparable")
    trained = epochs_trained(folder)
    if trained < settings.epochs:
        raise NasError(f"--trained-supernets {folder}: trained for {trained} of its {settings.epochs} epochs; finish "
                       f"it with python -m nas.supernet train --resume --out {folder}")
    return settings


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", choices=SPACES, default="mobilenetv3-shared")
    p.add_argument("--data", default="synthetic", help="synthetic, an ImageFolder or CIFAR-10 directory")
    p.add_argument("--train-resolution", type=int, default=32, help="training and scoring image size (default 32)")
    p.add_argument("--synthetic-train", type=int, default=2000)
    p.add_argument("--synthetic-val", type=int, default=500)
    p.add_argument("--children", type=int, default=16, help="architectures to rank (default 16)")
    p.add_argument("--pool", type=int, default=20, help="draw pool x children, keep the latency spread (default 20)")
    p.add_argument("--arch-seed", type=int, default=7)
    p.add_argument("--target", default="pixel-cpu", help="latency model that spreads the children (default pixel-cpu)")
    p.add_argument("--standalone-epochs", type=float, default=10.0, help="ground-truth budget (default 10)")
    p.add_argument("--standalone-seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--proxy-steps", type=int, default=20, help="the search proxy's budget (default 20)")
    p.add_argument("--supernet-epochs", type=int, default=30)
    p.add_argument("--rules", nargs="*", choices=RULES, default=["sandwich"],
                   help="train a supernet per rule at --supernet-epochs and --lr (none: only --trained-supernets)")
    p.add_argument("--trained-supernets", nargs="+", type=Path, default=[], metavar="DIR",
                   help="also score these trained supernets (python -m nas.supernet train --out DIR), one column each")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--bn-batches", type=int, default=20)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS),
                   help="compute only these (default all); the report needs every part cached")
    p.add_argument("--from-end", action="store_true",
                   help="take the stand-alone and proxy runs in reverse order (a second process on one --out)")
    p.add_argument("--partial", action="store_true",
                   help="report before every stand-alone run is cached (each child's mean over its cached seeds; "
                        "seed vs seed over the children with all seeds) into *_partial.csv/png")
    p.add_argument("--out", type=Path, required=True, help="cache and results directory (rerun to resume)")
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.children < 3 or len(args.standalone_seeds) < 1:
        raise NasError("need at least 3 --children and one --standalone-seeds entry")
    torch.set_num_threads(args.threads)
    base = ProxySettings(data=args.data, resolution=args.train_resolution, synthetic_train=args.synthetic_train,
                         synthetic_val=args.synthetic_val, batch_size=args.batch_size, lr=args.lr,
                         bn_batches=args.bn_batches, device=args.device, seed=0)
    data = open_data(base)
    space = get_space(args.space, num_classes=data.num_classes)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    rundir.claim(out / "args.json", {k: str(v) for k, v in vars(args).items() if k not in _FREE},
                 advice="its results are for those settings; use another --out")

    rng = np.random.default_rng(args.arch_seed)
    pool = [random_child(space, rng) for _ in range(args.children * args.pool)]
    latency_model = get_latency_model(args.target)
    latencies = np.array([latency_model.predict(spec).ms for spec in pool])
    picked = spread_over_latency(latencies, args.children)
    children = [pool[k] for k in picked]
    table = pd.DataFrame({"arch": [spec.to_string() for spec in children],
                          f"latency_ms_{args.target}": latencies[picked]})

    standalone = replace(base, epochs=args.standalone_epochs)
    proxy = replace(base, steps=args.proxy_steps)
    jobs = [(f"standalone_seed{seed}", i, out / "standalone" / f"seed{seed}_child{i}.json", "standalone",
             lambda spec=spec, seed=seed: _standalone(spec, standalone, seed))
            for seed in args.standalone_seeds for i, spec in enumerate(children)]
    jobs += [("proxy", i, out / "proxy" / f"child{i}.json", "proxy",
              lambda spec=spec: evaluate_candidate(spec, proxy).to_dict()) for i, spec in enumerate(children)]
    columns: dict[str, list[dict | None]] = {column: [None] * len(children) for column, *_ in jobs}
    for column, i, path, part, compute in tqdm(jobs[::-1] if args.from_end else jobs, unit="run",
                                               desc="stand-alone and proxy training"):
        columns[column][i] = _cached(path, compute) if part in args.parts or path.is_file() else None

    supernet_seconds = {}
    for rule in args.rules:
        settings = SupernetSettings(space=args.space, data=args.data, resolution=args.train_resolution,
                                    synthetic_train=args.synthetic_train, synthetic_val=args.synthetic_val,
                                    batch_size=args.batch_size, lr=args.lr, bn_batches=args.bn_batches,
                                    device=args.device, epochs=args.supernet_epochs, rule=rule, seed=0)
        paths = [out / f"supernet_{rule}_scores" / f"child{i}.json" for i in range(len(children))]
        run_dir = out / f"supernet_{rule}"
        if all(path.is_file() for path in paths):  # every child scored: the report needs no checkpoint
            columns[f"supernet_{rule}"] = [rundir.read_json(path, what="cached score") for path in paths]
            supernet_seconds[rule] = float(pd.read_csv(run_dir / METRICS)["seconds"].sum())
            continue
        if "supernet" not in args.parts:
            columns[f"supernet_{rule}"] = [None]
            continue
        trained = train_supernet(settings, run_dir, resume=(run_dir / CHECKPOINT).exists())
        supernet_seconds[rule] = float(trained.history["seconds"].sum())
        evaluator = SupernetEvaluator(trained.supernet, settings)
        columns[f"supernet_{rule}"] = [_cached(path, lambda: vars(evaluator.evaluate(spec)))
                                       for path, spec in zip(paths, children)]

    trained_columns = {}
    for folder in args.trained_supernets:
        column = f"supernet_{folder.name}"
        if column in columns:
            raise NasError(f"--trained-supernets: two columns called {column!r}; the folders' names must differ")
        settings = _check_trained(folder, base, args.space)
        trained_columns[column] = settings
        paths = [out / f"{column}_scores" / f"child{i}.json" for i in range(len(children))]
        for name in (SETTINGS, METRICS):
            rundir.copy_file(folder / name, out / column / name)
        supernet_seconds[column] = float(pd.read_csv(folder / METRICS)["seconds"].sum())
        if all(path.is_file() for path in paths) or "supernet" not in args.parts:
            columns[column] = [rundir.read_json(path, what="cached score") if path.is_file() else None
                               for path in paths]
            continue
        evaluator = SupernetEvaluator(load_supernet(folder, device=args.device)[0], settings)
        columns[column] = [_cached(path, lambda: vars(evaluator.evaluate(spec))) for path, spec in zip(paths, children)]

    missing = [name for name, column in columns.items() if any(result is None for result in column)]
    partial = args.partial and bool(missing) and all(name.startswith("standalone_") for name in missing)
    if missing and not partial:
        print(f"cached under {out}; not cached yet: {', '.join(missing)} (computing in another process, or rerun "
              f"with those --parts; then without --parts for the report)")
        return 0

    def values(column: str, key: str) -> list[float]:
        return [float("nan") if result is None else result[key] for result in columns[column]]

    for seed in args.standalone_seeds:
        table[f"standalone_seed{seed}"] = values(f"standalone_seed{seed}", "top1")
        table[f"standalone_seconds_seed{seed}"] = values(f"standalone_seed{seed}", "seconds")
    table["proxy"], table["proxy_seconds"] = values("proxy", "accuracy"), values("proxy", "train_seconds")
    scored = [f"supernet_{rule}" for rule in args.rules] + list(trained_columns)
    for column in scored:
        table[column] = values(column, "accuracy")
        table[f"{column}_seconds"] = values(column, "seconds")

    seeds = [f"standalone_seed{s}" for s in args.standalone_seeds]
    table["standalone_mean"] = table[seeds].mean(axis=1, skipna=True)
    if table["standalone_mean"].isna().any():
        raise NasError("--partial needs at least one cached stand-alone result for every child")
    truth = table["standalone_mean"].to_numpy()
    suffix = "_partial" if partial else ""
    rundir.write_table(out / f"results{suffix}.csv", table)
    rows = []
    if len(seeds) > 1:
        both = table[seeds].notna().all(axis=1)
        pairs = [(table.loc[both, a], table.loc[both, b]) for k, a in enumerate(seeds) for b in seeds[k + 1:]]
        rows.append({"method": f"stand-alone seed vs seed ({args.standalone_epochs:g} epochs)",
                     "children": int(both.sum()), "spearman": np.mean([spearman(a, b) for a, b in pairs]),
                     "kendall": np.mean([kendall_tau(a, b) for a, b in pairs]),
                     "seconds_per_candidate": np.nanmean(table[[f"standalone_seconds_seed{s}"
                                                                 for s in args.standalone_seeds]].to_numpy())})
    rows.append({"method": f"proxy ({args.proxy_steps} steps)", "children": len(table),
                 "spearman": spearman(table["proxy"], truth), "kendall": kendall_tau(table["proxy"], truth),
                 "seconds_per_candidate": table["proxy_seconds"].mean()})
    labels = {f"supernet_{rule}": (f"supernet {rule}", f"{args.supernet_epochs} epochs, lr {args.lr:g}",
                                   supernet_seconds[rule]) for rule in args.rules}
    labels.update({column: (f"supernet {settings.rule}, {column.removeprefix('supernet_')}",
                            f"{settings.epochs} epochs, lr {settings.lr:g}", supernet_seconds[column])
                   for column, settings in trained_columns.items()})
    for column, (label, budget, seconds) in labels.items():
        rows.append({"method": f"{label} ({budget}, {seconds:.0f} s to train)", "children": len(table),
                     "spearman": spearman(table[column], truth), "kendall": kendall_tau(table[column], truth),
                     "seconds_per_candidate": table[f"{column}_seconds"].mean()})
    summary = pd.DataFrame(rows)
    rundir.write_table(out / f"summary{suffix}.csv", summary)
    methods = {"proxy": f"proxy ({args.proxy_steps} steps)",
               **{column: label for column, (label, *_) in labels.items()}}
    plot_ranking(table, methods, summary, out / f"ranking{suffix}.png")
    shown = ["latency_ms_" + args.target, *seeds, "proxy", *scored]
    print(table[shown].round(3).to_string())
    print(f"\n{args.space} on {args.data} at {args.train_resolution} px, {len(children)} children; "
          f"correlation with the stand-alone mean top-1 (test split)"
          + (f"; PARTIAL: not every stand-alone run is cached ({', '.join(missing)})" if partial else "") + ":")
    print(summary.round(3).to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
