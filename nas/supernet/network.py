"""The weight-sharing supernet of a factorized search space.

One network per skeleton of the space, each at the space's largest stem, kernel, expansion,
width and depth in every block. A child (an :class:`~nas.arch.ArchSpec`) runs as a slice of it:

* **kernel**: the centre crop of the largest kernel (no learned transform);
* **channels and expansion**: a prefix of the block's channels (run :meth:`Supernet.reorder_channels`
  to put the most important channels first); any expanded width up to the space's largest
  MBConv ratio times the layer's largest input is accepted, so NetAdapt-style widths (and the
  published MobileNetV3 expansions) are children too;
* **depth**: the first n layers of a block;
* **op**: ``conv``, ``ds`` and ``ir`` (every ``mbN``) have weights of their own; all ``mbN``
  share one ``ir`` block, each expansion taking a prefix (which is why the search uses the
  ``*-shared`` spaces, :func:`search_spaces.factorized.weight_sharing_space`);
* **SE, activation, skip**: as the child says (SE weights are shared by prefix).

The weights are ordinary :mod:`nas.blocks` modules at their largest size (a block per op kind and
layer position, a head per head kind); what a child takes of each is read from the block's own
parameter declarations (:mod:`nas.supernet.slicing`), never named again here.

**Valid children** (:meth:`Supernet.why_not`): members of the space up to their expanded widths
(``space.contains(spec, ignore_expansion=True)``) whose classifier has the supernet's classes and
whose expanded and squeeze widths fit the largest ones. MobileNetV3-Large/-Small (and their 0.75
and minimalistic variants) are children of the ``mobilenetv3`` supernet, MnasNet-A1/-B1 of the
``mnasnet`` one; the 0.5-width networks are not (0.5 is below the space's smallest filter choice).

A child's layers map to blocks as the space's own ``encode`` splits them, so every child has
exactly one place in the supernet.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from nas.arch import ArchSpec, HeadSpec, LayerSpec, iter_layers
from nas.blocks import (
    Channels, ConvBNAct, block_expands, block_params, filter_norms, head_params, make_block, make_head,
)
from nas.errors import NasError
from nas.model import Network, build_model, init_weights
from nas.supernet.slicing import Axis, Tensors, axes, cut, run_head, run_layer, run_stem
from search_spaces import FactorizedSpace, NotInSpaceError, SearchSpace
from search_spaces.factorized import STEM_KERNEL, STEM_STRIDE, efficient_head_channels, expanded_width, layer_op


class NotAChildError(NasError):
    """A spec the supernet cannot run; the message says why in one line."""


@dataclass(frozen=True)
class ChildPlan:
    """Where a child sits in the supernet: its skeleton and, per layer, (block index, layer index)."""

    skeleton: str
    slots: tuple[tuple[int, int], ...]


class SharedLayer(nn.Module):
    """One layer position of a block: the largest block of each op kind the space offers there."""

    def __init__(self, largest: dict[str, LayerSpec], in_ch: int, *, in_group: str, out_group: str) -> None:
        super().__init__()
        self.largest, self.in_ch, self.in_group, self.out_group = largest, in_ch, in_group, out_group
        self.ops = nn.ModuleDict({kind: make_block(layer, in_ch) for kind, layer in largest.items()})

    def why_not(self, layer: LayerSpec, in_ch: int) -> str | None:
        largest = self.largest.get(layer.op)
        if largest is None:
            return f"op {layer.op} is not offered here (only {', '.join(self.largest)})"
        if layer.exp > largest.exp:
            return f"expanded width {layer.exp} exceeds the supernet's {largest.exp}"
        squeeze, most = layer.se_channels(in_ch), largest.se_channels(self.in_ch)
        if squeeze > most:
            return f"SE squeeze width {squeeze} exceeds the supernet's {most}"
        return None

    def cut(self, layer: LayerSpec, in_ch: int) -> Tensors:
        """The child layer's tensors, named as ``make_block(layer, in_ch)`` names them."""
        keep = {Channels.INPUT: in_ch, Channels.EXPANDED: layer.exp, Channels.OUTPUT: layer.out,
                Channels.SQUEEZE: layer.se_channels(in_ch)}
        return cut(self.ops[layer.op], block_params(layer, in_ch), keep, layer.kernel)

    def forward(self, x: torch.Tensor, layer: LayerSpec) -> torch.Tensor:
        return run_layer(x, self.cut(layer, x.shape[1]), layer, training=self.training)

    def axes(self, prefix: str) -> list[Axis]:
        found = []
        for kind, layer in self.largest.items():
            expanded = f"{prefix}.ops.{kind}.exp" if block_expands(layer, self.in_ch) else self.in_group
            groups = {Channels.INPUT: self.in_group, Channels.OUTPUT: self.out_group, Channels.EXPANDED: expanded,
                      Channels.SQUEEZE: f"{prefix}.ops.{kind}.se"}
            found += axes(f"{prefix}.ops.{kind}", block_params(layer, self.in_ch), groups)
        return found


