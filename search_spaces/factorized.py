"""The factorized hierarchical search space of MnasNet, as a reusable engine over data tables.

A network is a fixed sequence of blocks after the stem. Every choice is made once per block
(op, kernel, squeeze-excite, activation, skip, width, depth) and the block repeats that layer
``depth`` times, so different stages can differ while the space stays small (Tan et al., MnasNet,
CVPR 2019, section 4.1). A concrete space is data: :class:`Stage` rows (one skeleton, or several
to choose from) and the options of each choice. :mod:`search_spaces.mnasnet` and
:mod:`search_spaces.mobilenetv3` are two such tables.

Rules shared by every factorized space:

* **Stride**: only a block's first layer has the block's stride; the rest have stride 1.
* **Width**: a block's output width is ``make_divisible(stage.width * multiplier, 8)``.
* **Depth**: ``stage.depth + delta``; the tables keep every depth >= 1 (a block never vanishes).
* **Ops**: ``conv`` is a regular kxk convolution (its ``exp`` is its output width); ``ds`` is
  depthwise-separable, depthwise on the block input (``exp`` is the input width); ``mbN`` is
  MBConv / inverted residual with ``exp = N * input width`` (inputs are multiples of 8, so no
  rounding is needed).
* **Skip**: ``identity`` means a residual on every layer where one is legal (stride 1 and input
  width == output width); ``none`` means no residual in the block.
* **SE**: the ratio is relative to the block input (``mnas`` style) or to the expansion (``v3``
  style), per space.
* **Per-block options**: ``overrides`` replaces the options of named choices (``{"block1.op":
  ("ds",)}``), e.g. to fix the first block to the depthwise-separable layer every published
  network of these spaces starts with.
* **Head**: ``classic`` is a 1x1 conv to ``head.width``, pooling, classifier. ``efficient`` is
  MobileNetV3's last stage: a 1x1 conv to ``make_divisible(6 * last width, 8)``, pooling, then a
  ``head.width`` hidden layer and the classifier.

A choice with one option is fixed, not searched: it does not appear in ``choices()``.

``encode`` splits the layers into blocks by trying each depth in option order with
backtracking, reads each block's choices from its layers, rebuilds the block and compares. When
no split works the error names the furthest layer that could not be placed and why.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any, Mapping, Sequence

from nas.arch import ArchSpec, HeadSpec, LayerSpec, StemSpec, make_divisible
from nas.errors import NasError
from search_spaces.space import Choice, NotInSpaceError, SearchSpace

EFFICIENT_HEAD_RATIO = 6
STEM_KERNEL, STEM_STRIDE = 3, 2


@dataclass(frozen=True)
class Stage:
    """One block of a skeleton: its stride, base output width and base depth."""

    stride: int
    width: int
    depth: int

    def width_at(self, multiplier: float) -> int:
        """The block's output width for a filter multiplier (the **Width** rule above)."""
        return make_divisible(self.width * multiplier, 8)


@dataclass(frozen=True)
class BlockOptions:
    """The per-block choices (the same options for every block)."""

    ops: tuple[str, ...]
    kernels: tuple[int, ...]
    se_ratios: tuple[float, ...]
    acts: tuple[str, ...]
    skips: tuple[str, ...] = ("none", "identity")
    filters: tuple[float, ...] = (0.75, 1.0, 1.25)
    layers: tuple[int, ...] = (-1, 0, 1)


@dataclass(frozen=True)
class StemOptions:
    channels: tuple[int, ...]
    acts: tuple[str, ...]


@dataclass(frozen=True)
class HeadOptions:
    kinds: tuple[str, ...]
    widths: tuple[int, ...]
    acts: tuple[str, ...]
    dropout: float = 0.2


# Per-block choice name -> the BlockOptions field holding its options (in vector order).
_BLOCK_FIELDS = {"op": "ops", "kernel": "kernels", "se": "se_ratios", "act": "acts", "skip": "skips",
                 "filters": "filters", "layers": "layers"}
_HEAD_KINDS = ("classic", "efficient")
_SKIPS = ("none", "identity")


def layer_op(op: str) -> tuple[str, int | None]:
    """A space op name -> (LayerSpec op, MBConv expansion ratio or None)."""
    if op in ("conv", "ds"):
        return op, None
    if op.startswith("mb") and op[2:].isdigit() and int(op[2:]) > 0:
        return "ir", int(op[2:])
    raise NasError(f"unknown block op {op!r}: expected conv, ds or mbN (N = expansion ratio)")


