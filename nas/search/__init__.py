"""Platform-aware architecture search: objectives, controllers, evaluators (proxy training or a supernet),
records and the runner.

``python -m nas.search --target pixel-cpu`` runs it; the pieces are importable on their own. The
names below load their module on first use, so that reading a search's records (``nas.analysis``)
does not import torch.
"""

from importlib import import_module

_HOMES = {
    "CONTROLLERS": "controllers", "Controller": "controllers", "PPOSettings": "controllers", "Proposal": "controllers",
    "Result": "controllers", "make_controller": "controllers",
    "EvolutionController": "controllers",
    "Evaluation": "evaluate", "ProxySettings": "evaluate", "evaluate_candidate": "evaluate",
    "EVALUATORS": "evaluators", "Evaluator": "evaluators", "EvaluatorSettings": "evaluators",
    "SupernetChildEvaluator": "evaluators", "TrainingEvaluator": "evaluators",
    "PRESETS": "objectives", "Objective": "objectives", "mnas_reward": "objectives",
    "Status": "records", "TrialRecord": "records",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'nas.search' has no attribute {name!r}")
    return getattr(import_module(f"nas.search.{_HOMES[name]}"), name)
