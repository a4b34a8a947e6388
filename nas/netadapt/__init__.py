"""NetAdapt as modified for MobileNetV3: latency-guided width pruning with short fine-tunes.

>>> from nas import zoo
>>> from nas.netadapt import units
>>> [u.name for u in units(zoo.get("mobilenet_v3_small"))][:4]
['stem', 'out[0]', 'exp[1]', 'out[1-2]']

Modules: ``units`` (which widths shrink together), ``proposals`` (largest width under a
budget), ``inherit`` (weights by filter norm), ``finetune`` (in-process or Ray), ``select``,
``loop`` (the algorithm and its run directory); ``python -m nas.netadapt`` runs it.
The functions ``inherit.inherit`` and ``select.select`` are not re-exported: their modules share
their names.
"""

from nas.netadapt.inherit import inherit_state, param_slots
from nas.netadapt.loop import HistoryRow, LatencyTarget, Result, Settings, TargetUnreachable, netadapt
from nas.netadapt.proposals import Proposal, propose, reduction_ms, shrink
from nas.netadapt.select import Outcome
from nas.netadapt.units import Unit, slot_widths, unit_width, units, with_width

__all__ = [
    "HistoryRow", "LatencyTarget", "Outcome", "Proposal", "Result", "Settings", "TargetUnreachable", "Unit",
    "inherit_state", "netadapt", "param_slots", "propose", "reduction_ms", "shrink",
    "slot_widths", "unit_width", "units", "with_width",
]