def efficient_head_channels(last: int) -> int:
    """The pre-pool 1x1 width of the efficient head after a last block ``last`` channels wide."""
    return make_divisible(EFFICIENT_HEAD_RATIO * last, 8)


def expanded_width(op: str, in_ch: int, out: int) -> int:
    kind, ratio = layer_op(op)
    if kind == "conv":
        return out
    if kind == "ds":
        return in_ch
    return in_ch * ratio


def _without_exp(layers: Sequence[LayerSpec]) -> list[LayerSpec]:
    return [replace(layer, exp=0) for layer in layers]


class _Furthest:
    """The longest prefix of layers any split could build, and every reason the next layer failed."""

    def __init__(self, num_layers: int) -> None:
        self.num_layers, self.position, self.reasons = num_layers, -1, []

    def note(self, position: int, reason: str) -> None:
        if position > self.position:
            self.position, self.reasons = position, []
        if position == self.position and reason not in self.reasons:
            self.reasons.append(reason)

    def __str__(self) -> str:
        ended = self.position == self.num_layers
        where = "the layers end too early" if ended else f"layers[{self.position}] does not fit"
        return f"{where}: " + "; or ".join(self.reasons)


def _difference(spec_layer: LayerSpec, built: LayerSpec) -> str:
    return ", ".join(f"{f.name} is {getattr(spec_layer, f.name)!r} (the block builds {getattr(built, f.name)!r})"
                     for f in fields(LayerSpec) if getattr(spec_layer, f.name) != getattr(built, f.name))


