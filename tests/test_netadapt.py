"""NetAdapt's pure parts: units from specs, width proposals, selection, weight inheritance."""

import pytest
import torch

from nas import zoo
from nas.arch import ArchSpec
from nas.errors import NasError
from nas.model import build_model
from nas.netadapt import (
    Outcome, Unit, param_slots, propose, reduction_ms, shrink, slot_widths, unit_width, units, with_width,
)
from nas.netadapt.inherit import inherit, kept_channels
from nas.netadapt.proposals import candidate_widths
from nas.netadapt.select import select
from nas.netadapt.units import has_expand, input_slot
from netadapt_toys import toy_latency

# Every block kind: ds with residual, ir with v3 SE, a residual group of three, conv with MnasNet SE,
# an ir with MnasNet SE (squeeze width follows its input), an ir without expansion, efficient head.
SMALL = ArchSpec.from_string(
    "stem_k3_s2_c16_hswish ds_k3_s1_e16_c16_relu_skip ir_k3_s2_e48_c24_hse0.25_hswish "
    "ir_k5_s1_e72_c24_relu_skip ir_k3_s1_e64_c24_se0.25_relu6_skip conv_k3_s2_e32_c32_se0.25_relu "
    "ir_k3_s1_e32_c32_relu_skip ir_k3_s1_e96_c40_hse0.25_hswish head_c64_h80_hswish_d0.2_n7"
)


@pytest.mark.parametrize("name", zoo.names())
def test_param_slots_describe_every_tensor_of_every_zoo_network(name):
    spec = zoo.get(name, num_classes=10)
    state, dims, widths = build_model(spec).state_dict(), param_slots(spec), slot_widths(spec)
    assert set(dims) == set(state)
    for key, slots in dims.items():
        assert len(slots) == state[key].dim(), key
        for axis, slot in enumerate(slots):
            if slot is not None:
                assert state[key].shape[axis] == widths[slot], key


def test_units_tie_residual_groups_stem_and_depthwise_inputs():
    found = {unit.name: set(unit.slots) for unit in units(SMALL)}
    assert found["stem+out[0]"] == {("stem", 0), ("exp", 0), ("out", 0)}
    assert found["out[1-3]"] == {("out", 1), ("out", 2), ("out", 3)}
    assert found["out[4-5]"] == {("out", 4), ("exp", 4), ("out", 5), ("exp", 5)}  # conv exp, ir without expand
    assert {"exp[1]", "exp[2]", "exp[3]", "exp[6]", "out[6]", "head", "hidden"} <= set(found)
    assert not any(slot[0] == "se" for slots in found.values() for slot in slots)
    for spec in (SMALL, zoo.get("mobilenet_v3_large"), zoo.get("mnasnet_a1")):
        by_slot = {slot: unit.name for unit in units(spec) for slot in unit.slots}
        for i, layer in enumerate(spec.layers):
            if layer.residual:
                assert by_slot[("out", i)] == by_slot[input_slot(i)]


def test_with_width_shrinks_a_whole_group_and_keeps_it_valid():
    group = next(u for u in units(SMALL) if u.name == "out[1-3]")
    child = with_width(SMALL, group, 16)
    assert [layer.out for layer in child.layers[1:4]] == [16, 16, 16]
    assert child.layers[2].residual and child.layers[3].residual
    assert child.layers[4].se_channels(16) == 4  # MnasNet SE follows its input


def test_the_expansion_pattern_is_the_built_blocks():
    blocks = build_model(SMALL).blocks
    assert has_expand(SMALL) == tuple(not isinstance(getattr(block, "expand", torch.nn.Identity()), torch.nn.Identity)
                                      for block in blocks)
    assert has_expand(SMALL) == (False, True, True, True, False, False, True)


def test_candidate_widths_never_drop_an_expansion_conv():
    exp1 = next(u for u in units(SMALL) if u.name == "exp[1]")  # input 16: width 16 would remove the expansion
    assert candidate_widths(SMALL, exp1) == [8, 24, 32, 40]
    group = next(u for u in units(SMALL) if u.name == "out[6]")  # the next... head reads it; 8..32 all fine
    assert candidate_widths(SMALL, group) == [8, 16, 24, 32]
    for unit in units(SMALL):
        for width in candidate_widths(SMALL, unit):
            assert has_expand(with_width(SMALL, unit, width)) == has_expand(SMALL)


def test_shrink_finds_the_largest_width_that_meets_the_budget():
    spec = zoo.get("mnasnet_a1", num_classes=10)
    base = toy_latency(spec)
    budget = base - 0.02 * base
    for unit in units(spec):
        fitting = [w for w in candidate_widths(spec, unit) if toy_latency(with_width(spec, unit, w)) <= budget]
        proposal = shrink(spec, unit, latency=toy_latency, budget_ms=budget)
        if not fitting:
            assert proposal is None
            continue
        assert proposal.width == max(fitting) and proposal.old_width == unit_width(spec, unit)
        assert proposal.width % 8 == 0 and proposal.latency_ms <= budget
        assert proposal.spec == with_width(spec, unit, proposal.width)


