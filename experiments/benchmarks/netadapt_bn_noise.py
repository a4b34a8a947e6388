"""Benchmark: how much NetAdapt's proposal accuracies move with fewer BN recalibration batches
or a smaller held-out set, next to how much they move with another draw of the same 20 batches.

Trains MnasNet-A1 on the synthetic proxy task for ``--pretrain-steps`` (fixed seed), proposes one
NetAdapt iteration on pixel-cpu (delta 1 %), fine-tunes ``--proposals`` of them drawn at random for
five steps without recalibration, then recalibrates a copy of each child in every way compared
and scores it on the held-out split. Printed per variant: the mean absolute accuracy change
against the reference (20 batches, all held-out images), the Spearman rank correlation of the
proposals' accuracies with it, and whether the slope rule picks the same proposal.

    python experiments/benchmarks/netadapt_bn_noise.py [--pretrain-steps 150] [--proposals 8]
"""

from __future__ import annotations

import argparse
import copy
from dataclasses import replace

import numpy as np
import pandas as pd
import torch

from nas import zoo
from nas.model import build_model
from nas.netadapt.__main__ import latency_function
from nas.netadapt.inherit import inherit
from nas.netadapt.proposals import CachedLatency, propose
from nas.netadapt.select import Outcome, select
from nas.train.loop import recalibrate_bn
from nas.train.proxy import ProxyTraining, open_data, train

# (label, recalibration batches, seed offset of the batch draw, held-out images scored; None: all)
VARIANTS = (
    ("20 batches (reference)", 20, 1000, None),
    ("20 batches, another draw", 20, 2000, None),
    ("10 batches", 10, 1000, None),
    ("5 batches", 5, 1000, None),
    ("20 batches, half the held-out set", 20, 1000, 0.5),
)


@torch.no_grad()
def hits(model: torch.nn.Module, batches: list) -> torch.Tensor:
    """Per held-out image: 1 if classified correctly."""
    model.eval()
    return torch.cat([model(inputs).argmax(1).eq(targets) for inputs, targets in batches]).float()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pretrain-steps", type=int, default=150)
    parser.add_argument("--proposals", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5, help="short-term fine-tuning steps")
    args = parser.parse_args()
    torch.set_num_threads(1)
    training = ProxyTraining()
    data = open_data(training)
    held_out = list(data.loader("val", batch_size=training.batch_size))
    spec = zoo.get("mnasnet_a1", num_classes=data.num_classes)
    latency = CachedLatency(latency_function("pixel-cpu", 224))
    torch.manual_seed(0)
    seed = build_model(spec)
    train(seed, training, steps=args.pretrain_steps, seed=0)
    parent = Outcome(latency(spec), float(hits(seed, held_out).mean()))
    found = propose(spec, latency=latency, reduction=0.01 * latency(spec))
    drawn = sorted(int(i) for i in np.random.default_rng(0).choice(len(found), args.proposals, replace=False))
    accuracy: dict[str, list[float]] = {label: [] for label, *_ in VARIANTS}
    for i in drawn:
        child = inherit(seed, found[i].spec)
        train(child, replace(training, bn_batches=0), steps=args.steps, seed=i)
        for label, batches, offset, share in VARIANTS:
            model = copy.deepcopy(child)
            torch.manual_seed(offset + i)  # the augmentation of the recalibration batches
            recalibrate_bn(model, data.loader("train", batch_size=training.batch_size, seed=offset + i),
                           batches=batches)
            scored = hits(model, held_out)
            accuracy[label].append(float(scored[:round(len(scored) * (share or 1))].mean()))
    latencies = [found[i].latency_ms for i in drawn]
    pick = {label: select([Outcome(ms, acc) for ms, acc in zip(latencies, values)], parent=parent)
            for label, values in accuracy.items()}
    reference = pd.Series(accuracy[VARIANTS[0][0]])
    rows = [{"variant": label, "mean |dAcc| (pts)": 100 * float((pd.Series(values) - reference).abs().mean()),
             "spearman": pd.Series(values).corr(reference, method="spearman"),
             "same selection": pick[label] == pick[VARIANTS[0][0]]} for label, values in accuracy.items()]
    print(f"seed accuracy {parent.accuracy:.3f} after {args.pretrain_steps} steps; {len(drawn)} proposals of "
          f"{len(found)}: {', '.join(found[i].unit.name for i in drawn)}")
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.3f}"))


if __name__ == "__main__":
    main()
