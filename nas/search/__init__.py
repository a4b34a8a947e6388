"""Platform-aware architecture search: objectives, controllers, proxy evaluation and the runner.

``python -m nas.search --target pixel-cpu`` runs it; the pieces are importable on their own.
"""

from nas.search.controllers import CONTROLLERS, Controller, PPOSettings, Proposal, Result, make_controller
from nas.search.evaluate import Evaluation, ProxySettings, evaluate_candidate
from nas.search.objectives import PRESETS, Objective, mnas_reward

__all__ = ["CONTROLLERS", "PRESETS", "Controller", "Evaluation", "Objective", "PPOSettings", "Proposal",
           "ProxySettings", "Result", "evaluate_candidate", "make_controller", "mnas_reward"]
