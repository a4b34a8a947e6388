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
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import torch

from nas import cli, zoo
from nas.arch import ArchSpec, iter_layers
from nas.blocks import BN_EPS
from nas.errors import NasError
from nas.model import build_model

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


@dataclass(frozen=True)
class Layout:
    """One library's naming of one model family, and what that family can hold."""

    name: str
    bn_eps: float
    efficient_head: bool  # MobileNetV3's head (linear layers after pooling) vs a 1x1 conv before it
    se_style: str | None  # the SE gate the family uses ("v3" hard-sigmoid, "mnas" sigmoid); None: no SE
    conv_blocks: bool  # whether a regular-convolution block (our ``conv`` op) has a name here
    plan: Callable[[ArchSpec, frozenset[str]], Plan]
    block_pattern: str  # matches the keys of one block; its groups tell the blocks apart
    block_offset: int  # our blocks = pattern's blocks + this (timm V3's head conv is one of its blocks;
    #                    torchvision MNASNet's separable block is not in its stacks)

    def count_blocks(self, keys: Sequence[str]) -> int:
        """How many of our blocks the checkpoint holds."""
        regex = re.compile(self.block_pattern)
        return len({m.groups() for key in keys if (m := regex.match(key))}) + self.block_offset


# ------------------------------------------------------------------ name builders


def _conv_bn(ours: str, conv: str, bn: str) -> Plan:
    """A ConvBNAct of ours from a bias-free convolution and a batch norm."""
    plan = {f"{ours}.conv.weight": Source(f"{conv}.weight")}
    for name in ("weight", "bias", "running_mean", "num_batches_tracked"):
        plan[f"{ours}.bn.{name}"] = Source(f"{bn}.{name}")
    plan[f"{ours}.bn.running_var"] = Source(f"{bn}.running_var", "bn_var")
    return plan


def _affine(ours: str, theirs: str, transform: str = "copy") -> Plan:
    """A layer with weight and bias (linear, or SE's 1x1 convolutions)."""
    return {f"{ours}.weight": Source(f"{theirs}.weight", transform), f"{ours}.bias": Source(f"{theirs}.bias")}


def _se(ours: str, reduce: str, expand: str) -> Plan:
    return {**_affine(f"{ours}.se.reduce", reduce), **_affine(f"{ours}.se.expand", expand)}


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

_MNASNET_BLOCK = r"layers\.(\d+)\.(\d+)\.layers\."
_TIMM_BLOCK = r"blocks\.(\d+)\.(\d+)\."


def _torchvision_v3(spec: ArchSpec, keys: frozenset[str]) -> Plan:
    """features.0 stem; features.N.block.M for each block; features.L head conv; classifier.0 / .3."""
    plan = _conv_bn("stem", "features.0.0", "features.0.1")
    for i, in_ch, layer in iter_layers(spec):
        theirs, ours, j = f"features.{i + 1}.block", f"blocks.{i}", 0
        if layer.exp != in_ch:
            plan |= _conv_bn(f"{ours}.expand", f"{theirs}.{j}.0", f"{theirs}.{j}.1")
            j += 1
        plan |= _conv_bn(f"{ours}.dw", f"{theirs}.{j}.0", f"{theirs}.{j}.1")
        j += 1
        if layer.has_se:
            plan |= _se(ours, f"{theirs}.{j}.fc1", f"{theirs}.{j}.fc2")
            j += 1
        plan |= _conv_bn(f"{ours}.project", f"{theirs}.{j}.0", f"{theirs}.{j}.1")
    last = len(spec.layers) + 1
    plan |= _conv_bn("head.conv", f"features.{last}.0", f"features.{last}.1")
    return plan | _affine("head.hidden", "classifier.0") | _affine("head.classifier", "classifier.3")


def _torchvision_v2(spec: ArchSpec, keys: frozenset[str]) -> Plan:
    """features.N.conv: [expand ConvNormAct], depthwise ConvNormAct, bare 1x1 conv, BN; classifier.1."""
    plan = _conv_bn("stem", "features.0.0", "features.0.1")
    for i, in_ch, layer in iter_layers(spec):
        theirs, ours, j = f"features.{i + 1}.conv", f"blocks.{i}", 0
        if layer.exp != in_ch:
            plan |= _conv_bn(f"{ours}.expand", f"{theirs}.{j}.0", f"{theirs}.{j}.1")
            j += 1
        plan |= _conv_bn(f"{ours}.dw", f"{theirs}.{j}.0", f"{theirs}.{j}.1")
        plan |= _conv_bn(f"{ours}.project", f"{theirs}.{j + 1}", f"{theirs}.{j + 2}")
    last = len(spec.layers) + 1
    plan |= _conv_bn("head.conv", f"features.{last}.0", f"features.{last}.1")
    return plan | _affine("head.classifier", "classifier.1")


def _torchvision_mnasnet(spec: ArchSpec, keys: frozenset[str]) -> Plan:
    """One flat ``layers`` Sequential: stem 0-1, separable block 3-7, stacks 8.., head conv, BN."""
    first = spec.layers[0]
    if first.op != "ds" or first.has_se:
        raise NasError("the torchvision mnasnet layout starts with a depthwise-separable block "
                       f"without SE; layers[0] is {first.op}{' with SE' if first.has_se else ''}")
    plan = _conv_bn("stem", "layers.0", "layers.1")
    plan |= _conv_bn("blocks.0.dw", "layers.3", "layers.4") | _conv_bn("blocks.0.project", "layers.6", "layers.7")
    rest = list(iter_layers(spec))[1:]
    slots = _stage_slots(keys, _MNASNET_BLOCK, [layer.out for _, _, layer in rest], 8)
    for (i, in_ch, layer), (stack, block) in zip(rest, slots):
        if layer.exp == in_ch:
            raise _no_expansion(i, "torchvision mnasnet")
        theirs, ours = f"layers.{stack}.{block}.layers", f"blocks.{i}"
        plan |= _conv_bn(f"{ours}.expand", f"{theirs}.0", f"{theirs}.1")
        plan |= _conv_bn(f"{ours}.dw", f"{theirs}.3", f"{theirs}.4")
        plan |= _conv_bn(f"{ours}.project", f"{theirs}.6", f"{theirs}.7")
    head = (slots[-1][0] if slots else 7) + 1
    plan |= _conv_bn("head.conv", f"layers.{head}", f"layers.{head + 1}")
    return plan | _affine("head.classifier", "classifier.1")


