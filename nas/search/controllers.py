"""Controllers propose architectures and learn from their results, all behind one small interface.

``ask(n)`` gives ``n`` :class:`Proposal` s (one option index per choice of the search space),
``tell(proposal, result)`` records the outcome and lets the controller learn from it, and
``state_dict()`` / ``load_state_dict()`` carry what the controller learned across a restart.
The study's parameters are the chosen options themselves (``block3.kernel = 5``, not its index),
so the study reads as it is in optuna-dashboard.

Every controller keeps its trials in one Optuna study, which is the search's ledger: an asked
trial is RUNNING there, a told one COMPLETE (with its objective values) or FAIL, and the record
of the trial (architecture, latency, accuracy ...) lives in its user attributes. So a killed
search resumes from the study alone: :meth:`Controller.interrupted` returns the trials it never
finished, and :meth:`Controller.sync` replays finished trials a controller's saved state missed.

* ``random``, ``tpe`` and ``nsga2`` are Optuna samplers (:class:`OptunaController`): the study
  itself is their memory; the sampler (with its random state) is the state dict.
* ``rl`` is MnasNet's controller (:class:`RLController`): an LSTM that emits one softmax per
  choice, trained with PPO (clipped ratio, moving-average reward baseline, entropy bonus).
* ``evolution`` is regularized (aging) evolution (:class:`EvolutionController`): tournament
  selection, one mutated choice per child, the oldest member dies.

Example::

    >>> import optuna
    >>> from search_spaces import get_space
    >>> study = optuna.create_study(direction="maximize")
    >>> controller = make_controller("random", space=get_space("mnasnet"), study=study, seed=0)
    >>> [proposal] = controller.ask(1)
    >>> controller.tell(proposal, Result.ok((0.5,), attrs={"accuracy": 0.5}))
"""

from __future__ import annotations

import io
import math
import pickle
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import optuna
import torch
from optuna.distributions import CategoricalDistribution
from optuna.trial import FrozenTrial, TrialState
from torch import nn

from nas.arch import ArchSpec
from nas.errors import NasError
from nas.search.records import Status

CONTROLLERS = ("rl", "tpe", "nsga2", "random", "evolution")


@dataclass(frozen=True)
class Proposal:
    """One architecture to evaluate: its trial number in the study, its choice vector and spec."""

    number: int
    choices: tuple[int, ...]
    spec: ArchSpec


@dataclass(frozen=True)
class Result:
    """The outcome of one trial: ``status`` OK with its objective ``values``, or FAILED with none.

    ``attrs`` is the trial record (JSON-able values) stored with the trial in the study.
    """

    status: Status
    values: tuple[float, ...] = ()
    attrs: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status is Status.RUNNING or (self.status is Status.OK) != bool(self.values):
            raise NasError(f"a result is ok with objective values or failed without; got {self.status.value} "
                           f"with values {self.values}")

    @classmethod
    def ok(cls, values: Sequence[float], *, attrs: Mapping[str, Any] | None = None) -> Result:
        return cls(Status.OK, tuple(values), dict(attrs or {}))

    @classmethod
    def failed(cls, *, attrs: Mapping[str, Any] | None = None) -> Result:
        return cls(Status.FAILED, (), dict(attrs or {}))


