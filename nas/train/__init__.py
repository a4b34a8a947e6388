"""Training and evaluation: data, the step loop, recipes, segmentation and export."""

from nas.train.data import ClassificationData, load_classification
from nas.train.loop import DivergedError, EvalResult, TrainStats, evaluate, train_steps

__all__ = ["ClassificationData", "DivergedError", "EvalResult", "TrainStats", "evaluate", "load_classification",
           "train_steps"]
