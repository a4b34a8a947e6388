"""Checkpoint import: torchvision / timm layouts give the same logits as the libraries' own models.

Offline, the libraries' layouts are the hand-written ones in ``reference_layouts``; where
torchvision or timm is importable, the real models are converted too, and the hand-written
layouts are checked against them.
"""

import importlib

import pytest
import torch

from nas import zoo
from nas.cli import run
from nas.convert import convert_state_dict, detect_layout, load_checkpoint, main
from nas.errors import NasError
from nas.model import build_model
from reference_layouts import (
    CASES,
    TIMM_V3_SMALL,
    TimmMobileNetV3,
    randomize,
    timm_mobilenetv3_large_100,
    timm_mobilenetv3_small_100,
    tv_mobilenet_v3_large,
)

X = torch.randn(1, 3, 96, 96, generator=torch.Generator().manual_seed(1))


def _converted_model(source, reference, name):
    spec = zoo.get(name)
    model = build_model(spec)
    model.load_state_dict(convert_state_dict(reference.state_dict(), source=source, spec=spec), strict=True)
    return model.eval()


def _assert_same_logits(model, reference):
    with torch.no_grad():
        expected, got = reference(X), model(X)
    assert expected.std() > 0.3  # logits of a healthy size, so atol 1e-4 is a real test
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("source, make, name, _", CASES, ids=[f"{s}-{m.__name__}" for s, m, _, _ in CASES])
def test_converted_model_gives_the_reference_logits(source, make, name, _):
    reference = randomize(make())
    _assert_same_logits(_converted_model(source, reference, name), reference)


def _library_model(source, name):
    """The library's own model, built without weights; skipped where the library is not installed."""
    library = pytest.importorskip(source, reason=f"{source} is not installed; the hand-written "
                                                 "layouts in reference_layouts cover its layout offline")
    if source == "torchvision":
        return getattr(importlib.import_module("torchvision.models"), name)(weights=None)
    return library.create_model(name, pretrained=False)


@pytest.mark.parametrize("source, make, name, theirs", CASES, ids=[f"{s}-{t}" for s, _, _, t in CASES])
def test_real_library_model_converts_to_the_same_logits(source, make, name, theirs):
    reference = randomize(_library_model(source, theirs))
    _assert_same_logits(_converted_model(source, reference, name), reference)
    hand_written = {key: tuple(value.shape) for key, value in make().state_dict().items()}
    assert {key: tuple(value.shape) for key, value in reference.state_dict().items()} == hand_written


def test_bn_eps_difference_is_folded_into_the_variance():
    reference = randomize(timm_mobilenetv3_small_100())
    sd = reference.state_dict()
    ours = convert_state_dict(sd, source="timm", spec=zoo.get("mobilenet_v3_small"))
    var = sd["blocks.2.0.bn2.running_var"].double()
    torch.testing.assert_close(ours["blocks.3.dw.bn.running_var"].double(), var + 1e-5 - 1e-3)
    assert torch.equal(ours["blocks.3.dw.bn.running_mean"], sd["blocks.2.0.bn2.running_mean"])
    assert torch.equal(ours["head.hidden.weight"], sd["conv_head.weight"].flatten(1))


def test_layout_is_recognised_from_the_keys():
    assert detect_layout(list(tv_mobilenet_v3_large().state_dict()), source="torchvision").name == \
        "torchvision mobilenet_v3"
    assert detect_layout(list(timm_mobilenetv3_small_100().state_dict()), source="timm").name == "timm mobilenetv3"
    with pytest.raises(NasError, match="not a timm"):
        detect_layout(list(tv_mobilenet_v3_large().state_dict()), source="timm")


