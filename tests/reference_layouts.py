"""Small re-implementations of torchvision's and timm's MobileNet / MnasNet module layouts.

Written from the libraries' documented structure (module names, nesting, order, BN eps, where
biases are), not from this project's code, so a conversion test compares two independent
implementations. Each model has its own architecture table, as the library writes it:
torchvision's per-block rows and timm's block strings. ``randomize`` fills every weight AND every
BatchNorm running statistic with random values, so no wrong mapping can pass by accident.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn


def _divisible(value: float, divisor: int = 8) -> int:
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def _act(name: str) -> nn.Module:
    return {"RE": nn.ReLU, "HS": nn.Hardswish, "R6": nn.ReLU6}[name](inplace=True)


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights and BN statistics, in eval mode.

    Each BN's statistics are measured on what reaches it from a random batch (so activations stay
    O(1) through the net), then perturbed by random factors, so every channel's numbers are
    distinct and arbitrary.
    """
    gen = torch.Generator().manual_seed(seed)

    def calibrate(bn: nn.BatchNorm2d, inputs: tuple[torch.Tensor]) -> None:
        var, mean = torch.var_mean(inputs[0], dim=(0, 2, 3))
        n = bn.num_features
        bn.running_var.copy_(var.clamp_min(1e-4) * (torch.rand(n, generator=gen) * 0.5 + 0.75))
        bn.running_mean.copy_(mean + torch.randn(n, generator=gen) * 0.1 * var.sqrt())
        bn.num_batches_tracked.fill_(int(torch.randint(1, 1000, (1,), generator=gen)))

    hooks = []
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                fan_in = module.weight[0].numel()
                module.weight.copy_(torch.randn(module.weight.shape, generator=gen) * (1.0 / fan_in) ** 0.5)
                if module.bias is not None:
                    module.bias.copy_(torch.randn(module.bias.shape, generator=gen) * 0.1)
            elif isinstance(module, nn.BatchNorm2d):
                module.weight.copy_(torch.rand(module.num_features, generator=gen) * 0.5 + 0.75)
                module.bias.copy_(torch.randn(module.num_features, generator=gen) * 0.1)
                hooks.append(module.register_forward_pre_hook(calibrate))
        model.eval()(torch.randn(4, 3, 96, 96, generator=gen))
    for hook in hooks:
        hook.remove()
    return model


# ------------------------------------------------------------------ torchvision


def _conv_norm_act(cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1,
                   norm=nn.BatchNorm2d, act: str | None = None) -> nn.Sequential:
    """torchvision's Conv2dNormActivation: indices 0 conv (no bias), 1 norm, 2 activation."""
    layers = [nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False), norm(cout)]
    if act is not None:
        layers.append(_act(act))
    return nn.Sequential(*layers)


class TvSqueezeExcitation(nn.Module):
    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.activation = nn.ReLU()
        self.scale_activation = nn.Hardsigmoid()

    def forward(self, x):
        return x * self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))


