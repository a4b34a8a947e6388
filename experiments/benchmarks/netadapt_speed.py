"""Benchmark: where a NetAdapt proposal's time goes, and the wall time of a small fixed run.

Runs one small NetAdapt job in this process (MnasNet-A1 to a pixel-cpu latency ratio, five
short-term steps, a fixed seed and a fixed number of proposals per iteration) and times each
phase by wrapping the library's own functions from outside, so the same script measures an older
checkout unchanged (run it from that checkout's root). Phase times are exclusive: a BN
recalibration inside the fine-tuning steps counts as recalibration only; image decoding and
augmentation count as data wherever they happen. ``--workers 2`` fine-tunes on a local Ray of two
CPUs instead, as the command line does by default; the phases then cover this process only.

    python experiments/benchmarks/netadapt_speed.py [--ratio 0.98] [--max-proposals 6]
        [--steps 5] [--threads 1] [--workers 1] [--training KEY=VALUE ...] [--out DIR]

``--training`` overrides a field of ``nas.train.proxy.ProxyTraining`` (e.g. ``bn_batches=20``
to run new code with the old recalibration). The last lines are the run's selections, so two
checkouts can be compared for identical results.
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

import torch

# (module, attribute, phase); attributes missing from a checkout are skipped.
PHASES = (
    ("nas.netadapt.loop", "propose", "proposals (latency)"),
    ("nas.netadapt.finetune", "build_model", "model building"),
    ("nas.netadapt.finetune", "inherit", "weight inheritance"),
    ("nas.netadapt.finetune", "inherit_state", "weight inheritance"),
    ("nas.train.proxy", "train_steps", "fine-tuning steps"),
    ("nas.train.loop", "recalibrate_bn", "BN recalibration"),
    ("nas.train.proxy", "evaluate", "evaluation"),
    ("nas.train.data", "Split.__getitem__", "data"),
    ("nas.netadapt.finetune", "save_checkpoint", "checkpoints"),
    ("nas.netadapt.loop", "save_checkpoint", "checkpoints"),
    ("nas.netadapt.loop", "load_checkpoint", "checkpoints"),
    ("nas.netadapt.finetune", "load_checkpoint", "checkpoints"),
    ("nas.rundir", "copy_file", "checkpoints"),
    ("nas.netadapt.loop", "plot_netadapt_history", "plot"),
)


class PhaseClock:
    """Exclusive wall time and call count per phase (a nested phase's time leaves its caller's)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._stack: list[list[float]] = []  # per open call: [start, time spent in nested phases]

    def wrap(self, phase: str, function: Callable) -> Callable:
        def timed(*args: Any, **kwargs: Any) -> Any:
            self._stack.append([time.perf_counter(), 0.0])
            try:
                return function(*args, **kwargs)
            finally:
                start, nested = self._stack.pop()
                spent = time.perf_counter() - start
                self.seconds[phase] += spent - nested
                self.calls[phase] += 1
                if self._stack:
                    self._stack[-1][1] += spent
        return timed


def instrument(clock: PhaseClock) -> list[str]:
    """Wrap every phase function this checkout has; the phases found."""
    found = []
    for module_name, attribute, phase in PHASES:
        owner: Any = importlib.import_module(module_name)
        *path, name = attribute.split(".")
        for part in path:
            owner = getattr(owner, part)
        if hasattr(owner, name):
            setattr(owner, name, clock.wrap(phase, getattr(owner, name)))
            found.append(f"{module_name}.{attribute}")
    return found


def parse_override(text: str) -> tuple[str, Any]:
    key, _, value = text.partition("=")
    for kind in (int, float):
        try:
            return key, kind(value)
        except ValueError:
            pass
    return key, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="mnasnet_a1")
    parser.add_argument("--ratio", type=float, default=0.98, help="latency target as a fraction of the seed's")
    parser.add_argument("--steps", type=int, default=5, help="short-term fine-tuning steps")
    parser.add_argument("--max-proposals", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of this process")
    parser.add_argument("--workers", type=int, default=1, help="proposals fine-tuned in parallel on a local Ray")
    parser.add_argument("--training", nargs="*", default=[], metavar="KEY=VALUE",
                        help="ProxyTraining overrides, e.g. bn_batches=20")
    parser.add_argument("--out", type=Path, help="run directory (default: a temporary one, removed)")
    args = parser.parse_args()

    clock = PhaseClock()
    instrument(clock)
    from nas import zoo
    from nas.netadapt import LatencyTarget, Settings, netadapt
    from nas.netadapt.__main__ import latency_function
    from nas.train.proxy import ProxyTraining

    torch.set_num_threads(args.threads)
    training = ProxyTraining(**dict(parse_override(item) for item in args.training))
    settings = Settings(short_term_steps=args.steps, max_proposals=args.max_proposals, seed=args.seed)
    out = args.out or Path(tempfile.mkdtemp(prefix="netadapt_speed_"))
    shutil.rmtree(out, ignore_errors=True)
    seed = zoo.get(args.arch, num_classes=10)
    wall, cpu = time.perf_counter(), time.process_time()
    result = netadapt(seed, target=LatencyTarget(ratio=args.ratio), latency=latency_function("pixel-cpu", 224),
                      training=training, settings=settings, out=out, workers=args.workers, progress=False)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if args.workers > 1:
        import ray

        ray.shutdown()
    proposals = sum(row.proposals for row in result.history)

    print(f"{args.arch} -> {args.ratio:g}x pixel-cpu latency, {args.steps} steps, {args.max_proposals} proposals "
          f"per iteration, {torch.get_num_threads()} thread(s), {args.workers} worker(s); training: {training}")
    print(f"{'phase':<22}{'calls':>7}{'seconds':>10}{'share':>8}")
    for phase, seconds in sorted(clock.seconds.items(), key=lambda item: -item[1]):
        print(f"{phase:<22}{clock.calls[phase]:>7}{seconds:>10.2f}{seconds / wall:>8.1%}")
    rest = wall - sum(clock.seconds.values())
    print(f"{'rest':<22}{'':>7}{rest:>10.2f}{rest / wall:>8.1%}")
    print(f"wall {wall:.1f} s, CPU {cpu:.1f} s (this process), {len(result.history) - 1} iterations, {proposals} proposals "
          f"+ the seed: {wall / (proposals + 1):.2f} s each")
    for row in result.history:
        print(f"iteration {row.iteration}: {row.unit} {row.old_width} -> {row.width}, {row.latency_ms:.3f} ms, "
              f"accuracy {row.accuracy:.4f}")
    if args.out is None:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