class FactorizedSpace(SearchSpace):
    """A skeleton of blocks with per-block choices; see the module docstring for the rules."""

    def __init__(self, *, name: str, skeletons: Mapping[str, Sequence[Stage]], blocks: BlockOptions,
                 stem: StemOptions, head: HeadOptions, se_style: str, num_classes: int = 1000,
                 overrides: Mapping[str, Sequence[Any]] | None = None) -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise NasError(f"num_classes: expected a positive integer, got {num_classes!r}")
        self.name = name
        self.skeletons = {key: tuple(stages) for key, stages in skeletons.items()}
        self.block_options, self.stem_options, self.head_options = blocks, stem, head
        self.se_style, self.num_classes = se_style, num_classes
        if not self.skeletons or len({len(stages) for stages in self.skeletons.values()}) != 1:
            raise NasError(f"{self.name}: skeletons must exist and have the same number of blocks")
        slots = self._make_slots(dict(overrides or {}))
        self._options = {slot.name: slot.options for slot in slots}
        self._check_tables()
        self._choices = [slot for slot in slots if len(slot.options) > 1]
        self._fixed = {slot.name: slot.options[0] for slot in slots if len(slot.options) == 1}

    @property
    def num_blocks(self) -> int:
        return len(next(iter(self.skeletons.values())))

    def choices(self) -> list[Choice]:
        return list(self._choices)

    def fixed(self) -> dict[str, Any]:
        """The choices with a single option (not in the vector), and their value."""
        return dict(self._fixed)

    def options(self, name: str) -> tuple[Any, ...]:
        """The options of choice ``name`` (``"block3.op"``, ``"head.width"``), fixed ones included."""
        if name not in self._options:
            raise NasError(f"{self.name}: no choice called {name!r}")
        return self._options[name]

    def _check_tables(self) -> None:
        for key, stages in self.skeletons.items():
            for i, stage in enumerate(stages, 1):
                if stage.depth + min(self._options[f"block{i}.layers"]) < 1:
                    raise NasError(f"{self.name}: skeleton {key} block{i} can reach depth < 1")
        for i in range(1, self.num_blocks + 1):
            for op in self._options[f"block{i}.op"]:
                layer_op(op)
            if not set(self._options[f"block{i}.skip"]) <= set(_SKIPS):
                raise NasError(f"{self.name}: skips must come from {_SKIPS}")
        if not set(self.head_options.kinds) <= set(_HEAD_KINDS):
            raise NasError(f"{self.name}: head kinds must come from {_HEAD_KINDS}")

    def _make_slots(self, overrides: dict[str, Sequence[Any]]) -> list[Choice]:
        slots = [Choice("skeleton", tuple(self.skeletons)),
                 Choice("stem.channels", self.stem_options.channels), Choice("stem.act", self.stem_options.acts)]
        for i in range(1, self.num_blocks + 1):
            slots += [Choice(f"block{i}.{name}", getattr(self.block_options, field))
                      for name, field in _BLOCK_FIELDS.items()]
        slots += [Choice("head.kind", self.head_options.kinds), Choice("head.width", self.head_options.widths),
                  Choice("head.act", self.head_options.acts)]
        unknown = sorted(set(overrides) - {slot.name for slot in slots})
        if unknown:
            raise NasError(f"{self.name}: overrides name no choice: {', '.join(unknown)}")
        if any(not tuple(options) for options in overrides.values()):
            raise NasError(f"{self.name}: an override needs at least one option")
        return [Choice(slot.name, tuple(overrides[slot.name])) if slot.name in overrides else slot for slot in slots]

    # ------------------------------------------------------------ building

    def _build(self, values: Mapping[str, Any]) -> ArchSpec:
        values = {**self._fixed, **values}
        stem = StemSpec(channels=values["stem.channels"], kernel=STEM_KERNEL, stride=STEM_STRIDE,
                        act=values["stem.act"])
        layers: list[LayerSpec] = []
        in_ch = stem.channels
        for i, stage in enumerate(self.skeletons[values["skeleton"]], 1):
            block = self._block_layers(i, stage, values, in_ch)
            layers += block
            in_ch = block[-1].out
        return ArchSpec(stem=stem, layers=tuple(layers), head=self._head(values, in_ch))

    def _block_layers(self, i: int, stage: Stage, values: Mapping[str, Any], in_ch: int) -> list[LayerSpec]:
        def get(field: str) -> Any:
            return values[f"block{i}.{field}"]

        out = stage.width_at(get("filters"))
        layers = []
        for j in range(stage.depth + get("layers")):
            stride = stage.stride if j == 0 else 1
            layers.append(LayerSpec(
                op=layer_op(get("op"))[0], kernel=get("kernel"), stride=stride,
                exp=expanded_width(get("op"), in_ch, out), out=out, se_ratio=get("se"),
                se_style=self.se_style, act=get("act"),
                residual=get("skip") == "identity" and stride == 1 and in_ch == out,
            ))
            in_ch = out
        return layers

    def _head(self, values: Mapping[str, Any], last: int) -> HeadSpec:
        common = dict(act=values["head.act"], dropout=self.head_options.dropout, num_classes=self.num_classes)
        if values["head.kind"] == "efficient":
            return HeadSpec(channels=efficient_head_channels(last), hidden=values["head.width"],
                            **common)
        return HeadSpec(channels=values["head.width"], hidden=0, **common)

    # ------------------------------------------------------------ reading

    def encode(self, spec: ArchSpec, *, ignore_expansion: bool = False) -> list[int]:
        if not isinstance(spec, ArchSpec):
            raise NasError(f"encode: expected an ArchSpec, got {type(spec).__name__}")
        values = {**self._read_stem(spec), **self._read_head(spec)}
        furthest = _Furthest(len(spec.layers))
        for key, stages in self.skeletons.items():
            blocks = self._split(spec.layers, stages, 0, spec.stem.channels, ignore_expansion, furthest)
            if blocks is not None:
                values["skeleton"] = key
                for block in blocks:
                    values.update(block)
                break
        else:
            raise self._not_in(str(furthest))
        built = self._build(values)
        if built.head != spec.head:
            raise self._not_in(f"head: the space builds {built.head}, the spec has {spec.head}")
        return [choice.options.index(values[choice.name]) for choice in self._choices]

    def _not_in(self, reason: str) -> NotInSpaceError:
        return NotInSpaceError(f"not in the {self.name} space: {reason}")

    def _option(self, name: str, value: Any, where: str) -> Any:
        options = self._options[name]
        if value not in options:
            raise self._not_in(f"{where} {value!r} is not among the {name} options {options}")
        return value

    def _read_stem(self, spec: ArchSpec) -> dict[str, Any]:
        stem = spec.stem
        if (stem.kernel, stem.stride) != (STEM_KERNEL, STEM_STRIDE):
            raise self._not_in(f"stem: kernel {stem.kernel} stride {stem.stride}; the space uses "
                               f"kernel {STEM_KERNEL} stride {STEM_STRIDE}")
        return {"stem.channels": self._option("stem.channels", stem.channels, "stem.channels"),
                "stem.act": self._option("stem.act", stem.act, "stem.act")}

    def _read_head(self, spec: ArchSpec) -> dict[str, Any]:
        head = spec.head
        if head.num_classes != self.num_classes:
            raise self._not_in(f"head.num_classes {head.num_classes}; this space builds {self.num_classes} "
                               f"(get_space(..., num_classes={head.num_classes}))")
        if head.dropout != self.head_options.dropout:
            raise self._not_in(f"head.dropout {head.dropout}; the space uses {self.head_options.dropout}")
        kind = "efficient" if head.efficient else "classic"
        width = head.hidden if head.efficient else head.channels
        return {"head.kind": self._option("head.kind", kind, "head"),
                "head.width": self._option("head.width", width, "head width"),
                "head.act": self._option("head.act", head.act, "head.act")}

    def _split(self, layers: Sequence[LayerSpec], stages: Sequence[Stage], start: int, in_ch: int,
               ignore_expansion: bool, furthest: _Furthest, index: int = 1) -> list[dict[str, Any]] | None:
        """Per-block values for ``layers[start:]`` over ``stages``, or None (backtracking over depths)."""
        if not stages:
            if start == len(layers):
                return []
            furthest.note(start, f"{len(layers) - start} layer(s) left over after the last block")
            return None
        stage = stages[0]
        deltas = self._options[f"block{index}.layers"]
        shortest = stage.depth + min(deltas)
        if len(layers) - start < shortest:
            furthest.note(start, f"block{index} needs at least {shortest} layer(s), {len(layers) - start} left")
            return None
        for delta in deltas:
            depth = stage.depth + delta
            chunk = layers[start:start + depth]
            if len(chunk) < depth:
                continue
            block = self._read_block(index, stage, chunk, in_ch, ignore_expansion)
            if isinstance(block, tuple):
                offset, reason = block
                furthest.note(start + offset, reason)
                continue
            rest = self._split(layers, stages[1:], start + depth, chunk[-1].out, ignore_expansion, furthest,
                               index + 1)
            if rest is not None:
                return [block, *rest]
        return None

    def _read_block(self, index: int, stage: Stage, chunk: Sequence[LayerSpec], in_ch: int,
                    ignore_expansion: bool) -> dict[str, Any] | tuple[int, str]:
        """The block's choices if ``chunk`` is exactly what they build, else (offset of the first
        layer that does not fit, why)."""
        first, prefix = chunk[0], f"block{index}"
        ops = self._options[f"{prefix}.op"]
        op = self._read_op(chunk, in_ch, ops, ignore_expansion)
        if op is None:
            return 0, f"{prefix}.op: {first.op} with exp {first.exp} from {in_ch} channels matches none of {ops}"
        widths = self.stage_widths(index, stage)
        if first.out not in widths:
            return 0, f"{prefix}.filters: width {first.out} is not one of {widths}"
        filters = self._options[f"{prefix}.filters"][widths.index(first.out)]
        values = {f"{prefix}.op": op, f"{prefix}.kernel": first.kernel, f"{prefix}.se": first.se_ratio,
                  f"{prefix}.act": first.act, f"{prefix}.filters": filters,
                  f"{prefix}.skip": self._read_skip(prefix, chunk),
                  f"{prefix}.layers": len(chunk) - stage.depth}
        for name, value in values.items():
            options = self._options[name]
            if value not in options:
                return 0, f"{name}: {value!r} is not among the options {options}"
        built = self._block_layers(index, stage, values, in_ch)
        if ignore_expansion:
            built, chunk = _without_exp(built), _without_exp(chunk)
        if list(chunk) != built:
            wrong = next(j for j, (a, b) in enumerate(zip(chunk, built)) if a != b)
            layer = chunk[wrong]
            if wrong > 0 and (layer.stride, layer.out) != (1, built[wrong].out):
                return wrong, f"it cannot be a further layer of block{index} (stride {layer.stride}, out {layer.out})"
            return wrong, f"{prefix} layer {wrong + 1}: {_difference(chunk[wrong], built[wrong])}"
        return values

    def _read_skip(self, prefix: str, chunk: Sequence[LayerSpec]) -> str:
        """``identity`` if a layer has a residual; without one, ``none`` unless the block offers only
        ``identity`` (a block where no residual is legal builds the same layers either way)."""
        if any(layer.residual for layer in chunk):
            return "identity"
        return "none" if "none" in self._options[f"{prefix}.skip"] else "identity"

    @staticmethod
    def _read_op(chunk: Sequence[LayerSpec], in_ch: int, ops: Sequence[str], ignore_expansion: bool) -> str | None:
        """The block op; with ``ignore_expansion`` the MBConv ratio nearest (in log) to the block's mean."""
        first = chunk[0]
        if first.op in ("conv", "ds"):
            return first.op if first.op in ops else None
        ratios = {op: layer_op(op)[1] for op in ops if layer_op(op)[0] == "ir"}
        if not ratios:
            return None
        if not ignore_expansion:
            return next((op for op, ratio in ratios.items() if ratio * in_ch == first.exp), None)
        inputs = [in_ch] + [layer.out for layer in chunk[:-1]]
        mean = math.exp(sum(math.log(layer.exp / width) for layer, width in zip(chunk, inputs)) / len(chunk))
        return min(ratios, key=lambda op: abs(math.log(ratios[op] / mean)))

    def stage_widths(self, index: int, stage: Stage) -> tuple[int, ...]:
        """The output widths block ``index`` (1-based, on ``stage``) can have, in filter-option order."""
        return tuple(stage.width_at(m) for m in self._options[f"block{index}.filters"])


