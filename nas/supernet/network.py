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
  share one ``ir`` path, each expansion taking a prefix;
* **SE, activation, skip**: as the child says (SE weights are shared by prefix).

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
import torch.nn.functional as F
from torch import nn

from nas.arch import ArchSpec, HeadSpec, LayerSpec, iter_layers, make_divisible
from nas.errors import NasError
from nas.model import Network, build_model, init_weights
from nas.supernet.elastic import Axis, ElasticConvBN, ElasticLinear, ElasticSE, activate
from search_spaces import FactorizedSpace, NotInSpaceError, SearchSpace
from search_spaces.factorized import EFFICIENT_HEAD_RATIO, STEM_KERNEL, layer_op


class NotAChildError(NasError):
    """A spec the supernet cannot run; the message says why in one line."""


@dataclass(frozen=True)
class ChildPlan:
    """Where a child sits in the supernet: its skeleton and, per layer, (block index, layer index)."""

    skeleton: str
    slots: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class _LayerShape:
    """The largest sizes of one layer position of the supernet."""

    in_ch: int
    out_ch: int
    kernel: int
    exp: int
    in_group: str
    out_group: str


def _squeeze(style: str, ratio: float, in_ch: int, channels: int) -> int:
    """The largest SE squeeze width (same rule as ``LayerSpec.se_channels``)."""
    if style == "v3":
        return make_divisible(channels * ratio, 8)
    return max(1, int(in_ch * ratio))


class ElasticLayer(nn.Module):
    """One layer position of a block: a weight set per op kind the space offers."""

    def __init__(self, shape: _LayerShape, *, kinds: set[str], se_style: str, se_ratio: float, name: str) -> None:
        super().__init__()
        self.shape, self.se_style = shape, se_style
        s = shape
        if "ir" in kinds:
            exp_group = f"{name}.ir.exp"
            self.ir = nn.ModuleDict({
                "expand": ElasticConvBN(s.in_ch, s.exp, 1, in_group=s.in_group, out_group=exp_group),
                "dw": ElasticConvBN(s.exp, s.exp, s.kernel, in_group=None, out_group=exp_group, depthwise=True),
                "project": ElasticConvBN(s.exp, s.out_ch, 1, in_group=exp_group, out_group=s.out_group)})
            self._add_se(self.ir, s.exp, exp_group, se_ratio, f"{name}.ir.se")
        if "ds" in kinds:
            self.ds = nn.ModuleDict({
                "dw": ElasticConvBN(s.in_ch, s.in_ch, s.kernel, in_group=None, out_group=s.in_group, depthwise=True),
                "project": ElasticConvBN(s.in_ch, s.out_ch, 1, in_group=s.in_group, out_group=s.out_group)})
            self._add_se(self.ds, s.in_ch, s.in_group, se_ratio, f"{name}.ds.se")
        if "conv" in kinds:
            self.conv = nn.ModuleDict({"conv": ElasticConvBN(s.in_ch, s.out_ch, s.kernel, in_group=s.in_group,
                                                             out_group=s.out_group)})
            self._add_se(self.conv, s.out_ch, s.out_group, se_ratio, f"{name}.conv.se")

    def _add_se(self, path: nn.ModuleDict, channels: int, group: str, ratio: float, name: str) -> None:
        if ratio > 0:
            squeeze = _squeeze(self.se_style, ratio, self.shape.in_ch, channels)
            path["se"] = ElasticSE(channels, squeeze, channel_group=group, squeeze_group=name)

    def max_squeeze(self, op: str) -> int:
        path = self._path(op)
        return path["se"].reduce.out_channels if "se" in path else 0

    def _path(self, op: str) -> nn.ModuleDict:
        return getattr(self, op)

    def _uses_expand(self, layer: LayerSpec, in_ch: int) -> bool:
        return layer.op == "ir" and layer.exp != in_ch

    def forward(self, x: torch.Tensor, layer: LayerSpec) -> torch.Tensor:
        in_ch, path = x.shape[1], self._path(layer.op)
        if layer.op == "conv":
            y = path["conv"](x, out_ch=layer.out, kernel=layer.kernel, stride=layer.stride, act=layer.act)
        else:
            y = x
            if self._uses_expand(layer, in_ch):
                y = path["expand"](x, out_ch=layer.exp, kernel=1, stride=1, act=layer.act)
            y = path["dw"](y, out_ch=layer.exp, kernel=layer.kernel, stride=layer.stride, act=layer.act)
        if layer.has_se:
            y = path["se"](y, squeeze=layer.se_channels(in_ch), hard=layer.se_style == "v3")
        if layer.op != "conv":
            y = path["project"](y, out_ch=layer.out, kernel=1, stride=1, act=None)
        return x + y if layer.residual else y

    def child_tensors(self, layer: LayerSpec, in_ch: int) -> dict[str, torch.Tensor]:
        """The child's tensors under the names ``nas.blocks`` gives them (relative to the block)."""
        path, views = self._path(layer.op), {}

        def add(name: str, tensors: dict[str, torch.Tensor]) -> None:
            views.update({f"{name}.{key}": value for key, value in tensors.items()})

        if layer.op == "conv":
            add("conv", path["conv"].tensors(in_ch, layer.out, layer.kernel))
        else:
            if self._uses_expand(layer, in_ch):
                add("expand", path["expand"].tensors(in_ch, layer.exp, 1))
            add("dw", path["dw"].tensors(layer.exp, layer.exp, layer.kernel))
            add("project", path["project"].tensors(layer.exp, layer.out, 1))
        if layer.has_se:
            add("se", path["se"].tensors(layer.exp, layer.se_channels(in_ch)))
        return views