class TvV3InvertedResidual(nn.Module):
    def __init__(self, cin, kernel, expanded, cout, use_se, act, stride, norm) -> None:
        super().__init__()
        self.use_res_connect = stride == 1 and cin == cout
        layers = []
        if expanded != cin:
            layers.append(_conv_norm_act(cin, expanded, 1, norm=norm, act=act))
        layers.append(_conv_norm_act(expanded, expanded, kernel, stride, expanded, norm=norm, act=act))
        if use_se:
            layers.append(TvSqueezeExcitation(expanded, _divisible(expanded // 4)))
        layers.append(_conv_norm_act(expanded, cout, 1, norm=norm))
        self.block = nn.Sequential(*layers)

    def forward(self, x):
        y = self.block(x)
        return x + y if self.use_res_connect else y


# torchvision's rows: input, kernel, expanded, out, SE, activation, stride
TV_V3_LARGE = [
    (16, 3, 16, 16, False, "RE", 1), (16, 3, 64, 24, False, "RE", 2), (24, 3, 72, 24, False, "RE", 1),
    (24, 5, 72, 40, True, "RE", 2), (40, 5, 120, 40, True, "RE", 1), (40, 5, 120, 40, True, "RE", 1),
    (40, 3, 240, 80, False, "HS", 2), (80, 3, 200, 80, False, "HS", 1), (80, 3, 184, 80, False, "HS", 1),
    (80, 3, 184, 80, False, "HS", 1), (80, 3, 480, 112, True, "HS", 1), (112, 3, 672, 112, True, "HS", 1),
    (112, 5, 672, 160, True, "HS", 2), (160, 5, 960, 160, True, "HS", 1), (160, 5, 960, 160, True, "HS", 1),
]
TV_V3_SMALL = [
    (16, 3, 16, 16, True, "RE", 2), (16, 3, 72, 24, False, "RE", 2), (24, 3, 88, 24, False, "RE", 1),
    (24, 5, 96, 40, True, "HS", 2), (40, 5, 240, 40, True, "HS", 1), (40, 5, 240, 40, True, "HS", 1),
    (40, 5, 120, 48, True, "HS", 1), (48, 5, 144, 48, True, "HS", 1), (48, 5, 288, 96, True, "HS", 2),
    (96, 5, 576, 96, True, "HS", 1), (96, 5, 576, 96, True, "HS", 1),
]


class TvMobileNetV3(nn.Module):
    """torchvision.models.MobileNetV3: features, avgpool, classifier (Linear, Hardswish, Dropout, Linear)."""

    def __init__(self, rows, last_channel: int, num_classes: int = 1000) -> None:
        super().__init__()
        norm = partial(nn.BatchNorm2d, eps=0.001, momentum=0.01)
        layers = [_conv_norm_act(3, rows[0][0], 3, 2, norm=norm, act="HS")]
        layers += [TvV3InvertedResidual(*row, norm=norm) for row in rows]
        last_in = rows[-1][3]
        layers.append(_conv_norm_act(last_in, 6 * last_in, 1, norm=norm, act="HS"))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(6 * last_in, last_channel), nn.Hardswish(inplace=True),
                                        nn.Dropout(0.2, inplace=True), nn.Linear(last_channel, num_classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def tv_mobilenet_v3_large(num_classes: int = 1000) -> TvMobileNetV3:
    return TvMobileNetV3(TV_V3_LARGE, 1280, num_classes)


def tv_mobilenet_v3_small(num_classes: int = 1000) -> TvMobileNetV3:
    return TvMobileNetV3(TV_V3_SMALL, 1024, num_classes)


class TvV2InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = int(round(cin * expand_ratio))
        self.use_res_connect = stride == 1 and cin == cout
        layers = []
        if expand_ratio != 1:
            layers.append(_conv_norm_act(cin, hidden, 1, act="R6"))
        layers += [_conv_norm_act(hidden, hidden, 3, stride, hidden, act="R6"),
                   nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        y = self.conv(x)
        return x + y if self.use_res_connect else y


class TvMobileNetV2(nn.Module):
    """torchvision.models.MobileNetV2 (width 1.0): features, classifier (Dropout, Linear); BN eps 1e-5."""

    SETTING = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
               (6, 320, 1, 1)]  # t, c, n, s

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        layers, cin = [_conv_norm_act(3, 32, 3, 2, act="R6")], 32
        for t, c, n, s in self.SETTING:
            for i in range(n):
                layers.append(TvV2InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(_conv_norm_act(cin, 1280, 1, act="R6"))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

    def forward(self, x):
        x = nn.functional.adaptive_avg_pool2d(self.features(x), (1, 1))
        return self.classifier(torch.flatten(x, 1))


class TvMnasInvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expansion: int, momentum: float) -> None:
        super().__init__()
        mid = cin * expansion
        self.apply_residual = cin == cout and stride == 1
        self.layers = nn.Sequential(
            nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid, momentum=momentum), nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, kernel, padding=kernel // 2, stride=stride, groups=mid, bias=False),
            nn.BatchNorm2d(mid, momentum=momentum), nn.ReLU(inplace=True),
            nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout, momentum=momentum),
        )

    def forward(self, x):
        y = self.layers(x)
        return x + y if self.apply_residual else y


class TvMNASNet(nn.Module):
    """torchvision.models.MNASNet(alpha=1.0) = mnasnet1_0: one flat ``layers`` Sequential, classifier."""

    DEPTHS = [32, 16, 24, 40, 80, 96, 192, 320]
    STACKS = [(3, 2, 3, 3), (5, 2, 3, 3), (5, 2, 6, 3), (3, 1, 6, 2), (5, 2, 6, 4), (3, 1, 6, 1)]  # k, s, t, r

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        m, d = 1 - 0.9997, self.DEPTHS
        layers = [
            nn.Conv2d(3, d[0], 3, padding=1, stride=2, bias=False), nn.BatchNorm2d(d[0], momentum=m),
            nn.ReLU(inplace=True),
            nn.Conv2d(d[0], d[0], 3, padding=1, stride=1, groups=d[0], bias=False),
            nn.BatchNorm2d(d[0], momentum=m), nn.ReLU(inplace=True),
            nn.Conv2d(d[0], d[1], 1, bias=False), nn.BatchNorm2d(d[1], momentum=m),
        ]
        for (k, s, t, r), cin, cout in zip(self.STACKS, d[1:], d[2:]):
            stack = [TvMnasInvertedResidual(cin, cout, k, s, t, m)]
            stack += [TvMnasInvertedResidual(cout, cout, k, 1, t, m) for _ in range(r - 1)]
            layers.append(nn.Sequential(*stack))
        layers += [nn.Conv2d(d[7], 1280, 1, bias=False), nn.BatchNorm2d(1280, momentum=m), nn.ReLU(inplace=True)]
        self.layers = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2, inplace=True), nn.Linear(1280, num_classes))

    def forward(self, x):
        return self.classifier(self.layers(x).mean([2, 3]))


