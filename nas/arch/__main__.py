"""``python -m nas.arch show NAME_OR_SPEC``: params, MAdds and the layer table of a network."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

import pandas as pd

from nas import cli, zoo
from nas.arch import ArchSpec, iter_layers


def layer_table(spec: ArchSpec, resolution: int = 224) -> pd.DataFrame:
    """One row per part (stem, blocks, head) with the input size each one sees."""
    size = resolution
    rows = [dict(part="stem", input=f"{size}x{size}x3", op="conv", kernel=spec.stem.kernel, exp="",
                 out=spec.stem.channels, se="", act=spec.stem.act, stride=spec.stem.stride, skip="")]
    size = -(-size // spec.stem.stride)
    for index, in_ch, layer in iter_layers(spec):
        se = f"{layer.se_channels(in_ch)} ({layer.se_style})" if layer.has_se else ""
        rows.append(dict(part=f"block{index}", input=f"{size}x{size}x{in_ch}", op=layer.op, kernel=layer.kernel,
                         exp=layer.exp, out=layer.out, se=se, act=layer.act, stride=layer.stride,
                         skip="yes" if layer.residual else ""))
        size = -(-size // layer.stride)
    head = spec.head
    rows.append(dict(part="head", input=f"{size}x{size}x{spec.last_channels()}", op="conv", kernel=1, exp="",
                     out=head.channels, se="", act=head.act, stride=1, skip=""))
    width = head.channels
    if head.efficient:
        rows.append(dict(part="head", input=f"1x1x{width}", op="pool+linear", kernel="", exp="",
                         out=head.hidden, se="", act=head.act, stride="", skip=""))
        width = head.hidden
    rows.append(dict(part="classifier", input=f"1x1x{width}", op="linear", kernel="", exp="",
                     out=head.num_classes, se="", act="", stride="", skip=""))
    return pd.DataFrame(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nas.arch", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    show = sub.add_parser("show", help="params, MAdds and a per-layer table")
    show.add_argument("arch", metavar="NAME_OR_SPEC",
                      help=f"a zoo name ({', '.join(zoo.names())}), a spec string, JSON, or a spec file")
    show.add_argument("--width", type=float, default=None, help="width multiplier (zoo names only)")
    show.add_argument("--latency-resolution", type=int, default=224, metavar="PX",
                      help="input size MAdds are counted at, as latency is priced elsewhere (default 224)")
    cli.retire(show, "--resolution", "--latency-resolution (the input size MAdds and latency are counted at)")
    show.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args(argv)

    from nas.profile import profile

    spec = zoo.resolve(args.arch, args.width)
    stats = profile(spec, args.latency_resolution)
    table = layer_table(spec, args.latency_resolution)
    if args.json:
        print(json.dumps({"params": stats.params, "madds": stats.madds, "resolution": args.latency_resolution,
                          "arch": spec.to_string(), "spec": spec.to_dict(),
                          "layers": table.to_dict(orient="records")}))
    else:
        print(table.to_string(index=False))
        print(f"\nparams {stats.params:,}   MAdds {stats.madds / 1e6:.1f}M at {args.latency_resolution}px")
        print(f"arch   {spec.to_string()}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
