"""Latency: one key decomposition, per-target tables, a calibrated predictor (``python -m nas.latency``)."""
