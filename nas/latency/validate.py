"""Validation of a latency target: predicted against measured (host-cpu, cuda) or published (pixel-cpu).

* :func:`validate_measured`: random members of the search spaces (and / or the zoo), predicted
  and timed end to end on this machine, every set in one measurement window (see its docstring);
  one CSV + PNG per set.
* pixel-cpu has no device here; :func:`nas.latency.pixel.validate.validate_published` checks each
  named calibration against the published rows of its benchmark run.

``python -m nas.latency validate`` and ``experiments/benchmarks/latency_accuracy.py`` both call
these functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from nas import zoo
from nas.arch import ArchSpec
from nas.errors import NasError
from nas.latency.calibrate import accuracy, fit_calibration
from nas.latency.keys import decompose
from nas.latency.measure import MEASURABLE_TARGETS, Protocol, Timing, build_table, measure_networks
from nas.latency.predict import LatencyModel, calibration_networks, default_table_dir, get_latency_model

SPACES = ("mnasnet", "mobilenetv3")
SETS = (*SPACES, "zoo")


@dataclass(frozen=True)
class MeasuredValidation:
    """What :func:`validate_measured` checks: ``sets`` are space names or ``zoo``."""

    target: str = "host-cpu"
    sets: tuple[str, ...] = ("mnasnet",)
    samples: int = 50
    seed: int = 1
    resolution: int = 224
    threads: int = 1
    table_dir: Path | None = None
    force: bool = False
    recalibrate: bool = False

    def __post_init__(self) -> None:
        if self.target not in MEASURABLE_TARGETS:
            raise NasError(f"validate: target {self.target!r} is not measured here (measured targets: "
                           f"{', '.join(MEASURABLE_TARGETS)}; pixel-cpu is checked against published rows)")
        unknown = sorted(set(self.sets) - set(SETS))
        if unknown or not self.sets:
            raise NasError(f"validate: unknown set(s) {unknown or '(none)'}; known: {', '.join(SETS)}")
        if self.samples < 1 or self.resolution < 1 or self.threads < 1:
            raise NasError("validate: samples, resolution and threads must be positive")


def sample_space(space_name: str, n: int, seed: int) -> list[ArchSpec]:
    """``n`` members of a search space drawn with ``seed``."""
    from search_spaces import get_space

    space, rng = get_space(space_name), np.random.default_rng(seed)
    return [space.sample(rng) for _ in range(n)]


def validate_measured(settings: MeasuredValidation, out: Path, *,
                      say: Callable[[str], None] = print) -> pd.DataFrame:
    """Predicted vs measured latency per set, every set measured in the same window.

    On a shared machine the speed of both keys and whole networks drifts by several per cent
    over minutes; sets measured one after the other would each see another level. So the keys
    of all sets (and of the calibration networks, with ``recalibrate``) are built in one table
    build whose passes spread over all of them, and all networks are timed in one interleaved
    sweep. Writes ``validate_<target>_<set>_<resolution>.csv`` and ``.png`` per set into ``out``;
    returns every set's rows.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sets: dict[str, tuple[list[str], list[ArchSpec]]] = {}
    for name in dict.fromkeys(settings.sets):
        if name == "zoo":
            sets[name] = (list(zoo.names()), [zoo.get(n) for n in zoo.names()])
        else:
            specs = sample_space(name, settings.samples, settings.seed)
            sets[name] = ([f"{name}-{settings.seed}-{i}" for i in range(len(specs))], specs)
    calibration = calibration_networks() if settings.recalibrate else {}
    specs = [spec for _, set_specs in sets.values() for spec in set_specs]
    together = [*specs, *calibration.values()]
    table_dir = settings.table_dir or default_table_dir(settings.target, settings.threads)
    protocol = Protocol(threads=settings.threads)
    build_table([key for spec in together for key in decompose(spec, settings.resolution)], table_dir,
                target=settings.target, protocol=protocol, force=settings.force)
    model = get_latency_model(settings.target, table_dir=table_dir, force=settings.force, threads=settings.threads)
    order = np.random.default_rng(settings.seed).permutation(len(together))  # sets and calibration nets interleaved
    shuffled = measure_networks([together[i] for i in order], settings.resolution, target=settings.target,
                                protocol=protocol)
    timings = [shuffled[j] for j in np.argsort(order)]
    if calibration:
        model.calibration = fit_calibration(model.key_sums(list(calibration.values()), settings.resolution),
                                            [t.ms for t in timings[len(specs):]])
        say(f"recalibrated on {len(calibration)} networks measured alongside: ms = "
            f"{model.calibration.scale:.4f} * sum + {model.calibration.offset:.3f} (not saved)")
    frames, start = [], 0
    for name, (names, set_specs) in sets.items():
        set_timings = timings[start:start + len(set_specs)]
        start += len(set_specs)
        frames.append(_report(model, settings, out, name, names, set_specs, set_timings, say))
    return pd.concat(frames, ignore_index=True)


