"""Controllers: the RL controller learns, Optuna controllers keep their trials in an RDB study, state survives."""

import pickle

import numpy as np
import optuna
import pytest
import torch
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState

from nas.arch import ArchSpec, HeadSpec, LayerSpec, StemSpec
from nas.errors import NasError
from nas.search.controllers import PPOSettings, Result, make_controller
from nas.search.records import Status
from search_spaces.space import Choice, SearchSpace

optuna.logging.set_verbosity(optuna.logging.WARNING)
TARGET = (1, 2, 0, 1, 2, 0, 3, 0, 2, 1, 3, 0)


class ToySpace(SearchSpace):
    """Six blocks with a kernel and a width choice each: 3**6 * 4**6 vectors, tiny networks."""

    name = "toy"

    def choices(self):
        return ([Choice(f"b{i}.kernel", (3, 5, 7)) for i in range(6)]
                + [Choice(f"b{i}.exp", (16, 32, 48, 64)) for i in range(6)])

    def encode(self, spec, *, ignore_expansion=False):
        raise NotImplementedError

    def _build(self, values):
        layers = tuple(LayerSpec("ir", values[f"b{i}.kernel"], 1, values[f"b{i}.exp"], 16) for i in range(6))
        return ArchSpec(StemSpec(16), layers, HeadSpec(32, num_classes=10))


def toy_reward(choices):
    """Share of choices that match a hidden target vector (uniform random scores 0.29 on average)."""
    return float(np.mean([c == t for c, t in zip(choices, TARGET)]))


def sqlite_study(tmp_path, directions=("maximize",), name="s"):
    return optuna.create_study(storage=f"sqlite:///{tmp_path / 'study.db'}", study_name=name, load_if_exists=True,
                               directions=list(directions))


def run_toy(controller, trials, batch=4):
    rewards = []
    while len(rewards) < trials:
        for proposal in controller.ask(batch):
            reward = toy_reward(proposal.choices)
            rewards.append(reward)
            controller.tell(proposal, Result.ok((reward,)))
    return rewards


def test_rl_controller_learns_a_toy_reward():
    controller = make_controller("rl", space=ToySpace(), study=optuna.create_study(direction="maximize"), seed=0)
    rewards = run_toy(controller, 96)
    actions, _ = controller.policy.sample(200, torch.Generator().manual_seed(1))
    learned = np.mean([toy_reward(a) for a in actions.tolist()])
    assert controller.updates == 24
    assert np.mean(rewards[:16]) < 0.4 < 0.6 < learned


@pytest.mark.parametrize("name,directions", [("tpe", ("maximize",)), ("nsga2", ("maximize", "minimize")),
                                             ("random", ("maximize",)), ("rl", ("maximize",)),
                                             ("evolution", ("maximize",))])
def test_controllers_ask_tell_roundtrip_on_sqlite(tmp_path, name, directions):
    study = sqlite_study(tmp_path, directions)
    controller = make_controller(name, space=ToySpace(), study=study, seed=0, population=2)
    proposals = controller.ask(3)
    assert len({p.number for p in proposals}) == 3
    for i, proposal in enumerate(proposals):
        assert proposal.spec == ToySpace().decode(list(proposal.choices))
        values = (0.1 * i,) if len(directions) == 1 else (0.1 * i, 10.0 + i)
        controller.tell(proposal, Result.ok(values, attrs={"accuracy": 0.1 * i}))
    reloaded = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'study.db'}")
    trials = reloaded.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    assert trials[2].user_attrs["accuracy"] == pytest.approx(0.2)
    assert trials[2].user_attrs["controller"] == name
    assert ArchSpec.from_string(trials[1].user_attrs["arch"]) == proposals[1].spec
    # the study holds the chosen options themselves (what optuna-dashboard shows), not their indices
    assert [trials[0].params[c.name] for c in ToySpace().choices()] == \
        [c.options[i] for c, i in zip(ToySpace().choices(), proposals[0].choices)]
    more = controller.ask(2)  # past the start-up population: the sampler now models the results
    assert [p.number for p in more] == [3, 4]


