"""Blocks declare their parameters: the names and channel groups match the modules they build."""

import pytest
import torch

from nas import zoo
from nas.arch import LayerSpec
from nas.blocks import Channels, InvertedResidual, block_params, make_block, slice_channels
from nas.model import build_model, network_parts

# One block of each kind and variant: ir with v3 SE, ir without expansion, ds, conv with MnasNet SE.
LAYERS = [
    (16, LayerSpec("ir", 3, 2, 48, 24, se_ratio=0.25, se_style="v3", act="hswish")),
    (24, LayerSpec("ir", 5, 1, 24, 32)),
    (16, LayerSpec("ds", 3, 1, 16, 16, residual=True)),
    (16, LayerSpec("conv", 3, 2, 32, 32, se_ratio=0.25)),
]


def _widths(layer, in_ch):
    return {Channels.INPUT: in_ch, Channels.EXPANDED: layer.exp, Channels.SQUEEZE: layer.se_channels(in_ch),
            Channels.OUTPUT: layer.out}


@pytest.mark.parametrize("in_ch, layer", LAYERS, ids=lambda value: getattr(value, "op", ""))
def test_a_block_declares_every_entry_of_its_state_dict_with_its_channel_groups(in_ch, layer):
    state = make_block(layer, in_ch).state_dict()
    params = block_params(layer, in_ch)
    assert [param.name for param in params] == list(state)
    widths = _widths(layer, in_ch)
    for param in params:
        assert len(param.dims) == state[param.name].dim(), param.name
        for size, group in zip(state[param.name].shape, param.dims):
            if group is not None:
                assert size == widths[group], param.name


def test_depthwise_input_and_class_count_are_not_channel_dimensions():
    in_ch, layer = LAYERS[0]
    dims = {param.name: param.dims for param in block_params(layer, in_ch)}
    assert dims["dw.conv.weight"] == (Channels.EXPANDED, None, None, None)
    assert dims["se.reduce.weight"] == (Channels.SQUEEZE, Channels.EXPANDED, None, None)
    assert dims["project.conv.weight"] == (Channels.OUTPUT, Channels.EXPANDED, None, None)
    head = {param.name: param.dims for param in network_parts(zoo.get("mobilenet_v3_small"))[-1].params}
    assert head["hidden.weight"] == (Channels.HIDDEN, Channels.EXPANDED)
    assert head["classifier.weight"] == (None, Channels.HIDDEN)


@pytest.mark.parametrize("name", ["mobilenet_v3_large", "mnasnet_a1"])
def test_network_parts_declare_the_whole_network_in_state_dict_order(name):
    spec = zoo.get(name)
    with torch.device("meta"):
        state = build_model(spec).state_dict()
    declared = [f"{part.prefix}.{param.name}" for part in network_parts(spec) for param in part.params]
    assert declared == list(state)


def test_slicing_a_wide_block_by_prefix_gives_the_narrow_blocks_weights():
    """What a weight-sharing supernet does: one generic cut per declared parameter."""
    in_ch, wide = LAYERS[0]
    narrow = LayerSpec("ir", 3, 2, 32, 16, se_ratio=0.25, se_style="v3", act="hswish")
    big, small = make_block(wide, in_ch), make_block(narrow, 8)
    keep = _widths(narrow, 8)
    state = big.state_dict()
    cut = {param.name: slice_channels(state[param.name], param.dims, keep)
           for param in InvertedResidual.params(narrow, 8)}
    small.load_state_dict(cut, strict=True)
    assert small.expand.conv.weight.equal(big.expand.conv.weight[:32, :8])
    assert small.se.expand.weight.equal(big.se.expand.weight[:32, :8])
    storage = state["project.conv.weight"].untyped_storage().data_ptr()
    assert cut["project.conv.weight"].untyped_storage().data_ptr() == storage  # a view, not a copy


def test_slicing_by_index_keeps_the_chosen_channels_in_every_dimension():
    weight = torch.arange(24.0).reshape(4, 6)
    got = slice_channels(weight, ("a", "b"), {"a": torch.tensor([0, 3]), "b": 2})
    assert got.equal(torch.tensor([[0.0, 1.0], [18.0, 19.0]]))

