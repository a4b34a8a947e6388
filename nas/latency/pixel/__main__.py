"""``python -m nas.latency.pixel``: refit the Pixel 1 model, rebuild its table, validate it.

    python -m nas.latency.pixel fit          # sources -> latency_tables/pixel-cpu/coefficients.json
    python -m nas.latency.pixel table        # coefficients -> table.csv + meta.json
    python -m nas.latency.pixel validate     # published rows -> validation CSV + PNG, summary printed
    python -m nas.latency.pixel sources      # how each source compares with the model
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import pandas as pd

from nas.cli import run
from nas.latency.pixel import fit, materialize, sources
from nas.latency.pixel.model import COEFFICIENTS_FILE, TABLE_DIR, PixelCostModel
from nas.latency.pixel.validate import format_validation, validate_published


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m nas.latency.pixel", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("fit", help="refit the coefficients from the copied sources")
    p.add_argument("--sources", type=Path, default=sources.SOURCES_DIR, help="source folder (default: shipped)")
    p.add_argument("--out", type=Path, default=TABLE_DIR / COEFFICIENTS_FILE, help="coefficients JSON to write")
    p = commands.add_parser("table", help="rebuild table.csv + meta.json from the coefficients")
    p.add_argument("--dir", type=Path, default=TABLE_DIR, help="table folder (default: latency_tables/pixel-cpu)")
    p.add_argument("--samples", type=int, default=materialize.SPACE_SAMPLES, help="architectures sampled per space")
    p = commands.add_parser("validate", help="compare with the published whole-network latencies")
    p.add_argument("--out", type=Path, default=Path("runs/pixel-validation"), help="folder for CSV + PNG")
    commands.add_parser("sources", help="each source's ratio to the model and rank agreement")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    pd.set_option("display.width", 160)
    if args.command == "fit":
        model = fit.fit_from_sources(args.sources)
        model.info["date"] = fit.timestamp()
        model.save(args.out)
        print(pd.Series(model.coefficients).to_string(float_format="%.5f"))
        print(f"wrote {args.out}")
    elif args.command == "table":
        if args.samples < 0:
            raise fit.NasError("--samples must be >= 0")
        model = PixelCostModel.load(args.dir / COEFFICIENTS_FILE)
        measured = sources.proxyless_blocks() + sources.nn_meter_blocks()
        keys = materialize.table_keys(args.samples)
        table = materialize.write(model, args.dir, measured, keys, date=fit.timestamp())
        counts = table.frame["provenance"].value_counts().to_dict()
        print(f"wrote {args.dir / 'table.csv'}: {len(table)} keys {counts}")
    elif args.command == "validate":
        print(format_validation(validate_published(args.out)))
        print(f"wrote {args.out}/")
    else:
        print(fit.source_agreement(PixelCostModel.load()).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
