"""``python -m nas.train``: train any architecture with a published recipe.

Examples::

    python -m nas.train --arch mobilenet_v3_small --data synthetic --epochs 5 --batch-size 64 --out runs/v3s
    python -m nas.train --arch mobilenet_v3_large --data ~/imagenet --recipe mobilenetv3 --epochs 350 \\
        --batch-size 256 --train-resolution 224 --out runs/v3l          # add --resume after an interruption
    torchrun --nproc_per_node 8 -m nas.train ...                    # DDP; --batch-size is the global batch
    python -m nas.train --task segmentation --arch mobilenet_v3_large --data ~/cityscapes \\
        --train-resolution 512 --output-stride 16 --reduced-tail --batch-size 16 --epochs 100 --out runs/seg
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence

from nas import zoo
from nas.cli import Options, add_options, retire, run
from nas.errors import NasError
from nas.train.device import check_device
from nas.train.recipes import RECIPES, get_recipe
from nas.train.trainer import TrainConfig, fit


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, Options]:
    """The options, and how to build a :class:`TrainConfig` from them (its fields are the options)."""
    parser = argparse.ArgumentParser(prog="python -m nas.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", required=True, help="zoo name, spec string, JSON spec or spec file")
    parser.add_argument("--width", type=float, help="width multiplier (zoo names only)")
    parser.add_argument("--data", default="synthetic",
                        help="'synthetic' (built in), an ImageFolder or CIFAR-10 batches directory, "
                             "or a Cityscapes root for --task segmentation (default: synthetic)")
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="mobilenetv3",
                        help="training recipe (see nas/train/recipes.py; default: mobilenetv3)")
    parser.add_argument("--epochs", type=int, help="default: the recipe's (350 / 150)")
    parser.add_argument("--lr", type=float, help="peak learning rate at the recipe's reference batch")
    parser.add_argument("--label-smoothing", type=float, help="override the recipe's label smoothing")
    parser.add_argument("--train-resolution", type=int, metavar="PX",
                        help="training image size (classification default: 32 for synthetic/CIFAR-size data, "
                             "224 else; segmentation: the square training crop, default 512)")
    retire(parser, "--resolution", "--train-resolution (the training image size)")
    retire(parser, "--workers", "--loader-workers (DataLoader worker processes)")
    parser.add_argument("--out", type=Path, required=True, help="run directory (checkpoint, metrics, plot)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last epoch")
    parser.add_argument("--device", type=check_device, help="cpu | cuda[:N] (default: cuda when available)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    config = add_options(parser, TrainConfig, skip=("arch", "recipe", "data", "out", "epochs", "resolution"),
                         names={"num_workers": "loader_workers"})
    return parser.parse_args(argv), config


def _default_resolution(args: argparse.Namespace) -> int:
    if args.task == "segmentation":
        return 512
    if args.data == "synthetic" or (Path(args.data) / "data_batch_1").is_file():
        return 32
    return 224


def main(argv: Sequence[str] | None = None) -> int:
    args, options = parse_args(argv)
    if args.loader_workers is not None and args.loader_workers < 0:
        raise NasError(f"--loader-workers must be 0 or more, got {args.loader_workers}")
    recipe = get_recipe(args.recipe).with_overrides(lr=args.lr, label_smoothing=args.label_smoothing)
    config = options.build(args, arch=zoo.resolve(args.arch, args.width), recipe=recipe, data=args.data,
                           out=args.out, epochs=args.epochs or recipe.epochs,
                           resolution=args.train_resolution or _default_resolution(args))
    result = fit(config, resume=args.resume, progress=not args.quiet, device=args.device)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    shown = "  ".join(f"{k} {v:.4f}" for k, v in result.final.items())
    print(f"done: {len(result.history)} epochs; final {shown}; outputs in {args.out}", file=sys.stderr)
    print(result.history.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