class ElasticHead(nn.Module):
    """The classic (conv, pool, classifier) or efficient (conv, pool, hidden, classifier) head."""

    def __init__(self, *, efficient: bool, in_ch: int, channels: int, hidden: int, num_classes: int,
                 in_group: str, name: str) -> None:
        super().__init__()
        self.efficient, self.num_classes = efficient, num_classes
        self.conv = ElasticConvBN(in_ch, channels, 1, in_group=in_group, out_group=f"{name}.conv")
        if efficient:
            self.hidden = ElasticLinear(channels, hidden, in_group=f"{name}.conv", out_group=f"{name}.hidden")
        width, group = (hidden, f"{name}.hidden") if efficient else (channels, f"{name}.conv")
        self.classifier = ElasticLinear(width, num_classes, in_group=group, out_group=None)

    def forward(self, x: torch.Tensor, head: HeadSpec) -> torch.Tensor:
        x = self.conv(x, out_ch=head.channels, kernel=1, stride=1, act=head.act).mean((2, 3))
        if self.efficient:
            x = activate(self.hidden(x, out_features=head.hidden), head.act)
        x = F.dropout(x, head.dropout, self.training)
        return self.classifier(x, out_features=self.num_classes)

    def child_tensors(self, head: HeadSpec, in_ch: int) -> dict[str, torch.Tensor]:
        views = {f"conv.{k}": v for k, v in self.conv.tensors(in_ch, head.channels, 1).items()}
        width = head.channels
        if self.efficient:
            views.update({f"hidden.{k}": v for k, v in self.hidden.tensors(head.channels, head.hidden).items()})
            width = head.hidden
        views.update({f"classifier.{k}": v for k, v in self.classifier.tensors(width, self.num_classes).items()})
        return views


