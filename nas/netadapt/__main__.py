"""``python -m nas.netadapt``: shrink a network's widths until a predicted latency target is met."""

from __future__ import annotations

import argparse
import os
import pickle
import sys
from pathlib import Path
from typing import Sequence

import pandas as pd
import torch

from nas import zoo
from nas.arch import ArchSpec
from nas.cli import run
from nas.cluster import probe
from nas.errors import NasError
from nas.latency.options import add_calibration_option
from nas.latency.predict import resolve_target
from nas.netadapt.loop import Settings, netadapt
from nas.netadapt.select import RULES
from nas.train.device import check_device, default_device
from nas.train.proxy import ProxyTraining, open_data

TARGETS = ("pixel-cpu", "host-cpu", "cuda")

EXAMPLE = """example (3-6 minutes on 2 cores):
  python -m nas.netadapt --arch mobilenet_v3_large --target pixel-cpu --latency-ratio 0.8 \\
      --delta-ratio 0.05 --short-term-steps 20 --max-proposals 4 --out runs/netadapt
rerun the same command to resume after the last finished iteration."""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
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
    goal = parser.add_mutually_exclusive_group(required=True)
    goal.add_argument("--latency-ms", type=float, metavar="X", help="absolute latency target in ms")
    goal.add_argument("--latency-ratio", type=float, metavar="R", help="target as a fraction of the seed's latency")
    parser.add_argument("--resolution", type=int, default=224, metavar="PX",
                        help="input size the latency is predicted at (default: 224)")
    parser.add_argument("--data", default="synthetic", metavar="synthetic|PATH",
                        help="fine-tuning data: built-in synthetic images, an ImageFolder or CIFAR-10 directory "
                             "(default: synthetic)")
    parser.add_argument("--train-resolution", type=int, default=32, metavar="PX",
                        help="image size for fine-tuning and evaluation (default: 32)")
    parser.add_argument("--short-term-steps", type=int, default=10000, metavar="T",
                        help="fine-tuning steps per proposal (default: 10000, as in the paper)")
    parser.add_argument("--long-term-steps", type=int, default=0, metavar="N",
                        help="fine-tuning steps of the final network (default: 0)")
    parser.add_argument("--pretrain-steps", type=int, metavar="N",
                        help="training steps of the seed before adapting it (default: --short-term-steps "
                             "without --checkpoint, 0 with one)")
    parser.add_argument("--delta-ratio", type=float, default=0.01, metavar="D",
                        help="latency cut per iteration as a fraction of the seed's (default: 0.01)")
    parser.add_argument("--delta-decay", type=float, default=1.0, metavar="F",
                        help="NetAdapt schedule: the cut is multiplied by F each iteration (default: 1)")
    parser.add_argument("--selection", choices=RULES, default="slope",
                        help="slope: best accuracy change per ms saved (MobileNetV3); accuracy: best accuracy "
                             "(original NetAdapt) (default: slope)")
    parser.add_argument("--divisor", type=int, default=8, help="widths stay multiples of this (default: 8)")
    parser.add_argument("--max-proposals", type=int, metavar="K",
                        help="fine-tune only K proposals per iteration, drawn at random (default: all)")
    parser.add_argument("--batch-size", type=int, default=32, help="fine-tuning batch size (default: 32)")
    parser.add_argument("--lr", type=float, default=0.01, help="fine-tuning learning rate, cosine-decayed "
                                                               "(default: 0.01)")
    parser.add_argument("--bn-batches", type=int, default=20, metavar="N",
                        help="batches that re-estimate BN statistics after each fine-tune (default: 20)")
    parser.add_argument("--synthetic-train", type=int, default=2000, metavar="N",
                        help="synthetic training images (default: 2000)")
    parser.add_argument("--synthetic-val", type=int, default=500, metavar="N",
                        help="synthetic held-out images (default: 500)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, metavar="K",
                        help="proposals fine-tuned in parallel on a local Ray; 1 runs in this process; with "
                             "--ray-address the cluster's CPUs decide (default: number of CPUs)")
    parser.add_argument("--ray-address", metavar="ADDRESS",
                        help="fine-tune the proposals on this Ray cluster (nas, and --data unless synthetic, "
                             "must be on its nodes; default: a local Ray of --workers CPUs)")
    parser.add_argument("--device", type=check_device, default=default_device(),
                        help="training device (default: cuda if available, else cpu)")
    parser.add_argument("--seed", type=int, default=0, help="data split, batch order and proposal draws")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR",
                        help="run directory: history.csv, proposals.csv, checkpoints, final_spec.json, "
                             "final.pt, history.png")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser.parse_args(argv)


def read_weights(path: Path, spec: ArchSpec) -> dict[str, torch.Tensor]:
    """A state dict from a file: bare, or under ``state_dict`` (whose ``spec``, if any, must be ``spec``)."""
    if not path.is_file():
        raise NasError(f"{path}: no such checkpoint")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as err:
        raise NasError(f"{path}: unreadable checkpoint ({str(err).splitlines()[0]})") from None
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
    args = parse_args(argv)
    args.target = resolve_target(args.target, args.calibration)
    training = ProxyTraining(data=args.data, resolution=args.train_resolution, seed=args.seed,
                             synthetic_train=args.synthetic_train, synthetic_val=args.synthetic_val,
                             batch_size=args.batch_size, lr=args.lr, bn_batches=args.bn_batches, device=args.device)
    seed = zoo.resolve(args.arch, num_classes=open_data(training).num_classes)
    state = read_weights(args.checkpoint, seed) if args.checkpoint else None
    pretrain = args.pretrain_steps if args.pretrain_steps is not None else (0 if state else args.short_term_steps)
    settings = Settings(target_ms=args.latency_ms, target_ratio=args.latency_ratio, delta_ratio=args.delta_ratio,
                        delta_decay=args.delta_decay, short_term_steps=args.short_term_steps,
                        long_term_steps=args.long_term_steps, pretrain_steps=pretrain, selection=args.selection,
                        divisor=args.divisor, max_proposals=args.max_proposals, seed=args.seed)
    if args.workers < 1:
        raise NasError(f"--workers must be at least 1, got {args.workers}")
    if args.ray_address:
        probe(args.ray_address)
    identity = {"target": args.target, "resolution": args.resolution,
                "checkpoint": str(args.checkpoint.resolve()) if args.checkpoint else None}
    try:
        result = netadapt(seed, latency=latency_function(args.target, args.resolution),
                          training=training, settings=settings, out=args.out, seed_state=state, workers=args.workers,
                          ray_address=args.ray_address, progress=not args.quiet, identity=identity)
    finally:
        if "ray" in sys.modules and sys.modules["ray"].is_initialized():
            sys.modules["ray"].shutdown()
    table = pd.DataFrame(result.history)[["iteration", "unit", "old_width", "width", "latency_ms", "accuracy"]]
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"{result.seed_ms:.3f} ms -> {result.latency_ms:.3f} ms (target {result.target_ms:.3f} ms), "
          f"accuracy {result.accuracy:.4f}; final network: {args.out / 'final_spec.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
