"""Network latency from a per-key table: ``ms = scale * sum(table[key] for key in decompose(spec)) + offset``.

``get_latency_model(target)`` is the one entry point:

* ``host-cpu`` / ``cuda``: a table measured on this machine (``latency_tables/<target>/``, see
  :mod:`nas.latency.locations` for where a wheel install keeps it), filled
  on demand with keys it lacks (``measure_missing=True``), plus a calibration fitted on a few
  whole-network measurements of the same target (:func:`calibration_networks`: six published
  models and twelve random members of each search space; :mod:`nas.latency.calibrate`; measured
  on first use if the folder has none). A table from another machine, torch version, thread count
  or protocol is refused unless ``force=True``.
* ``pixel-cpu``: the shipped table ``latency_tables/pixel-cpu/`` (fitted to public Pixel 1
  measurements); keys it lacks are priced by :class:`nas.latency.pixel.PixelCostModel` and
  flagged in :attr:`Prediction.estimated_keys`. Its calibration is the identity unless the
  folder ships a ``calibration.json``: the cost model was fitted to whole networks already.
  ``pixel-cpu`` is the default calibration (the MobileNetV3 paper's run); another named one is
  the target ``pixel-cpu:NAME`` (``latency_tables/pixel-cpu/NAME/``), which
  :func:`resolve_target` builds from ``--target`` and ``--calibration``. The qualified name is
  what a run records and passes on, so search, NetAdapt and the pipeline need no other knob.

``predict_many`` is vectorised: a spec's layers map to table rows through a cache keyed by
(layer, input width, input size), so 10,000 architectures cost dictionary lookups and one
numpy reduction, not 10,000 decompositions.

>>> model = get_latency_model("pixel-cpu")                          # doctest: +SKIP
>>> model.predict(zoo.get("mobilenet_v3_large")).ms                 # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from operator import attrgetter
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from nas import zoo
from nas.arch import ArchSpec, HeadSpec, LayerSpec, StemSpec
from nas.errors import NasError
from nas.latency.calibrate import Calibration, fit_calibration
from nas.latency.keys import LatencyKey, decompose, parse_key
from nas.latency.locations import default_table_dir, table_label
from nas.latency.measure import MEASURABLE_TARGETS, Protocol, build_table, measure_networks, open_table
from nas.latency.table import LatencyTable

TARGETS = ("host-cpu", "cuda", "pixel-cpu")
# Whole networks the calibration is fitted on: published models spanning 3x in latency, plus random
# members of each search space. Published models alone under-state the spaces: measured in one
# window, random space networks ran 5-8 % slower than their key sums where the zoo ran 0-3 % slower.
# Twelve per space, not four: refitting run D's measurements (latency_tables/README.md) on the zoo
# and k random networks of each space, and checking on the other 50 - k, put 94 / 97 % (k = 4)
# and 97 / 98 % (k = 12) of the MnasNet / MobileNetV3 sets within +-10 % (mean of 200 draws).
# The space samples use their own seed; `validate` draws with --seed (default 1).
CALIBRATION_NETWORKS = ("mobilenet_v3_large", "mobilenet_v3_small", "mobilenet_v3_large_050", "mnasnet_a1",
                        "mnasnet_b1", "mobilenet_v2")
CALIBRATION_SPACES = ("mnasnet", "mobilenetv3")
CALIBRATION_SPACE_SAMPLES = 12
CALIBRATION_SEED = 20240
CALIBRATION_RESOLUTION = 224
# Cache keys are tuples of plain field values: comparing them is C code, comparing dataclasses is not.
_STEM = attrgetter(*(f.name for f in fields(StemSpec)))
_LAYER = attrgetter(*(f.name for f in fields(LayerSpec)))
_HEAD = attrgetter(*(f.name for f in fields(HeadSpec)))


@dataclass(frozen=True)
class Prediction:
    """``ms`` is calibrated; ``per_key`` holds each distinct key's table time summed over its
    occurrences (uncalibrated), so ``ms == scale * sum(per_key.values()) + offset``."""

    ms: float
    per_key: dict[str, float]
    estimated_keys: tuple[str, ...]
    source: str


def calibration_networks() -> dict[str, ArchSpec]:
    """The default calibration set: :data:`CALIBRATION_NETWORKS` and a few samples of each space."""
    from search_spaces import get_space

    networks = {name: zoo.get(name) for name in CALIBRATION_NETWORKS}
    for space_name in CALIBRATION_SPACES:
        space, rng = get_space(space_name), np.random.default_rng(CALIBRATION_SEED)
        for i in range(CALIBRATION_SPACE_SAMPLES):
            networks[f"{space_name}-{CALIBRATION_SEED}-{i}"] = space.sample(rng)
    return networks


def resolve_target(target: str, calibration: str | None = None) -> str:
    """The latency target a run uses: ``target``, qualified by a pixel-cpu calibration other than
    the default (``pixel-cpu:readme-2018``). ``calibration`` applies to pixel-cpu only."""
    from nas.latency.pixel import calibrations

    if calibration is None:
        return target
    if target != "pixel-cpu":
        raise NasError(f"a calibration (--calibration, or calibration: in a config) applies to target pixel-cpu only, "
                       f"not {target!r}")
    name = calibrations.get(calibration).name
    return target if name == calibrations.DEFAULT else f"{target}:{name}"


def split_target(target: str) -> tuple[str, str | None]:
    """``pixel-cpu:NAME`` -> (``pixel-cpu``, NAME); any other target -> (target, None)."""
    base, _, calibration = target.partition(":")
    if base not in TARGETS or (calibration and base != "pixel-cpu"):
        raise NasError(f"unknown latency target {target!r}; known: {', '.join(TARGETS)} (pixel-cpu also as "
                       f"pixel-cpu:CALIBRATION)")
    return base, calibration or None


class LatencyModel:
    """Predicts a target's latency for any spec; see the module docstring for the model."""

    def __init__(self, target: str, table: LatencyTable, table_dir: Path, calibration: Calibration | None, *,
                 protocol: Protocol | None = None, estimator: Callable[[LatencyKey], float] | None = None,
                 force: bool = False) -> None:
        self.target = target
        self.table = table
        self.table_dir = Path(table_dir)
        self.calibration = calibration
        self._protocol = protocol  # None: this model cannot measure missing keys
        self._estimator = estimator
        self._force = force
        self._index: dict[str, int] = {}
        self._keys: list[str] = []
        self._ms: list[float] = []
        self._ms_array: np.ndarray | None = None
        self._estimated: set[str] = set(table.frame.loc[table.frame["provenance"] == "estimated", "key"])
        self._cache: dict[tuple, tuple[int, int]] = {}

    @property
    def source(self) -> str:
        meta = self.table.meta
        where = f"{meta.kind} table {table_label(self.table_dir)} ({meta.device}"
        where += f", torch {meta.torch_version}" if meta.torch_version else ""
        where += f", {meta.threads} thread(s)" if meta.threads else ""
        where += f", calibration {meta.protocol['calibration']})" if "calibration" in meta.protocol else ")"
        cal = self.calibration
        calibrated = "" if cal is None or cal == Calibration() else f", calibrated {cal.scale:.4g} * sum + {cal.offset:.4g} ms"
        estimated = " + PixelCostModel for keys it lacks" if self._estimator else ""
        return f"{self.target}: {where}{calibrated}{estimated}"

    # ------------------------------------------------------------ key indices

    def _key_index(self, key: str) -> int:
        index = self._index.get(key)
        if index is None:
            index = self._index[key] = len(self._keys)
            self._keys.append(key)
            self._ms.append(self.table.as_dict().get(key, float("nan")))
            self._ms_array = None
        return index

    def _lookup(self, spec: ArchSpec, resolution: int) -> list[int]:
        cache = self._cache
        index, hw = cache[(_STEM(spec.stem), resolution)]
        indices, in_ch = [index], spec.stem.channels
        for layer in spec.layers:
            index, hw = cache[(_LAYER(layer), in_ch, hw)]
            indices.append(index)
            in_ch = layer.out
        indices.append(cache[(_HEAD(spec.head), in_ch, hw)][0])
        return indices

    def _indices(self, spec: ArchSpec, resolution: int) -> list[int]:
        try:
            return self._lookup(spec, resolution)
        except KeyError:
            keys = decompose(spec, resolution)
            parts = [(_STEM(spec.stem), resolution)]
            in_ch = spec.stem.channels
            for layer, key in zip(spec.layers, keys[1:-1]):
                parts.append((_LAYER(layer), in_ch, key.hw))
                in_ch = layer.out
            parts.append((_HEAD(spec.head), in_ch, keys[-1].hw))
            for part, key in zip(parts, keys):
                self._cache[part] = (self._key_index(str(key)), key.out_hw)
            return self._lookup(spec, resolution)

    def _values(self, indices: np.ndarray) -> np.ndarray:
        """Table times for ``indices``, filling keys the table lacks (measure, estimate, or fail)."""
        if self._ms_array is None:
            self._ms_array = np.asarray(self._ms, dtype=float)
        values = self._ms_array[indices]
        if np.isnan(values).any():
            missing = [self._keys[i] for i in np.unique(indices[np.isnan(values)])]
            for key, ms in self._fill(missing).items():
                self._ms[self._index[key]] = ms
            self._ms_array = np.asarray(self._ms, dtype=float)
            values = self._ms_array[indices]
        return values

    def _fill(self, missing: list[str]) -> dict[str, float]:
        if self._protocol is not None:
            self.table = build_table(missing, self.table_dir, target=self.target, protocol=self._protocol,
                                     force=self._force)
            return {key: self.table.ms(key) for key in missing}
        if self._estimator is not None:
            self._estimated.update(missing)
            return {key: float(self._estimator(parse_key(key))) for key in missing}
        raise NasError(f"latency table {self.table_dir} has no key {missing[0]!r} ({len(missing)} missing) and "
                       f"target {self.target!r} cannot measure it here (measure_missing=False or no device)")

    # ------------------------------------------------------------ predictions

    def _calibration(self) -> Calibration:
        if self.calibration is None:
            raise NasError(f"no calibration for {self.table_dir}; run: python -m nas.latency build --target "
                           f"{self.target}")
        return self.calibration

    def key_sums(self, specs: Sequence[ArchSpec], resolution: int = 224) -> np.ndarray:
        """Uncalibrated sums of table times, one per spec."""
        if not specs:
            return np.zeros(0)
        lists = [self._indices(spec, resolution) for spec in specs]
        flat = np.fromiter((i for indices in lists for i in indices), dtype=np.intp)
        starts = np.cumsum([0] + [len(indices) for indices in lists[:-1]])
        return np.add.reduceat(self._values(flat), starts)

    def predict_many(self, specs: Sequence[ArchSpec], resolution: int = 224) -> np.ndarray:
        """Calibrated latency (ms) of every spec, vectorised."""
        calibration = self._calibration()
        return calibration.apply(self.key_sums(specs, resolution))

    def predict(self, spec: ArchSpec, resolution: int = 224) -> Prediction:
        calibration = self._calibration()
        indices = np.asarray(self._indices(spec, resolution), dtype=np.intp)
        values = self._values(indices)
        per_key: dict[str, float] = {}
        for index, value in zip(indices, values):
            per_key[self._keys[index]] = per_key.get(self._keys[index], 0.0) + float(value)
        total = float(np.add.reduceat(values, [0])[0])
        return Prediction(float(calibration.apply(total)), per_key,
                          tuple(k for k in per_key if k in self._estimated), self.source)

    def calibrate(self, networks: Mapping[str, ArchSpec] | Sequence[str] | None = None,
                  resolution: int = CALIBRATION_RESOLUTION, *, progress: bool = True) -> Calibration:
        """Measure ``networks`` (zoo names or name -> spec; default :func:`calibration_networks`)
        end to end, fit the calibration to their key sums and save it."""
        if self._protocol is None:
            raise NasError(f"target {self.target!r} cannot be measured here, so it cannot be calibrated")
        if networks is None:
            networks = calibration_networks()
        elif not isinstance(networks, Mapping):
            networks = {name: zoo.get(name) for name in networks}
        names, specs = list(networks), list(networks.values())
        sums = self.key_sums(specs, resolution)
        timings = measure_networks(specs, resolution, target=self.target, protocol=self._protocol,
                                   progress=progress)
        rows = [{"name": n, "arch": spec.to_string(), "resolution": resolution, "sum_ms": float(s),
                 "measured_ms": t.ms, "spread_ms": t.spread_ms}
                for n, spec, s, t in zip(names, specs, sums, timings)]
        self.calibration = fit_calibration(sums, [t.ms for t in timings], networks=rows)
        self.calibration.save(self.table_dir)
        return self.calibration


