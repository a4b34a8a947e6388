"""Import torchvision and timm checkpoints of the zoo networks: ``python -m nas.convert``.

Published weights come in the layout of the library that trained them. This module renames and
reshapes such a state dict into :func:`nas.model.build_model`'s names, so a user who has the file
can use the weights offline; neither library is needed. The layout is recognised from the keys:

=========================  =====================================================  ======
layout                     published models                                       BN eps
=========================  =====================================================  ======
torchvision mobilenet_v3   ``mobilenet_v3_large``, ``mobilenet_v3_small``         1e-3
torchvision mobilenet_v2   ``mobilenet_v2``                                       1e-5
torchvision mnasnet        ``mnasnet0_5`` .. ``mnasnet1_3`` (our ``mnasnet_b1``)  1e-5
timm mobilenetv3           ``mobilenetv3_large_100``, ``mobilenetv3_small_100``   1e-5
timm efficientnet          ``mnasnet_100`` (B1), ``semnasnet_100`` (A1),          1e-5
                           ``mobilenetv2_100``
=========================  =====================================================  ======

Each layout is a renaming table (:class:`Layout`, :class:`Renaming`): per part kind (stem, ``ds``
/ ``ir`` / ``conv`` block, head), the library's name for each module our blocks declare
(:func:`nas.model.network_parts`), so the network is walked once, by the declarations.

A checkpoint stores weights, not the wiring: activations, strides, residuals and the SE gate come
from the spec given with ``--arch``. timm's ``tf_*`` ports are not supported: TensorFlow's "same"
padding is asymmetric at stride 2 and ours is symmetric, so the outputs would differ.

**BatchNorm eps.** Ours is 1e-3 (TensorFlow's, as in the papers); torchvision's MobileNetV2 and
MNASNet and all of timm's non-``tf_`` models use 1e-5. Eval-mode BN only ever reads
``running_var + eps``, so the difference is folded into the variance::

    running_var_ours = running_var_src + eps_src - eps_ours

computed in float64, which keeps every eval-mode output the same. A channel whose variance is
below ~1e-3 gets a slightly negative running_var; that is harmless, since only the sum with eps is
used, and training soon overwrites it with batch statistics.

``num_batches_tracked`` is copied when the checkpoint has it and left at zero otherwise: nothing
reads it while BN has a momentum.

timm numbers its blocks by stage (``blocks.S.B``) and torchvision's MNASNet by stack
(``layers.N.B``); stage boundaries are not part of an ArchSpec, so they are read from the
checkpoint's keys. When the checkpoint has a different number of blocks than the spec, the
expected names are drawn with one stage per run of equal output width (the published layouts), so
the error lists the keys that differ.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import torch

from nas import cli, rundir, zoo
from nas.arch import ArchSpec, iter_layers
from nas.blocks import BN_EPS, InvertedResidual
from nas.errors import NasError
from nas.model import build_model, network_parts

SOURCES = ("torchvision", "timm")

# Where training checkpoints (which hold more than the weights) keep the state dict.
_CONTAINER_KEYS = ("state_dict", "model")
_LISTED = 6  # names shown per kind of mismatch; the rest are counted


@dataclass(frozen=True)
class Source:
    """Where one of our tensors comes from.

    ``transform``: ``copy``; ``bn_var`` (fold the eps difference, see the module docstring);
    ``conv_to_linear`` (a 1x1 convolution on the pooled map is a linear layer).
    """

    key: str
    transform: str = "copy"


Plan = dict[str, Source]  # our state-dict key -> its source
Address = dict[str, int]  # a part's place in a checkpoint: ``index``, and ``stage`` / ``block`` where staged


@dataclass(frozen=True)
class Renaming:
    """One part kind's modules in a checkpoint layout: our module name -> theirs.

    Tensor names (``weight``, ``running_var`` ...) are the same on both sides. Their names are
    ``at`` joined with the mapped name, formatted with the part's :data:`Address`. With ``first``
    set, the part is a Sequential whose positions (counting from ``first``) hold only the
    ``groups`` the block has, so each group's name is prefixed by its position (torchvision
    leaves absent layers out); otherwise ``groups`` is read as one fixed mapping. ``outside``
    names modules that live elsewhere in the checkpoint (a classifier beside the features), in full.
    """

    at: str
    groups: tuple[Mapping[str, str], ...]
    first: str | None = None
    outside: Mapping[str, str] = field(default_factory=dict)

    def names(self, modules: Sequence[str], address: Address) -> dict[str, str]:
        """Their module name for each of ``modules`` (ours, relative to the part)."""
        names, position = {}, None if self.first is None else int(self.first.format(**address))
        for group in self.groups:
            present = {ours: theirs for ours, theirs in group.items() if ours in modules}
            if position is not None and present:
                present = {ours: _join(str(position), theirs) for ours, theirs in present.items()}
                position += 1
            names.update({ours: _join(self.at, theirs).format(**address) for ours, theirs in present.items()})
        names.update({ours: theirs for ours, theirs in self.outside.items() if ours in modules})
        if unnamed := [module for module in modules if module not in names]:
            raise RuntimeError(f"internal: no name for {unnamed} under {self.at!r}")
        return names


@dataclass(frozen=True)
class Layout:
    """One library's naming of one model family, and what that family can hold.

    ``names`` has a :class:`Renaming` per part kind: ``stem``, each block op it can hold
    (``ds``, ``ir``, ``conv``) and ``head``. Staged layouts (``first_stage`` set) address their
    blocks as ``(stage, block)``, read from the checkpoint's keys by ``block_pattern``.
    """

    name: str
    bn_eps: float
    efficient_head: bool  # MobileNetV3's head (linear layers after pooling) vs a 1x1 conv before it
    se_style: str | None  # the SE gate the family uses ("v3" hard-sigmoid, "mnas" sigmoid); None: no SE
    names: Mapping[str, Renaming]
    block_pattern: str  # matches the keys of one block; its groups tell the blocks apart
    first_stage: int | None = None  # the stage number of the first staged block; None: blocks by index
    first_block: str | None = None  # the op of a block 0 kept outside the stages (torchvision MNASNet's)
    head_is_block: bool = False  # the head conv is the last staged block (timm MobileNetV3)
    needs_expand: bool = False  # an ``ir`` block always has its 1x1 expansion here
    conv_linears: frozenset[str] = frozenset()  # our linear layers that are 1x1 convolutions here

    def count_blocks(self, keys: Sequence[str]) -> int:
        """How many of our blocks the checkpoint holds."""
        regex = re.compile(self.block_pattern)
        found = len({m.groups() for key in keys if (m := regex.match(key))})
        return found + (self.first_block is not None) - self.head_is_block

    def addresses(self, spec: ArchSpec, keys: frozenset[str]) -> list[Address]:
        """Where the stem, each block and the head are, in :func:`network_parts` order."""
        addresses: list[Address] = [{"index": i} for i in range(len(spec.layers) + 2)]
        if self.first_stage is None:
            return addresses
        skip = 1 if self.first_block is not None else 0
        outs = [layer.out for layer in spec.layers[skip:]] + ([spec.head.channels] if self.head_is_block else [])
        slots = _stage_slots(keys, self.block_pattern, outs, self.first_stage)
        if not self.head_is_block:
            slots.append(((slots[-1][0] if slots else self.first_stage - 1) + 1, 0))
        for address, (stage, block) in zip(addresses[1 + skip:], slots):
            address.update(stage=stage, block=block)
        return addresses


def _join(*names: str) -> str:
    return ".".join(name for name in names if name)


def _conv_bn(ours: str = "", conv: str = "0", bn: str = "1") -> dict[str, str]:
    """A ConvBNAct of ours: their convolution and batch norm (torchvision's Conv2dNormActivation by default)."""
    return {_join(ours, "conv"): conv, _join(ours, "bn"): bn}


def _no_expansion(index: int, layout: str) -> NasError:
    return NasError(f"layers[{index}]: an ir block without expansion (exp == input width) "
                    f"has no counterpart in the {layout} layout")


def _stage_slots(keys: frozenset[str], pattern: str, outs: Sequence[int], first_stage: int) -> list[tuple[int, int]]:
    """(stage, block) of every block, read from the keys when their count fits ``outs``.

    Otherwise one stage per run of equal output width, starting at ``first_stage``.
    """
    regex = re.compile(pattern)
    found = sorted({(int(m[1]), int(m[2])) for key in keys if (m := regex.match(key))})
    if len(found) == len(outs):
        return found
    slots, stage, block = [], first_stage - 1, 0
    for i, out in enumerate(outs):
        if i == 0 or out != outs[i - 1]:
            stage, block = stage + 1, 0
        slots.append((stage, block))
        block += 1
    return slots


# ------------------------------------------------------------------ torchvision

# features.0 stem; features.N a block, its layers numbered in order (absent ones left out); features.L head conv.
_TV_STEM = Renaming("features.0", (_conv_bn(),))
_TV_V3_BLOCK = Renaming("features.{index}.block", (
    _conv_bn("expand"), _conv_bn("dw"), {"se.reduce": "fc1", "se.expand": "fc2"}, _conv_bn("project")), first="0")
# MobileNetV2's projection is a bare convolution and a batch norm, two positions of their own.
_TV_V2_BLOCK = Renaming("features.{index}.conv", (
    _conv_bn("expand"), _conv_bn("dw"), {"project.conv": ""}, {"project.bn": ""}), first="0")
# MNASNet: one flat ``layers`` Sequential (ReLUs hold positions too): stem 0-1, separable block 3-7,
# stacks of blocks 8.., head conv and BN after the last stack.
_TV_MNASNET_IR = {**_conv_bn("expand", "0", "1"), **_conv_bn("dw", "3", "4"), **_conv_bn("project", "6", "7")}

_MNASNET_BLOCK = r"layers\.(\d+)\.(\d+)\.layers\."

# ------------------------------------------------------------------ timm

# conv_stem/bn1, blocks.S.B (DepthwiseSeparableConv, InvertedResidual, ConvBnAct), classifier.
_TIMM_BLOCK = r"blocks\.(\d+)\.(\d+)\."
_TIMM_AT = "blocks.{stage}.{block}"
_TIMM_SE = {"se.reduce": "se.conv_reduce", "se.expand": "se.conv_expand"}
_TIMM_BLOCKS = {
    "ds": Renaming(_TIMM_AT, ({**_conv_bn("dw", "conv_dw", "bn1"), **_TIMM_SE,
                               **_conv_bn("project", "conv_pw", "bn2")},)),
    "ir": Renaming(_TIMM_AT, ({**_conv_bn("expand", "conv_pw", "bn1"), **_conv_bn("dw", "conv_dw", "bn2"),
                               **_TIMM_SE, **_conv_bn("project", "conv_pwl", "bn3")},)),
    "conv": Renaming(_TIMM_AT, (_conv_bn("conv", "conv", "bn1"),)),
}
_TIMM_STEM = Renaming("", (_conv_bn("", "conv_stem", "bn1"),))

LAYOUTS: dict[str, Layout] = {layout.name: layout for layout in (
    Layout("torchvision mobilenet_v3", 1e-3, True, "v3", {
        "stem": _TV_STEM, "ds": _TV_V3_BLOCK, "ir": _TV_V3_BLOCK,
        "head": Renaming("features.{index}", (_conv_bn("conv"),),
                         outside={"hidden": "classifier.0", "classifier": "classifier.3"}),
    }, r"features\.(\d+)\.block\."),
    Layout("torchvision mobilenet_v2", 1e-5, False, None, {
        "stem": _TV_STEM, "ds": _TV_V2_BLOCK, "ir": _TV_V2_BLOCK,
        "head": Renaming("features.{index}", (_conv_bn("conv"),), outside={"classifier": "classifier.1"}),
    }, r"features\.(\d+)\.conv\."),
    Layout("torchvision mnasnet", 1e-5, False, None, {
        "stem": Renaming("layers", (_conv_bn(),)),
        "ds": Renaming("layers", ({**_conv_bn("dw", "3", "4"), **_conv_bn("project", "6", "7")},)),
        "ir": Renaming("layers.{stage}.{block}.layers", (_TV_MNASNET_IR,)),
        "head": Renaming("layers", ({"conv.conv": ""}, {"conv.bn": ""}), first="{stage}",
                         outside={"classifier": "classifier.1"}),
    }, _MNASNET_BLOCK, first_stage=8, first_block="ds", needs_expand=True),
    Layout("timm mobilenetv3", 1e-5, True, "v3", {
        "stem": _TIMM_STEM, **_TIMM_BLOCKS,
        "head": Renaming("", ({**_conv_bn("conv", f"{_TIMM_AT}.conv", f"{_TIMM_AT}.bn1"),
                               "hidden": "conv_head", "classifier": "classifier"},)),
    }, _TIMM_BLOCK, first_stage=0, head_is_block=True, needs_expand=True, conv_linears=frozenset({"head.hidden"})),
    Layout("timm efficientnet", 1e-5, False, "mnas", {
        "stem": _TIMM_STEM, **_TIMM_BLOCKS,
        "head": Renaming("", ({**_conv_bn("conv", "conv_head", "bn2"), "classifier": "classifier"},)),
    }, _TIMM_BLOCK, first_stage=0, needs_expand=True),
)}


def _plan(layout: Layout, spec: ArchSpec, keys: frozenset[str]) -> Plan:
    """Our state-dict key -> its source: every parameter the blocks declare, renamed by the layout."""
    plan: Plan = {}
    for part, address in zip(network_parts(spec), layout.addresses(spec, keys)):
        modules = list(dict.fromkeys(param.name.rpartition(".")[0] for param in part.params))
        names = layout.names[part.kind].names(modules, address)
        for param in part.params:
            module, _, tensor = param.name.rpartition(".")
            ours = f"{part.prefix}.{module}"
            transform = "bn_var" if tensor == "running_var" else \
                "conv_to_linear" if ours in layout.conv_linears and tensor == "weight" else "copy"
            plan[f"{ours}.{tensor}"] = Source(f"{names[module]}.{tensor}", transform)
    return plan


def _find_layout(names: set[str], source: str) -> Layout | None:
    if source == "torchvision":
        if any(re.match(r"features\.\d+\.block\.", key) for key in names):
            return LAYOUTS["torchvision mobilenet_v3"]
        if any(re.match(r"features\.\d+\.conv\.", key) for key in names):
            return LAYOUTS["torchvision mobilenet_v2"]
        if "layers.0.weight" in names:
            return LAYOUTS["torchvision mnasnet"]
    elif "conv_stem.weight" in names:
        return LAYOUTS["timm efficientnet" if "bn2.weight" in names else "timm mobilenetv3"]
    return None


def detect_layout(keys: Sequence[str], *, source: str) -> Layout:
    """The layout of ``source`` (torchvision | timm) that these checkpoint keys are written in."""
    if source not in SOURCES:
        raise NasError(f"unknown checkpoint source {source!r}; known: {', '.join(SOURCES)}")
    names = set(keys)
    layout = _find_layout(names, source)
    if layout is not None:
        return layout
    message = f"not a {source} MobileNetV3 / MobileNetV2 / MnasNet checkpoint"
    other = next(s for s in SOURCES if s != source)
    if (theirs := _find_layout(names, other)) is not None:
        raise NasError(f"{message}: its keys are in the {theirs.name} layout (source {other!r})")
    raise NasError(f"{message} (keys: {', '.join(sorted(names)[:4]) or 'none'} ...)")


def _check_fits(layout: Layout, spec: ArchSpec) -> None:
    """What a layout cannot hold, said before any key is compared."""
    if spec.head.efficient != layout.efficient_head:
        theirs, ours = ("MobileNetV3's efficient head", "a classic head") if layout.efficient_head else \
            ("a classic head", "MobileNetV3's efficient head")
        raise NasError(f"the checkpoint ({layout.name} layout) has {theirs}, the architecture {ours}")
    for i, layer in enumerate(spec.layers):
        if layer.op == "conv" and "conv" not in layout.names:
            raise NasError(f"layers[{i}]: the {layout.name} layout has no regular-convolution blocks")
        if layer.has_se and (layer.op == "conv" or layout.se_style is None):
            raise NasError(f"layers[{i}]: the {layout.name} layout has no squeeze-excite "
                           f"{'in convolution blocks' if layer.op == 'conv' else 'blocks'}")
        if layer.has_se and layer.se_style != layout.se_style:
            raise NasError(f"layers[{i}]: SE style {layer.se_style!r}, but the {layout.name} layout "
                           f"uses {layout.se_style!r} (the gate differs)")
    first = spec.layers[0]
    if layout.first_block is not None and (first.op != layout.first_block or first.has_se):
        raise NasError(f"the {layout.name} layout starts with a depthwise-separable block "
                       f"without SE; layers[0] is {first.op}{' with SE' if first.has_se else ''}")
    for i, in_ch, layer in iter_layers(spec):
        if i > 0 and layer.op == layout.first_block:
            raise NasError(f"layers[{i}]: the {layout.name} layout has a {layer.op} block only at the start")
        if layer.op == "ir" and layout.needs_expand and not InvertedResidual.expands(layer, in_ch):
            raise _no_expansion(i, layout.name)


def _listed(keys: Sequence[str], notes: Mapping[str, str] | None = None) -> str:
    """Keys grouped by module (``m.{weight,bias}``), the first few groups shown, the rest counted."""
    groups: dict[str, list[str]] = {}
    for key in keys:
        module, _, tensor = key.rpartition(".")
        groups.setdefault(module, []).append(tensor)
    shown = []
    for module, tensors in list(groups.items())[:_LISTED]:
        first = f"{module}.{tensors[0]}"
        name = first if len(tensors) == 1 else f"{module}.{{{','.join(tensors)}}}"
        shown.append(f"{name} {notes[first]}" if notes else name)
    more = len(groups) - _LISTED
    return ", ".join(shown) + (f" ... (+{more} more modules)" if more > 0 else "")


def convert_state_dict(state_dict: Mapping[str, torch.Tensor], *, source: str,
                       spec: ArchSpec) -> dict[str, torch.Tensor]:
    """Our state dict for ``build_model(spec)`` from a torchvision / timm one (see module docstring).

    Raises :class:`NasError` with every missing key, unexpected key and shape mismatch in one
    line when the checkpoint does not fit the architecture.

    >>> ours = convert_state_dict(torch.load("mobilenet_v3_large.pth"), source="torchvision",
    ...                           spec=zoo.get("mobilenet_v3_large"))  # doctest: +SKIP
    >>> build_model(zoo.get("mobilenet_v3_large")).load_state_dict(ours)  # doctest: +SKIP
    """
    layout = detect_layout(list(state_dict), source=source)
    _check_fits(layout, spec)
    plan = _plan(layout, spec, frozenset(state_dict))
    with torch.device("meta"):
        target = build_model(spec).state_dict()
    if set(plan) != set(target):
        raise RuntimeError(f"internal: the {layout.name} plan does not cover the model "
                           f"({sorted(set(plan) ^ set(target))[:4]})")
    wanted = {src.key for src in plan.values()}
    missing = [src.key for src in plan.values()
               if src.key not in state_dict and not src.key.endswith("num_batches_tracked")]
    unexpected = [key for key in state_dict if key not in wanted]
    shapes: dict[str, str] = {}
    for ours, src in plan.items():
        if src.key in state_dict:
            expected = tuple(target[ours].shape) + ((1, 1) if src.transform == "conv_to_linear" else ())
            found = tuple(state_dict[src.key].shape)
            if found != expected:
                shapes[src.key] = f"{list(found)} (expected {list(expected)})"
    if missing or unexpected or shapes:
        parts = [f"the checkpoint ({layout.name} layout) does not fit the architecture"]
        blocks = layout.count_blocks(list(state_dict))
        if blocks != len(spec.layers):
            parts.append(f"it has {blocks} blocks, the architecture {len(spec.layers)}")
        if missing:
            parts.append(f"{len(missing)} missing: {_listed(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected: {_listed(unexpected)}")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatches: {_listed(list(shapes), shapes)}")
        classifier = plan["head.classifier.weight"].key
        if classifier in state_dict and state_dict[classifier].shape[0] != spec.head.num_classes:
            parts.append(f"the checkpoint has {state_dict[classifier].shape[0]} classes, "
                         f"the architecture {spec.head.num_classes}")
        raise NasError("; ".join(parts))
    return {ours: _transform(state_dict[src.key], src.transform, layout.bn_eps, target[ours])
            if src.key in state_dict else torch.zeros((), dtype=torch.long)
            for ours, src in plan.items()}


def _transform(tensor: torch.Tensor, transform: str, eps: float, like: torch.Tensor) -> torch.Tensor:
    if transform == "bn_var" and eps != BN_EPS:
        return (tensor.double() + eps - BN_EPS).to(like.dtype)
    return tensor.detach().reshape(like.shape).to(like.dtype).clone()


def load_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a ``.pth`` file: plain, or inside a training checkpoint's
    ``state_dict`` / ``model`` entry, with DataParallel's ``module.`` prefix removed."""
    data = rundir.read_checkpoint(path)
    if isinstance(data, dict):
        for key in _CONTAINER_KEYS:
            if isinstance(data.get(key), dict):
                data = data[key]
                break
    if not isinstance(data, dict) or not data or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in data.items()):
        raise NasError(f"{path}: expected a state dict (names -> tensors), got {type(data).__name__}")
    if all(key.startswith("module.") for key in data):
        data = {key.removeprefix("module."): value for key, value in data.items()}
    return data


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m nas.convert",
        description="Convert a torchvision or timm checkpoint of a zoo network into this project's "
                    "layout (BatchNorm eps differences folded in, eval outputs unchanged).")
    parser.add_argument("--from", dest="source", required=True, choices=SOURCES,
                        help="library whose layout the checkpoint is in")
    parser.add_argument("src", metavar="SRC.pth", help="the checkpoint (state dict, or a training checkpoint "
                                                       "holding one under 'state_dict' or 'model')")
    parser.add_argument("--arch", required=True, metavar="NAME_OR_SPEC",
                        help="the architecture the weights belong to: a zoo name "
                             f"({', '.join(zoo.names())}), a spec string, JSON, or a spec file")
    parser.add_argument("--out", required=True, metavar="DST.pth", help="where to write the converted state dict")
    parser.add_argument("--width", type=float, default=None, help="width multiplier (zoo names only)")
    parser.add_argument("--num-classes", type=int, default=None,
                        help="classifier size when the checkpoint was not trained on ImageNet's 1000 classes")
    args = parser.parse_args(argv)

    spec = zoo.resolve(args.arch, args.width, args.num_classes)
    state_dict = load_checkpoint(args.src)
    try:
        layout = detect_layout(list(state_dict), source=args.source)
        converted = convert_state_dict(state_dict, source=args.source, spec=spec)
    except NasError as err:
        raise NasError(f"{args.src}: {err}") from None
    out = Path(args.out)
    rundir.write_torch(out, converted)
    params = sum(t.numel() for k, t in converted.items() if not k.endswith(("running_mean", "running_var",
                                                                                "num_batches_tracked")))
    print(f"{args.src} ({layout.name} layout) -> {out}: {len(converted)} tensors, {params:,} parameters")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
