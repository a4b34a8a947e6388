"""What one candidate costs: supernet child evaluation against the search's stand-alone proxy.

For ``--children`` random children of the space this times

* **proxy**: ``nas.search.evaluate.evaluate_candidate`` at the search's defaults
  (``ProxySettings()``: one epoch of SGD from scratch at batch 64, 20 BatchNorm batches, scoring
  on the held-out split), on ``--data``;
* **supernet**: :meth:`nas.supernet.evaluator.SupernetEvaluator.evaluate` on the same data and
  held-out split (extract the child, recalibrate BatchNorm on ``--bn-batches`` batches of 64,
  score), from an untrained supernet: the cost does not depend on the weights' values.

and prints CPU seconds per candidate (``time.process_time``, so other load on the machine does
not count), candidates per CPU-hour and their ratio. The supernet's own
training is a one-off cost, reported by ``supernet_ranking.py`` and ``python -m nas.supernet train``.
Both run in this process with ``--threads`` torch threads.

    python experiments/benchmarks/supernet_speed.py                                  # synthetic, ~2 min
    python experiments/benchmarks/supernet_speed.py --data /tmp/cifar/cifar10_jpg --children 8 --out speed.csv
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from nas import rundir
from nas.cli import run
from nas.errors import NasError
from nas.search.evaluate import ProxySettings, evaluate_candidate
from nas.supernet.evaluator import SupernetEvaluator
from nas.supernet.network import Supernet
from nas.supernet.sampling import random_child
from nas.supernet.training import SupernetSettings
from nas.train.proxy import open_data
from search_spaces import SPACES, get_space


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", choices=SPACES, default="mobilenetv3-shared")
    p.add_argument("--data", default="synthetic", help="synthetic, an ImageFolder or CIFAR-10 directory")
    p.add_argument("--children", type=int, default=4)
    p.add_argument("--seed", type=int, default=0, help="draws the children (default 0)")
    p.add_argument("--bn-batches", type=int, default=SupernetSettings.bn_batches,
                   help=f"BatchNorm recalibration batches per child (default {SupernetSettings.bn_batches})")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--out", type=Path, help="also write the per-child CPU seconds to this CSV or Parquet file")
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.children < 1:
        raise NasError(f"--children must be at least 1, got {args.children}")
    if args.out is not None:
        rundir.table_format(args.out)  # a bad name fails now, not after the measurements
    torch.set_num_threads(args.threads)
    proxy = replace(ProxySettings(), data=args.data)
    settings = SupernetSettings(space=args.space, data=args.data, resolution=proxy.resolution,
                                batch_size=proxy.batch_size, bn_batches=args.bn_batches)
    data = open_data(settings)
    space = get_space(args.space, num_classes=data.num_classes)
    evaluator = SupernetEvaluator(Supernet(space), settings)
    rng = np.random.default_rng(args.seed)
    rows = []
    for i in range(args.children):
        spec = random_child(space, rng)
        start = time.process_time()
        result = evaluate_candidate(spec, proxy)
        proxy_seconds = time.process_time() - start
        if not result.ok:
            raise NasError(f"child {i}: proxy training failed: {result.reason}")
        start = time.process_time()
        evaluator.evaluate(spec)
        supernet_seconds = time.process_time() - start
        rows.append({"child": i, "arch": spec.to_string(), "proxy_s": proxy_seconds, "proxy_steps": result.steps,
                     "supernet_s": supernet_seconds})
        print(f"child {i}: proxy {proxy_seconds:.1f} CPU s ({result.steps} steps), "
              f"supernet {supernet_seconds:.2f} CPU s", flush=True)
    table = pd.DataFrame(rows)
    if args.out is not None:
        rundir.write_table(args.out, table)
    proxy_s, supernet_s = table["proxy_s"].mean(), table["supernet_s"].mean()
    print(f"\n{args.space} on {args.data}: {len(data.train)} training / {len(data.val)} held-out images, "
          f"{proxy.resolution} px, {args.threads} thread(s)")
    print(f"proxy    {proxy_s:8.2f} CPU s per candidate, {3600 / proxy_s:8.0f} candidates per CPU-hour")
    print(f"supernet {supernet_s:8.2f} CPU s per candidate, {3600 / supernet_s:8.0f} candidates per CPU-hour "
          f"({args.bn_batches} BatchNorm batches)")
    print(f"ratio: {proxy_s / supernet_s:.1f}x more candidates per CPU-hour with the supernet")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