class Trunk(nn.Module):
    """The supernet of one skeleton: stem, blocks of elastic layers, one head per head kind."""

    def __init__(self, space: FactorizedSpace, skeleton: str) -> None:
        super().__init__()
        stem_group = f"{skeleton}.stem"
        self.stem = ElasticConvBN(3, max(space.stem_options.channels), STEM_KERNEL, in_group=None, out_group=stem_group)
        in_ch, in_group, stages = max(space.stem_options.channels), stem_group, []
        for s, stage in enumerate(space.skeletons[skeleton]):
            block = f"block{s + 1}"
            ops = space.options(f"{block}.op")
            kinds = {layer_op(op)[0] for op in ops}
            ratio = max((layer_op(op)[1] or 1 for op in ops), default=1)
            kernel, se_ratio = max(space.options(f"{block}.kernel")), max(space.options(f"{block}.se"))
            out_ch, out_group = max(space.stage_widths(s + 1, stage)), f"{skeleton}.{block}"
            layers = []
            for j in range(stage.depth + max(space.options(f"{block}.layers"))):
                shape = _LayerShape(in_ch=in_ch, out_ch=out_ch, kernel=kernel, exp=ratio * in_ch,
                                    in_group=in_group, out_group=out_group)
                layers.append(ElasticLayer(shape, kinds=kinds, se_style=space.se_style, se_ratio=se_ratio,
                                           name=f"{out_group}.layer{j}"))
                in_ch, in_group = out_ch, out_group
            stages.append(nn.ModuleList(layers))
        self.blocks = nn.ModuleList(stages)
        width = max(space.head_options.widths)
        channels = {"efficient": make_divisible(EFFICIENT_HEAD_RATIO * in_ch, 8), "classic": width}
        self.heads = nn.ModuleDict({
            kind: ElasticHead(efficient=kind == "efficient", in_ch=in_ch, channels=channels[kind], hidden=width,
                              num_classes=space.num_classes, in_group=in_group, name=f"{skeleton}.{kind}")
            for kind in space.head_options.kinds})


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
            module: ElasticLayer = trunk.blocks[s][j]
            if layer.op == "ir" and layer.exp > module.shape.exp:
                raise NotAChildError(f"layers[{i}]: expanded width {layer.exp} exceeds the supernet's "
                                     f"{module.shape.exp} (block{s + 1}, layer {j + 1})")
            if layer.se_channels(in_ch) > module.max_squeeze(layer.op):
                raise NotAChildError(f"layers[{i}]: SE squeeze width {layer.se_channels(in_ch)} exceeds the "
                                     f"supernet's {module.max_squeeze(layer.op)}")
        head = trunk.heads[_head_kind(spec.head)]
        if spec.head.channels > head.conv.conv.out_channels:
            raise NotAChildError(f"head.channels {spec.head.channels} exceeds the supernet's "
                                 f"{head.conv.conv.out_channels}")
        return plan

    # ------------------------------------------------------------ running and extracting children

    def forward(self, x: torch.Tensor, spec: ArchSpec) -> torch.Tensor:
        plan = self.plan(spec)
        trunk = self.trunks[plan.skeleton]
        stem = spec.stem
        x = trunk.stem(x, out_ch=stem.channels, kernel=stem.kernel, stride=stem.stride, act=stem.act)
        for (s, j), layer in zip(plan.slots, spec.layers):
            x = trunk.blocks[s][j](x, layer)
        return trunk.heads[_head_kind(spec.head)](x, spec.head)

    def child_state(self, spec: ArchSpec) -> dict[str, torch.Tensor]:
        """The state dict of ``build_model(spec)`` holding the supernet's slices (copies)."""
        plan = self.plan(spec)
        trunk = self.trunks[plan.skeleton]
        state = {f"stem.{k}": v for k, v in trunk.stem.tensors(3, spec.stem.channels, spec.stem.kernel).items()}
        for (i, in_ch, layer), (s, j) in zip(iter_layers(spec), plan.slots):
            state.update({f"blocks.{i}.{k}": v for k, v in trunk.blocks[s][j].child_tensors(layer, in_ch).items()})
        head = trunk.heads[_head_kind(spec.head)]
        state.update({f"head.{k}": v for k, v in head.child_tensors(spec.head, spec.last_channels()).items()})
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
        found = []
        for name, module in self.named_modules():
            if isinstance(module, (ElasticConvBN, ElasticSE, ElasticLinear)):
                found += module.axes(name)
        return found

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
            score = sum(t.detach().double().flatten(1).norm(dim=1) for t in producers)
            order = torch.argsort(score, descending=True, stable=True)
            for axis in axes:
                tensor = tensors[axis.path]
                tensor.copy_(tensor.index_select(axis.dim, order.to(tensor.device)))
                state = optimizer.state.get(tensor, {}) if optimizer is not None else {}
                for value in state.values():
                    if torch.is_tensor(value) and value.shape == tensor.shape:
                        value.copy_(value.index_select(axis.dim, order.to(value.device)))
