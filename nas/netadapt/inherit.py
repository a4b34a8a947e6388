"""Weight inheritance: a shrunk child starts from its parent's strongest filters.

Every state-dict entry of a network is described by the slot each of its dimensions indexes
(:func:`param_slots`). For each class of tied slots the kept channels are chosen *jointly*:
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

from nas.arch import ArchSpec, iter_layers
from nas.errors import NasError
from nas.model import build_model
from nas.netadapt.units import Slot, has_expand, input_slot, slot_classes, slot_widths

Dims = tuple[Slot | None, ...]  # per tensor dimension: the slot it indexes, None if fixed
_BN = ("weight", "bias", "running_mean", "running_var")


def _conv_bn(prefix: str, out: Slot, inp: Slot | None) -> dict[str, Dims]:
    entries: dict[str, Dims] = {f"{prefix}.conv.weight": (out, inp, None, None)}
    entries.update({f"{prefix}.bn.{name}": (out,) for name in _BN})
    entries[f"{prefix}.bn.num_batches_tracked"] = ()
    return entries


def _se(prefix: str, channels: Slot, squeeze: Slot) -> dict[str, Dims]:
    return {f"{prefix}.reduce.weight": (squeeze, channels, None, None), f"{prefix}.reduce.bias": (squeeze,),
            f"{prefix}.expand.weight": (channels, squeeze, None, None), f"{prefix}.expand.bias": (channels,)}


def param_slots(spec: ArchSpec) -> dict[str, Dims]:
    """The slot of every dimension of every state-dict entry of ``build_model(spec)``."""
    entries = _conv_bn("stem", ("stem", 0), None)
    expands = has_expand(spec)
    for i, _, layer in iter_layers(spec):
        prefix, inp = f"blocks.{i}", input_slot(i)
        if layer.op == "conv":
            entries.update(_conv_bn(f"{prefix}.conv", ("out", i), inp))
            if layer.has_se:
                entries.update(_se(f"{prefix}.se", ("out", i), ("se", i)))
            continue
        exp = ("exp", i)
        if expands[i]:
            entries.update(_conv_bn(f"{prefix}.expand", exp, inp))
        entries.update(_conv_bn(f"{prefix}.dw", exp, None))
        if layer.has_se:
            entries.update(_se(f"{prefix}.se", exp, ("se", i)))
        entries.update(_conv_bn(f"{prefix}.project", ("out", i), exp))
    last, head = input_slot(len(spec.layers)), ("head", 0)
    entries.update(_conv_bn("head.conv", head, last))
    if spec.head.efficient:
        hidden = ("hidden", 0)
        entries.update({"head.hidden.weight": (hidden, head), "head.hidden.bias": (hidden,),
                        "head.classifier.weight": (None, hidden), "head.classifier.bias": (None,)})
    else:
        entries.update({"head.classifier.weight": (None, head), "head.classifier.bias": (None,)})
    return entries


def channel_scores(spec: ArchSpec, state: dict[str, torch.Tensor]) -> dict[Slot, torch.Tensor]:
    """Per slot, the summed L2 norm of the filters producing each of its channels (before tying)."""
    widths = slot_widths(spec)
    scores = {slot: torch.zeros(width, dtype=torch.float64) for slot, width in widths.items()}
    for name, dims in param_slots(spec).items():
        tensor = state[name]
        if tensor.dim() >= 2 and dims[0] is not None:
            scores[dims[0]] += tensor.detach().double().flatten(1).norm(dim=1).cpu()
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
    for axis, slot in enumerate(dims):
        if slot is not None:
            source = source.index_select(axis, kept[slot].to(source.device))
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
