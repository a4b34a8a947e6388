"""``python -m nas.latency``: build | predict | measure | validate latency tables.

Examples::

    python -m nas.latency predict mnasnet_a1 --latency-resolution 192     # pixel-cpu, the default target
    python -m nas.latency predict --target host-cpu mobilenet_v3_large --json
    python -m nas.latency build --space mnasnet --samples 500              # host-cpu: this machine
    python -m nas.latency measure mnasnet_a1
    python -m nas.latency validate --target host-cpu --space mnasnet mobilenetv3 zoo --samples 50 --out results/latency
    python -m nas.latency validate --target pixel-cpu            # every calibration vs its published rows
    python -m nas.latency predict --target pixel-cpu --calibration readme-2018 mnasnet_a1
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Sequence

from nas import zoo
from nas.arch import ArchSpec
from nas.cli import retire, run
from nas.errors import NasError
from nas.latency.keys import decompose
from nas.latency.measure import MEASURABLE_TARGETS, Protocol, build_table, measure_networks
from nas.latency.options import add_calibration_option
from nas.latency.pixel import calibrations
from nas.latency.predict import TARGETS, default_table_dir, get_latency_model, resolve_target, split_target
from nas.latency.validate import SETS, SPACES, MeasuredValidation, sample_space, validate_measured


class _Parser(argparse.ArgumentParser):
    """Bad options end as one ``error: ...`` line (via nas.cli.run), like every other user error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise NasError(f"{self.prog}: {message}")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m nas.latency", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.split("\n\n")[1:]))
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(p: argparse.ArgumentParser, targets: Sequence[str]) -> None:
        default = "pixel-cpu" if "pixel-cpu" in targets else "host-cpu"
        why = "" if default == "pixel-cpu" else ": only this machine can be measured"
        p.add_argument("--target", choices=targets, default=default, help=f"latency target (default {default}{why})")
        add_calibration_option(p, default_text=f"{calibrations.DEFAULT}; validate: every calibration")
        p.add_argument("--threads", type=_positive, default=1, help="CPU threads for host-cpu (default 1)")
        p.add_argument("--table-dir", type=Path, help="table folder (default $LATENCY_NAS_TABLES/<target> if set, else "
                       "latency_tables/<target> in a checkout, ~/.cache/latency-nas/latency_tables/<target> in a "
                       "wheel install)")
        p.add_argument("--force", action="store_true", help="use a table made on another machine/torch version")

    build = sub.add_parser("build", help="measure the per-key table of this machine (incremental, resumable)")
    common(build, MEASURABLE_TARGETS)
    build.add_argument("--space", choices=SPACES, help="cover a search space: the keys of --samples random archs")
    build.add_argument("--archs", type=Path, help="file with one NAME_OR_SPEC per line")
    build.add_argument("--samples", type=_positive, default=500, help="archs sampled from --space (default 500)")
    build.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    build.add_argument("--latency-resolution", type=_positive, default=224, metavar="PX",
                       help="input size latency is priced at (default 224)")
    retire(build, "--resolution", "--latency-resolution (the input size latency is priced at)")
    build.add_argument("--recalibrate", action="store_true", help="refit the whole-network calibration")

    predict = sub.add_parser("predict", help="predict one network's latency (builds missing host-cpu keys)")
    common(predict, TARGETS)
    predict.add_argument("arch", metavar="NAME_OR_SPEC", help="zoo name, spec string, JSON or spec file")
    predict.add_argument("--width", type=float, help="width multiplier (zoo names only)")
    predict.add_argument("--latency-resolution", type=_positive, default=224, metavar="PX",
                         help="input size latency is priced at (default 224)")
    retire(predict, "--resolution", "--latency-resolution (the input size latency is priced at)")
    predict.add_argument("--json", action="store_true", help="print JSON (latency_ms, per_key, ...)")
    predict.add_argument("--no-measure", action="store_true", help="fail instead of measuring missing keys")

    measure = sub.add_parser("measure", help="measure one network end to end (same protocol as the table)")
    measure.add_argument("arch", metavar="NAME_OR_SPEC", help="zoo name, spec string, JSON or spec file")
    measure.add_argument("--target", choices=MEASURABLE_TARGETS, default="host-cpu",
                         help="default host-cpu: only this machine can be measured")
    add_calibration_option(measure)
    measure.add_argument("--threads", type=_positive, default=1, help="CPU threads (default 1)")
    measure.add_argument("--width", type=float, help="width multiplier (zoo names only)")
    measure.add_argument("--latency-resolution", type=_positive, default=224, metavar="PX",
                         help="input size latency is priced at (default 224)")
    retire(measure, "--resolution", "--latency-resolution (the input size latency is priced at)")
    measure.add_argument("--json", action="store_true", help="print JSON")

    validate = sub.add_parser("validate", help="predicted vs measured latency of random archs, or (pixel-cpu) vs the "
                                               "published rows of each calibration's run (CSV + PNG)")
    common(validate, TARGETS)
    validate.add_argument("--space", choices=SETS, nargs="+",
                          help="sample from these spaces, or take every zoo network (default mnasnet); several "
                               "sets are measured in one window: one table build, one interleaved network sweep")
    validate.add_argument("--samples", type=_positive, help="architectures (default 50)")
    validate.add_argument("--seed", type=int, help="sampling seed (default 1)")
    validate.add_argument("--latency-resolution", type=_positive, metavar="PX",
                          help="input size latency is priced at (default 224)")
    retire(validate, "--resolution", "--latency-resolution (the input size latency is priced at)")
    validate.add_argument("--out", type=Path, default=Path("results/latency"), help="output folder")
    validate.add_argument("--recalibrate", action="store_true",
                          help="build the calibration networks' keys and time them in the same window as the validated "
                               "ones, and refit on them (not saved): takes a shared machine's drift out of the comparison")
    return parser


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _read_archs(path: Path) -> list[ArchSpec]:
    if not path.is_file():
        raise NasError(f"--archs: no such file {path}")
    lines = [line.strip() for line in path.read_text().splitlines()]
    specs = []
    for number, line in enumerate(lines, 1):
        if line and not line.startswith("#"):
            try:
                specs.append(zoo.resolve(line))
            except NasError as err:
                raise NasError(f"{path}:{number}: {err}") from None
    if not specs:
        raise NasError(f"--archs: {path} lists no architecture")
    return specs