# ------------------------------------------------------------------ timm


def _decode(block: str) -> dict:
    """One timm block string, e.g. ``ir_r2_k5_s1_e6_c40_se0.25_nre`` (type, then key+value tokens)."""
    kind, *tokens = block.split("_")
    args = dict(kind=kind, r=1, k=3, s=1, e=1.0, se=0.0, relu=False, noskip=False)
    for token in tokens:
        if token == "nre":
            args["relu"] = True
        elif token == "noskip":
            args["noskip"] = True
        elif token.startswith("se"):
            args["se"] = float(token[2:])
        else:
            key, value = token[0], token[1:]
            args[key] = float(value) if key == "e" else int(value)
    return args


class TimmSqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduced: int, act: nn.Module, gate: nn.Module) -> None:
        super().__init__()
        self.conv_reduce = nn.Conv2d(channels, reduced, 1, bias=True)
        self.act1 = act
        self.conv_expand = nn.Conv2d(reduced, channels, 1, bias=True)
        self.gate = gate

    def forward(self, x):
        return x * self.gate(self.conv_expand(self.act1(self.conv_reduce(x.mean((2, 3), keepdim=True)))))


class _TimmFamily:
    """What differs between timm's MobileNetV3 and EfficientNet model classes at block level."""

    def __init__(self, act: str, v3: bool) -> None:
        self.act, self.v3 = act, v3

    def block_act(self, relu: bool) -> nn.Module:
        return _act("RE" if relu else self.act)

    def se(self, mid: int, in_chs: int, ratio: float, exp_ratio: float, relu: bool) -> nn.Module:
        if self.v3:  # se_from_exp, rounded to 8, ReLU forced, hard-sigmoid gate
            return TimmSqueezeExcite(mid, _divisible(mid * ratio), nn.ReLU(inplace=True), nn.Hardsigmoid())
        # EfficientNet: the ratio refers to the block input, rounded with round(), the block's activation
        return TimmSqueezeExcite(mid, round(mid * ratio / exp_ratio), self.block_act(relu), nn.Sigmoid())


