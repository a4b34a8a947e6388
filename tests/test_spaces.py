"""Contract tests over every search space, plus the published networks each one must hold."""

import math
import re
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from nas import zoo
from nas.arch import ArchSpec, iter_layers
from nas.errors import NasError, SpecError
from nas.model import build_model
from search_spaces import SPACES, NotInSpaceError, get_space, mobilenetv3_space, weight_sharing_space

SAMPLES = 200


def _without_exp(spec: ArchSpec) -> list:
    return [replace(layer, exp=0) for layer in spec.layers]


@pytest.fixture(params=sorted(SPACES))
def space(request):
    return get_space(request.param)


def test_every_sample_round_trips_through_its_vector(space):
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(SAMPLES):
        spec = space.sample(rng)
        vector = space.encode(spec)
        assert space.decode(vector) == spec
        assert space.contains(spec)
        assert ArchSpec.from_string(spec.to_string()) == spec
        seen.add(spec.to_string())
    assert len(seen) > 0.95 * SAMPLES  # sampling explores the space, not one network


def test_random_vectors_decode_and_encode_to_an_equivalent_canonical_vector(space):
    rng = np.random.default_rng(1)
    for _ in range(SAMPLES // 4):
        vector = [int(rng.integers(len(c.options))) for c in space.choices()]
        spec = space.decode(vector)
        canonical = space.encode(spec)
        assert space.decode(canonical) == spec
        assert space.encode(space.decode(canonical)) == canonical


def test_duplicate_vectors_encode_to_the_first_option():
    space = get_space("mnasnet")
    names = [c.name for c in space.choices()]
    vector = space.encode(zoo.get("mnasnet_a1"))
    other = list(vector)
    other[names.index("block1.filters")] = 0  # 0.75 x 16 rounds up to 16, like 1.0 x 16
    assert space.decode(other) == space.decode(vector)
    assert space.encode(space.decode(other)) == other
    assert vector[names.index("block1.filters")] == 0


def test_decode_rejects_bad_vectors_naming_the_choice(space):
    choices = space.choices()
    good = [0] * len(choices)
    for position in (0, len(choices) // 2, len(choices) - 1):
        choice = choices[position]
        for bad in (len(choice.options), -1):
            vector = list(good)
            vector[position] = bad
            with pytest.raises(SpecError, match=rf"^{re.escape(choice.name)}: index {bad} out of range"):
                space.decode(vector)
    with pytest.raises(SpecError, match="index must be an integer"):
        space.decode([True] + good[1:])
    with pytest.raises(SpecError, match=f"expected {len(choices)} indices, got {len(choices) - 1}"):
        space.decode(good[:-1])


def test_size_is_the_product_of_option_counts(space):
    assert space.size() == math.prod(len(c.options) for c in space.choices())
    assert all(len(c.options) > 1 for c in space.choices())
    assert len({c.name for c in space.choices()}) == len(space.choices())


def test_space_sizes_match_their_documented_tables():
    mnasnet, v3 = get_space("mnasnet"), get_space("mobilenetv3")
    assert (len(mnasnet.choices()), mnasnet.size()) == (42, 288 ** 7)
    assert (len(v3.choices()), v3.size()) == (48, 2 ** 6 * 1080 ** 6)
    assert [c.name for c in mnasnet.choices()[:6]] == [f"block1.{f}" for f in
                                                       ("op", "kernel", "se", "skip", "filters", "layers")]
    assert mnasnet.choices()[0].options == ("conv", "ds", "mb3", "mb6")


@pytest.mark.parametrize("name", ["mnasnet_a1", "mnasnet_b1"])
def test_mnasnet_a1_and_b1_are_exact_members(name):
    space, spec = get_space("mnasnet"), zoo.get(name)
    assert space.contains(spec)
    assert space.decode(space.encode(spec)) == spec
    assert space.why_not(spec) is None


@pytest.mark.parametrize("name", ["mobilenet_v3_large", "mobilenet_v3_small", "mobilenet_v3_large_minimalistic",
                                  "mobilenet_v3_small_minimalistic", "mobilenet_v3_large_075",
                                  "mobilenet_v3_small_075"])
def test_mobilenet_v3_is_a_member_up_to_its_expanded_widths(name):
    space, spec = get_space("mobilenetv3"), zoo.get(name)
    assert not space.contains(spec)  # NetAdapt's per-layer expansions are not per-block ratios
    assert "exp is" in space.why_not(spec) or "op:" in space.why_not(spec)
    assert space.contains(spec, ignore_expansion=True)
    nearest = space.project(spec)
    assert space.contains(nearest)
    assert _without_exp(nearest) == _without_exp(spec)
    assert nearest.head == spec.head and nearest.stem == spec.stem


def test_projection_picks_the_nearest_expansion_ratio():
    space = get_space("mobilenetv3")
    nearest = space.project(zoo.get("mobilenet_v3_large"))
    # Block 5 (112 wide) uses ratio 6 in the paper; block 4 (2.3 to 6, mean ~3) becomes 3.
    assert [layer.exp for layer in nearest.layers[10:12]] == [480, 672]
    assert [layer.exp for layer in nearest.layers[6:10]] == [120, 240, 240, 240]


def test_a_pruned_member_is_recognised_and_projected_back():
    space, spec = get_space("mnasnet"), zoo.get("mnasnet_a1")
    pruned = spec.with_layer(8, exp=400)  # what NetAdapt does to an expansion width
    assert not space.contains(pruned)
    assert space.contains(pruned, ignore_expansion=True)
    assert space.project(pruned) == spec


def test_non_members_are_refused_with_the_reason():
    mnasnet, v3 = get_space("mnasnet"), get_space("mobilenetv3")
    a1 = zoo.get("mnasnet_a1")
    assert not v3.contains(a1, ignore_expansion=True)
    assert not mnasnet.contains(zoo.get("mobilenet_v3_large"), ignore_expansion=True)
    assert "relu6" in mnasnet.why_not(zoo.get("mobilenet_v2"))
    assert "block3.kernel: 7 is not among the options (3, 5)" in mnasnet.why_not(a1.with_layer(3, kernel=7))
    assert "residual is False" in mnasnet.why_not(a1.with_layer(5, residual=False))
    assert "the layers end too early" in mnasnet.why_not(replace(a1, layers=a1.layers[:-1]))
    with pytest.raises(NotInSpaceError, match="not in the mnasnet space") as err:
        mnasnet.encode(a1.with_layer(3, kernel=7))
    assert isinstance(err.value, NasError)


def test_num_classes_sets_the_classifier_and_membership():
    space = get_space("mnasnet", num_classes=10)
    spec = space.sample(np.random.default_rng(0))
    assert spec.head.num_classes == 10
    a1 = zoo.get("mnasnet_a1", num_classes=10)
    assert space.contains(a1) and not get_space("mnasnet").contains(a1)
    assert "num_classes=10" in get_space("mnasnet").why_not(a1)
    with pytest.raises(NasError, match="num_classes"):
        get_space("mnasnet", num_classes=0)


def test_unknown_space_is_a_clear_error():
    with pytest.raises(NasError, match="unknown search space 'resnet'; known: mnasnet, mobilenetv3"):
        get_space("resnet")


def test_v3_space_uses_its_own_choices():
    space = get_space("mobilenetv3")
    specs = [space.sample(np.random.default_rng(seed)) for seed in range(40)]
    layers = [layer for spec in specs for layer in spec.layers]
    assert {layer.kernel for layer in layers} == {3, 5, 7}
    assert {layer.act for layer in layers} == {"relu", "hswish"}
    assert {layer.se_style for layer in layers if layer.has_se} == {"v3"}
    assert {spec.head.efficient for spec in specs} == {True, False}
    assert {spec.stem.channels for spec in specs} == {16, 32}
    for spec in specs:
        if spec.head.efficient:
            assert spec.head.channels == 6 * spec.layers[-1].out


def test_sampled_networks_build_and_run(space):
    rng = np.random.default_rng(3)
    for _ in range(3):
        spec = space.sample(rng)
        model = build_model(replace(spec, head=replace(spec.head, num_classes=10))).eval()
        with torch.no_grad():
            logits = model(torch.randn(1, 3, 64, 64))
        assert logits.shape == (1, 10)
        assert torch.isfinite(logits).all()


def test_cli_checks_membership_and_samples(capsys, tmp_path):
    from nas import cli
    from search_spaces.__main__ import main

    assert main(["check", "mnasnet", "mnasnet_a1"]) == 0
    assert capsys.readouterr().out.startswith("yes")
    assert main(["check", "mobilenetv3", "mobilenet_v3_large"]) == 1
    assert "exp is 72" in capsys.readouterr().out
    assert main(["check", "mobilenetv3", "mobilenet_v3_large", "--ignore-expansion"]) == 0
    assert "nearest stem_k3_s2_c16_hswish" in capsys.readouterr().out
    out = tmp_path / "samples.csv"
    assert main(["sample", "mnasnet", "-n", "3", "--out", str(out)]) == 0
    table = pd.read_csv(out)
    space = get_space("mnasnet")
    for vector, spec in zip(table["vector"], table["spec"]):
        assert space.decode([int(i) for i in vector.split()]) == ArchSpec.from_string(spec)
    capsys.readouterr()
    assert cli.run(main, ["show", "resnet"]) == 2
    assert capsys.readouterr().err.strip() == ("error: unknown search space 'resnet'; known: mnasnet, mobilenetv3, "
                                               "mnasnet-shared, mobilenetv3-shared, mobilenetv3-large-shared, "
                                               "mobilenetv3-small-shared")


@pytest.mark.parametrize("name,members", [
    ("mobilenetv3-shared", ["mobilenet_v3_large", "mobilenet_v3_small", "mobilenet_v3_large_075",
                            "mobilenet_v3_small_075", "mobilenet_v3_large_minimalistic",
                            "mobilenet_v3_small_minimalistic"]),
    ("mnasnet-shared", ["mnasnet_a1", "mnasnet_b1"]),
    ("mobilenetv3-large-shared", ["mobilenet_v3_large", "mobilenet_v3_large_075", "mobilenet_v3_large_minimalistic"]),
    ("mobilenetv3-small-shared", ["mobilenet_v3_small", "mobilenet_v3_small_075", "mobilenet_v3_small_minimalistic"]),
])
def test_weight_sharing_spaces_hold_the_published_networks_and_only_mbconv(name, members):
    from search_spaces.factorized import sharing_obstacle

    space = get_space(name)
    for member in members:
        assert space.contains(zoo.get(member), ignore_expansion=True), member
    assert space.fixed()["block1.op"] == "ds"
    assert all(space.fixed()[f"block{i}.skip"] == "identity" for i in range(1, space.num_blocks + 1))
    rng = np.random.default_rng(0)
    for _ in range(20):
        spec = space.sample(rng)
        assert spec.layers[0].op == "ds" and {layer.op for layer in spec.layers[1:]} <= {"ds", "ir"}
        assert all(layer.residual == (layer.stride == 1 and in_ch == layer.out)
                   for _, in_ch, layer in iter_layers(spec))
    assert sharing_obstacle(space) is None
    full = get_space(name.split("-")[0])
    assert "mixes ops with weights of their own" in sharing_obstacle(full)


def test_a_one_skeleton_space_holds_only_that_skeletons_networks():
    small, large = get_space("mobilenetv3-small-shared"), get_space("mobilenetv3-large-shared")
    assert small.fixed()["skeleton"] == "small" and large.fixed()["skeleton"] == "large"
    assert not small.contains(zoo.get("mobilenet_v3_large"), ignore_expansion=True)
    assert not large.contains(zoo.get("mobilenet_v3_small"), ignore_expansion=True)
    both = get_space("mobilenetv3-shared")
    rng = np.random.default_rng(0)
    for _ in range(10):
        spec = small.sample(rng)
        assert both.contains(spec) and not large.contains(spec)
    with pytest.raises(NasError, match="unknown skeleton 'tiny'; known: large, small"):
        weight_sharing_space(mobilenetv3_space(), skeleton="tiny")


def test_overrides_fix_one_block_and_unknown_names_are_refused():
    from search_spaces.factorized import FactorizedSpace

    base = get_space("mnasnet")
    common = dict(name="x", skeletons=base.skeletons, blocks=base.block_options, stem=base.stem_options,
                  head=base.head_options, se_style=base.se_style)
    space = FactorizedSpace(**common, overrides={"block2.kernel": (5,)})
    assert space.fixed()["block2.kernel"] == 5 and "block2.kernel" not in [c.name for c in space.choices()]
    assert space.options("block3.kernel") == (3, 5)
    assert all(layer.kernel == 5 for layer in space.sample(np.random.default_rng(0)).layers[1:3])
    with pytest.raises(NasError, match="overrides name no choice: block9.kernel"):
        FactorizedSpace(**common, overrides={"block9.kernel": (5,)})
