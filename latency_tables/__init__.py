"""Latency tables shipped as package data (``pixel-cpu/``); :mod:`nas.latency.locations` finds them."""