class Controller(ABC):
    """Proposes architectures from ``space`` and keeps every trial in ``study``."""

    name: str

    def __init__(self, *, space, study: optuna.Study) -> None:
        self.space = space
        self.study = study
        self._choices = space.choices()
        self._distributions = _distributions(self._choices, study)
        self._open: dict[int, optuna.trial.Trial] = {}

    @abstractmethod
    def ask(self, n: int = 1) -> list[Proposal]:
        """``n`` new proposals, each opened as a RUNNING trial in the study."""

    def tell(self, proposal: Proposal, result: Result) -> None:
        """Record ``result`` in the study (user attributes, then values or FAIL) and learn from it."""
        trial = self._open.pop(proposal.number, None)
        if trial is None:
            trial = _reopen(self.study, proposal.number)
        for key, value in result.attrs.items():
            trial.set_user_attr(key, value)
        if result.status is Status.FAILED:
            self.study.tell(trial, state=TrialState.FAIL)
        else:
            if any(not math.isfinite(v) for v in result.values):
                raise NasError(f"trial {proposal.number}: objective values must be finite, got {result.values}")
            self.study.tell(trial, list(result.values))
        self._learn(proposal, result)

    def interrupted(self) -> list[Proposal]:
        """Trials that an earlier, killed process opened but never told; evaluate them again first.

        A kill can land mid-ask: a RUNNING trial may lack some choices (they are drawn now, or
        taken from its enqueued values) and an enqueued trial may still be WAITING (it is opened
        now). Call before the first :meth:`ask` of this process: every open trial is then stale.
        """
        proposals = []
        for frozen in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            trial = _reopen(self.study, frozen.number)
            for name, distribution in self._distributions.items():
                trial.suggest_categorical(name, distribution.choices)  # a stored value is returned as it is
            proposals.append(self._open_trial(trial))
        waiting = self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        proposals += [self._open_trial(self.study.ask(self._distributions)) for _ in waiting]
        return proposals

    def sync(self) -> None:
        """Learn from finished trials that this controller's state has not seen (a no-op by default)."""

    def state_dict(self) -> dict[str, Any]:
        return {"name": self.name}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("name") != self.name:
            raise NasError(f"saved controller state is for {state.get('name')!r}, not {self.name!r}; "
                           "use a new --out directory to change the controller")

    def _learn(self, proposal: Proposal, result: Result) -> None:
        """Hook for controllers that learn outside the study."""

    def _ask_for(self, choices: Sequence[int]) -> Proposal:
        """Open a trial with the option indices this controller chose itself (enqueued, then asked)."""
        self.study.enqueue_trial({c.name: self._distributions[c.name].choices[i]
                                  for c, i in zip(self._choices, choices)})
        proposal = self._open_trial(self.study.ask(self._distributions))
        if list(proposal.choices) != list(choices):
            raise NasError("the study holds enqueued trials of an earlier run: take interrupted() before ask()")
        return proposal

    def _open_trial(self, trial: optuna.trial.Trial) -> Proposal:
        """Read the choices of a trial just asked with our distributions; remember it until told."""
        choices = self._indices(trial.number, trial.params)
        spec = self.space.decode(list(choices))
        trial.set_user_attr("controller", self.name)
        trial.set_user_attr("arch", spec.to_string())
        self._open[trial.number] = trial
        return Proposal(number=trial.number, choices=choices, spec=spec)

    def _from_trial(self, frozen: FrozenTrial) -> Proposal:
        missing = [c.name for c in self._choices if c.name not in frozen.params]
        if missing:
            raise NasError(f"trial {frozen.number} in the study has no value for {missing[0]!r}: the study was "
                           f"made for another search space; use a new --out directory")
        choices = self._indices(frozen.number, frozen.params)
        return Proposal(number=frozen.number, choices=choices, spec=self.space.decode(list(choices)))

    def _indices(self, number: int, params: Mapping[str, Any]) -> tuple[int, ...]:
        """The option indices of a trial's parameters (options, or indices in a study from before names)."""
        try:
            return tuple(self._distributions[c.name].to_internal_repr(params[c.name]) for c in self._choices)
        except ValueError as err:
            raise NasError(f"trial {number} in the study has a value outside this search space ({err}); "
                           "use a new --out directory") from None


def _distributions(choices: Sequence, study: optuna.Study) -> dict[str, CategoricalDistribution]:
    """Each choice's options as an Optuna categorical, by their values so that the study reads as itself.

    Options that Optuna cannot hold (a tuple) are named by their text. A study begun before option
    values were stored holds option indices: it keeps them, so such a run still resumes.
    """
    named = {c.name: CategoricalDistribution([o if o is None or isinstance(o, (bool, int, float, str)) else str(o)
                                              for o in c.options]) for c in choices}
    indexed = {c.name: CategoricalDistribution(list(range(len(c.options)))) for c in choices}
    stored = next((t.distributions for t in study.get_trials(deepcopy=False) if t.distributions), {})
    if any(stored.get(name) == indexed[name] != named[name] for name in named):
        return indexed
    return named


def _reopen(study: optuna.Study, number: int) -> optuna.trial.Trial:
    """A live handle on a RUNNING trial that another process (a killed run) asked."""
    frozen = study.trials[number]
    if frozen.number != number or frozen.state != TrialState.RUNNING:
        raise NasError(f"trial {number} is not open in the study (state {frozen.state.name})")
    return optuna.trial.Trial(study, frozen._trial_id)  # Optuna offers no public handle by number


