"""``python -m nas.latency.pixel``: refit the Pixel 1 model, rebuild its table, validate it.

    python -m nas.latency.pixel fit          # sources -> latency_tables/pixel-cpu/coefficients.json
    python -m nas.latency.pixel table        # coefficients -> table.csv + meta.json
    python -m nas.latency.pixel validate     # published rows -> validation CSV + PNG per calibration
    python -m nas.latency.pixel sources      # how each source compares with the model

Each command takes ``--calibration NAME`` (default: mobilenetv3-paper; readme-2018 lives in
latency_tables/pixel-cpu/readme-2018/); ``validate`` without it checks every calibration.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import pandas as pd

from nas.cli import run
from nas.errors import NasError
from nas.latency.options import add_calibration_option
from nas.latency.pixel import calibrations, fit, materialize, sources
from nas.latency.pixel.model import COEFFICIENTS_FILE, PixelCostModel, calibration_dir
from nas.latency.pixel.validate import format_validation, validate_published


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m nas.latency.pixel", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("fit", help="refit the coefficients from the copied sources")
    add_calibration_option(p)
    p.add_argument("--sources", type=Path, default=sources.SOURCES_DIR, help="source folder (default: shipped)")
    p.add_argument("--out", type=Path, help="coefficients JSON to write (default: the calibration's shipped file)")
    p = commands.add_parser("table", help="rebuild table.csv + meta.json from the coefficients")
    add_calibration_option(p)
    p.add_argument("--dir", type=Path, help="table folder (default: the calibration's, under latency_tables/pixel-cpu)")
    p.add_argument("--samples", type=int, default=materialize.SPACE_SAMPLES, help="architectures sampled per space")
    p = commands.add_parser("validate", help="compare with the published whole-network latencies of each run")
    add_calibration_option(p, default_text="every calibration")
    p.add_argument("--out", type=Path, default=Path("runs/pixel-validation"),
                   help="folder for CSV + PNG (one subfolder per calibration)")
    p = commands.add_parser("sources", help="each source's ratio to the model and rank agreement")
    add_calibration_option(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    pd.set_option("display.width", 160)
    if args.command == "fit":
        model = fit.fit_from_sources(args.sources, args.calibration)
        model.info["date"] = fit.timestamp()
        out = args.out or calibration_dir(args.calibration) / COEFFICIENTS_FILE
        out.parent.mkdir(parents=True, exist_ok=True)
        model.save(out)
        print(pd.Series(model.coefficients).to_string(float_format="%.5f"))
        print(f"wrote {out} ({model.calibration})")
    elif args.command == "table":
        if args.samples < 0:
            raise NasError("--samples must be >= 0")
        directory = args.dir or calibration_dir(args.calibration)
        model = PixelCostModel.load(directory / COEFFICIENTS_FILE, calibration=calibrations.get(args.calibration).name)
        measured = sources.proxyless_blocks() + sources.nn_meter_blocks()
        keys = materialize.table_keys(args.samples)
        table = materialize.write(model, directory, measured, keys, date=fit.timestamp())
        counts = table.frame["provenance"].value_counts().to_dict()
        print(f"wrote {directory / 'table.csv'}: {len(table)} keys {counts}")
    elif args.command == "validate":
        names = None if args.calibration is None else [args.calibration]
        for name, (rows, summary, ratio_rows) in validate_published(args.out, names).items():
            print(f"== pixel-cpu calibration {name} ==")
            print(format_validation(rows, summary, ratio_rows))
            print(f"wrote {args.out / name}/\n")
    else:
        model = PixelCostModel.load(calibration=args.calibration)
        print(fit.source_agreement(model).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