class TimmDepthwiseSeparable(nn.Module):
    def __init__(self, fam: _TimmFamily, cin: int, cout: int, a: dict, norm) -> None:
        super().__init__()
        self.has_skip = a["s"] == 1 and cin == cout and not a["noskip"]
        self.conv_dw = nn.Conv2d(cin, cin, a["k"], a["s"], a["k"] // 2, groups=cin, bias=False)
        self.bn1 = norm(cin)
        self.act1 = fam.block_act(a["relu"])
        self.se = fam.se(cin, cin, a["se"], 1.0, a["relu"]) if a["se"] else nn.Identity()
        self.conv_pw = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn2 = norm(cout)

    def forward(self, x):
        y = self.bn2(self.conv_pw(self.se(self.act1(self.bn1(self.conv_dw(x))))))
        return x + y if self.has_skip else y


class TimmInvertedResidual(nn.Module):
    def __init__(self, fam: _TimmFamily, cin: int, cout: int, a: dict, norm) -> None:
        super().__init__()
        mid = _divisible(cin * a["e"])
        self.has_skip = a["s"] == 1 and cin == cout and not a["noskip"]
        self.conv_pw = nn.Conv2d(cin, mid, 1, bias=False)
        self.bn1 = norm(mid)
        self.act1 = fam.block_act(a["relu"])
        self.conv_dw = nn.Conv2d(mid, mid, a["k"], a["s"], a["k"] // 2, groups=mid, bias=False)
        self.bn2 = norm(mid)
        self.act2 = fam.block_act(a["relu"])
        self.se = fam.se(mid, cin, a["se"], a["e"], a["relu"]) if a["se"] else nn.Identity()
        self.conv_pwl = nn.Conv2d(mid, cout, 1, bias=False)
        self.bn3 = norm(cout)

    def forward(self, x):
        y = self.act1(self.bn1(self.conv_pw(x)))
        y = self.se(self.act2(self.bn2(self.conv_dw(y))))
        y = self.bn3(self.conv_pwl(y))
        return x + y if self.has_skip else y


class TimmConvBnAct(nn.Module):
    def __init__(self, fam: _TimmFamily, cin: int, cout: int, a: dict, norm) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, a["k"], a["s"], a["k"] // 2, bias=False)
        self.bn1 = norm(cout)
        self.act1 = fam.block_act(a["relu"])

    def forward(self, x):
        return self.act1(self.bn1(self.conv(x)))


_BLOCKS = {"ds": TimmDepthwiseSeparable, "ir": TimmInvertedResidual, "cn": TimmConvBnAct}


def _timm_stages(fam: _TimmFamily, arch_def: list[list[str]], cin: int, norm) -> tuple[nn.Sequential, int]:
    stages = []
    for stage in arch_def:
        blocks = []
        for string in stage:
            a = _decode(string)
            for i in range(a["r"]):
                args = dict(a, s=a["s"] if i == 0 else 1)
                blocks.append(_BLOCKS[a["kind"]](fam, cin, a["c"], args, norm))
                cin = a["c"]
        stages.append(nn.Sequential(*blocks))
    return nn.Sequential(*stages), cin


class TimmMobileNetV3(nn.Module):
    """timm's MobileNetV3 class: conv_stem, bn1, blocks, global pool, conv_head (bias), act2, classifier."""

    def __init__(self, arch_def, num_features: int, num_classes: int = 1000) -> None:
        super().__init__()
        norm = nn.BatchNorm2d  # eps 1e-5 for the non-tf_ models
        self.conv_stem = nn.Conv2d(3, 16, 3, 2, 1, bias=False)
        self.bn1 = norm(16)
        self.act1 = nn.Hardswish(inplace=True)
        self.blocks, head_chs = _timm_stages(_TimmFamily("HS", v3=True), arch_def, 16, norm)
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.conv_head = nn.Conv2d(head_chs, num_features, 1, bias=True)
        self.act2 = nn.Hardswish(inplace=True)
        self.flatten = nn.Flatten(1)
        self.classifier = nn.Linear(num_features, num_classes)

    def forward(self, x):
        x = self.blocks(self.act1(self.bn1(self.conv_stem(x))))
        return self.classifier(self.flatten(self.act2(self.conv_head(self.global_pool(x)))))


TIMM_V3_LARGE = [
    ["ds_r1_k3_s1_e1_c16_nre"], ["ir_r1_k3_s2_e4_c24_nre", "ir_r1_k3_s1_e3_c24_nre"],
    ["ir_r3_k5_s2_e3_c40_se0.25_nre"], ["ir_r1_k3_s2_e6_c80", "ir_r1_k3_s1_e2.5_c80", "ir_r2_k3_s1_e2.3_c80"],
    ["ir_r2_k3_s1_e6_c112_se0.25"], ["ir_r3_k5_s2_e6_c160_se0.25"], ["cn_r1_k1_s1_c960"],
]
TIMM_V3_SMALL = [
    ["ds_r1_k3_s2_e1_c16_se0.25_nre"], ["ir_r1_k3_s2_e4.5_c24_nre", "ir_r1_k3_s1_e3.67_c24_nre"],
    ["ir_r1_k5_s2_e4_c40_se0.25", "ir_r2_k5_s1_e6_c40_se0.25"], ["ir_r2_k5_s1_e3_c48_se0.25"],
    ["ir_r3_k5_s2_e6_c96_se0.25"], ["cn_r1_k1_s1_c576"],
]


def timm_mobilenetv3_large_100(num_classes: int = 1000) -> TimmMobileNetV3:
    return TimmMobileNetV3(TIMM_V3_LARGE, 1280, num_classes)


def timm_mobilenetv3_small_100(num_classes: int = 1000) -> TimmMobileNetV3:
    return TimmMobileNetV3(TIMM_V3_SMALL, 1024, num_classes)


class TimmEfficientNet(nn.Module):
    """timm's EfficientNet class (MnasNet, MobileNetV2): conv_stem, bn1, blocks, conv_head, bn2, classifier."""

    def __init__(self, arch_def, act: str, num_classes: int = 1000) -> None:
        super().__init__()
        norm = nn.BatchNorm2d
        self.conv_stem = nn.Conv2d(3, 32, 3, 2, 1, bias=False)
        self.bn1 = norm(32)
        self.act1 = _act(act)
        self.blocks, head_chs = _timm_stages(_TimmFamily(act, v3=False), arch_def, 32, norm)
        self.conv_head = nn.Conv2d(head_chs, 1280, 1, bias=False)
        self.bn2 = norm(1280)
        self.act2 = _act(act)
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(1280, num_classes)

    def forward(self, x):
        x = self.blocks(self.act1(self.bn1(self.conv_stem(x))))
        x = self.act2(self.bn2(self.conv_head(x)))
        return self.classifier(self.global_pool(x).flatten(1))


TIMM_MNASNET_B1 = [["ds_r1_k3_s1_c16_noskip"], ["ir_r3_k3_s2_e3_c24"], ["ir_r3_k5_s2_e3_c40"],
                   ["ir_r3_k5_s2_e6_c80"], ["ir_r2_k3_s1_e6_c96"], ["ir_r4_k5_s2_e6_c192"],
                   ["ir_r1_k3_s1_e6_c320_noskip"]]
TIMM_MNASNET_A1 = [["ds_r1_k3_s1_e1_c16_noskip"], ["ir_r2_k3_s2_e6_c24"], ["ir_r3_k5_s2_e3_c40_se0.25"],
                   ["ir_r4_k3_s2_e6_c80"], ["ir_r2_k3_s1_e6_c112_se0.25"], ["ir_r3_k5_s2_e6_c160_se0.25"],
                   ["ir_r1_k3_s1_e6_c320"]]
TIMM_MOBILENETV2 = [["ds_r1_k3_s1_c16"], ["ir_r2_k3_s2_e6_c24"], ["ir_r3_k3_s2_e6_c32"], ["ir_r4_k3_s2_e6_c64"],
                    ["ir_r3_k3_s1_e6_c96"], ["ir_r3_k3_s2_e6_c160"], ["ir_r1_k3_s1_e6_c320"]]


def timm_mnasnet_100(num_classes: int = 1000) -> TimmEfficientNet:
    return TimmEfficientNet(TIMM_MNASNET_B1, "RE", num_classes)


def timm_semnasnet_100(num_classes: int = 1000) -> TimmEfficientNet:
    return TimmEfficientNet(TIMM_MNASNET_A1, "RE", num_classes)


def timm_mobilenetv2_100(num_classes: int = 1000) -> TimmEfficientNet:
    return TimmEfficientNet(TIMM_MOBILENETV2, "R6", num_classes)


# (source, reference constructor, our zoo name, the library's own name for the model)
CASES = [
    ("torchvision", tv_mobilenet_v3_large, "mobilenet_v3_large", "mobilenet_v3_large"),
    ("torchvision", tv_mobilenet_v3_small, "mobilenet_v3_small", "mobilenet_v3_small"),
    ("torchvision", TvMobileNetV2, "mobilenet_v2", "mobilenet_v2"),
    ("torchvision", TvMNASNet, "mnasnet_b1", "mnasnet1_0"),
    ("timm", timm_mobilenetv3_large_100, "mobilenet_v3_large", "mobilenetv3_large_100"),
    ("timm", timm_mobilenetv3_small_100, "mobilenet_v3_small", "mobilenetv3_small_100"),
    ("timm", timm_mnasnet_100, "mnasnet_b1", "mnasnet_100"),
    ("timm", timm_semnasnet_100, "mnasnet_a1", "semnasnet_100"),
    ("timm", timm_mobilenetv2_100, "mobilenet_v2", "mobilenetv2_100"),
]
