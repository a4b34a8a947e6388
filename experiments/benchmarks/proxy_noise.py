"""How well does a proxy budget rank architectures? Seed noise against architecture signal.

A search can only be as good as its proxy's ranking. This trains ``--archs`` random architectures
of the space under each of ``--seeds`` proxy seeds (fresh weights, data order and validation
split) at the given budget and splits the spread of their held-out top-1:

* ``within``: the standard deviation of one architecture's accuracy across seeds (noise);
* ``between``: the standard deviation of the architectures' true (seed-mean) accuracies, with
  the noise's share of the spread of the means removed (signal);
* ``signal/noise``: between² / within²; below 1, one evaluation says less about an architecture
  than its luck does, and a search's best-of-N is mostly its luckiest draw;
* ``seed-to-seed Spearman``: the mean rank correlation of the architectures between two seeds.

The defaults are the proxy of the ``search_efficiency.py`` runs in the README (its ``PROXY`` at
16 px and 20 steps: batch 32, 1000 training and 250 validation images of the synthetic task), so
its figures say how noisy that benchmark is.

    python experiments/benchmarks/proxy_noise.py                       # about 3 min on 2 cores
    python experiments/benchmarks/proxy_noise.py --steps 40 --val 1000 --out runs/proxy_noise
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from nas.cli import run
from nas.errors import NasError
from nas.search.evaluate import evaluate_candidate
from search_efficiency import PROXY
from search_spaces import get_space


def seed_noise(accuracy: np.ndarray) -> dict[str, float]:
    """Noise and signal of an (architectures x seeds) accuracy matrix (one-way random effects)."""
    if accuracy.ndim != 2 or accuracy.shape[0] < 2 or accuracy.shape[1] < 2:
        raise NasError(f"need at least 2 architectures x 2 seeds, got shape {accuracy.shape}")
    seeds = accuracy.shape[1]
    within = accuracy.var(axis=1, ddof=1).mean()
    between = max(accuracy.mean(axis=1).var(ddof=1) - within / seeds, 0.0)
    ranks = pd.DataFrame(accuracy).rank()
    pairs = [ranks[a].corr(ranks[b]) for a in range(seeds) for b in range(a + 1, seeds)]
    return {"within_sd": float(np.sqrt(within)), "between_sd": float(np.sqrt(between)),
            "signal_to_noise": float(between / within) if within > 0 else float("inf"),
            "seed_to_seed_spearman": float(np.mean(pairs))}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", default="mnasnet")
    p.add_argument("--archs", type=int, default=8, help="random architectures of the space (default 8)")
    p.add_argument("--arch-seed", type=int, default=7, help="draws the architectures (default 7)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="proxy seeds (default 0 1 2)")
    p.add_argument("--steps", type=int, default=20, help="SGD steps per candidate (default 20)")
    p.add_argument("--train-resolution", type=int, default=16, help="proxy training image size (default 16)")
    p.add_argument("--batch", type=int, default=PROXY.batch_size)
    p.add_argument("--lr", type=float, default=PROXY.lr)
    p.add_argument("--val", type=int, default=PROXY.synthetic_val,
                   help=f"synthetic validation images (default {PROXY.synthetic_val})")
    p.add_argument("--out", type=Path, default=None, help="write the accuracy matrix here as CSV")
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.archs < 2 or len(args.seeds) < 2:
        raise NasError("need at least 2 architectures (--archs) and 2 seeds (--seeds)")
    space = get_space(args.space, num_classes=10)
    rng = np.random.default_rng(args.arch_seed)
    specs = [space.sample(rng) for _ in range(args.archs)]
    proxy = replace(PROXY, resolution=args.train_resolution, steps=args.steps, batch_size=args.batch, lr=args.lr,
                    synthetic_val=args.val)
    accuracy = np.empty((len(specs), len(args.seeds)))
    start = time.perf_counter()
    with tqdm(total=accuracy.size, desc="proxy evaluations", unit="eval") as bar:
        for i, spec in enumerate(specs):
            for j, seed in enumerate(args.seeds):
                result = evaluate_candidate(spec, replace(proxy, seed=seed))
                if not result.ok:
                    raise NasError(f"architecture {i}, seed {seed}: {result.reason}")
                accuracy[i, j] = result.accuracy
                bar.update()
    table = pd.DataFrame(accuracy, columns=[f"seed{s}" for s in args.seeds])
    table.insert(0, "arch", [spec.to_string() for spec in specs])
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.out / "proxy_noise.csv", index=False)
    print(table.drop(columns="arch").assign(mean=accuracy.mean(axis=1)).round(3).to_string())
    figures = seed_noise(accuracy)
    print(f"{args.space}, {args.train_resolution} px, {args.steps} steps, batch {args.batch}, lr {args.lr}, "
          f"{args.val} val images; {(time.perf_counter() - start) / accuracy.size:.1f} s per evaluation")
    print(f"within-architecture sd {figures['within_sd']:.3f}, between-architecture sd {figures['between_sd']:.3f}, "
          f"signal/noise {figures['signal_to_noise']:.2f}, seed-to-seed Spearman {figures['seed_to_seed_spearman']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
