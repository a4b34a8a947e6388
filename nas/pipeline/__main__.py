"""``python -m nas.pipeline CONFIG``: the MobileNetV3 pipeline of one config, resumable, with a report."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path
from typing import Sequence

from nas.cli import run
from nas.cluster import probe
from nas.errors import NasError
from nas.pipeline.config import Execution, load_config
from nas.pipeline.report import rewrite_report
from nas.pipeline.runner import run_pipeline, with_data
from nas.train.device import check_device, default_device

EXAMPLE = """examples:
  python -m nas.pipeline experiments/mobilenetv3_small.yaml --quick       (minutes on 2 cores)
  python -m nas.pipeline experiments/mobilenetv3_small_cifar10.yaml --data cifar10_jpg --out runs/small  (train/ + test/)
  python -m nas.pipeline experiments/mobilenetv3_small.yaml search.trials=64 netadapt.settings.delta_ratio=0.02
KEY=VALUE sets one key of the config (dotted as in the YAML, typed by it) over the file and its quick section;
the run records them in config.json like the rest, so a resume must give the same ones.
rerun the same command with the same --out to resume: finished stages are skipped.
--report-only redraws report.md and every figure of a finished run from its records (its config.json), training nothing:
  python -m nas.pipeline --out experiments/results/mobilenetv3_small_cifar10 --report-only"""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m nas.pipeline", epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Rediscover MobileNetV3: platform-aware search (or a fixed seed), the paper's manual edits, "
                    "NetAdapt to the reference's latency, training of the found network and the reference with "
                    "one budget, and a comparison report (report.md + PNGs).")
    parser.add_argument("config", type=Path, nargs="?",
                        help="pipeline config (YAML), e.g. experiments/mobilenetv3_small.yaml (with --report-only: "
                             "optional, checked against the run's)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="config keys to change, e.g. search.trials=64 train.recipe_overrides.lr=0.1 "
                             "search.seed_arch=none")
    parser.add_argument("--quick", action="store_true",
                        help="apply the config's 'quick' section: tiny budgets, a few minutes on 2 cores")
    parser.add_argument("--out", type=Path, metavar="DIR",
                        help="run directory (default: runs/<config name>-<timestamp>)")
    parser.add_argument("--data", metavar="synthetic|PATH",
                        help="dataset for every stage: synthetic, an ImageFolder or CIFAR-10 directory "
                             "(default: the config's)")
    parser.add_argument("--device", type=check_device, default=default_device(),
                        help="training device of every stage: cpu | cuda[:N] (default: cuda when available)")
    parser.add_argument("--ray-address", metavar="ADDRESS",
                        help="run the search trials and NetAdapt's fine-tunes on this Ray cluster (nas must be "
                             "installed on its nodes; default: a local Ray)")
    parser.add_argument("--report-only", action="store_true",
                        help="run no stage: redraw report.md and the figures of the finished run in --out from its "
                             "records and its config.json")
    return parser.parse_intermixed_args(argv)  # overrides may follow options: CONFIG --quick KEY=VALUE


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.config is not None and "=" in args.config.name and not args.config.is_file():
        raise NasError(f"give the pipeline config (YAML) first, then KEY=VALUE overrides (got {args.config})")
    config = (with_data(load_config(args.config, quick=args.quick, overrides=args.overrides), args.data)
              if args.config else None)
    if args.report_only:
        if args.out is None:
            raise NasError("--report-only needs --out, the directory of a finished run")
        print(f"report: {rewrite_report(args.out, config=config)}")
        return 0
    if config is None:
        raise NasError("give a pipeline config (YAML), e.g. experiments/mobilenetv3_small.yaml")
    if args.ray_address:
        probe(args.ray_address)
    out = args.out or Path("runs") / f"{args.config.stem}-{datetime.now():%Y%m%d-%H%M%S}"
    print(f"run directory {out}", file=sys.stderr)
    run_pipeline(config, out, Execution(device=args.device, ray_address=args.ray_address))
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