def test_propose_cuts_at_least_the_reduction_for_every_unit():
    spec = zoo.get("mobilenet_v3_large", num_classes=10)
    base = toy_latency(spec)
    found = propose(spec, latency=toy_latency, reduction=0.01 * base)
    assert len(found) >= len(units(spec)) - 3  # only units too narrow to cut 1 % are missing
    assert all(base - p.latency_ms >= 0.01 * base for p in found)
    assert len({p.unit.name for p in found}) == len(found)
    with pytest.raises(NasError, match="positive"):
        propose(spec, latency=toy_latency, reduction=0.0)


def test_reduction_schedule_decays_from_the_initial_ratio():
    assert reduction_ms(10.0, ratio=0.01, decay=1.0, iteration=7) == pytest.approx(0.1)
    assert reduction_ms(-10.0, ratio=0.1, decay=0.5, iteration=3) == pytest.approx(0.25)
    with pytest.raises(NasError, match="decay"):
        reduction_ms(10.0, ratio=0.01, decay=1.5, iteration=1)


def test_select_by_slope_or_by_accuracy():
    parent = Outcome(latency_ms=10.0, accuracy=0.70)
    outcomes = [Outcome(9.0, 0.69), Outcome(8.0, 0.685), Outcome(9.5, 0.695)]
    # slopes: -0.01, -0.0075, -0.01 per ms: the bigger cut loses least per ms
    assert select(outcomes, parent=parent, rule="slope") == 1
    assert select(outcomes, parent=parent, rule="accuracy") == 2
    assert select([Outcome(9.0, 0.7), Outcome(8.0, 0.7)], parent=parent, rule="accuracy") == 1
    with pytest.raises(NasError, match="unknown selection"):
        select(outcomes, parent=parent, rule="fastest")


# ---------------------------------------------------------------- inheritance


def _random_eval(model):
    """Non-trivial BN statistics and biases, so a wrong index would change the outputs."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.3, 0.3)
            elif isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)) and module.bias is not None:
                module.bias.uniform_(-0.3, 0.3)
    return model.eval()


def _silence(model, spec, child, rng):
    """Zero, in the parent, every channel the child drops: chosen at random per tied class, all its
    filters, BN shift and mean, and the SE squeeze channels a smaller SE loses. Return the drop sets."""
    old, new = slot_widths(spec), slot_widths(child)
    dropped = {}
    for unit in [*units(spec), *[Unit("se", (s,)) for s in old if s[0] == "se"]]:
        slot = unit.slots[0]
        if new[slot] < old[slot]:
            drop = torch.randperm(old[slot], generator=rng)[: old[slot] - new[slot]]
            dropped.update({s: drop for s in unit.slots})
    state = model.state_dict()
    with torch.no_grad():
        for key, slots in param_slots(spec).items():
            if slots and slots[0] in dropped and (key.endswith((".bias", ".running_mean")) or state[key].dim() >= 2):
                state[key][dropped[slots[0]]] = 0
    return dropped


@pytest.mark.parametrize("spec_name", ["small", "mobilenet_v3_small", "mnasnet_a1"])
def test_children_whose_dropped_filters_were_zero_reproduce_the_parent(spec_name):
    spec = SMALL if spec_name == "small" else zoo.get(spec_name, width=0.5, num_classes=5)
    rng = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 32, 32)
    for unit in units(spec):
        widths = candidate_widths(spec, unit)
        if not widths:
            continue
        child = with_width(spec, unit, widths[len(widths) // 2])
        parent = _random_eval(build_model(spec))
        dropped = _silence(parent, spec, child, rng)
        kept = kept_channels(spec, parent.state_dict(), child)
        for slot, drop in dropped.items():
            assert not set(drop.tolist()) & set(kept[slot].tolist()), (unit.name, slot)
        model = inherit(parent, child).eval()
        assert model.spec == child
        with torch.no_grad():
            torch.testing.assert_close(model(x), parent(x), atol=1e-5, rtol=1e-5, msg=unit.name)


def test_inheritance_keeps_the_largest_norm_filters_jointly_over_a_group():
    parent = build_model(SMALL)
    group = next(u for u in units(SMALL) if u.name == "out[1-3]")
    child = with_width(SMALL, group, 16)
    with torch.no_grad():
        for i in (1, 2, 3):  # channels 3 and 5 weak in every member but one: the joint score decides
            weight = parent.blocks[i].project.conv.weight
            weight.mul_(0.01 if i != 2 else 1.0)
            weight[[3, 5]] = 0.0 if i != 2 else weight[[3, 5]] * 0.05
    kept = kept_channels(SMALL, parent.state_dict(), child)
    assert kept[("out", 1)].equal(kept[("out", 3)])
    assert 3 not in kept[("out", 2)].tolist() and 5 not in kept[("out", 2)].tolist()
    model = inherit(parent, child)
    index = kept[("out", 2)]
    assert model.blocks[2].project.conv.weight.equal(parent.blocks[2].project.conv.weight[index])
    assert model.blocks[2].project.bn.running_var.equal(parent.blocks[2].project.bn.running_var[index])
    assert model.blocks[4].conv.conv.weight.equal(parent.blocks[4].conv.conv.weight[:, index])
    assert model.blocks[2].expand.conv.weight.equal(parent.blocks[2].expand.conv.weight[:, index])


def test_inheritance_refuses_a_child_with_other_blocks():
    parent = build_model(SMALL)
    other = SMALL.with_layer(2, exp=24)  # expansion conv disappears (exp == input)
    with pytest.raises(NasError, match="blocks differ"):
        inherit(parent, other)