def test_evolution_beats_random_search_on_a_toy_reward():
    def best_after(name):
        controller = make_controller(name, space=ToySpace(), study=optuna.create_study(direction="maximize"), seed=0,
                                     population=16)
        return run_toy(controller, 160, batch=1)

    evolved, drawn = best_after("evolution"), best_after("random")
    assert np.mean(evolved[-40:]) > np.mean(drawn[-40:]) + 0.2
    assert max(evolved) > max(drawn)


def test_evolution_state_round_trips_and_failed_trials_never_join(tmp_path):
    study = sqlite_study(tmp_path)
    original = make_controller("evolution", space=ToySpace(), study=study, seed=3, population=4)
    run_toy(original, 6, batch=1)
    [failed] = original.ask(1)
    original.tell(failed, Result.failed(attrs={"reason": "nan"}))
    assert len(original.population) == 4 and failed.choices not in [c for c, _ in original.population]
    state = pickle.loads(pickle.dumps(original.state_dict()))
    restored = make_controller("evolution", space=ToySpace(), study=optuna.create_study(direction="maximize"),
                               seed=99, population=4)
    restored.load_state_dict(state)
    assert restored.population == original.population
    assert [p.choices for p in original.ask(3)] == [p.choices for p in restored.ask(3)]
    synced = make_controller("evolution", space=ToySpace(), study=sqlite_study(tmp_path), seed=3, population=4)
    synced.sync()  # a controller whose saved state was lost rebuilds the population from the study
    assert synced.population == original.population
    with pytest.raises(NasError, match="population or sample size"):
        make_controller("evolution", space=ToySpace(), study=optuna.create_study(), population=8).load_state_dict(state)


def test_failed_result_is_recorded_with_its_reason(tmp_path):
    study = sqlite_study(tmp_path)
    controller = make_controller("rl", space=ToySpace(), study=study, seed=0)
    [proposal] = controller.ask(1)
    controller.tell(proposal, Result.failed(attrs={"reason": "loss is nan at step 3"}))
    trial = study.trials[0]
    assert trial.state == TrialState.FAIL
    assert trial.user_attrs["reason"] == "loss is nan at step 3"
    assert controller.updates == 0


def test_interrupted_trials_are_reopened_under_their_own_number(tmp_path):
    first = make_controller("tpe", space=ToySpace(), study=sqlite_study(tmp_path), seed=0)
    done, left_open = first.ask(2)
    first.tell(done, Result.ok((0.5,)))
    # A new process: only the study survives.
    second = make_controller("tpe", space=ToySpace(), study=sqlite_study(tmp_path), seed=0)
    [reopened] = second.interrupted()
    assert (reopened.number, reopened.choices) == (left_open.number, left_open.choices)
    second.tell(reopened, Result.ok((0.7,)))
    study = sqlite_study(tmp_path)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    assert second.interrupted() == []


def test_rl_state_dict_round_trip_restores_policy_and_random_stream():
    original = make_controller("rl", space=ToySpace(), study=optuna.create_study(direction="maximize"), seed=3)
    run_toy(original, 8)
    state = pickle.loads(pickle.dumps(original.state_dict()))
    restored = make_controller("rl", space=ToySpace(), study=optuna.create_study(direction="maximize"), seed=99)
    restored.load_state_dict(state)
    assert restored.updates == original.updates == 2
    assert restored.baseline == pytest.approx(original.baseline)
    for a, b in zip(original.policy.parameters(), restored.policy.parameters()):
        assert torch.equal(a, b)
    assert [p.choices for p in original.ask(3)] == [p.choices for p in restored.ask(3)]


def test_optuna_state_dict_round_trip_restores_the_sampler():
    original = make_controller("random", space=ToySpace(), study=optuna.create_study(direction="maximize"), seed=3)
    original.ask(3)
    state = pickle.loads(pickle.dumps(original.state_dict()))
    restored = make_controller("random", space=ToySpace(), study=optuna.create_study(direction="maximize"), seed=99)
    restored.load_state_dict(state)
    assert original.ask(1)[0].choices == restored.ask(1)[0].choices
    with pytest.raises(NasError, match="not 'tpe'"):
        make_controller("tpe", space=ToySpace(), study=optuna.create_study(), seed=0).load_state_dict(state)


