"""Weight inheritance: a shrunk child starts from its parent's strongest filters.

Every state-dict entry of a network is described by the slot each of its dimensions indexes
(:func:`param_slots`: the blocks' own declarations, their channel groups placed in the
network). For each class of tied slots the kept channels are chosen *jointly*:
a channel's score is the sum, over every filter that produces it (a weight whose first
dimension lies in the class: expansion, depthwise, projection, SE and head layers, across the
whole residual group), of that filter's L2 norm; the highest-scoring channels are kept, in
their original order. Each entry is then sliced along all of its slot dimensions at once, so
BN statistics, depthwise channels, SE rows/columns and the next layer's input columns follow
the same choice. Nothing is re-initialised except channels a wider child would add.
"""

from __future__ import annotations

import torch
from torch import nn

from nas.arch import ArchSpec
from nas.blocks import Channels, filter_norms, slice_channels
from nas.errors import NasError
from nas.model import Part, build_model, network_parts
from nas.netadapt.units import Slot, has_expand, input_slot, slot_classes, slot_widths

Dims = tuple[Slot | None, ...]  # per tensor dimension: the slot it indexes, None if fixed


def _group_slots(part: Part, layers: int) -> dict[Channels, Slot | None]:
    """The network slot each of a part's channel groups is."""
    if part.kind == "stem":
        return {Channels.INPUT: None, Channels.OUTPUT: ("stem", 0)}
    if part.kind == "head":
        return {Channels.INPUT: input_slot(layers), Channels.EXPANDED: ("head", 0), Channels.HIDDEN: ("hidden", 0)}
    i = part.layer
    return {Channels.INPUT: input_slot(i), Channels.EXPANDED: ("exp", i), Channels.SQUEEZE: ("se", i),
            Channels.OUTPUT: ("out", i)}


def param_slots(spec: ArchSpec) -> dict[str, Dims]:
    """The slot of every dimension of every state-dict entry of ``build_model(spec)``."""
    entries: dict[str, Dims] = {}
    for part in network_parts(spec):
        slots = _group_slots(part, len(spec.layers))
        entries.update({f"{part.prefix}.{param.name}": param.indexing(slots) for param in part.params})
    return entries


def channel_scores(spec: ArchSpec, state: dict[str, torch.Tensor]) -> dict[Slot, torch.Tensor]:
    """Per slot, the summed L2 norm of the filters producing each of its channels (before tying)."""
    widths = slot_widths(spec)
    scores = {slot: torch.zeros(width, dtype=torch.float64) for slot, width in widths.items()}
    for name, dims in param_slots(spec).items():
        tensor = state[name]
        if tensor.dim() >= 2 and dims[0] is not None:
            scores[dims[0]] += filter_norms(tensor).cpu()
    return scores


def kept_channels(parent: ArchSpec, state: dict[str, torch.Tensor], child: ArchSpec) -> dict[Slot, torch.Tensor]:
    """For every slot, the parent channel indices the child keeps (ascending)."""
    if has_expand(parent) != has_expand(child) or [l.op for l in parent.layers] != [l.op for l in child.layers]:
        raise NasError("cannot inherit weights: the child's blocks differ from the parent's, not just its widths")
    old, new = slot_widths(parent), slot_widths(child)
    scores = channel_scores(parent, state)
    kept: dict[Slot, torch.Tensor] = {}
    for members in slot_classes(parent):
        width, target = old[members[0]], new[members[0]]
        if any(new[slot] != target for slot in members):
            raise NasError(f"cannot inherit weights: tied widths {members} differ in the child")
        if target >= width:
            index = torch.arange(width)
        else:
            joint = sum(scores[slot] for slot in members)
            index = torch.sort(torch.topk(joint, target, sorted=False).indices).values
        kept.update({slot: index for slot in members})
    return kept


def _take(source: torch.Tensor, dims: Dims, kept: dict[Slot, torch.Tensor], into: torch.Tensor) -> torch.Tensor:
    source = slice_channels(source, dims, kept)
    result = into.clone()
    result[tuple(slice(0, size) for size in source.shape)] = source.to(result.dtype)
    return result


def inherit_state(parent: ArchSpec, state: dict[str, torch.Tensor], child: ArchSpec,
                  child_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The child's state dict: the parent's kept channels, and ``child_state`` for anything new."""
    kept = kept_channels(parent, state, child)
    return {name: _take(state[name], dims, kept, child_state[name]) for name, dims in param_slots(child).items()}


def inherit(parent: nn.Module, child: ArchSpec) -> nn.Module:
    """Build ``child`` and load the weights it inherits from ``parent`` (a ``build_model`` network)."""
    model = build_model(child)
    state = inherit_state(parent.spec, parent.state_dict(), child, model.state_dict())
    model.load_state_dict(state, strict=True)
    return model.to(next(parent.parameters()).device)
