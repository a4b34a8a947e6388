"""How a trial's accuracy is obtained: stand-alone proxy training, or a child of a weight-sharing supernet.

The runner hands every proposal to an :class:`Evaluator`, a picklable callable ``spec -> Evaluation``
that a Ray worker runs as it is. Which one a run uses is part of its fixed settings
(:class:`EvaluatorSettings`), so a run never mixes the two kinds of score:

* ``train`` (:class:`TrainingEvaluator`): MnasNet's proxy, each candidate trained from scratch
  (:func:`nas.search.evaluate.evaluate_candidate`);
* ``supernet`` (:class:`SupernetChildEvaluator`): the candidate inherits its weights from a
  trained supernet, BatchNorm is recalibrated and it is scored on the same held-out split
  (:mod:`nas.supernet.evaluator`), seconds instead of minutes. The supernet is trained as the run's
  first stage in ``OUT/supernet`` (:func:`prepare_supernet`, resumed like the rest of the run), or
  an already trained one is reused.

A spec the supernet cannot run is a failed trial with the reason, never a made-up accuracy.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from nas.arch import ArchSpec
from nas.errors import NasError
from nas.profile import profile
from nas.search.evaluate import Evaluation, ProxySettings, evaluate_candidate
from nas.supernet.sampling import RULES
from nas.supernet.training import CHECKPOINT, SupernetSettings, epochs_trained, read_settings, train_supernet
from nas.train.proxy import ProxyTraining

if TYPE_CHECKING:
    from nas.search.runner import SearchConfig

EVALUATORS = ("train", "supernet")
SUPERNET_DIR = "supernet"  # the supernet stage's folder in a run directory
_SUPERNET = SupernetSettings()


class Evaluator(Protocol):
    """Scores one candidate; a failure of the candidate's own is a failed :class:`Evaluation`."""

    def __call__(self, spec: ArchSpec) -> Evaluation: ...


@dataclass(frozen=True)
class EvaluatorSettings:
    """Which evaluator a search uses and, for ``supernet``, which supernet.

    ``supernet`` names a trained supernet directory to reuse; without it the run trains its own
    in ``OUT/supernet`` for ``epochs`` with the sampling ``rule``, on the search's proxy data,
    resolution, batch, rate and seed. The budget defaults are :class:`SupernetSettings`'.
    """

    kind: str = "train"
    supernet: str | None = None
    epochs: int = _SUPERNET.epochs
    rule: str = _SUPERNET.rule

    def __post_init__(self) -> None:
        if self.kind not in EVALUATORS:
            raise NasError(f"unknown evaluator {self.kind!r}; known: {', '.join(EVALUATORS)}")
        if self.kind != "supernet" and self.supernet is not None:
            raise NasError("a supernet directory is only used by the supernet evaluator (--evaluator supernet)")
        if self.rule not in RULES:
            raise NasError(f"unknown supernet sampling rule {self.rule!r}; known: {', '.join(RULES)}")
        if self.epochs < 1:
            raise NasError(f"supernet epochs must be at least 1, got {self.epochs}")

    def fixed(self) -> dict[str, Any]:
        """What a resumed run must share: the kind, and for ``supernet`` the reused folder or the budget."""
        if self.kind == "train":
            return {"kind": self.kind}
        if self.supernet is not None:
            return {"kind": self.kind, "supernet": str(Path(self.supernet).resolve())}
        return {"kind": self.kind, "supernet": {"epochs": self.epochs, "rule": self.rule}}

    def supernet_folder(self, out: Path | str) -> Path:
        """The supernet a run in ``out`` inherits from: the reused folder, or the one it trains in ``OUT/supernet``."""
        return Path(self.supernet if self.supernet is not None else Path(out) / SUPERNET_DIR).resolve()

    def supernet_settings(self, proxy: ProxySettings, space: str) -> SupernetSettings:
        """The supernet a run trains itself: the search's proxy data and recipe, this budget."""
        shared = {f.name: getattr(proxy, f.name) for f in fields(ProxyTraining)}
        return SupernetSettings(**shared, space=space, epochs=self.epochs, rule=self.rule)


@dataclass(frozen=True)
class TrainingEvaluator:
    """Stand-alone proxy training of every candidate (MnasNet)."""

    settings: ProxySettings

    def __call__(self, spec: ArchSpec) -> Evaluation:
        return evaluate_candidate(spec, self.settings)


@dataclass(frozen=True)
class SupernetChildEvaluator:
    """A candidate scored with the weights it inherits from the supernet in ``supernet`` (a path).

    Each process loads the supernet once (:func:`nas.supernet.open_evaluator`); ``train_seconds``
    is what scoring the child took. Children are scored on the data the supernet was trained on.
    """

    supernet: str
    deploy_resolution: int
    device: str = "cpu"

    def __call__(self, spec: ArchSpec) -> Evaluation:
        from nas.supernet.evaluator import open_evaluator

        evaluator = open_evaluator(self.supernet, self.device)
        deployed = profile(spec, self.deploy_resolution)
        counts = {"params": deployed.params, "madds": deployed.madds}
        reason = evaluator.why_not(spec)
        if reason is not None:
            return Evaluation.failed(f"NotAChildError: not a child of the supernet: {reason}", **counts)
        score = evaluator.evaluate(spec)
        if not math.isfinite(score.val_loss):
            return Evaluation.failed(f"validation loss is {score.val_loss}", train_seconds=score.seconds, **counts)
        return Evaluation(accuracy=score.accuracy, val_loss=score.val_loss, train_seconds=score.seconds, **counts)


def check_supernet(folder: Path | str, *, space: str) -> SupernetSettings:
    """A trained supernet directory a search may reuse: the search's space, every epoch trained."""
    settings = read_settings(Path(folder))
    if settings.space != space:
        raise NasError(f"--supernet {folder} was trained over the {settings.space!r} space, this search is over "
                       f"{space!r}; train one over {space!r} or leave out --supernet to train it in the run")
    trained = epochs_trained(folder)
    if trained < settings.epochs:
        raise NasError(f"--supernet {folder} is trained for {trained} of its {settings.epochs} epochs; finish it "
                       f"with python -m nas.supernet train --resume --out {folder} (and its settings)")
    return settings


def prepare_supernet(config: SearchConfig, *, progress: bool = True) -> Path:
    """The supernet the run's trials inherit from: the reused one, or this run's, trained (or finished) now."""
    chosen = config.evaluator
    folder = chosen.supernet_folder(config.out)
    if chosen.supernet is not None:
        check_supernet(folder, space=config.space)
        return folder
    settings = chosen.supernet_settings(config.proxy, config.space)
    trained = epochs_trained(folder)
    if progress:
        doing = ("training the" if not trained else "continuing the" if trained < settings.epochs
                 else "using the trained")
        print(f"supernet stage: {doing} {config.space} supernet ({trained}/{settings.epochs} epochs, "
              f"{settings.rule}) in {folder}", file=sys.stderr)
    train_supernet(settings, folder, resume=(folder / CHECKPOINT).is_file(), progress=progress)
    return folder


def make_evaluator(config: SearchConfig, supernet: Path | None = None) -> Evaluator:
    """The run's evaluator; ``supernet`` is the folder :func:`prepare_supernet` returned."""
    if config.evaluator.kind == "train":
        return TrainingEvaluator(config.proxy)
    if supernet is None:
        raise NasError("the supernet evaluator needs its supernet: run prepare_supernet first")
    return SupernetChildEvaluator(supernet=str(supernet), deploy_resolution=config.proxy.deploy_resolution,
                                  device=config.proxy.device)
