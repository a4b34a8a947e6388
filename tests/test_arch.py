import json

import pytest

from nas import zoo
from nas.arch import ArchSpec, HeadSpec, LayerSpec, SpecError, StemSpec, make_divisible

TINY = "stem_k3_s2_c8_relu ir_k3_s1_e16_c8_se0.25_relu_skip ds_k5_s2_e8_c16_hswish head_c32_h64_hswish_d0.1_n10"


def test_make_divisible_follows_tf_slim():
    assert make_divisible(18) == 24  # rounding down to 16 would lose more than 10 %
    assert make_divisible(30) == 32
    assert make_divisible(3) == 8
    assert make_divisible(88.08) == 88


@pytest.mark.parametrize("name", zoo.names())
def test_string_and_json_round_trip_every_zoo_model(name):
    spec = zoo.get(name)
    assert ArchSpec.from_string(spec.to_string()) == spec
    assert ArchSpec.from_string(spec.to_string("\n")) == spec
    assert ArchSpec.from_json(spec.to_json()) == spec
    assert ArchSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


def test_string_form_is_readable_and_exact():
    spec = ArchSpec.from_string(TINY)
    assert spec.stem == StemSpec(channels=8, kernel=3, stride=2, act="relu")
    assert spec.layers[0] == LayerSpec("ir", 3, 1, 16, 8, se_ratio=0.25, se_style="mnas", act="relu", residual=True)
    assert spec.layers[1].op == "ds" and spec.layers[1].act == "hswish" and not spec.layers[1].residual
    assert spec.head == HeadSpec(channels=32, hidden=64, act="hswish", dropout=0.1, num_classes=10)
    assert spec.to_string() == TINY


def test_se_widths_follow_each_style():
    mnas = LayerSpec("ir", 3, 1, 120, 40, se_ratio=0.25, se_style="mnas")
    v3 = LayerSpec("ir", 3, 1, 120, 40, se_ratio=0.25, se_style="v3")
    assert mnas.se_channels(40) == 10  # from the block input
    assert v3.se_channels(40) == 32  # make_divisible(120 / 4, 8)
    assert LayerSpec("ir", 3, 1, 72, 24, se_ratio=0.25, se_style="v3").se_channels(24) == 24


def test_se_style_without_se_is_canonical():
    assert LayerSpec("ir", 3, 1, 16, 8, se_style="v3") == LayerSpec("ir", 3, 1, 16, 8)


@pytest.mark.parametrize("text, field", [
    (TINY.replace("k5", "k9"), "layers[1].kernel"),
    (TINY.replace("_s1_e16", "_s2_e16"), "layers[0].residual"),
    (TINY.replace("ds_k5_s2_e8", "ds_k5_s2_e12"), "layers[1].exp"),
    (TINY.replace("_relu_skip", "_gelu_skip"), "cannot read 'gelu'"),
    (TINY.replace("stem_k3_s2_c8_relu ", ""), "first token must be the stem"),
    (TINY.replace("_d0.1", "_d1.5"), "head.dropout"),
    (TINY.replace("_c8_relu ir", "_c0_relu ir"), "stem.channels"),
])
def test_invalid_specs_name_the_bad_field(text, field):
    with pytest.raises(SpecError, match=field.replace("[", r"\[").replace("]", r"\]")):
        ArchSpec.from_string(text)


def test_json_rejects_unknown_and_missing_fields():
    data = ArchSpec.from_string(TINY).to_dict()
    data["layers"][0]["expansion"] = 6
    with pytest.raises(SpecError, match=r"layers\[0\]\.expansion: unknown field"):
        ArchSpec.from_dict(data)
    data = ArchSpec.from_string(TINY).to_dict()
    del data["layers"][1]["out"]
    with pytest.raises(SpecError, match=r"layers\[1\]\.out: missing"):
        ArchSpec.from_dict(data)
    with pytest.raises(SpecError, match="spec JSON"):
        ArchSpec.from_json("{not json")


def test_with_layer_revalidates():
    spec = ArchSpec.from_string(TINY)
    assert spec.with_layer(0, exp=24).layers[0].exp == 24
    with pytest.raises(SpecError, match=r"layers\[0\]\.residual"):
        spec.with_layer(0, out=16)


def test_resolve_accepts_names_strings_json_and_files(tmp_path):
    spec = ArchSpec.from_string(TINY)
    assert zoo.resolve(TINY) == spec
    assert zoo.resolve(spec.to_json()) == spec
    path = tmp_path / "net.json"
    path.write_text(spec.to_json(indent=2))
    assert zoo.resolve(str(path)) == spec
    assert zoo.resolve("mobilenet_v3_small_075") == zoo.get("mobilenet_v3_small", 0.75)
    assert zoo.resolve(TINY, num_classes=3).head.num_classes == 3
    with pytest.raises(SpecError, match="unknown architecture 'resnet50'"):
        zoo.resolve("resnet50")
    with pytest.raises(SpecError, match="neither a zoo name"):
        zoo.resolve(str(tmp_path / "missing.txt"))
