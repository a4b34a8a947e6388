"""A pipeline config (YAML) read strictly into frozen dataclasses: every unknown key is an error.

A config names the stages of one experiment: ``search`` (or a fixed ``seed_arch``),
``manual_edits``, ``netadapt``, ``train``. Its ``quick`` section holds the same keys again with
small budgets; ``--quick`` merges it over the rest, so the quick path is data, not code.
``KEY=VALUE`` overrides on the command line (``search.trials=64``) go over both, each value
read as its field's type, and are part of the config a run records.
"""

from __future__ import annotations

import copy
import math
import types
from dataclasses import MISSING, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, Sequence, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from nas import rundir
from nas.errors import NasError
from nas.latency.predict import resolve_target
from nas.netadapt.loop import Settings
from nas.search.evaluate import ProxySettings
from nas.search.evaluators import EvaluatorSettings
from nas.train.device import default_device
from nas.train.proxy import ProxyTraining
from nas.train.recipes import Recipe
from nas.train.trainer import TrainConfig


# Settings shared by every stage, set once at the top level (field -> name there), and the
# sections that hold them; the device is an execution option (--device), not a config key.
SHARED = {"data": "data", "seed": "seed", "synthetic_train": "synthetic_train", "synthetic_val": "synthetic_val",
          "deploy_resolution": "latency_resolution"}
SHARED_IN = (("search", "proxy"), ("netadapt", "training"), ("netadapt", "settings"))
# NetAdapt's keys from before its section embedded the library's settings: netadapt.KEY is now netadapt.PART.KEY
MOVED = {**dict.fromkeys(("delta_ratio", "delta_decay", "short_term_steps", "long_term_steps", "pretrain_steps",
                          "selection", "max_proposals"), "settings"),
         **dict.fromkeys(("batch_size", "lr", "bn_batches", "resolution"), "training")}


T = TypeVar("T")


@dataclass(frozen=True)
class SearchStage:
    """Platform-aware search (``nas.search``); ``seed_arch`` (a zoo name) replaces it with a fixed seed.

    ``evaluator`` is ``train`` (every candidate proxy-trained) or ``supernet`` (children of a
    weight-sharing supernet, trained in the stage's folder for ``supernet_epochs`` with
    ``supernet_rule`` on the proxy data and recipe, or the trained one in ``supernet``).
    """

    target_ms: float
    reward: str = "soft"
    space: str = "mnasnet"
    controller: str = "rl"
    trials: int = 24
    workers: int = 2
    seed_arch: str | None = None
    proxy: ProxySettings = ProxySettings()
    evaluator: str = EvaluatorSettings.kind
    supernet: str | None = None
    supernet_epochs: int = EvaluatorSettings.epochs
    supernet_rule: str = EvaluatorSettings.rule

    def __post_init__(self) -> None:
        self.evaluator_settings()  # a bad evaluator key fails when the config is read

    def evaluator_settings(self) -> EvaluatorSettings:
        return EvaluatorSettings(kind=self.evaluator, supernet=self.supernet, epochs=self.supernet_epochs,
                                 rule=self.supernet_rule)


@dataclass(frozen=True)
class NetAdaptStage:
    """NetAdapt (``nas.netadapt``) down to the reference network's predicted latency.

    ``settings`` and ``training`` are NetAdapt's own :class:`~nas.netadapt.loop.Settings` and
    :class:`~nas.train.proxy.ProxyTraining` (same keys and defaults as ``python -m nas.netadapt``);
    their seed, data and device come from the top level and ``--device``.
    """

    settings: Settings = Settings()
    training: ProxyTraining = ProxyTraining()
    workers: int = 1


