"""Rediscover MobileNetV3 end to end: search, manual edits, NetAdapt, training, comparison report."""

from nas.pipeline.config import Execution, PipelineConfig, load_config
from nas.pipeline.edits import EDITS, apply_edits
from nas.pipeline.runner import run_pipeline

__all__ = ["EDITS", "Execution", "PipelineConfig", "apply_edits", "load_config", "run_pipeline"]
