"""``python -m nas.netadapt``: shrink a network's widths until a predicted latency target is met."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence

import pandas as pd
import torch

from nas import zoo
from nas.arch import ArchSpec
from nas.cli import add_options, retire, run
from nas.cluster import probe
from nas.errors import NasError
from nas.latency.options import add_calibration_option
from nas.latency.predict import resolve_target
from nas.netadapt.loop import LatencyTarget, Settings, netadapt
from nas.rundir import read_checkpoint
from nas.train.device import check_device, default_device
from nas.train.proxy import ProxyTraining, open_data

TARGETS = ("pixel-cpu", "host-cpu", "cuda")
TRAINING_OPTIONS = ("data", "resolution", "synthetic_train", "synthetic_val", "batch_size", "lr", "bn_batches",
                    "device")

EXAMPLE = """example (3-6 minutes on 2 cores):
  python -m nas.netadapt --arch mobilenet_v3_large --target pixel-cpu --latency-ratio 0.8 \\
      --delta-ratio 0.05 --short-term-steps 20 --max-proposals 4 --out runs/netadapt
rerun the same command to resume after the last finished iteration."""


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, LatencyTarget, Settings, ProxyTraining]:
    """The options, with the target, NetAdapt's settings and the fine-tuning recipe built from them."""
    parser = argparse.ArgumentParser(
        prog="python -m nas.netadapt", epilog=EXAMPLE,
        formatter_class=lambda prog: argparse.RawDescriptionHelpFormatter(prog, max_help_position=32),
        description="NetAdapt as modified for MobileNetV3: each iteration shrinks one expansion layer, "
                    "residual group, the stem or the head just enough to cut the predicted latency by delta, "
                    "fine-tunes every such proposal briefly from inherited weights, and keeps the best "
                    "accuracy change per millisecond, until the latency target is met.")
    parser.add_argument("--arch", required=True, metavar="NAME_OR_SPEC",
                        help="zoo name, spec string, JSON spec or spec file of the seed network")
    parser.add_argument("--checkpoint", type=Path, metavar="PATH",
                        help="trained seed weights: a state dict, or a dict holding one under 'state_dict' "
                             "(default: train the seed for --pretrain-steps)")
    parser.add_argument("--target", choices=TARGETS, default="pixel-cpu", help="latency model (default: pixel-cpu)")
    add_calibration_option(parser)
    parser.add_argument("--latency-resolution", type=int, default=224, metavar="PX",
                        help="input size the latency is predicted at (default: 224)")
    retire(parser, "--resolution", "--latency-resolution (the input size latency is predicted at); fine-tuning "
                                   "uses --train-resolution")
    target = add_options(parser.add_mutually_exclusive_group(required=True), LatencyTarget,
                         names={"ms": "latency_ms", "ratio": "latency_ratio"})
    settings = add_options(parser, Settings, overrides={"pretrain_steps": {"help": (
        "training steps of the seed before adapting it (default: --short-term-steps without --checkpoint, "
        "0 with one)")}})
    training = add_options(parser, ProxyTraining, only=TRAINING_OPTIONS, names={"resolution": "train_resolution"},
                overrides={"device": {"type": check_device, "default": default_device(),
                                      "help": "training device (default: cuda if available, else cpu)"}})
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, metavar="K",
                        help="proposals fine-tuned in parallel on a local Ray; 0 or 1: one at a time in this "
                             "process; with --ray-address the cluster's CPUs decide (default: number of CPUs)")
    parser.add_argument("--ray-address", metavar="ADDRESS",
                        help="fine-tune the proposals on this Ray cluster (nas, and --data unless synthetic, "
                             "must be on its nodes; default: a local Ray of --workers CPUs)")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR",
                        help="run directory: history.csv, proposals.csv, checkpoints, final_spec.json, "
                             "final.pt, history.png")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    return args, target.build(args), settings.build(args), training.build(args, seed=args.seed)


def read_weights(path: Path, spec: ArchSpec) -> dict[str, torch.Tensor]:
    """A state dict from a file: bare, or under ``state_dict`` (whose ``spec``, if any, must be ``spec``)."""
    data = read_checkpoint(path)
    if isinstance(data, dict) and "state_dict" in data:
        stored = data.get("spec")
        if isinstance(stored, str) and ArchSpec.from_json(stored) != spec:
            raise NasError(f"{path} holds weights of another architecture than --arch")
        data = data["state_dict"]
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise NasError(f"{path}: not a state dict")
    return data


def latency_function(target: str, resolution: int):
    from nas.latency.predict import get_latency_model

    model = get_latency_model(target)
    return lambda spec: model.predict(spec, resolution).ms


def main(argv: Sequence[str] | None = None) -> int:
    args, target, settings, training = parse_args(argv)
    args.target = resolve_target(args.target, args.calibration)
    seed = zoo.resolve(args.arch, num_classes=open_data(training).num_classes)
    state = read_weights(args.checkpoint, seed) if args.checkpoint else None
    if args.workers < 0:
        raise NasError(f"--workers must be 0 or more, got {args.workers}")
    if args.ray_address:
        probe(args.ray_address)
    identity = {"target": args.target, "resolution": args.latency_resolution,
                "checkpoint": str(args.checkpoint.resolve()) if args.checkpoint else None}
    try:
        result = netadapt(seed, target=target, latency=latency_function(args.target, args.latency_resolution),
                          training=training, settings=settings, out=args.out, seed_state=state,
                          workers=max(1, args.workers), ray_address=args.ray_address, progress=not args.quiet,
                          identity=identity)
    finally:
        if "ray" in sys.modules and sys.modules["ray"].is_initialized():
            sys.modules["ray"].shutdown()
    table = pd.DataFrame([row.to_row() for row in result.history])
    table = table[["iteration", "unit", "old_width", "width", "latency_ms", "accuracy"]]
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"{result.seed_ms:.3f} ms -> {result.latency_ms:.3f} ms (target {result.target_ms:.3f} ms), "
          f"accuracy {result.accuracy:.4f}; final network: {args.out / 'final_spec.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
