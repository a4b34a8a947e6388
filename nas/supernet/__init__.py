"""Weight-sharing supernets: train one network, then score any child of a search space in seconds.

``Supernet(space)`` holds every child of a factorized space (:mod:`nas.supernet.network`),
``train_supernet`` trains it on the proxy data (:mod:`nas.supernet.training`) and
``SupernetEvaluator.evaluate(spec)`` scores a child with inherited, BatchNorm-recalibrated
weights on the held-out split (:mod:`nas.supernet.evaluator`): the call a search makes instead of
proxy training.
"""

from nas.supernet.evaluator import ChildScore, SupernetEvaluator, open_evaluator
from nas.supernet.network import ChildPlan, NotAChildError, Supernet
from nas.supernet.training import SupernetRun, SupernetSettings, load_supernet, train_supernet

__all__ = ["ChildPlan", "ChildScore", "NotAChildError", "Supernet", "SupernetEvaluator", "SupernetRun",
           "SupernetSettings", "load_supernet", "open_evaluator", "train_supernet"]