def test_rl_sync_learns_from_trials_its_saved_state_missed(tmp_path):
    first = make_controller("rl", space=ToySpace(), study=sqlite_study(tmp_path), seed=0,
                            ppo=PPOSettings(batch=4))
    run_toy(first, 4)
    assert first.updates == 1
    second = make_controller("rl", space=ToySpace(), study=sqlite_study(tmp_path), seed=0, ppo=PPOSettings(batch=4))
    second.sync()
    assert second.updates == 1
    second.sync()
    assert second.updates == 1  # nothing is learned twice


def test_rl_needs_a_scalar_reward_and_names_are_checked():
    with pytest.raises(NasError, match="scalar reward"):
        make_controller("rl", space=ToySpace(), study=optuna.create_study(directions=["maximize", "minimize"]))
    with pytest.raises(NasError, match="unknown controller 'anneal'"):
        make_controller("anneal", space=ToySpace(), study=optuna.create_study())
    with pytest.raises(NasError, match="evolution controller needs a scalar reward"):
        make_controller("evolution", space=ToySpace(), study=optuna.create_study(directions=["maximize", "minimize"]))


def test_trials_left_half_open_by_a_kill_mid_ask_are_completed(tmp_path):
    study = sqlite_study(tmp_path)
    space = ToySpace()
    study.ask()  # killed before any choice was drawn: RUNNING without params
    study.enqueue_trial({c.name: c.options[1] for c in space.choices()})  # killed between enqueue and ask: WAITING
    controller = make_controller("rl", space=space, study=sqlite_study(tmp_path), seed=0)
    reopened = controller.interrupted()
    assert [p.number for p in reopened] == [0, 1]
    assert reopened[1].choices == (1,) * len(space.choices())
    for proposal in reopened:
        controller.tell(proposal, Result.ok((toy_reward(proposal.choices),)))
    [fresh] = controller.ask(1)
    assert fresh.number == 2
    assert [t.state for t in sqlite_study(tmp_path).trials] == [TrialState.COMPLETE] * 2 + [TrialState.RUNNING]


def test_a_study_begun_with_option_indices_resumes_with_them(tmp_path):
    """Runs made before option values were stored keep their study's encoding: resume, sync and ask work."""
    space = ToySpace()
    study = sqlite_study(tmp_path)
    indexed = {c.name: CategoricalDistribution(list(range(len(c.options)))) for c in space.choices()}
    old_vectors = [(0,) * 12, TARGET]
    for vector in old_vectors:
        study.enqueue_trial({c.name: i for c, i in zip(space.choices(), vector)})
        trial = study.ask(indexed)
        study.tell(trial, toy_reward(vector))
    study.enqueue_trial({c.name: 2 for c in space.choices()[:6]} | {c.name: 3 for c in space.choices()[6:]})
    study.ask(indexed)  # left open by the killed old run
    controller = make_controller("rl", space=space, study=sqlite_study(tmp_path), seed=0, ppo=PPOSettings(batch=2))
    controller.sync()
    assert controller.updates == 1  # learned from both old trials, read as index vectors
    [reopened] = controller.interrupted()
    assert reopened.choices == (2,) * 6 + (3,) * 6
    controller.tell(reopened, Result.ok((toy_reward(reopened.choices),)))
    [fresh] = controller.ask(1)
    assert sqlite_study(tmp_path).trials[fresh.number].params == {
        c.name: i for c, i in zip(space.choices(), fresh.choices)}


def test_result_says_failure_once():
    assert Result.failed(attrs={"reason": "nan"}).status is Status.FAILED
    with pytest.raises(NasError, match="ok with objective values"):
        Result(Status.OK)
    with pytest.raises(NasError, match="ok with objective values"):
        Result(Status.FAILED, (0.5,))
