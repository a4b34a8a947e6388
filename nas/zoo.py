"""Registry of reference architectures: the published networks as data.

Each family is a table of stage rows with expansion *ratios* (as the papers write them);
:func:`get` scales it by a width multiplier with the TF-slim rule and returns an exact
:class:`~nas.arch.ArchSpec`:

* output widths and the stem are ``make_divisible(c * width, 8)``;
* the expanded width is ``make_divisible(scaled_input * ratio, 8)`` (MobileNetV3) or
  ``scaled_input * ratio`` (MnasNet, MobileNetV2, whose inputs are already multiples of 8);
* the head's wide layer (1280 / 1024) is kept for widths below 1; above 1 it grows for
  MobileNetV2 and V3 (1792 at 1.4) and stays at 1280 for MnasNet, whose published 1.4
  model has 6.1M parameters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path
from nas.arch import ArchSpec, HeadSpec, LayerSpec, SpecError, StemSpec, make_divisible


@dataclass(frozen=True)
class Row:
    """``n`` repeats of one block; only the first has stride ``s``."""

    op: str
    k: int
    s: int
    t: float
    c: int
    n: int = 1
    se: float = 0.0
    act: str = "relu"
    skip: bool = True


@dataclass(frozen=True)
class Family:
    rows: tuple[Row, ...]
    stem: int
    stem_act: str
    head_conv: int
    head_hidden: int
    head_act: str
    se_style: str
    round_exp: bool
    head_grows: bool  # whether the wide head layer grows for widths above 1


def _rows(*rows: Row) -> tuple[Row, ...]:
    return rows


RE, HS, R6 = "relu", "hswish", "relu6"

_V3_LARGE = _rows(
    Row("ds", 3, 1, 1, 16, act=RE),
    Row("ir", 3, 2, 4, 24, act=RE), Row("ir", 3, 1, 3, 24, act=RE),
    Row("ir", 5, 2, 3, 40, 3, se=0.25, act=RE),
    Row("ir", 3, 2, 6, 80, act=HS), Row("ir", 3, 1, 2.5, 80, act=HS), Row("ir", 3, 1, 2.3, 80, 2, act=HS),
    Row("ir", 3, 1, 6, 112, 2, se=0.25, act=HS),
    Row("ir", 5, 2, 6, 160, 3, se=0.25, act=HS),
)
_V3_SMALL = _rows(
    Row("ds", 3, 2, 1, 16, se=0.25, act=RE),
    Row("ir", 3, 2, 4.5, 24, act=RE), Row("ir", 3, 1, 3.67, 24, act=RE),
    Row("ir", 5, 2, 4, 40, se=0.25, act=HS), Row("ir", 5, 1, 6, 40, 2, se=0.25, act=HS),
    Row("ir", 5, 1, 3, 48, 2, se=0.25, act=HS),
    Row("ir", 5, 2, 6, 96, 3, se=0.25, act=HS),
)


def _minimalistic(rows: tuple[Row, ...]) -> tuple[Row, ...]:
    """No SE, no h-swish, 3x3 kernels only (MobileNetV3 minimalistic)."""
    return tuple(Row(r.op, 3, r.s, r.t, r.c, r.n, 0.0, RE, r.skip) for r in rows)


_MNASNET_A1 = _rows(
    Row("ds", 3, 1, 1, 16, skip=False),
    Row("ir", 3, 2, 6, 24, 2),
    Row("ir", 5, 2, 3, 40, 3, se=0.25),
    Row("ir", 3, 2, 6, 80, 4),
    Row("ir", 3, 1, 6, 112, 2, se=0.25),
    Row("ir", 5, 2, 6, 160, 3, se=0.25),
    Row("ir", 3, 1, 6, 320),
)
_MNASNET_B1 = _rows(
    Row("ds", 3, 1, 1, 16, skip=False),
    Row("ir", 3, 2, 3, 24, 3),
    Row("ir", 5, 2, 3, 40, 3),
    Row("ir", 5, 2, 6, 80, 3),
    Row("ir", 3, 1, 6, 96, 2),
    Row("ir", 5, 2, 6, 192, 4),
    Row("ir", 3, 1, 6, 320, skip=False),
)
_MOBILENET_V2 = tuple(
    Row(op, 3, s, t, c, n, act=R6)
    for op, t, c, n, s in [("ds", 1, 16, 1, 1), ("ir", 6, 24, 2, 2), ("ir", 6, 32, 3, 2), ("ir", 6, 64, 4, 2),
                           ("ir", 6, 96, 3, 1), ("ir", 6, 160, 3, 2), ("ir", 6, 320, 1, 1)]
)

FAMILIES: dict[str, Family] = {
    "mobilenet_v3_large": Family(_V3_LARGE, 16, HS, 960, 1280, HS, "v3", True, True),
    "mobilenet_v3_small": Family(_V3_SMALL, 16, HS, 576, 1024, HS, "v3", True, True),
    "mobilenet_v3_large_minimalistic": Family(_minimalistic(_V3_LARGE), 16, RE, 960, 1280, RE, "v3", True, True),
    "mobilenet_v3_small_minimalistic": Family(_minimalistic(_V3_SMALL), 16, RE, 576, 1024, RE, "v3", True, True),
    "mnasnet_a1": Family(_MNASNET_A1, 32, RE, 1280, 0, RE, "mnas", False, False),
    "mnasnet_b1": Family(_MNASNET_B1, 32, RE, 1280, 0, RE, "mnas", False, False),
    "mobilenet_v2": Family(_MOBILENET_V2, 32, R6, 1280, 0, R6, "mnas", False, True),
}

# Width-suffixed aliases, as the papers name them.
ALIASES: dict[str, tuple[str, float]] = {
    "mobilenet_v3_large_075": ("mobilenet_v3_large", 0.75),
    "mobilenet_v3_large_050": ("mobilenet_v3_large", 0.5),
    "mobilenet_v3_small_075": ("mobilenet_v3_small", 0.75),
    "mobilenet_v3_small_050": ("mobilenet_v3_small", 0.5),
}


def _wide_head(family: Family, channels: int, width: float) -> int:
    return make_divisible(channels * max(1.0, width), 8) if family.head_grows else channels


def build_family(family: Family, width: float = 1.0, num_classes: int = 1000, dropout: float = 0.2) -> ArchSpec:
    """Scale a family's stage table by ``width`` (TF-slim rule, see the module docstring)."""
    if not 0 < width <= 4:
        raise SpecError(f"width: must lie in (0, 4], got {width}")
    stem = make_divisible(family.stem * width, 8)
    layers, in_ch = [], stem
    for row in family.rows:
        out = make_divisible(row.c * width, 8)
        for i in range(row.n):
            stride = row.s if i == 0 else 1
            if row.op == "ds":
                exp = in_ch
            elif family.round_exp:
                exp = make_divisible(in_ch * row.t, 8)
            else:
                exp = int(round(in_ch * row.t))
            layers.append(LayerSpec(
                op=row.op, kernel=row.k, stride=stride, exp=exp, out=out,
                se_ratio=row.se, se_style=family.se_style, act=row.act,
                residual=row.skip and stride == 1 and in_ch == out,
            ))
            in_ch = out
    if family.head_hidden:
        head = HeadSpec(channels=make_divisible(family.head_conv * width, 8),
                        hidden=_wide_head(family, family.head_hidden, width),
                        act=family.head_act, dropout=dropout, num_classes=num_classes)
    else:
        head = HeadSpec(channels=_wide_head(family, family.head_conv, width), act=family.head_act,
                        dropout=dropout, num_classes=num_classes)
    return ArchSpec(stem=StemSpec(channels=stem, act=family.stem_act), layers=tuple(layers), head=head)


