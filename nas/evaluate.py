"""``python -m nas.evaluate``: accuracy, loss and throughput of a checkpoint written by ``nas.train``.

Examples::

    python -m nas.evaluate --checkpoint runs/v3s --data synthetic
    python -m nas.evaluate --arch mobilenet_v3_large --checkpoint runs/v3l/checkpoint.pt \\
        --data ~/imagenet --split test --json-out results.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

import pandas as pd

from nas import zoo
from nas.cli import retire, run
from nas.errors import NasError
from nas.train.device import check_device, default_device


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m nas.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True, help="checkpoint.pt or the run directory")
    parser.add_argument("--arch", help="expected architecture (zoo name, spec string or file); checked "
                                       "against the checkpoint's own spec")
    parser.add_argument("--data", default="synthetic", help="'synthetic', ImageFolder, CIFAR-10 batches or "
                                                            "Cityscapes root (default: synthetic)")
    parser.add_argument("--split", choices=("val", "test"), default="val",
                        help="val: the held-out part of train (default); test: the test set")
    parser.add_argument("--eval-resolution", type=int, metavar="PX",
                        help="image size to evaluate at (default: the checkpoint's training size)")
    retire(parser, "--resolution", "--eval-resolution (the image size to evaluate at)")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--loader-workers", type=int, metavar="N",
                        help="DataLoader worker processes (default: min(4, CPUs - 1) for image folders, 0 for "
                             "synthetic data and CIFAR-10 batches)")
    parser.add_argument("--no-ema", action="store_true", help="evaluate the raw weights, not their EMA")
    parser.add_argument("--device", type=check_device, default=default_device(),
                        help="cpu | cuda[:N] (default: cuda when available)")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object instead of the table")
    parser.add_argument("--json-out", type=Path, metavar="PATH", help="also write the result to this JSON file")
    args, rest = parser.parse_known_args(argv)
    if args.loader_workers is not None and args.loader_workers < 0:
        raise NasError(f"--loader-workers must be 0 or more, got {args.loader_workers}")
    if rest and args.json:  # the old --json PATH
        raise NasError(f"--json prints JSON to stdout and takes no value: write {rest[0]} with --json-out {rest[0]}")
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from nas.train.cityscapes import load_cityscapes
    from nas.train.data import load_classification
    from nas.train.loop import evaluate
    from nas.train.segmentation import evaluate_segmentation
    from nas.train.trainer import load_trained

    model, spec, config = load_trained(args.checkpoint, use_ema=not args.no_ema, device=args.device)
    if args.arch is not None:
        expected = zoo.resolve(args.arch, num_classes=spec.head.num_classes)
        if config["task"] == "classification" and expected != spec:
            raise NasError(f"--arch {args.arch} is not the architecture stored in {args.checkpoint}")
    resolution = args.eval_resolution or config["resolution"]
    row = {"checkpoint": str(args.checkpoint), "data": args.data, "split": args.split,
           "weights": "raw" if args.no_ema else "ema-if-present"}
    if config["task"] == "segmentation":
        if args.split != "val":
            raise NasError("segmentation data has labels for train and val only: use --split val")
        data = load_cityscapes(args.data, crop=resolution, eval_scale=config["eval_scale"],
                               num_workers=args.loader_workers)
        result = evaluate_segmentation(model, data.loader("val", batch_size=1), num_classes=data.num_classes,
                                       device=args.device)
        row.update(miou=result.miou, pixel_accuracy=result.pixel_accuracy, loss=result.loss,
                   images_per_s=result.images_per_s, images=result.images)
    else:
        data = load_classification(args.data, resolution=resolution, seed=config["seed"],
                                   synthetic_train=config["synthetic_train"], synthetic_val=config["synthetic_val"],
                                   num_workers=args.loader_workers)
        if data.num_classes != spec.head.num_classes:
            raise NasError(f"the data has {data.num_classes} classes, the model {spec.head.num_classes}")
        result = evaluate(model, data.loader(args.split, batch_size=args.batch_size), device=args.device)
        row.update(top1=result.top1, top5=result.top5, loss=result.loss, images_per_s=result.images_per_s,
                   images=result.images)
    if args.json:
        print(json.dumps(row))
    else:
        print(pd.DataFrame([row]).to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    if args.json_out is not None:
        args.json_out.write_text(json.dumps(row, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