def test_mismatched_checkpoint_names_missing_unexpected_and_misshapen_keys_in_one_line():
    sd = dict(timm_mobilenetv3_large_100().state_dict())
    del sd["blocks.3.1.bn2.running_var"]
    sd["blocks.9.9.extra.weight"] = torch.zeros(3)
    sd["blocks.1.0.conv_pw.weight"] = torch.zeros(60, 16, 1, 1)
    with pytest.raises(NasError) as err:
        convert_state_dict(sd, source="timm", spec=zoo.get("mobilenet_v3_large"))
    message = str(err.value)
    assert "\n" not in message
    assert "1 missing: blocks.3.1.bn2.running_var" in message
    assert "1 unexpected: blocks.9.9.extra.weight" in message
    assert "blocks.1.0.conv_pw.weight [60, 16, 1, 1] (expected [64, 16, 1, 1])" in message


def test_wrong_architecture_is_refused_with_a_reason():
    large = tv_mobilenet_v3_large().state_dict()
    with pytest.raises(NasError, match="efficient head, the architecture a classic head"):
        convert_state_dict(large, source="torchvision", spec=zoo.get("mnasnet_b1"))
    with pytest.raises(NasError, match="it has 15 blocks, the architecture 11; .*missing: .*unexpected: "):
        convert_state_dict(large, source="torchvision", spec=zoo.get("mobilenet_v3_small"))
    sigmoid_se = zoo.get("mobilenet_v3_large").with_layer(3, se_style="mnas")
    with pytest.raises(NasError, match="layers.3.: SE style 'mnas', but the torchvision mobilenet_v3 layout uses 'v3'"):
        convert_state_dict(large, source="torchvision", spec=sigmoid_se)
    with pytest.raises(NasError, match="the checkpoint has 1000 classes, the architecture 10"):
        convert_state_dict(large, source="torchvision", spec=zoo.get("mobilenet_v3_large", num_classes=10))


def test_cli_round_trip_loads_strictly_and_keeps_the_logits(tmp_path, capsys):
    reference = randomize(timm_mobilenetv3_small_100(num_classes=10))
    src, dst = tmp_path / "timm.pth", tmp_path / "out" / "ours.pth"
    torch.save({"state_dict": reference.state_dict(), "epoch": 3}, src)  # a training checkpoint
    assert main(["--from", "timm", str(src), "--arch", "mobilenet_v3_small", "--num-classes", "10",
                 "--out", str(dst)]) == 0
    assert "timm mobilenetv3 layout" in capsys.readouterr().out
    model = build_model(zoo.get("mobilenet_v3_small", num_classes=10))
    model.load_state_dict(torch.load(dst, weights_only=True), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(X), reference(X), atol=1e-4, rtol=0)


def test_cli_bad_input_is_one_error_line(tmp_path, capsys):
    src = tmp_path / "tv.pth"
    torch.save(tv_mobilenet_v3_large().state_dict(), src)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    cases = [
        (["--from", "torchvision", str(src), "--arch", "mnasnet_b1"], "classic head"),
        (["--from", "torchvision", str(tmp_path / "none.pth"), "--arch", "mnasnet_b1"], "no such checkpoint"),
        (["--from", "torchvision", str(garbage), "--arch", "mnasnet_b1"], "unreadable checkpoint"),
        (["--from", "torchvision", str(src), "--arch", "no_such_net"], "unknown architecture"),
    ]
    for argv, expected in cases:
        assert run(main, argv + ["--out", str(tmp_path / "dst.pth")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and expected in err, err
    assert not (tmp_path / "dst.pth").exists()


def test_module_prefix_of_data_parallel_is_removed(tmp_path):
    sd = tv_mobilenet_v3_large().state_dict()
    path = tmp_path / "ddp.pth"
    torch.save({f"module.{k}": v for k, v in sd.items()}, path)
    assert set(load_checkpoint(path)) == set(sd)


def test_timm_stage_split_is_read_from_the_checkpoint():
    # The same network with stages 2 and 3 merged into one (as timm's FBNetV3 mixes widths in a stage).
    arch_def = [*TIMM_V3_SMALL[:2], TIMM_V3_SMALL[2] + TIMM_V3_SMALL[3], *TIMM_V3_SMALL[4:]]
    reference = randomize(TimmMobileNetV3(arch_def, 1024))
    assert "blocks.2.4.conv_pwl.weight" in reference.state_dict()
    _assert_same_logits(_converted_model("timm", reference, "mobilenet_v3_small"), reference)