def get_latency_model(target: str, *, table_dir: Path | None = None, measure_missing: bool = True,
                      force: bool = False, threads: int = 1) -> LatencyModel:
    """The latency model of ``target`` ("host-cpu" | "cuda" | "pixel-cpu" | "pixel-cpu:CALIBRATION");
    see the module docstring.

    ``threads`` (host-cpu) selects the measurement thread count and, by default, its own table folder.
    """
    base, calibration = split_target(target)
    table_dir = Path(table_dir) if table_dir is not None else default_table_dir(target, threads)
    if base == "pixel-cpu":
        return _pixel_model(target, table_dir, calibration)
    protocol = Protocol(threads=threads)
    can_measure = measure_missing and (target != "cuda" or _cuda_available())
    if not can_measure and not (table_dir / "meta.json").exists():
        why = "no CUDA GPU here" if measure_missing else "measure_missing=False"
        raise NasError(f"no latency table in {table_dir} and it cannot be built ({why}); build it with: "
                       f"python -m nas.latency build --target {target}")
    if target == "cuda" and not _cuda_available():
        table = LatencyTable.load(table_dir)
        if not force:
            raise NasError(f"cannot check the cuda table {table_dir} (measured on {table.meta.device}) without a "
                           f"GPU here; pass force=True / --force to use it anyway")
    else:
        table = open_table(table_dir, target, protocol, force=force)
    model = LatencyModel(target, table, table_dir, Calibration.load(table_dir),
                         protocol=protocol if can_measure else None, force=force)
    if model.calibration is None and can_measure:
        model.calibrate()
    return model


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _pixel_model(target: str, table_dir: Path, calibration: str | None) -> LatencyModel:
    from nas.latency.pixel import calibrations

    name = calibrations.get(calibration).name
    table = LatencyTable.load(table_dir)
    if table.meta.target != "pixel-cpu":
        raise NasError(f"latency table {table_dir} is for target {table.meta.target!r}, not 'pixel-cpu'")
    recorded = table.meta.protocol.get("calibration")
    if recorded != name:
        raise NasError(f"latency table {table_dir} is of pixel-cpu calibration {recorded!r}, not {name!r}")
    cost_model = None

    def estimate(key: LatencyKey) -> float:
        nonlocal cost_model
        if cost_model is None:
            from nas.latency.pixel.model import COEFFICIENTS_FILE, PixelCostModel

            cost_model = PixelCostModel.load(table_dir / COEFFICIENTS_FILE, calibration=name)
        return cost_model.price(key)

    return LatencyModel(target, table, table_dir, Calibration.load(table_dir) or Calibration(), estimator=estimate)


__all__ = ["CALIBRATION_NETWORKS", "TARGETS", "LatencyModel", "Prediction", "calibration_networks",
           "default_table_dir", "get_latency_model", "resolve_target", "split_target", "MEASURABLE_TARGETS"]
