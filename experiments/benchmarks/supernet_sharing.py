"""Which shared choice keeps a supernet from learning? One fresh supernet per choice group.

Each run trains a new supernet for ``--steps`` SGD steps on one child per step: a fixed base child
(the smallest child of ``--skeleton``, its unsized choices drawn with ``--seed``) in which only the
choices the run names (a suffix such as ``.op``, a prefix such as ``stem.``, or several joined by
``+``) are drawn anew every step (``none``: the base child
itself, i.e. stand-alone training). ``--fix SUFFIX=VALUE`` forces an option in every run (e.g.
``.skip=identity``); ``SUFFIX=A|B`` keeps those options only (the first in the base child, all of
them drawn when a run varies the choice, e.g. ``.op=mb6|ds``). It prints the mean training loss per window of ten steps: a run that stays
near ln(10) = 2.30 while ``none`` falls is a choice whose weight sharing the training does not
survive at this budget.

    python experiments/benchmarks/supernet_sharing.py --steps 60
    python experiments/benchmarks/supernet_sharing.py --steps 60 --fix .skip=identity --runs none .layers
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from nas.cli import run
from nas.errors import NasError
from nas.supernet.network import Supernet
from nas.supernet.sampling import extreme_child
from nas.supernet.training import SupernetSettings
from nas.train.loop import parameter_groups
from nas.train.proxy import open_data
from search_spaces import SPACES, FactorizedSpace, get_space

def _names(choice_name: str, part: str) -> bool:
    return choice_name.endswith(part) or choice_name.startswith(part)


RUNS = ("none", ".op", ".kernel", ".se", ".act", ".skip", ".filters", ".layers", "stem.", "head.")
WINDOW = 10


def _fixes(pairs: list[str], space: FactorizedSpace) -> dict[int, list[int]]:
    """``SUFFIX=A|B`` -> {choice index: the allowed option indices} for every choice the suffix names."""
    fixed = {}
    for pair in pairs:
        suffix, sep, value = pair.partition("=")
        matched = [(k, c) for k, c in enumerate(space.choices()) if sep and _names(c.name, suffix)]
        if not matched:
            raise NasError(f"--fix {pair!r}: give SUFFIX=VALUE naming at least one choice of the space")
        for k, choice in matched:
            names = [str(option) for option in choice.options]
            missing = [v for v in value.split("|") if v not in names]
            if missing:
                raise NasError(f"--fix {pair!r}: {choice.name} has no option {missing[0]!r} "
                               f"(options: {', '.join(names)})")
            fixed[k] = [names.index(v) for v in value.split("|")]
    return fixed


def losses(space: FactorizedSpace, settings: SupernetSettings, *, suffix: str, steps: int, skeleton: str,
           fixed: dict[int, list[int]], seed: int) -> list[float]:
    """Training loss of every step of a fresh supernet whose ``suffix`` choices vary per step."""
    torch.manual_seed(seed)
    data = open_data(settings)
    net = Supernet(space)
    optimizer = torch.optim.SGD(parameter_groups(net, settings.weight_decay), lr=settings.lr,
                                momentum=settings.momentum, nesterov=True)
    base = space.encode(extreme_child(space, np.random.default_rng(seed), largest=False, skeleton=skeleton))
    base = [fixed[k][0] if k in fixed else v for k, v in enumerate(base)]
    parts = [] if suffix == "none" else suffix.split("+")
    varied = [k for k, c in enumerate(space.choices()) if any(_names(c.name, part) for part in parts)
              and len(fixed.get(k, c.options)) > 1 and c.name != "skeleton"]
    rng, criterion, out = np.random.default_rng(seed), nn.CrossEntropyLoss(), []
    net.train()
    while len(out) < steps:
        for inputs, targets in data.loader("train", batch_size=settings.batch_size, seed=len(out), drop_last=True):
            vector = list(base)
            for k in varied:
                allowed = fixed.get(k, range(len(space.choices()[k].options)))
                vector[k] = allowed[int(rng.integers(len(allowed)))]
            optimizer.zero_grad(set_to_none=True)
            loss = criterion(net(inputs, space.decode(vector)), targets)
            loss.backward()
            optimizer.step()
            out.append(loss.item())
            if len(out) == steps:
                break
    return out


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", choices=SPACES, default="mobilenetv3")
    p.add_argument("--skeleton", default="small", help="skeleton of the base child (default small)")
    p.add_argument("--runs", nargs="+", default=list(RUNS), metavar="SUFFIX",
                   help=f"choice-name suffixes to vary, one run each (default: {' '.join(RUNS)})")
    p.add_argument("--fix", nargs="*", default=[], metavar="SUFFIX=VALUE", help="options forced in every run")
    p.add_argument("--steps", type=int, default=60, help="SGD steps per run (default 60)")
    p.add_argument("--lr", type=float, default=SupernetSettings.lr, help=f"(default {SupernetSettings.lr})")
    p.add_argument("--data", default="synthetic", help="synthetic, an ImageFolder or CIFAR-10 directory")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="write the per-window losses here as CSV")
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.steps < WINDOW:
        raise NasError(f"--steps must be at least {WINDOW}")
    torch.set_num_threads(1)
    settings = SupernetSettings(space=args.space, data=args.data, lr=args.lr, seed=args.seed)
    space = get_space(args.space, num_classes=open_data(settings).num_classes)
    if args.skeleton not in space.skeletons:
        raise NasError(f"unknown skeleton {args.skeleton!r}; known: {', '.join(space.skeletons)}")
    fixed = _fixes(args.fix, space)
    rows = []
    for suffix in args.runs:
        begin = time.perf_counter()
        loss = losses(space, settings, suffix=suffix, steps=args.steps, skeleton=args.skeleton, fixed=fixed,
                      seed=args.seed)
        windows = [float(np.mean(loss[i:i + WINDOW])) for i in range(0, len(loss), WINDOW)]
        rows.append({"varied": suffix, **{f"steps_{i * WINDOW + 1}_{(i + 1) * WINDOW}": w
                                          for i, w in enumerate(windows)},
                     "seconds": time.perf_counter() - begin})
        print(f"{suffix:10s}\n    " + " ".join(f"{w:.3f}" for w in windows) + f"   ({rows[-1]['seconds']:.0f} s)",
              flush=True)
    if args.out:
        pd.DataFrame(rows).to_csv(args.out, index=False)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