def weight_sharing_space(space: FactorizedSpace, *, skeleton: str | None = None) -> FactorizedSpace:
    """The sub-space a weight-sharing supernet trains well over: ``NAME-shared`` (``NAME-SKELETON-shared``).

    Every block but the first offers only the space's MBConv ratios (which share one set of
    weights by prefix), every block has identity skips (so a layer the child leaves out is the
    identity it would compute anyway), and the first block is the depthwise-separable layer all
    the published networks of these spaces start with. Op types with weights of their own and
    depth without residuals are what stalled supernet training over the whole space
    (``experiments/results/supernet_sharing/``). The published MobileNetV3 and MnasNet networks
    are members of both spaces.

    With ``skeleton``, only that skeleton's networks. A supernet keeps one trunk per skeleton,
    each trained on its share of the steps; over both skeletons of ``mobilenetv3-shared`` the two
    trunks scored on different scales (the small skeleton's children above the large one's, whatever
    their stand-alone accuracy: ``experiments/results/supernet_ranking_cifar10_10k/``). MobileNetV3-Large
    and -Small were searched separately, too.
    """
    if skeleton is not None and skeleton not in space.skeletons:
        raise NasError(f"{space.name}: unknown skeleton {skeleton!r}; known: {', '.join(space.skeletons)}")
    skeletons = space.skeletons if skeleton is None else {skeleton: space.skeletons[skeleton]}
    mbconv = tuple(op for op in space.block_options.ops if layer_op(op)[0] == "ir")
    if not mbconv or "ds" not in space.block_options.ops:
        raise NasError(f"{space.name}: a weight-sharing sub-space needs MBConv ops and ds among the block ops")
    return FactorizedSpace(
        name="-".join([space.name, *([skeleton] if skeleton else []), "shared"]), skeletons=skeletons,
        blocks=replace(space.block_options, ops=mbconv, skips=("identity",)),
        stem=space.stem_options, head=space.head_options, se_style=space.se_style,
        num_classes=space.num_classes, overrides={"block1.op": ("ds",)},
    )


def sharing_obstacle(space: SearchSpace) -> str | None:
    """Why a supernet over ``space`` would not train well (one line), or None for a sub-space that does."""
    if not isinstance(space, FactorizedSpace):
        return f"{space.name} is not a factorized space"
    for i in range(1, space.num_blocks + 1):
        kinds = sorted({layer_op(op)[0] for op in space.options(f"block{i}.op")})
        if len(kinds) > 1:
            return f"block{i} mixes ops with weights of their own ({', '.join(kinds)})"
        if "none" in space.options(f"block{i}.skip"):
            return f"block{i} may leave out its identity skips, so a shorter block changes the function"
    return None