def _report(model: LatencyModel, settings: MeasuredValidation, out: Path, name: str, names: list[str],
            specs: list[ArchSpec], timings: list[Timing], say: Callable[[str], None]) -> pd.DataFrame:
    """One set's CSV, PNG and summary lines."""
    frame = pd.DataFrame({"set": name, "name": names, "predicted_ms": model.predict_many(specs, settings.resolution),
                          "key_sum_ms": model.key_sums(specs, settings.resolution),
                          "measured_ms": [t.ms for t in timings], "spread_ms": [t.spread_ms for t in timings],
                          "arch": [s.to_string() for s in specs]})
    frame["rel_error"] = (frame["predicted_ms"] - frame["measured_ms"]) / frame["measured_ms"]
    stem = out / f"validate_{settings.target}_{name}_{settings.resolution}"
    frame.to_csv(stem.with_suffix(".csv"), index=False)
    report = accuracy(frame["predicted_ms"], frame["measured_ms"])
    plot_measured(frame, report, stem.with_suffix(".png"), f"{settings.target}, {name}, {settings.resolution}px")
    say(f"{settings.target} {name} ({len(frame)} archs, {settings.resolution}px): "
        f"mean |err| {report['mean_abs_rel_error']:.1%}, median {report['median_abs_rel_error']:.1%}, "
        f"max {report['max_abs_rel_error']:.1%}, within ±10 %: {report['within']:.0%}, "
        f"Spearman {report['spearman']:.3f}")
    naive = accuracy(frame["key_sum_ms"], frame["measured_ms"])
    say(f"  (uncalibrated sum of keys: mean |err| {naive['mean_abs_rel_error']:.1%}, "
        f"within ±10 %: {naive['within']:.0%})")
    say(f"wrote {stem.with_suffix('.csv')} and {stem.with_suffix('.png')}")
    return frame


def plot_measured(frame: pd.DataFrame, report: dict, path: Path, title: str) -> None:
    """Predicted against measured, with the +-10 % band."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 5))
    ax = fig.subplots()
    ax.scatter(frame["measured_ms"], frame["predicted_ms"], s=14)
    low = 0.9 * min(frame["measured_ms"].min(), frame["predicted_ms"].min())
    high = 1.1 * max(frame["measured_ms"].max(), frame["predicted_ms"].max())
    line = np.array([low, high])
    ax.plot(line, line, "k-", lw=1, label="predicted = measured")
    ax.fill_between(line, 0.9 * line, 1.1 * line, color="grey", alpha=0.2, label="±10 %")
    ax.set(xlabel="measured latency (ms)", ylabel="predicted latency (ms)", xlim=(low, high), ylim=(low, high),
           title=f"{title}\nwithin ±10 %: {report['within']:.0%}, Spearman {report['spearman']:.3f}")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
