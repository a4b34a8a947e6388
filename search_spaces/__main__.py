"""``python -m search_spaces``: list the spaces, show their choices, sample them, test membership.

Examples::

    python -m search_spaces list
    python -m search_spaces show mobilenetv3
    python -m search_spaces show mobilenetv3-shared    # the weight-sharing sub-space
    python -m search_spaces sample mnasnet -n 5 --seed 1 --out samples.csv
    python -m search_spaces check mnasnet mnasnet_a1
    python -m search_spaces check mobilenetv3 mobilenet_v3_large --ignore-expansion
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from nas import cli, zoo
from nas.arch import ArchSpec
from nas.errors import NasError
from search_spaces import SPACES, FactorizedSpace, SearchSpace, get_space


def skeleton_table(space: FactorizedSpace) -> pd.DataFrame:
    """One row per block of each skeleton: stride, base width and depth, reachable widths."""
    return pd.DataFrame([{"skeleton": key, "block": i, "stride": stage.stride, "base width": stage.width,
                          "widths": ", ".join(map(str, space.stage_widths(i, stage))), "base depth": stage.depth}
                         for key, stages in space.skeletons.items() for i, stage in enumerate(stages, 1)])


def choices_table(space: SearchSpace) -> pd.DataFrame:
    """One row per choice of a space, in vector order."""
    return pd.DataFrame([{"index": i, "choice": c.name, "options": ", ".join(map(str, c.options)),
                          "count": len(c.options)} for i, c in enumerate(space.choices())])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m search_spaces", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the spaces, their number of choices and size")
    show = sub.add_parser("show", help="the choices of one space, in vector order")
    show.add_argument("space", help=f"one of {', '.join(SPACES)}")
    sample = sub.add_parser("sample", help="draw random architectures (spec strings and vectors)")
    sample.add_argument("space", help=f"one of {', '.join(SPACES)}")
    sample.add_argument("-n", type=int, default=5, help="how many (default 5)")
    sample.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    sample.add_argument("--out", type=Path, default=None, help="also write them to this CSV file")
    check = sub.add_parser("check", help="is a network a member? prints its vector, or why not (exit 1)")
    check.add_argument("space", help=f"one of {', '.join(SPACES)}")
    check.add_argument("arch", metavar="NAME_OR_SPEC", help="a zoo name, a spec string, JSON, or a spec file")
    check.add_argument("--ignore-expansion", action="store_true",
                       help="accept any expanded widths (what NetAdapt changes) and print the nearest member")
    args = parser.parse_args(argv)

    if args.command == "list":
        spaces = [get_space(name) for name in SPACES]
        print(pd.DataFrame({"space": [s.name for s in spaces], "choices": [len(s.choices()) for s in spaces],
                            "size": [f"{s.size():.3g}" for s in spaces]}).to_string(index=False))
        return 0
    if args.command == "check":
        spec = zoo.resolve(args.arch)
        space = get_space(args.space, num_classes=spec.head.num_classes)  # the classifier is not searched
        return _check(space, spec, args.ignore_expansion)
    space = get_space(args.space)
    if args.command == "show":
        print(choices_table(space).to_string(index=False))
        if isinstance(space, FactorizedSpace):
            fixed = space.fixed()
            if fixed:
                print("\nfixed: " + ", ".join(f"{name} = {value}" for name, value in fixed.items()))
            print()
            print(skeleton_table(space).to_string(index=False))
        print(f"\n{len(space.choices())} choices, {space.size():,} vectors")
        return 0
    if args.command == "sample":
        if args.n < 1:
            raise NasError(f"-n must be at least 1, got {args.n}")
        rng = np.random.default_rng(args.seed)
        specs = [space.sample(rng) for _ in range(args.n)]
        table = pd.DataFrame({"vector": [" ".join(map(str, space.encode(s))) for s in specs],
                              "spec": [s.to_string() for s in specs]})
        if args.out is not None:
            table.to_csv(args.out, index=False)
        for spec in table["spec"]:
            print(spec)
    return 0


def _check(space: SearchSpace, spec: ArchSpec, ignore_expansion: bool) -> int:
    reason = space.why_not(spec, ignore_expansion=ignore_expansion)
    if reason is not None:
        print(f"no: {reason}")
        return 1
    print("yes" + (" (up to expanded widths)" if ignore_expansion else ""))
    print("vector  " + " ".join(map(str, space.encode(spec, ignore_expansion=ignore_expansion))))
    if ignore_expansion:
        print(f"nearest {space.project(spec).to_string()}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
