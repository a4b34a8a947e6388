"""A smaller copy of an ImageFolder tree: the first N images of every class (by file name), hard-linked.

Benchmarks that need real images but not all of them (``supernet_ranking.py`` on 2 CPU cores)
run on a subset this script makes the same way every time:

    python experiments/benchmarks/imagefolder_subset.py /tmp/cifar/cifar10_jpg /tmp/cifar_sub/cifar10_10k \\
        --per-class train=1000 test=200
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from nas.cli import run
from nas.errors import NasError


def _per_class(text: str) -> tuple[str, int]:
    split, _, count = text.partition("=")
    if not split or not count.isdigit() or int(count) < 1:
        raise argparse.ArgumentTypeError(f"expected SPLIT=N with N >= 1, got {text!r}")
    return split, int(count)


def make_subset(source: Path, out: Path, per_class: dict[str, int]) -> dict[str, int]:
    """Hard-link (or copy, across file systems) the first ``per_class[split]`` files of each class."""
    made = {}
    for split, count in per_class.items():
        classes = sorted(p for p in (source / split).iterdir() if p.is_dir()) if (source / split).is_dir() else []
        if not classes:
            raise NasError(f"{source / split}: no class folders (expected an ImageFolder split)")
        made[split] = 0
        for folder in classes:
            files = sorted(p for p in folder.iterdir() if p.is_file())[:count]
            if len(files) < count:
                raise NasError(f"{folder}: {len(files)} images, fewer than the {count} asked for")
            target = out / split / folder.name
            target.mkdir(parents=True, exist_ok=True)
            for file in files:
                if not (target / file.name).exists():
                    try:
                        os.link(file, target / file.name)
                    except OSError:
                        shutil.copy2(file, target / file.name)
            made[split] += len(files)
    return made


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", type=Path, help="an ImageFolder tree (SPLIT/CLASS/IMAGE)")
    p.add_argument("out", type=Path, help="where the subset goes")
    p.add_argument("--per-class", type=_per_class, nargs="+", required=True, metavar="SPLIT=N")
    args = p.parse_args(argv)
    made = make_subset(args.source, args.out, dict(args.per_class))
    print(", ".join(f"{split}: {count} images" for split, count in made.items()) + f" in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
