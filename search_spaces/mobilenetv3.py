"""A MobileNetV3 search space: the MnasNet factorization plus the choices MobileNetV3 added.

MobileNetV3 (Howard et al., ICCV 2019) searched MnasNet-style blocks, then added h-swish,
hard-sigmoid squeeze-excite on the expansion, a cheaper stem (16 filters) and the "efficient
last stage" (pool before the wide layers). This space makes each of those a choice. Per block
(seven choices, 1080 options per block):

===========  =====================================================================
op           ``conv``, ``ds``, ``mb3``, ``mb4``, ``mb6`` (as in the MnasNet space; MBConv
             exp = 3, 4 or 6 x the layer's input width)
kernel       3, 5, 7
se           0, 0.25 (MobileNetV3 style: hard-sigmoid gate, squeeze width
             make_divisible(exp * 0.25, 8))
act          ``relu``, ``hswish``
skip         ``none``, ``identity`` (residual wherever legal)
filters      0.75, 1.0, 1.25 x the block's base width, rounded by make_divisible(., 8)
layers       -1, 0, +1 around the block's base depth
===========  =====================================================================

and six global choices (6 * 7 + 6 = 48 choices, 2**6 * 1080**6 ~ 1.0e20 vectors):

==============  ==============================================================
skeleton        ``large`` or ``small`` (the tables below)
stem.channels   16 (MobileNetV3), 32 (MnasNet); 3x3 conv, stride 2
stem.act        ``relu``, ``hswish``
head.kind       ``efficient`` (1x1 conv to 6 x the last width, pool, hidden layer,
                classifier) or ``classic`` (1x1 conv to head.width, pool, classifier)
head.width      1024, 1280 (the hidden layer of the efficient head, the 1x1 conv of
                the classic one)
head.act        ``relu``, ``hswish``
==============  ==============================================================

The head's dropout is 0.2.

Skeletons: six blocks, (first-layer stride, base width, base depth) and how the published
networks map onto them. MobileNetV3's stages mix layers only in their expansion ratios (kernel,
SE and activation are uniform inside each stage), so block-level choices hold both networks
once expansions are set aside. The efficient last stage replaces MnasNet's seventh block
(the 320-wide layer), so there are six blocks.

=====  ================  ===========================  ================  ============================
block  large             MobileNetV3-Large uses       small             MobileNetV3-Small uses
=====  ================  ===========================  ================  ============================
1      s1, 16, 2         ds k3 relu, 16 x1, skip      s2, 16, 2         ds k3 SE relu, 16 x1
2      s2, 24, 2         k3 relu, 24 x2 (exp 4, 3)    s2, 24, 2         k3 relu, 24 x2 (exp 4.5, 3.67)
3      s2, 40, 3         k5 SE relu, 40 x3 (exp 3)    s2, 40, 2         k5 SE hswish, 40 x1 (exp 4)
4      s2, 80, 4         k3 hswish, 80 x4             s1, 40, 2         k5 SE hswish, 40 x2 (exp 6)
                         (exp 6, 2.5, 2.3, 2.3)
5      s1, 112, 2        k3 SE hswish, 112 x2 (6)     s1, 48, 2         k5 SE hswish, 48 x2 (exp 3)
6      s2, 160, 3        k5 SE hswish, 160 x3 (6)     s2, 96, 3         k5 SE hswish, 96 x3 (exp 6)
=====  ================  ===========================  ================  ============================

Both use the 16-channel h-swish stem and the efficient h-swish head (1280 / 1024 hidden). The
small skeleton downsamples in block 1 instead of block 4, as MobileNetV3-Small does; its
three-layer 40-wide stage is two blocks (the stride-2 layer, then two stride-1 layers), which
keeps six blocks in both skeletons and lets the first layer's expansion differ (4 vs 6), as in
the published network. Base depths are the published ones, except that one-layer stages get
base 2 so that "-1" leaves a layer.

**Membership.** MobileNetV3-Large and -Small (and the minimalistic variants, and both at width
0.75) are members *up to their expanded widths*: ``contains(spec, ignore_expansion=True)`` is
True, and ``project(spec)`` gives the member that differs only in expansions, each block using
the MBConv ratio nearest (in log) to the block's geometric-mean ratio. They are *not* exact
members: their per-layer expansions (e.g. 200 and 184 in Large's fourth stage) are what
NetAdapt tuned after the search, and no per-block ratio reproduces them.

**Weight sharing.** ``get_space("mobilenetv3-shared")``
(:func:`search_spaces.factorized.weight_sharing_space`) is the sub-space a supernet search uses:
``mb3``/``mb4``/``mb6`` in blocks 2-6, ``ds`` fixed in block 1, identity skips everywhere (41
choices, 2.5e16 vectors). Every network above is a member of it too, up to expanded widths.
"""

from __future__ import annotations

from search_spaces.factorized import BlockOptions, FactorizedSpace, HeadOptions, Stage, StemOptions

LARGE = (
    Stage(stride=1, width=16, depth=2),
    Stage(stride=2, width=24, depth=2),
    Stage(stride=2, width=40, depth=3),
    Stage(stride=2, width=80, depth=4),
    Stage(stride=1, width=112, depth=2),
    Stage(stride=2, width=160, depth=3),
)
SMALL = (
    Stage(stride=2, width=16, depth=2),
    Stage(stride=2, width=24, depth=2),
    Stage(stride=2, width=40, depth=2),
    Stage(stride=1, width=40, depth=2),
    Stage(stride=1, width=48, depth=2),
    Stage(stride=2, width=96, depth=3),
)

BLOCKS = BlockOptions(ops=("conv", "ds", "mb3", "mb4", "mb6"), kernels=(3, 5, 7), se_ratios=(0.0, 0.25),
                      acts=("relu", "hswish"))


def mobilenetv3_space(*, num_classes: int = 1000) -> FactorizedSpace:
    """The MobileNetV3 space; ``num_classes`` sets the classifier of every network it builds."""
    return FactorizedSpace(
        name="mobilenetv3", skeletons={"large": LARGE, "small": SMALL}, blocks=BLOCKS,
        stem=StemOptions(channels=(16, 32), acts=("relu", "hswish")),
        head=HeadOptions(kinds=("efficient", "classic"), widths=(1024, 1280), acts=("relu", "hswish")),
        se_style="v3", num_classes=num_classes,
    )