# ------------------------------------------------------------------ timm


def _timm_blocks(spec: ArchSpec, slots: Sequence[tuple[int, int]], layout: str) -> Plan:
    """timm's block classes: DepthwiseSeparableConv, InvertedResidual, ConvBnAct."""
    plan: Plan = {}
    for (i, in_ch, layer), (stage, block) in zip(iter_layers(spec), slots):
        theirs, ours = f"blocks.{stage}.{block}", f"blocks.{i}"
        if layer.op == "conv":
            plan |= _conv_bn(f"{ours}.conv", f"{theirs}.conv", f"{theirs}.bn1")
            continue
        if layer.op == "ds":
            plan |= _conv_bn(f"{ours}.dw", f"{theirs}.conv_dw", f"{theirs}.bn1")
            project = _conv_bn(f"{ours}.project", f"{theirs}.conv_pw", f"{theirs}.bn2")
        else:
            if layer.exp == in_ch:
                raise _no_expansion(i, layout)
            plan |= _conv_bn(f"{ours}.expand", f"{theirs}.conv_pw", f"{theirs}.bn1")
            plan |= _conv_bn(f"{ours}.dw", f"{theirs}.conv_dw", f"{theirs}.bn2")
            project = _conv_bn(f"{ours}.project", f"{theirs}.conv_pwl", f"{theirs}.bn3")
        if layer.has_se:
            plan |= _se(ours, f"{theirs}.se.conv_reduce", f"{theirs}.se.conv_expand")
        plan |= project
    return plan




def _timm_mobilenetv3(spec: ArchSpec, keys: frozenset[str]) -> Plan:
    """conv_stem/bn1, blocks.S.B, a last ConvBnAct stage (our head conv), conv_head (1x1, bias), classifier."""
    outs = [layer.out for layer in spec.layers] + [spec.head.channels]
    slots = _stage_slots(keys, _TIMM_BLOCK, outs, 0)
    plan = _conv_bn("stem", "conv_stem", "bn1") | _timm_blocks(spec, slots[:-1], "timm mobilenetv3")
    head = "blocks.{}.{}".format(*slots[-1])
    plan |= _conv_bn("head.conv", f"{head}.conv", f"{head}.bn1")
    return plan | _affine("head.hidden", "conv_head", "conv_to_linear") | _affine("head.classifier", "classifier")


def _timm_efficientnet(spec: ArchSpec, keys: frozenset[str]) -> Plan:
    """conv_stem/bn1, blocks.S.B, conv_head/bn2 (1x1 conv before pooling), classifier."""
    slots = _stage_slots(keys, _TIMM_BLOCK, [layer.out for layer in spec.layers], 0)
    plan = _conv_bn("stem", "conv_stem", "bn1") | _timm_blocks(spec, slots, "timm efficientnet")
    return plan | _conv_bn("head.conv", "conv_head", "bn2") | _affine("head.classifier", "classifier")


LAYOUTS: dict[str, Layout] = {layout.name: layout for layout in (
    Layout("torchvision mobilenet_v3", 1e-3, True, "v3", False, _torchvision_v3, r"features\.(\d+)\.block\.", 0),
    Layout("torchvision mobilenet_v2", 1e-5, False, None, False, _torchvision_v2, r"features\.(\d+)\.conv\.", 0),
    Layout("torchvision mnasnet", 1e-5, False, None, False, _torchvision_mnasnet, _MNASNET_BLOCK, 1),
    Layout("timm mobilenetv3", 1e-5, True, "v3", True, _timm_mobilenetv3, _TIMM_BLOCK, -1),
    Layout("timm efficientnet", 1e-5, False, "mnas", True, _timm_efficientnet, _TIMM_BLOCK, 0),
)}


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
        if layer.op == "conv" and not layout.conv_blocks:
            raise NasError(f"layers[{i}]: the {layout.name} layout has no regular-convolution blocks")
        if layer.has_se and (layer.op == "conv" or layout.se_style is None):
            raise NasError(f"layers[{i}]: the {layout.name} layout has no squeeze-excite "
                           f"{'in convolution blocks' if layer.op == 'conv' else 'blocks'}")
        if layer.has_se and layer.se_style != layout.se_style:
            raise NasError(f"layers[{i}]: SE style {layer.se_style!r}, but the {layout.name} layout "
                           f"uses {layout.se_style!r} (the gate differs)")


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
    plan = layout.plan(spec, frozenset(state_dict))
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
    path = Path(path)
    if not path.is_file():
        raise NasError(f"{path}: no such checkpoint file")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many kinds for a file that is not a checkpoint
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise NasError(f"{path}: not a readable PyTorch checkpoint ({reason})") from None
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
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(converted, out)
    params = sum(t.numel() for k, t in converted.items() if not k.endswith(("running_mean", "running_var",
                                                                                "num_batches_tracked")))
    print(f"{args.src} ({layout.name} layout) -> {out}: {len(converted)} tensors, {params:,} parameters")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
