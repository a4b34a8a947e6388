"""``python -m nas.supernet``: train a weight-sharing supernet, score children with it, extract one.

Examples::

    python -m nas.supernet train --space mobilenetv3 --data synthetic --epochs 5 --out runs/supernet
    python -m nas.supernet train --space mobilenetv3 --data /tmp/cifar/cifar10_jpg --epochs 30 \\
        --rule sandwich --out runs/supernet_cifar            # add --resume after an interruption
    python -m nas.supernet evaluate --supernet runs/supernet mobilenet_v3_small mobilenet_v3_large \\
        --sample 20 --target pixel-cpu --out runs/children.csv
    python -m nas.supernet extract --supernet runs/supernet mobilenet_v3_small --out runs/v3s_child
    python -m nas.evaluate --checkpoint runs/v3s_child --data synthetic           # the extracted child

``train`` writes supernet.pt (checkpoint of the last epoch), metrics.csv and settings.json into
--out. ``evaluate`` prints (and with --out writes as CSV) each child's held-out top-1 with
inherited, BatchNorm-recalibrated weights. ``extract`` writes spec.json and checkpoint.pt, which
``python -m nas.evaluate --checkpoint``, ``python -m nas.train`` (through the spec) and
``python -m nas.netadapt --checkpoint`` read.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from nas import cli, rundir, zoo
from nas.errors import NasError
from nas.supernet.evaluator import SupernetEvaluator
from nas.supernet.network import NotAChildError
from nas.supernet.sampling import RULES, random_child
from nas.supernet.training import SupernetSettings, read_settings, train_supernet
from nas.train.device import check_device, default_device
from search_spaces import SPACES

_DEFAULTS = SupernetSettings()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m nas.supernet", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a supernet (checkpointed every epoch)")
    train.add_argument("--space", choices=SPACES, default=_DEFAULTS.space, help=f"(default {_DEFAULTS.space})")
    train.add_argument("--data", default="synthetic", metavar="synthetic|PATH",
                       help="built-in synthetic images, an ImageFolder or CIFAR-10 directory (default synthetic)")
    train.add_argument("--train-resolution", type=int, default=_DEFAULTS.resolution, metavar="PX",
                       help=f"training image size (default {_DEFAULTS.resolution})")
    cli.retire(train, "--resolution", "--train-resolution (the training image size)")
    train.add_argument("--epochs", type=int, default=_DEFAULTS.epochs, help=f"(default {_DEFAULTS.epochs})")
    train.add_argument("--batch-size", type=int, default=_DEFAULTS.batch_size, help=f"(default {_DEFAULTS.batch_size})")
    train.add_argument("--lr", type=float, default=_DEFAULTS.lr,
                       help=f"peak cosine learning rate (default {_DEFAULTS.lr})")
    train.add_argument("--rule", choices=RULES, default=_DEFAULTS.rule,
                       help="uniform: one random child per step; sandwich: largest, smallest and random children "
                            f"with in-place distillation (default {_DEFAULTS.rule})")
    train.add_argument("--sandwich-random", type=int, default=_DEFAULTS.sandwich_random, metavar="N",
                       help=f"random children per sandwich step (default {_DEFAULTS.sandwich_random})")
    train.add_argument("--no-reorder", action="store_true", help="do not sort channels by importance after each epoch")
    train.add_argument("--bn-batches", type=int, default=_DEFAULTS.bn_batches, metavar="N",
                       help="batches that recalibrate BatchNorm for each scored child "
                            f"(default {_DEFAULTS.bn_batches})")
    train.add_argument("--val-fraction", type=float, default=_DEFAULTS.val_fraction,
                       help=f"held-out share of the training images (default {_DEFAULTS.val_fraction})")
    train.add_argument("--synthetic-train", type=int, default=_DEFAULTS.synthetic_train, metavar="N")
    train.add_argument("--synthetic-val", type=int, default=_DEFAULTS.synthetic_val, metavar="N")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--device", default=default_device(), help="cpu, cuda or cuda:N (default: cuda if present)")
    train.add_argument("--out", type=Path, required=True, help="run directory")
    train.add_argument("--resume", action="store_true", help="continue the run in --out (same settings)")
    train.add_argument("--stop-after", type=int, metavar="EPOCHS", help="stop after this many epochs (resume later)")

    evaluate = sub.add_parser("evaluate", help="score children with inherited weights (held-out top-1)")
    _common(evaluate)
    evaluate.add_argument("archs", nargs="*", metavar="NAME_OR_SPEC",
                          help="zoo names, spec strings, JSON or spec files")
    evaluate.add_argument("--sample", type=int, default=0, metavar="N",
                          help="also score N random children of the space")
    evaluate.add_argument("--seed", type=int, default=0, help="draws the --sample children (default 0)")
    evaluate.add_argument("--target", default=None,
                          help="also predict each child's latency on this target (e.g. pixel-cpu)")
    evaluate.add_argument("--out", type=Path, default=None, help="write the results to this CSV file")

    extract = sub.add_parser("extract", help="write one child as spec.json + checkpoint.pt (BatchNorm recalibrated)")
    _common(extract)
    extract.add_argument("arch", metavar="NAME_OR_SPEC", help="a zoo name, spec string, JSON or spec file")
    extract.add_argument("--out", type=Path, required=True, help="directory for spec.json and checkpoint.pt")
    return parser


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--supernet", type=Path, required=True, metavar="DIR", help="a 'train' run directory")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")


def _train(args: argparse.Namespace) -> None:
    settings = SupernetSettings(
        space=args.space, data=args.data, resolution=args.train_resolution, epochs=args.epochs, batch_size=args.batch_size,
        lr=args.lr, rule=args.rule, sandwich_random=args.sandwich_random, reorder=not args.no_reorder,
        bn_batches=args.bn_batches, val_fraction=args.val_fraction, synthetic_train=args.synthetic_train,
        synthetic_val=args.synthetic_val, seed=args.seed, device=check_device(args.device))
    if args.stop_after is not None and args.stop_after < 1:
        raise NasError(f"--stop-after must be at least 1, got {args.stop_after}")
    run = train_supernet(settings, args.out, resume=args.resume, stop_after=args.stop_after)
    print(run.history.round(4).to_string(index=False))
    print(f"supernet in {args.out}")


def _evaluator(args: argparse.Namespace) -> SupernetEvaluator:
    read_settings(args.supernet)  # a clear error before any loading
    return SupernetEvaluator.load(args.supernet, device=check_device(args.device))


def _evaluate(args: argparse.Namespace) -> None:
    if args.sample < 0:
        raise NasError(f"--sample must be 0 or more, got {args.sample}")
    if not args.archs and not args.sample:
        raise NasError("nothing to evaluate: give NAME_OR_SPEC arguments and/or --sample N")
    evaluator = _evaluator(args)
    named = [(text, zoo.resolve(text)) for text in args.archs]
    rng = np.random.default_rng(args.seed)
    space = evaluator.supernet.space
    named += [(f"sample{i}", random_child(space, rng)) for i in range(args.sample)]
    for name, spec in named:
        reason = evaluator.why_not(spec)
        if reason:
            raise NotAChildError(f"{name}: not a child of this supernet: {reason}")
    latency = None
    if args.target:
        from nas.latency.predict import get_latency_model

        latency = get_latency_model(args.target)
    rows = []
    for name, spec in named:
        score = evaluator.evaluate(spec)
        row = {"name": name, "accuracy": score.accuracy, "val_loss": score.val_loss, "seconds": score.seconds}
        if latency is not None:
            row[f"latency_ms_{args.target}"] = latency.predict(spec).ms
        rows.append({**row, "arch": spec.to_string()})
    table = pd.DataFrame(rows)
    print(table.drop(columns="arch").round(4).to_string(index=False))
    if args.out:
        rundir.write_table(args.out, table)
        print(f"wrote {args.out}")


def _extract(args: argparse.Namespace) -> None:
    evaluator = _evaluator(args)
    spec = zoo.resolve(args.arch)
    reason = evaluator.why_not(spec)
    if reason:
        raise NotAChildError(f"{args.arch}: not a child of this supernet: {reason}")
    child = evaluator.child_spec(spec)
    model = evaluator.child(spec)
    state = {name: tensor.cpu() for name, tensor in model.state_dict().items()}
    score = evaluator.score(model)
    rundir.write_text(args.out / "spec.json", child.to_json(indent=1))
    config = {**evaluator.settings.to_dict(), "task": "classification", "source": "supernet",
              "supernet": str(args.supernet.resolve())}
    # "model"/"spec"/"config"/"task" for nas.evaluate and nas.train's loader, "state_dict" for nas.netadapt.
    rundir.write_torch(args.out / "checkpoint.pt", {"model": state, "state_dict": state, "spec": child.to_json(),
                                                    "config": config, "task": "classification", "ema": None})
    rundir.write_table(args.out / "score.csv",
                       [{"arch": child.to_string(), "accuracy": score.accuracy, "val_loss": score.val_loss}])
    print(f"{args.arch}: held-out top-1 {score.accuracy:.4f} with inherited weights; wrote {args.out}/spec.json, "
          "checkpoint.pt, score.csv")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    {"train": _train, "evaluate": _evaluate, "extract": _extract}[args.command](args)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