def _largest_layers(space: FactorizedSpace, block: str, in_ch: int, out_ch: int) -> dict[str, LayerSpec]:
    """Per op kind offered in ``block``, its largest layer from ``in_ch`` channels (the weights' shapes)."""
    common = dict(kernel=max(space.options(f"{block}.kernel")), stride=1, out=out_ch,
                  se_ratio=max(space.options(f"{block}.se")), se_style=space.se_style, act="relu", residual=False)
    largest = {}
    for op in space.options(f"{block}.op"):
        kind, exp = layer_op(op)[0], expanded_width(op, in_ch, out_ch)
        if kind not in largest or exp > largest[kind].exp:
            largest[kind] = LayerSpec(op=kind, exp=exp, **common)
    return largest


class Trunk(nn.Module):
    """The supernet of one skeleton: stem, blocks of shared layers, one head per head kind."""

    def __init__(self, space: FactorizedSpace, skeleton: str) -> None:
        super().__init__()
        self.stem_group = f"{skeleton}.stem"
        in_ch, in_group, stages = max(space.stem_options.channels), self.stem_group, []
        self.stem = ConvBNAct(3, in_ch, STEM_KERNEL, STEM_STRIDE)
        for s, stage in enumerate(space.skeletons[skeleton]):
            block = f"block{s + 1}"
            out_ch, out_group = max(space.stage_widths(s + 1, stage)), f"{skeleton}.{block}"
            layers = []
            for j in range(stage.depth + max(space.options(f"{block}.layers"))):
                layers.append(SharedLayer(_largest_layers(space, block, in_ch, out_ch), in_ch, in_group=in_group,
                                          out_group=out_group))
                in_ch, in_group = out_ch, out_group
            stages.append(nn.ModuleList(layers))
        self.blocks = nn.ModuleList(stages)
        self.last_group = in_group
        width = max(space.head_options.widths)
        classes = space.num_classes
        largest = {"efficient": HeadSpec(channels=efficient_head_channels(in_ch), hidden=width, num_classes=classes),
                   "classic": HeadSpec(channels=width, hidden=0, num_classes=classes)}
        self.largest_heads = {kind: largest[kind] for kind in space.head_options.kinds}
        self.heads = nn.ModuleDict({kind: make_head(head, in_ch) for kind, head in self.largest_heads.items()})

    def cut_stem(self, channels: int) -> Tensors:
        return cut(self.stem, ConvBNAct.params(), {Channels.INPUT: 3, Channels.OUTPUT: channels}, STEM_KERNEL)

    def cut_head(self, head: HeadSpec, in_ch: int) -> Tensors:
        keep = {Channels.INPUT: in_ch, Channels.EXPANDED: head.channels, Channels.HIDDEN: head.hidden}
        return cut(self.heads[_head_kind(head)], head_params(head), keep, 1)

    def axes(self, prefix: str) -> list[Axis]:
        found = axes(f"{prefix}.stem", ConvBNAct.params(), {Channels.INPUT: None, Channels.OUTPUT: self.stem_group})
        for s, layers in enumerate(self.blocks):
            for j, layer in enumerate(layers):
                found += layer.axes(f"{prefix}.blocks.{s}.{j}")
        for kind, head in self.largest_heads.items():
            groups = {Channels.INPUT: self.last_group, Channels.EXPANDED: f"{prefix}.heads.{kind}.conv",
                      Channels.HIDDEN: f"{prefix}.heads.{kind}.hidden"}
            found += axes(f"{prefix}.heads.{kind}", head_params(head), groups)
        return found


def _head_kind(head: HeadSpec) -> str:
    return "efficient" if head.efficient else "classic"


