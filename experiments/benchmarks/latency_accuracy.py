"""Benchmark: host-cpu latency prediction vs end-to-end measurement.

Runs the validation of ``python -m nas.latency validate`` (:func:`nas.latency.validate.validate_measured`)
once on N random architectures of each search space and on every zoo network (the zoo includes the calibration networks: in-sample), then prints the
figures. All sets are measured in one window (one table build, one interleaved network sweep).
Run it on a quiet machine; the table and calibration are built on demand first.

    python experiments/benchmarks/latency_accuracy.py [--samples 50] [--seed 1] [--out results/latency]
        [--table-dir DIR] [--recalibrate]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

import pandas as pd

from nas.cli import run
from nas.latency.calibrate import accuracy
from nas.latency.validate import SETS, MeasuredValidation, validate_measured


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--latency-resolution", type=int, default=224)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("results/latency"))
    parser.add_argument("--table-dir", type=Path, help="table folder (default latency_tables/host-cpu); a fresh "
                        "folder makes the whole run one measurement window")
    parser.add_argument("--recalibrate", action="store_true",
                        help="refit the calibration on its networks measured alongside each set (validate --recalibrate)")
    args = parser.parse_args(argv)
    settings = MeasuredValidation(target="host-cpu", sets=SETS, samples=args.samples, seed=args.seed,
                                  resolution=args.latency_resolution, threads=args.threads, table_dir=args.table_dir,
                                  recalibrate=args.recalibrate)
    frame = validate_measured(settings, args.out)
    rows = []
    for name, part in frame.groupby("set", sort=False):
        rows.append({"set": name, **accuracy(part["predicted_ms"], part["measured_ms"]),
                     "naive_within": accuracy(part["key_sum_ms"], part["measured_ms"])["within"]})
    summary = pd.DataFrame(rows).set_index("set")
    summary.to_csv(args.out / "latency_accuracy.csv")
    print(summary.to_string(float_format=lambda v: f"{v:.3f}"))
    print("target: within ±10 % >= 0.95 and Spearman >= 0.95 on the random sets")


if __name__ == "__main__":
    raise SystemExit(run(main))
