"""Command-line options that every tool taking ``--target`` shares.

``--calibration`` picks a named pixel-cpu calibration (:mod:`nas.latency.pixel.calibrations`);
:func:`nas.latency.predict.resolve_target` folds it into the target a run records, so a tool
adds the option here and resolves once after parsing::

    add_calibration_option(parser)
    args.target = resolve_target(args.target, args.calibration)
"""

from __future__ import annotations

import argparse

from nas.latency.pixel.calibrations import CALIBRATIONS, DEFAULT


def add_calibration_option(parser: argparse.ArgumentParser | argparse._ArgumentGroup, *,
                           default_text: str = f"{DEFAULT}") -> None:
    """Add ``--calibration NAME`` (pixel-cpu only; None when not given)."""
    parser.add_argument("--calibration", choices=tuple(CALIBRATIONS), metavar="NAME",
                        help=f"pixel-cpu calibration: {' | '.join(CALIBRATIONS)} (default: {default_text}; "
                             f"see latency_tables/README.md)")