class Supernet(nn.Module):
    """All children of a factorized space in one network; see the module docstring.

    >>> from search_spaces import get_space
    >>> from nas import zoo
    >>> net = Supernet(get_space("mobilenetv3", num_classes=1000))
    >>> net.contains(zoo.get("mobilenet_v3_small"))
    True
    """

    def __init__(self, space: SearchSpace) -> None:
        super().__init__()
        if not isinstance(space, FactorizedSpace):
            raise NasError(f"a supernet needs a factorized search space, got {type(space).__name__}")
        self.space = space
        self.trunks = nn.ModuleDict({key: Trunk(space, key) for key in space.skeletons})
        self._plans: dict[ArchSpec, ChildPlan] = {}
        init_weights(self)

    # ------------------------------------------------------------ which specs are children

    def plan(self, spec: ArchSpec) -> ChildPlan:
        """Where ``spec`` sits in the supernet; :class:`NotAChildError` (one line) if it is not a child."""
        if spec not in self._plans:
            self._plans[spec] = self._make_plan(spec)
        return self._plans[spec]

    def why_not(self, spec: ArchSpec) -> str | None:
        """Why ``spec`` is not a child (one line), or None when it is."""
        try:
            self.plan(spec)
        except NotAChildError as err:
            return str(err)
        return None

    def contains(self, spec: ArchSpec) -> bool:
        return self.why_not(spec) is None

    def _make_plan(self, spec: ArchSpec) -> ChildPlan:
        space = self.space
        if spec.head.num_classes != space.num_classes:
            raise NotAChildError(f"the spec classifies into {spec.head.num_classes} classes, "
                                 f"the supernet into {space.num_classes}")
        try:
            vector = space.encode(spec, ignore_expansion=True)
        except NotInSpaceError as err:
            raise NotAChildError(str(err)) from None
        values = {choice.name: choice.options[i] for choice, i in zip(space.choices(), vector)}
        skeleton = values.get("skeleton", next(iter(space.skeletons)))
        slots = []
        for s, stage in enumerate(space.skeletons[skeleton]):
            depth = stage.depth + values.get(f"block{s + 1}.layers", space.options(f"block{s + 1}.layers")[0])
            slots += [(s, j) for j in range(depth)]
        plan = ChildPlan(skeleton=skeleton, slots=tuple(slots))
        trunk = self.trunks[skeleton]
        for (i, in_ch, layer), (s, j) in zip(iter_layers(spec), plan.slots):
            reason = trunk.blocks[s][j].why_not(layer, in_ch)
            if reason is not None:
                raise NotAChildError(f"layers[{i}]: {reason} (block{s + 1}, layer {j + 1})")
        most = trunk.largest_heads[_head_kind(spec.head)].channels
        if spec.head.channels > most:
            raise NotAChildError(f"head.channels {spec.head.channels} exceeds the supernet's {most}")
        return plan

    # ------------------------------------------------------------ running and extracting children

    def forward(self, x: torch.Tensor, spec: ArchSpec) -> torch.Tensor:
        plan = self.plan(spec)
        trunk = self.trunks[plan.skeleton]
        x = run_stem(x, trunk.cut_stem(spec.stem.channels), spec.stem, training=self.training)
        for (s, j), layer in zip(plan.slots, spec.layers):
            x = trunk.blocks[s][j](x, layer)
        return run_head(x, trunk.cut_head(spec.head, x.shape[1]), spec.head, training=self.training)

    def child_state(self, spec: ArchSpec) -> dict[str, torch.Tensor]:
        """The state dict of ``build_model(spec)`` holding the supernet's slices (copies)."""
        plan = self.plan(spec)
        trunk = self.trunks[plan.skeleton]
        state = {f"stem.{k}": v for k, v in trunk.cut_stem(spec.stem.channels).items()}
        for (i, in_ch, layer), (s, j) in zip(iter_layers(spec), plan.slots):
            state.update({f"blocks.{i}.{k}": v for k, v in trunk.blocks[s][j].cut(layer, in_ch).items()})
        state.update({f"head.{k}": v for k, v in trunk.cut_head(spec.head, spec.last_channels()).items()})
        return {name: tensor.detach().clone().contiguous() for name, tensor in state.items()}

    def extract(self, spec: ArchSpec) -> Network:
        """``build_model(spec)`` with the supernet's weights loaded (strictly), on the supernet's device."""
        state = self.child_state(spec)
        model = build_model(spec)
        model.load_state_dict(state, strict=True)
        return model.to(next(self.parameters()).device)

    # ------------------------------------------------------------ channel importance

    def axes(self) -> list[Axis]:
        """Every sliceable tensor dimension and the channel group it indexes."""
        return [axis for key, trunk in self.trunks.items() for axis in trunk.axes(f"trunks.{key}")]

    @torch.no_grad()
    def reorder_channels(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Sort every channel group by importance, most important first, so prefixes keep the best.

        A channel's importance is the summed L2 norm of the filters producing it (every weight
        whose first dimension indexes the group: convolutions, depthwise kernels, SE and linear
        layers), as in NetAdapt's weight inheritance (:mod:`nas.netadapt.inherit`). Each group is
        permuted in every tensor that indexes it (and in the optimizer's per-parameter state), so
        the full-width network computes the same function before and after.
        """
        tensors = {**dict(self.named_parameters()), **dict(self.named_buffers())}
        groups: dict[str, list[Axis]] = {}
        for axis in self.axes():
            groups.setdefault(axis.group, []).append(axis)
        for axes in groups.values():
            producers = [tensors[a.path] for a in axes if a.dim == 0 and tensors[a.path].dim() >= 2]
            score = sum(filter_norms(t) for t in producers)
            order = torch.argsort(score, descending=True, stable=True)
            for axis in axes:
                tensor = tensors[axis.path]
                tensor.copy_(tensor.index_select(axis.dim, order.to(tensor.device)))
                state = optimizer.state.get(tensor, {}) if optimizer is not None else {}
                for value in state.values():
                    if torch.is_tensor(value) and value.shape == tensor.shape:
                        value.copy_(value.index_select(axis.dim, order.to(value.device)))