def _build(args: argparse.Namespace) -> None:
    table_dir = args.table_dir or default_table_dir(args.target, args.threads)
    specs = []
    if args.space:
        specs += sample_space(args.space, args.samples, args.seed)
    if args.archs:
        specs += _read_archs(args.archs)
    keys = list(dict.fromkeys(str(k) for spec in specs for k in decompose(spec, args.latency_resolution)))
    build_table(keys, table_dir, target=args.target, protocol=Protocol(threads=args.threads), force=args.force)
    model = get_latency_model(args.target, table_dir=table_dir, force=args.force, threads=args.threads)
    if args.recalibrate:
        model.calibrate()
    cal = model.calibration
    print(f"{table_dir}: {len(model.table)} keys ({len(keys)} requested); "
          f"calibration ms = {cal.scale:.4f} * sum + {cal.offset:.3f}")


def _predict(args: argparse.Namespace) -> None:
    spec = zoo.resolve(args.arch, args.width)
    model = get_latency_model(args.target, table_dir=args.table_dir, measure_missing=not args.no_measure,
                              force=args.force, threads=args.threads)
    prediction = model.predict(spec, args.latency_resolution)
    if args.json:
        print(json.dumps({"target": args.target, "resolution": args.latency_resolution,
                          "latency_ms": prediction.ms,
                          "per_key": prediction.per_key, "estimated_keys": list(prediction.estimated_keys),
                          "source": prediction.source, "arch": spec.to_string()}, indent=2))
        return
    for key, ms in prediction.per_key.items():
        print(f"{ms:9.3f} ms  {key}{'  (estimated)' if key in prediction.estimated_keys else ''}")
    print(f"{prediction.ms:9.3f} ms  total ({args.target}, {args.latency_resolution}px; {prediction.source})")


def _measure(args: argparse.Namespace) -> None:
    spec = zoo.resolve(args.arch, args.width)
    protocol = Protocol(threads=args.threads)
    timing = measure_networks([spec], args.latency_resolution, target=args.target, protocol=protocol)[0]
    wall = measure_networks([spec], args.latency_resolution, target=args.target,
                            protocol=Protocol(threads=args.threads, clock="wall"), progress=False)[0]
    result = {"target": args.target, "resolution": args.latency_resolution, "latency_ms": timing.ms,
              "spread_ms": timing.spread_ms, "samples": timing.n, "clock": protocol.clock_for(args.target),
              "wall_clock_ms": wall.ms}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{timing.ms:.3f} ms (IQR {timing.spread_ms:.3f} ms, {timing.n} samples, {result['clock']} clock; "
              f"wall clock {wall.ms:.3f} ms)")


def _validate(args: argparse.Namespace) -> None:
    """pixel-cpu: each calibration (or the one named) against its run's published rows; other
    targets: predicted vs measured, every set in one window (:mod:`nas.latency.validate`)."""
    base, calibration = split_target(args.target)
    # the options of a measured validation, as given (None: MeasuredValidation's default)
    measured = {"sets": tuple(args.space) if args.space else None, "samples": args.samples, "seed": args.seed,
                "resolution": args.latency_resolution, "recalibrate": args.recalibrate or None}
    if base == "pixel-cpu":
        flags = {"sets": "--space", "resolution": "--latency-resolution"}
        given = [flags.get(name, f"--{name}") for name, value in measured.items() if value is not None]
        if given:
            raise NasError(f"{given[0]} applies to a measured target (--target host-cpu or cuda); pixel-cpu, the "
                           "default, is validated against the published phone measurements")
        from nas.latency.pixel.validate import format_validation, validate_published

        names = None if args.calibration is None else [calibration or calibrations.DEFAULT]
        for name, (rows, summary, ratio_rows) in validate_published(args.out, names).items():
            print(f"== pixel-cpu calibration {name} ==")
            print(format_validation(rows, summary, ratio_rows))
            print(f"wrote {args.out / name}/validation.csv, validation_summary.csv, ratios.csv, validation.png\n")
        return
    given = {name: value for name, value in measured.items() if value is not None}
    settings = MeasuredValidation(target=args.target, threads=args.threads, table_dir=args.table_dir, force=args.force,
                                  **given)
    validate_measured(settings, args.out)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    args.target = resolve_target(args.target, args.calibration)
    {"build": _build, "predict": _predict, "measure": _measure, "validate": _validate}[args.command](args)
    return 0


if __name__ == "__main__":
    raise SystemExit(run(main))
