"""``python -m nas.train``: train any architecture with a published recipe.

Examples::

    python -m nas.train --arch mobilenet_v3_small --data synthetic --epochs 5 --batch-size 64 --out runs/v3s
    python -m nas.train --arch mobilenet_v3_large --data ~/imagenet --recipe mobilenetv3 --epochs 350 \\
        --batch-size 256 --resolution 224 --out runs/v3l          # add --resume after an interruption
    torchrun --nproc_per_node 8 -m nas.train ...                    # DDP; --batch-size is the global batch
    python -m nas.train --task segmentation --arch mobilenet_v3_large --data ~/cityscapes \\
        --resolution 512 --output-stride 16 --reduced-tail --batch-size 16 --epochs 100 --out runs/seg
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence

from nas import zoo
from nas.cli import run
from nas.train.device import check_device
from nas.train.recipes import RECIPES, get_recipe
from nas.train.trainer import TASKS, TrainConfig, fit


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m nas.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", required=True, help="zoo name, spec string, JSON spec or spec file")
    parser.add_argument("--width", type=float, help="width multiplier (zoo names only)")
    parser.add_argument("--data", default="synthetic",
                        help="'synthetic' (built in), an ImageFolder or CIFAR-10 batches directory, "
                             "or a Cityscapes root for --task segmentation (default: synthetic)")
    parser.add_argument("--task", choices=TASKS, default="classification")
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="mobilenetv3",
                        help="training recipe (see nas/train/recipes.py; default: mobilenetv3)")
    parser.add_argument("--epochs", type=int, help="default: the recipe's (350 / 150)")
    parser.add_argument("--batch-size", type=int, default=128, help="global batch size (default: 128)")
    parser.add_argument("--lr", type=float, help="peak learning rate at the recipe's reference batch")
    parser.add_argument("--label-smoothing", type=float, help="override the recipe's label smoothing")
    parser.add_argument("--resolution", type=int,
                        help="input size (classification default: 32 for synthetic/CIFAR-size data, 224 else; "
                             "segmentation: the square training crop, default 512)")
    parser.add_argument("--out", type=Path, required=True, help="run directory (checkpoint, metrics, plot)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last epoch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes (default: 0)")
    parser.add_argument("--device", type=check_device, help="cpu | cuda[:N] (default: cuda when available)")
    parser.add_argument("--segmentation-head", choices=("lraspp", "fcn"), default="lraspp")
    parser.add_argument("--output-stride", type=int, choices=(8, 16), default=16)
    parser.add_argument("--reduced-tail", action="store_true", help="halve the last stage (segmentation)")
    parser.add_argument("--eval-scale", type=float, default=1.0,
                        help="segmentation: evaluate on images scaled by this factor (default: 1)")
    parser.add_argument("--synthetic-train", type=int, default=2000, help="synthetic training images")
    parser.add_argument("--synthetic-val", type=int, default=500, help="synthetic validation images")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def _default_resolution(args: argparse.Namespace) -> int:
    if args.task == "segmentation":
        return 512
    if args.data == "synthetic" or (Path(args.data) / "data_batch_1").is_file():
        return 32
    return 224


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    recipe = get_recipe(args.recipe).with_overrides(lr=args.lr, label_smoothing=args.label_smoothing)
    config = TrainConfig(
        arch=zoo.resolve(args.arch, args.width), recipe=recipe, data=args.data, out=args.out,
        epochs=args.epochs or recipe.epochs, batch_size=args.batch_size,
        resolution=args.resolution or _default_resolution(args), task=args.task, seed=args.seed,
        num_workers=args.workers, segmentation_head=args.segmentation_head, output_stride=args.output_stride,
        reduced_tail=args.reduced_tail, eval_scale=args.eval_scale, synthetic_train=args.synthetic_train,
        synthetic_val=args.synthetic_val)
    result = fit(config, resume=args.resume, progress=not args.quiet, device=args.device)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    shown = "  ".join(f"{k} {v:.4f}" for k, v in result.final.items())
    print(f"done: {len(result.history)} epochs; final {shown}; outputs in {args.out}", file=sys.stderr)
    print(result.history.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
