"""The MnasNet factorized hierarchical search space (Tan et al., CVPR 2019, section 4.1).

Seven blocks after a fixed stem (3x3 conv, stride 2, 32 channels, ReLU) and before a fixed
classic head (1x1 conv to 1280, ReLU, pooling, dropout 0.2, classifier). Per block, six choices
(42 in all, 288 options per block, 288**7 ~ 1.64e17 vectors):

===========  =====================================================================
op           ``conv`` (regular kxk conv, exp == out), ``ds`` (depthwise-separable:
             depthwise on the block input, exp == in), ``mb3``, ``mb6`` (MBConv with
             exp = 3 or 6 x the layer's input width)
kernel       3, 5
se           0, 0.25 (MnasNet style: sigmoid gate, squeeze width int(input * 0.25))
skip         ``none``, ``identity`` (a residual on every layer where it is legal:
             stride 1 and input width == output width)
filters      0.75, 1.0, 1.25 x the block's base width, rounded by make_divisible(., 8)
layers       -1, 0, +1 around the block's base depth
===========  =====================================================================

All layers use ReLU. The skeleton (first-layer stride, base width, base depth):

=====  ======  ==========  ==============  ==========  ==================================
block  stride  base width  widths reached  base depth  MnasNet-A1 / -B1 used
=====  ======  ==========  ==============  ==========  ==================================
1      1       16          16, 16, 24      2           ds k3, 16 x1 / same
2      2       24          24, 24, 32      2           mb6 k3 24 x2 / mb3 k3 24 x3
3      2       40          32, 40, 48      3           mb3 k5 SE 40 x3 / mb3 k5 40 x3
4      2       80          64, 80, 104     4           mb6 k3 80 x4 / mb6 k5 80 x3
5      1       92          72, 96, 112     2           mb6 k3 SE 112 x2 / mb6 k3 96 x2
6      2       156         120, 160, 192   3           mb6 k5 SE 160 x3 / mb6 k5 192 x4
7      1       320         240, 320, 400   2           mb6 k3 320 x1 / same
=====  ======  ==========  ==============  ==========  ==================================

Why these numbers:

* Strides are MnasNet-A1's (and MobileNetV2's): the network reduces by 32 in all.
* Widths are A1's, except blocks 5 and 6. With A1's 112 and 160 as bases, MnasNet-B1's 96
  and 192 are out of reach (112 -> 88/112/144, 160 -> 120/160/200). 92 is the only integer base
  whose rounded widths hold both 96 and 112, and 156 the only one holding both 160 and 192, so
  with these bases **both MnasNet-A1 and MnasNet-B1 are exact members** (``nas.zoo.get``
  specs; encode -> decode gives them back). A base is a nominal width: 92 x 1.0 rounds to 96.
* Depths are A1's, except blocks 1 and 7 (A1 has one layer there): their base is 2 so that
  "-1" still leaves one layer; a block never disappears, so strides and the total reduction
  stay fixed. A1 takes "-1" in blocks 1 and 7; B1 also takes "+1" in blocks 2 and 6, "-1" in 4.
* make_divisible's 10 % rule makes 0.75 x 16 and 0.75 x 24 round up to the base, so in
  blocks 1 and 2 two filter options build the same width; ``encode`` picks the first.

A1's block 1 has no residual because its only layer changes width (32 -> 16), whatever the
skip choice: ``encode`` then reports ``none``, the canonical index.
"""

from __future__ import annotations

from search_spaces.factorized import BlockOptions, FactorizedSpace, HeadOptions, Stage, StemOptions

SKELETON = (
    Stage(stride=1, width=16, depth=2),
    Stage(stride=2, width=24, depth=2),
    Stage(stride=2, width=40, depth=3),
    Stage(stride=2, width=80, depth=4),
    Stage(stride=1, width=92, depth=2),
    Stage(stride=2, width=156, depth=3),
    Stage(stride=1, width=320, depth=2),
)

BLOCKS = BlockOptions(ops=("conv", "ds", "mb3", "mb6"), kernels=(3, 5), se_ratios=(0.0, 0.25), acts=("relu",))


def mnasnet_space(*, num_classes: int = 1000) -> FactorizedSpace:
    """The MnasNet space; ``num_classes`` sets the classifier of every network it builds."""
    return FactorizedSpace(
        name="mnasnet", skeletons={"mnasnet": SKELETON}, blocks=BLOCKS,
        stem=StemOptions(channels=(32,), acts=("relu",)),
        head=HeadOptions(kinds=("classic",), widths=(1280,), acts=("relu",)),
        se_style="mnas", num_classes=num_classes,
    )