# Networks published at one width only, written as spec strings.
FIXED: dict[str, str] = {
    # ProxylessNAS-Mobile (Cai et al. 2019), read off the authors' TFLite per-op profile
    # (latency_tables/pixel-cpu/sources/proxyless_mobile_10_latency.txt): 80.67 ms on Pixel 1.
    "proxylessnas_mobile": (
        "stem_k3_s2_c32_relu6 ds_k3_s1_e32_c16_relu6 "
        "ir_k5_s2_e48_c24_relu6 ir_k3_s1_e72_c24_relu6_skip "
        "ir_k7_s2_e72_c40_relu6 ir_k3_s1_e120_c40_relu6_skip ir_k5_s1_e120_c40_relu6_skip "
        "ir_k5_s1_e120_c40_relu6_skip "
        "ir_k7_s2_e240_c80_relu6 ir_k5_s1_e240_c80_relu6_skip ir_k5_s1_e240_c80_relu6_skip "
        "ir_k5_s1_e240_c80_relu6_skip "
        "ir_k5_s1_e480_c96_relu6 ir_k5_s1_e288_c96_relu6_skip ir_k5_s1_e288_c96_relu6_skip "
        "ir_k5_s1_e288_c96_relu6_skip "
        "ir_k7_s2_e576_c192_relu6 ir_k7_s1_e1152_c192_relu6_skip ir_k7_s1_e576_c192_relu6_skip "
        "ir_k7_s1_e576_c192_relu6_skip "
        "ir_k7_s1_e1152_c320_relu6 head_c1280_relu6_d0.1_n1000"
    ),
}


def names() -> list[str]:
    return sorted([*FAMILIES, *ALIASES, *FIXED])


def get(name: str, width: float | None = None, num_classes: int = 1000) -> ArchSpec:
    """The spec of a named reference network, optionally at another width multiplier."""
    if name in FIXED:
        if width not in (None, 1.0):
            raise SpecError(f"{name} is published at one width only; --width does not apply")
        spec = ArchSpec.from_string(FIXED[name])
        return replace(spec, head=replace(spec.head, num_classes=num_classes))
    family_name, alias_width = ALIASES.get(name, (name, 1.0))
    if family_name not in FAMILIES:
        raise SpecError(f"unknown architecture {name!r}; known: {', '.join(names())}")
    return build_family(FAMILIES[family_name], alias_width if width is None else width, num_classes)


def resolve(text: str, width: float | None = None, num_classes: int | None = None) -> ArchSpec:
    """Read a zoo name, a spec string, a JSON spec, or the path of a JSON / text spec file.

    This is how every command-line tool reads its ``NAME_OR_SPEC`` argument.
    """
    text = text.strip()
    if re.fullmatch(r"[a-z0-9_]+", text) and not Path(text).is_file():
        return get(text, width, num_classes or 1000)
    if width is not None:
        raise SpecError("--width applies to zoo names only, not to an explicit spec")
    if text.startswith("{"):
        spec = ArchSpec.from_json(text)
    elif text.startswith("stem_"):
        spec = ArchSpec.from_string(text)
    else:
        path = Path(text)
        if not path.is_file():
            raise SpecError(f"{text!r} is neither a zoo name, a spec string, JSON, nor a file")
        return resolve(path.read_text(), None, num_classes)
    if num_classes is not None and num_classes != spec.head.num_classes:
        spec = replace(spec, head=replace(spec.head, num_classes=num_classes))
    return spec