def _integer(value: Any) -> int | None:
    """``value`` as an int if it is one (in YAML or as override text), else None."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    text = value.strip() if isinstance(value, str) else ""
    return int(text) if text.lstrip("-").isdigit() else None


@dataclass(frozen=True)
class TrainStage:
    """Final training (``nas.train``) of the found network and of the reference, with one budget.

    ``batch_size`` and ``resolution`` default to :class:`~nas.train.trainer.TrainConfig`'s own;
    ``epochs`` is the pipeline's budget (``TrainConfig`` has none: ``python -m nas.train`` takes the recipe's).
    ``seeds`` trains each network once per seed (``train/<network>/seed<k>/``) and compares the means,
    since one training run's top-1 moves by tenths of a point with the seed; without it each network
    is trained once, with the pipeline's seed, in ``train/<network>/``.
    """

    recipe: str = "dli14"
    recipe_overrides: dict[str, Any] = field(default_factory=dict)
    epochs: int = 30
    batch_size: int = TrainConfig.batch_size
    resolution: int = TrainConfig.resolution
    seeds: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.seeds is None:
            return
        values = list(self.seeds) if isinstance(self.seeds, (list, tuple)) else [self.seeds]
        seeds = tuple(_integer(v) for v in values)
        if not seeds or None in seeds or len(set(seeds)) != len(seeds):
            raise NasError(f"train.seeds: expected a list of distinct integers, got {self.seeds!r}")
        object.__setattr__(self, "seeds", seeds)


@dataclass(frozen=True)
class PipelineConfig:
    name: str
    reference: str
    search: SearchStage
    manual_edits: tuple[str, ...]
    target: str = "pixel-cpu"
    latency_resolution: int = 224
    data: str = "synthetic"
    synthetic_train: int = 2000
    synthetic_val: int = 500
    seed: int = 0
    netadapt: NetAdaptStage = NetAdaptStage()
    train: TrainStage = TrainStage()


@dataclass(frozen=True)
class Execution:
    """Where a pipeline runs, not what it computes: given on the command line, kept out of the
    claimed config, so a run may resume on another machine. ``ray_address`` is the Ray cluster
    of the search trials and NetAdapt's fine-tunes (default: a local Ray); ``device`` trains
    every stage (default: cuda where torch sees a GPU, as ``nas.train.fit`` chooses)."""

    device: str = field(default_factory=default_device)
    ray_address: str | None = None


def _build(cls: type, data: Any, where: str) -> Any:
    """``cls(**data)`` recursively, refusing unknown and missing keys with the key's full path."""
    if not isinstance(data, dict):
        raise NasError(f"{where or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    for key in data:
        if key not in names:
            raise NasError(f"unknown config key '{where}{key}' (known: {', '.join(sorted(names))})")
    values = {}
    for f in fields(cls):
        if f.name not in data:
            if f.default is MISSING and f.default_factory is MISSING:
                raise NasError(f"config key '{where}{f.name}' is missing")
            continue
        value = data[f.name]
        hint = hints[f.name]
        if is_dataclass(hint):
            value = _build(hint, value, f"{where}{f.name}.")
        elif f.name == "manual_edits":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise NasError(f"config key '{where}{f.name}' must be a list of edit names")
            value = tuple(value)
        values[f.name] = value
    try:
        return cls(**values)
    except TypeError as err:
        raise NasError(f"config section '{where or 'top level'}': {err}") from None


def _merge(base: dict, extra: dict) -> dict:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and key != "recipe_overrides":
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_yaml(path: Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise NasError(f"{path}: no such config file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        first = " ".join(str(err).split())
        raise NasError(f"{path}: not valid YAML ({first})") from None
    if not isinstance(data, dict):
        raise NasError(f"{path}: expected a mapping of config keys at the top level")
    return data


def _refuse_moved_and_shared(section: dict) -> None:
    """One line for a key that a config may no longer hold where it stands."""
    netadapt = section.get("netadapt")
    moved = sorted(set(netadapt) & set(MOVED)) if isinstance(netadapt, dict) else []
    if moved:
        raise NasError(f"config key 'netadapt.{moved[0]}' is now 'netadapt.{MOVED[moved[0]]}.{moved[0]}'")
    for stage, part in SHARED_IN:
        values = section.get(stage, {}).get(part, {}) if isinstance(section.get(stage), dict) else {}
        if not isinstance(values, dict):
            continue
        shared = sorted(set(values) & set(SHARED))
        if shared:
            raise NasError(f"config key '{stage}.{part}.{shared[0]}' is set at the top level for every stage "
                           f"({SHARED[shared[0]]})")
        if "device" in values:
            raise NasError(f"config key '{stage}.{part}.device' is not part of an experiment: pass --device to "
                           "python -m nas.pipeline")


# ------------------------------------------------------------------ KEY=VALUE overrides

_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def _typed(text: str, hint: Any, item: str) -> Any:
    """``text`` read as a value of the type ``hint`` (int, float, bool, str, a tuple of names, or None)."""
    kinds = [a for a in get_args(hint) if a is not type(None)] if get_origin(hint) in (Union, types.UnionType) \
        else [hint]
    if len(kinds) != len(get_args(hint)) and text.lower() in ("none", "null"):
        return None
    kind = kinds[0]
    if get_origin(kind) is tuple:
        return [name.strip() for name in text.split(",") if name.strip()]
    if kind is bool:
        if text.lower() in _TRUE + _FALSE:
            return text.lower() in _TRUE
        raise NasError(f"override {item}: expected true or false")
    if kind is str:
        return text
    try:
        value = kind(text)
    except (TypeError, ValueError):
        raise NasError(f"override {item}: expected {'an integer' if kind is int else 'a number'}") from None
    if kind is float and not math.isfinite(value):
        raise NasError(f"override {item}: expected a finite number")
    return value


def _key_hint(cls: Any, path: Sequence[str], depth: int, item: str) -> Any:
    """The type of field ``path[depth]`` of ``cls``; an unknown name is refused with the known ones."""
    hints = get_type_hints(cls)
    if path[depth] not in hints:
        known = sorted(hints) + (["calibration"] if cls is PipelineConfig else [])
        raise NasError(f"override {item}: unknown config key '{'.'.join(path[:depth + 1])}' "
                       f"(known: {', '.join(known)})")
    return hints[path[depth]]


def _override_hint(path: Sequence[str], item: str) -> Any:
    """The type of the config key ``path``: a field of a section, a recipe setting, or ``calibration``."""
    if list(path) == ["calibration"]:
        return str | None
    cls: Any = PipelineConfig
    for depth in range(len(path) - 1):
        hint = _key_hint(cls, path, depth, item)
        if cls is TrainStage and path[depth] == "recipe_overrides":
            cls = Recipe  # train.recipe_overrides.lr: typed as the recipe's field
        elif is_dataclass(hint):
            cls = hint
        else:
            raise NasError(f"override {item}: '{'.'.join(path[:depth + 1])}' holds a value, not keys")
    hint = _key_hint(cls, path, len(path) - 1, item)
    if is_dataclass(hint) or get_origin(hint) is dict:
        raise NasError(f"override {item}: '{'.'.join(path)}' is a section; set one of its keys "
                       f"({'.'.join(path)}.KEY=VALUE)")
    return hint


def parse_overrides(items: Sequence[str]) -> dict[tuple[str, ...], Any]:
    """``["search.trials=64", ...]`` as {key path: value typed by the config field it sets}.

    >>> parse_overrides(["search.trials=64", "netadapt.settings.max_proposals=none"])
    {('search', 'trials'): 64, ('netadapt', 'settings', 'max_proposals'): None}
    """
    changes = {}
    for item in items:
        key, equals, text = item.partition("=")
        if not equals or not key:
            raise NasError(f"expected KEY=VALUE (e.g. search.trials=64), got {item!r}")
        path = tuple(key.split("."))
        changes[path] = _typed(text, _override_hint(path, item), item)
    return changes


def _with_changes(data: dict, changes: dict[tuple[str, ...], Any]) -> dict:
    """``data`` (a parsed YAML mapping) with each key path set to its value, sections made as needed."""
    data = copy.deepcopy(data)
    for path, value in changes.items():
        node = data
        for part in path[:-1]:
            node[part] = dict(node[part]) if isinstance(node.get(part), dict) else {}
            node = node[part]
        node[path[-1]] = value
    return data


def _with_target(data: dict) -> dict:
    """A ``calibration:`` key (pixel-cpu) folded into ``target`` (``pixel-cpu:readme-2018``)."""
    data = dict(data)
    data["target"] = resolve_target(data.get("target", "pixel-cpu"), data.pop("calibration", None))
    return data


def with_shared(config: PipelineConfig, settings: T, **execution: Any) -> T:
    """A stage's settings with the top-level values every stage shares filled in (and ``execution``'s)."""
    names = {f.name for f in fields(settings)}
    return replace(settings, **{name: getattr(config, top) for name, top in SHARED.items() if name in names},
                   **execution)


def parse_config(data: dict, *, quick: bool = False, source: str = "config",
                 overrides: Sequence[str] = ()) -> PipelineConfig:
    """The config from a parsed YAML mapping; ``quick`` merges its ``quick`` section over the rest,
    and ``overrides`` (``KEY=VALUE``, see :func:`parse_overrides`) go over both.
    A ``calibration:`` key (pixel-cpu) is folded into ``target`` (``pixel-cpu:readme-2018``)."""
    changes = parse_overrides(overrides)
    data = dict(data)
    shrink = data.pop("quick", {}) or {}
    if not isinstance(shrink, dict):
        raise NasError(f"{source}: 'quick' must be a mapping")
    data = _with_changes(data, changes)
    for section in (data, shrink):
        _refuse_moved_and_shared(section)
    full = _build(PipelineConfig, _with_target(data), "")
    # a typo in quick fails without --quick too
    small = _build(PipelineConfig, _with_target(_with_changes(_merge(data, shrink), changes)), "quick.")
    return small if quick else full


def load_config(path: Path, *, quick: bool = False, overrides: Sequence[str] = ()) -> PipelineConfig:
    return parse_config(read_yaml(path), quick=quick, source=str(path), overrides=overrides)


def read_run_config(out: Path) -> PipelineConfig:
    """The config a run in ``out`` was made with (its ``config.json``), whatever the YAML says today."""
    path = Path(out) / "config.json"
    if not path.is_file():
        raise NasError(f"{out} holds no pipeline run (no config.json)")
    return _build(PipelineConfig, rundir.read_json(path, what="settings file"), "")
