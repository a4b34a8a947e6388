"""Training and inference images/s of our MobileNetV3-Large next to a plain reference network.

The reference is a straightforward torchvision-style re-implementation of the same network,
written here from the paper's table (its own block and SE classes), so the comparison shows
whether the spec-driven builder costs anything. Both have the same parameter count (checked).

    python experiments/benchmarks/train_throughput.py [--batch 32] [--train-resolution 224] [--steps 5]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from nas import zoo
from nas.arch import make_divisible
from nas.model import build_model

# (kernel, expanded, out, SE, activation, stride) per block of MobileNetV3-Large (paper, table 1).
LARGE = [
    (3, 16, 16, False, "RE", 1), (3, 64, 24, False, "RE", 2), (3, 72, 24, False, "RE", 1),
    (5, 72, 40, True, "RE", 2), (5, 120, 40, True, "RE", 1), (5, 120, 40, True, "RE", 1),
    (3, 240, 80, False, "HS", 2), (3, 200, 80, False, "HS", 1), (3, 184, 80, False, "HS", 1),
    (3, 184, 80, False, "HS", 1), (3, 480, 112, True, "HS", 1), (3, 672, 112, True, "HS", 1),
    (5, 672, 160, True, "HS", 2), (5, 960, 160, True, "HS", 1), (5, 960, 160, True, "HS", 1),
]


def _act(kind: str) -> nn.Module:
    return nn.Hardswish() if kind == "HS" else nn.ReLU()


def _conv(cin: int, cout: int, k: int = 1, s: int = 1, groups: int = 1, act: str | None = None) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout, eps=1e-3)]
    return nn.Sequential(*layers, *([_act(act)] if act else []))


class _SE(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        squeeze = make_divisible(ch / 4, 8)
        self.fc1, self.fc2 = nn.Conv2d(ch, squeeze, 1), nn.Conv2d(squeeze, ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * nn.functional.hardsigmoid(self.fc2(nn.functional.relu(self.fc1(s))))


class _Block(nn.Module):
    def __init__(self, cin: int, k: int, exp: int, out: int, se: bool, act: str, s: int) -> None:
        super().__init__()
        self.skip = s == 1 and cin == out
        layers = [] if exp == cin else [_conv(cin, exp, act=act)]
        layers += [_conv(exp, exp, k, s, exp, act)] + ([_SE(exp)] if se else []) + [_conv(exp, out)]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) if self.skip else self.body(x)


class ReferenceV3Large(nn.Module):
    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        layers, cin = [_conv(3, 16, 3, 2, act="HS")], 16
        for k, exp, out, se, act, s in LARGE:
            layers.append(_Block(cin, k, exp, out, se, act, s))
            cin = out
        layers.append(_conv(cin, 960, act="HS"))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Linear(960, 1280), nn.Hardswish(), nn.Dropout(0.2),
                                        nn.Linear(1280, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).mean((2, 3)))


def _rate(fn, batch: int, steps: int) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    return batch * steps / (time.perf_counter() - start)


def measure(model: nn.Module, batch: int, resolution: int, steps: int) -> tuple[float, float]:
    x = torch.randn(batch, 3, resolution, resolution)
    y = torch.randint(0, 1000, (batch,))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def train_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()

    model.train()
    train = _rate(train_step, batch, steps)
    model.eval()
    with torch.no_grad():
        infer = _rate(lambda: model(x), batch, steps)
    return train, infer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--train-resolution", type=int, default=224)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    ours, reference = build_model(zoo.get("mobilenet_v3_large")), ReferenceV3Large()
    counts = [sum(p.numel() for p in m.parameters()) for m in (ours, reference)]
    if counts[0] != counts[1]:
        raise SystemExit(f"error: parameter counts differ ({counts[0]} vs {counts[1]}): not the same network")
    print(f"MobileNetV3-Large, {counts[0]:,} params, batch {args.batch}, {args.train_resolution} px, "
          f"{args.threads} threads, {args.steps} timed steps")
    print(f"{'model':<12}{'train img/s':>14}{'infer img/s':>14}")
    # Alternate the two so that load from other processes hits both alike.
    results = {"ours": [], "reference": []}
    for _ in range(2):
        for name, model in (("ours", ours), ("reference", reference)):
            results[name].append(measure(model, args.batch, args.train_resolution, args.steps))
    for name, runs in results.items():
        train, infer = max(r[0] for r in runs), max(r[1] for r in runs)
        print(f"{name:<12}{train:>14.1f}{infer:>14.1f}")


if __name__ == "__main__":
    main()