class OptunaController(Controller):
    """An Optuna sampler choosing every option index at ask time (TPE, NSGA-II, random)."""

    def __init__(self, *, name: str, space, study: optuna.Study, sampler: optuna.samplers.BaseSampler) -> None:
        super().__init__(space=space, study=study)
        self.name = name
        study.sampler = sampler

    def ask(self, n: int = 1) -> list[Proposal]:
        return [self._open_trial(self.study.ask(self._distributions)) for _ in range(n)]

    def state_dict(self) -> dict[str, Any]:
        # Optuna's own advice for a reproducible resume: pickle the sampler (it holds the RNG).
        return {**super().state_dict(), "sampler": pickle.dumps(self.study.sampler)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.study.sampler = pickle.loads(state["sampler"])


class Policy(nn.Module):
    """MnasNet's controller network: an LSTM that makes one categorical decision per step.

    Step ``t`` reads an embedding of decision ``t - 1`` (a learned start token at ``t = 0``) and
    its own linear head turns the hidden state into logits over choice ``t``'s options. The heads
    start at zero, so the untrained policy is uniform over the space.
    """

    def __init__(self, sizes: Sequence[int], hidden: int = 64) -> None:
        super().__init__()
        self.sizes = tuple(sizes)
        offsets = [1]
        for size in self.sizes[:-1]:
            offsets.append(offsets[-1] + size)
        self.register_buffer("offsets", torch.tensor(offsets), persistent=False)
        self.embed = nn.Embedding(1 + sum(self.sizes), hidden)
        self.cell = nn.LSTMCell(hidden, hidden)
        self.heads = nn.ModuleList(nn.Linear(hidden, size) for size in self.sizes)
        for head in self.heads:
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)

    def _walk(self, batch: int, actions: torch.Tensor | None, generator: torch.Generator | None):
        token = torch.zeros(batch, dtype=torch.long)
        state = None
        taken, log_prob, entropy = [], torch.zeros(batch), torch.zeros(batch)
        for t, head in enumerate(self.heads):
            state = self.cell(self.embed(token), state)
            dist = torch.distributions.Categorical(logits=head(state[0]))
            if actions is None:
                action = torch.multinomial(dist.probs, 1, generator=generator).squeeze(1)
            else:
                action = actions[:, t]
            taken.append(action)
            log_prob = log_prob + dist.log_prob(action)
            entropy = entropy + dist.entropy()
            token = action + self.offsets[t]
        return torch.stack(taken, dim=1), log_prob, entropy

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` decision vectors and their log-probabilities."""
        actions, log_prob, _ = self._walk(n, None, generator)
        return actions, log_prob

    def score(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probability and entropy of given decision vectors (differentiable)."""
        _, log_prob, entropy = self._walk(len(actions), actions, None)
        return log_prob, entropy


@dataclass(frozen=True)
class PPOSettings:
    """PPO for the controller. ``batch`` results make one update of ``epochs`` passes.

    The advantage is the reward minus a moving-average baseline (MnasNet), divided by a moving
    estimate of the reward's spread so that the step size does not depend on the reward's scale.
    """

    lr: float = 0.01
    batch: int = 4
    epochs: int = 4
    clip: float = 0.2
    entropy: float = 1e-3
    baseline_decay: float = 0.9
    hidden: int = 64


class LearningController(Controller):
    """A controller whose own state learns from results (RL, evolution), beyond what the study holds.

    It remembers which trials it has learnt from, so :meth:`sync` catches up on trials that another
    (killed) process finished before this state was saved.
    """

    def __init__(self, *, space, study: optuna.Study) -> None:
        super().__init__(space=space, study=study)
        self._seen: set[int] = set()

    def sync(self) -> None:
        for frozen in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL)):
            if frozen.number not in self._seen:
                result = Result.failed() if frozen.state == TrialState.FAIL else Result.ok(frozen.values)
                self._learn(self._from_trial(frozen), result)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "seen": sorted(self._seen)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self._seen = set(state["seen"])

    def _learn(self, proposal: Proposal, result: Result) -> None:
        self._seen.add(proposal.number)
        self._absorb(proposal, result)

    @abstractmethod
    def _absorb(self, proposal: Proposal, result: Result) -> None:
        """Update the controller's own state with one finished trial."""


class RLController(LearningController):
    """MnasNet's RNN controller trained with PPO on the scalar reward (first objective value)."""

    name = "rl"

    def __init__(self, *, space, study: optuna.Study, seed: int = 0, settings: PPOSettings = PPOSettings()) -> None:
        super().__init__(space=space, study=study)
        if len(study.directions) != 1:
            raise NasError("the rl controller needs a scalar reward; use --objective reward, or --controller nsga2/tpe "
                           "for a Pareto front")
        self.settings = settings
        with torch.random.fork_rng(devices=[]):  # seed the initial weights without touching the caller's RNG
            torch.manual_seed(seed)
            self.policy = Policy([len(c.options) for c in self._choices], settings.hidden)
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=settings.lr)
        self.generator = torch.Generator().manual_seed(seed)
        self.baseline: float | None = None
        self.spread: float | None = None
        self.updates = 0
        self._log_probs: dict[int, float] = {}
        self._buffer: list[tuple[tuple[int, ...], float, float]] = []  # (choices, log_prob at ask, reward)

    def ask(self, n: int = 1) -> list[Proposal]:
        actions, log_probs = self.policy.sample(n, self.generator)
        proposals = []
        for action, log_prob in zip(actions.tolist(), log_probs.tolist()):
            proposal = self._ask_for(action)
            self._log_probs[proposal.number] = log_prob
            proposals.append(proposal)
        return proposals

    def _absorb(self, proposal: Proposal, result: Result) -> None:
        log_prob = self._log_probs.pop(proposal.number, None)
        if result.status is Status.FAILED:
            return  # a trial that did not train says nothing about the reward
        if log_prob is None:  # asked by a killed process: treat it as drawn from the current policy
            with torch.no_grad():
                log_prob = float(self.policy.score(torch.tensor([proposal.choices]))[0])
        self._buffer.append((proposal.choices, log_prob, float(result.values[0])))
        if len(self._buffer) >= self.settings.batch:
            self._update()

    def _update(self) -> None:
        s = self.settings
        choices, old_log_prob, rewards = (torch.tensor(x, dtype=dtype) for x, dtype in
                                          zip(zip(*self._buffer), (torch.long, torch.float, torch.float)))
        self._buffer = []
        mean = float(rewards.mean())
        if self.baseline is None:
            self.baseline, self.spread = mean, float(rewards.std(unbiased=False))
        advantage = (rewards - self.baseline) / max(self.spread, 1e-3 * max(abs(self.baseline), 1e-6))
        for _ in range(s.epochs):
            log_prob, entropy = self.policy.score(choices)
            ratio = torch.exp(log_prob - old_log_prob)
            surrogate = torch.min(ratio * advantage, ratio.clamp(1 - s.clip, 1 + s.clip) * advantage)
            loss = -(surrogate.mean() + s.entropy * entropy.mean())
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
        deviation = float((rewards - self.baseline).abs().mean())
        self.baseline = s.baseline_decay * self.baseline + (1 - s.baseline_decay) * mean
        self.spread = s.baseline_decay * self.spread + (1 - s.baseline_decay) * deviation
        self.updates += 1

    def state_dict(self) -> dict[str, Any]:
        buffer = io.BytesIO()
        torch.save({"policy": self.policy.state_dict(), "optimizer": self.optimizer.state_dict(),
                    "generator": self.generator.get_state()}, buffer)
        return {**super().state_dict(), "torch": buffer.getvalue(), "baseline": self.baseline, "spread": self.spread,
                "updates": self.updates, "log_probs": dict(self._log_probs), "buffer": list(self._buffer),
                "sizes": list(self.policy.sizes)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        if tuple(state["sizes"]) != self.policy.sizes:
            raise NasError("saved rl controller was trained on another search space; use a new --out directory")
        tensors = torch.load(io.BytesIO(state["torch"]), weights_only=True)
        self.policy.load_state_dict(tensors["policy"])
        self.optimizer.load_state_dict(tensors["optimizer"])
        self.generator.set_state(tensors["generator"])
        self.baseline, self.spread, self.updates = state["baseline"], state["spread"], state["updates"]
        self._log_probs = {int(k): float(v) for k, v in state["log_probs"].items()}
        self._buffer = [(tuple(c), float(lp), float(r)) for c, lp, r in state["buffer"]]


class EvolutionController(LearningController):
    """Regularized (aging) evolution, Real et al. 2019: the usual baseline of OFA and TuNAS.

    The first ``population`` proposals are drawn uniformly; after that each proposal takes
    ``sample`` members of the population at random, copies the fittest (first objective value)
    and changes one of its choices to another option. Every finished trial joins the population
    and the oldest member dies once it is over ``population``, so a lucky early score cannot rule
    for ever. Failed trials never join. ``sample`` defaults to a quarter of the population (at least 2),
    the ratio of the paper's ImageNet runs (P=100, S=25).
    """

    name = "evolution"

    def __init__(self, *, space, study: optuna.Study, seed: int = 0, population: int = 8,
                 sample: int | None = None) -> None:
        super().__init__(space=space, study=study)
        if len(study.directions) != 1:
            raise NasError("the evolution controller needs a scalar reward; use --objective reward, or "
                           "--controller nsga2/tpe for a Pareto front")
        if population < 2:
            raise NasError(f"evolution needs a population of at least 2, got {population}")
        self.population_size = population
        self.sample = min(population, max(2, population // 4) if sample is None else sample)
        self.rng = np.random.default_rng(seed)
        self.population: list[tuple[tuple[int, ...], float]] = []  # (choices, fitness), oldest first

    def ask(self, n: int = 1) -> list[Proposal]:
        return [self._ask_for(self._child()) for _ in range(n)]

    def _child(self) -> tuple[int, ...]:
        sizes = [len(c.options) for c in self._choices]
        if len(self.population) < self.population_size:
            return tuple(int(self.rng.integers(size)) for size in sizes)
        picked = self.rng.choice(len(self.population), size=self.sample, replace=False)
        parent = max((self.population[i] for i in sorted(picked)), key=lambda member: member[1])[0]
        mutable = [i for i, size in enumerate(sizes) if size > 1]
        if not mutable:
            return parent
        where = mutable[int(self.rng.integers(len(mutable)))]
        other = int(self.rng.integers(sizes[where] - 1))
        child = list(parent)
        child[where] = other + (other >= parent[where])  # any option but the parent's
        return tuple(child)

    def _absorb(self, proposal: Proposal, result: Result) -> None:
        if result.status is Status.FAILED:
            return
        self.population.append((tuple(proposal.choices), float(result.values[0])))
        if len(self.population) > self.population_size:
            self.population.pop(0)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "rng": self.rng.bit_generator.state,
                "population": [(list(c), f) for c, f in self.population],
                "population_size": self.population_size, "sample": self.sample}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        if (state["population_size"], state["sample"]) != (self.population_size, self.sample):
            raise NasError("saved evolution controller has another population or sample size; "
                           "use a new --out directory")
        self.rng.bit_generator.state = state["rng"]
        self.population = [(tuple(c), float(f)) for c, f in state["population"]]


def make_sampler(name: str, *, seed: int, population: int = 8) -> optuna.samplers.BaseSampler:
    """The Optuna sampler behind a controller name; ``population`` is TPE's random start and NSGA-II's generation."""
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=population, multivariate=True,
                                          constant_liar=True)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=population)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise NasError(f"{name!r} is not an Optuna controller; known: tpe, nsga2, random")


def make_controller(name: str, *, space, study: optuna.Study, seed: int = 0, population: int = 8,
                    ppo: PPOSettings = PPOSettings()) -> Controller:
    """The controller called ``name`` over ``space``, keeping its trials in ``study``.

    ``population`` sizes TPE's random start-up, NSGA-II's generations and evolution's population;
    ``ppo`` configures rl.
    """
    if name == "rl":
        return RLController(space=space, study=study, seed=seed, settings=ppo)
    if name == "evolution":
        return EvolutionController(space=space, study=study, seed=seed, population=population)
    if name not in CONTROLLERS:
        raise NasError(f"unknown controller {name!r}; known: {', '.join(CONTROLLERS)}")
    return OptunaController(name=name, space=space, study=study,
                            sampler=make_sampler(name, seed=seed, population=population))
