import numpy as np
import pytest
import torch
from PIL import Image

from nas import zoo
from nas.arch import ArchSpec
from nas.errors import NasError
from nas.train.cityscapes import NUM_CLASSES, label_to_train_id, load_cityscapes
from nas.train.recipes import get_recipe
from nas.train.segmentation import (
    build_segmentation_model, class_iou, confusion_matrix, low_level_index, mean_iou, pixel_accuracy, reduce_tail,
)
from nas.train.trainer import TrainConfig, fit, load_trained

SEG = ArchSpec.from_string(
    "stem_k3_s2_c8_relu ir_k3_s2_e16_c8_relu ir_k3_s2_e24_c16_relu ir_k3_s1_e48_c16_relu_skip "
    "ir_k3_s2_e48_c24_hse0.25_hswish head_c32_relu_d0.0_n10"
)
# labelId -> colour: road (7), sky (23), car (26); labelId 0 (unlabeled) is ignored.
COLOURS = {7: (90, 90, 90), 23: (70, 130, 230), 26: (220, 30, 30), 0: (0, 0, 0)}


def make_cityscapes(root, counts=(("train", 16), ("val", 2)), size=(32, 64)):
    rng = np.random.default_rng(0)
    h, w = size
    for split, n in counts:
        for i in range(n):
            city = f"city{i % 2}"
            labels = np.full((h, w), 23, np.uint8)
            labels[h // 2:] = 7
            top, left = rng.integers(h // 4, h // 2), rng.integers(0, w - 16)
            labels[top:top + 10, left:left + 16] = 26
            labels[:2] = 0
            image = np.zeros((h, w, 3), np.float64)
            for label_id, colour in COLOURS.items():
                image[labels == label_id] = colour
            image = np.clip(image + rng.normal(0, 20, image.shape), 0, 255).astype(np.uint8)
            for kind, array, suffix in (("leftImg8bit", image, "leftImg8bit"), ("gtFine", labels, "gtFine_labelIds")):
                folder = root / kind / split / city
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(array).save(folder / f"{city}_{i:06d}_000019_{suffix}.png")
    return root


def test_lraspp_trains_on_cityscapes_layout_and_reports_miou(tmp_path):
    root = make_cityscapes(tmp_path / "cs")
    config = TrainConfig(arch=SEG, recipe=get_recipe("dli14").with_overrides(lr=6.4, label_smoothing=0.0),
                         data=str(root), out=tmp_path / "run", epochs=6, batch_size=4, resolution=32,
                         task="segmentation", output_stride=8)
    result = fit(config, progress=False)
    assert {"miou", "pixel_accuracy", "loss"} <= set(result.final)
    assert result.final["miou"] > 0.3 and result.final["pixel_accuracy"] > 0.6
    model, _, _ = load_trained(tmp_path / "run")
    x = torch.randn(1, 3, 40, 72)
    assert model(x).shape == (1, NUM_CLASSES, 40, 72)


def test_cityscapes_reader_maps_label_ids_to_train_ids(tmp_path):
    data = load_cityscapes(make_cityscapes(tmp_path, counts=(("train", 1), ("val", 1))), crop=16)
    image, target = data.val[0]
    assert image.shape == (3, 32, 64) and target.shape == (32, 64)
    assert set(torch.unique(target).tolist()) == {0, 10, 13, 255}  # road, sky, car, ignore
    crop, crop_target = data.train[0]
    assert crop.shape == (3, 16, 16) and crop_target.shape == (16, 16)
    table = label_to_train_id()
    assert table[7] == 0 and table[33] == 18 and table[0] == 255 and (table < 19).sum() == 19
    (tmp_path / "empty").mkdir()
    with pytest.raises(NasError, match="leftImg8bit"):
        load_cityscapes(tmp_path / "empty")


@pytest.mark.parametrize("head,output_stride", [("lraspp", 16), ("lraspp", 8), ("fcn", 16)])
def test_output_size_equals_input_size(head, output_stride):
    model = build_segmentation_model(SEG, num_classes=5, head=head, output_stride=output_stride).eval()
    x = torch.randn(2, 3, 48, 80)
    assert model(x).shape == (2, 5, 48, 80)


def test_lraspp_v3_large_matches_published_size_and_reduced_tail_halves_it():
    spec = zoo.get("mobilenet_v3_large")
    full = build_segmentation_model(spec, num_classes=21)
    assert sum(p.numel() for p in full.parameters()) == 3_221_538  # torchvision's lraspp_mobilenet_v3_large
    reduced = reduce_tail(spec)
    assert reduced.layers[-1].out == 80 and reduced.head.channels == 480 and reduced.layers[-3].exp == 672
    assert spec.layers[low_level_index(spec)].out == 40
    fcn = build_segmentation_model(zoo.get("mobilenet_v2"), num_classes=19, head="fcn")
    assert fcn(torch.randn(1, 3, 64, 64)).shape == (1, 19, 64, 64)


def test_confusion_matrix_and_miou():
    target = np.array([[0, 0, 1], [1, 2, 255]])
    pred = np.array([[0, 1, 1], [1, 2, 0]])
    conf = confusion_matrix(pred, target, 4)
    assert conf.sum() == 5 and conf[0, 0] == 1 and conf[0, 1] == 1 and conf[1, 1] == 2
    iou = class_iou(conf)
    np.testing.assert_allclose(iou[:3], [1 / 2, 2 / 3, 1.0])
    assert np.isnan(iou[3])  # absent everywhere: not counted
    assert mean_iou(conf) == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    assert pixel_accuracy(conf) == pytest.approx(4 / 5)
    with pytest.raises(NasError, match="outside"):
        confusion_matrix(np.array([0]), np.array([7]), 4)


def test_reduced_tail_checkpoint_loads_back_as_trained(tmp_path):
    root = make_cityscapes(tmp_path / "cs", counts=(("train", 4), ("val", 1)))
    config = TrainConfig(arch=SEG, recipe=get_recipe("dli14"), data=str(root), out=tmp_path / "run", epochs=1,
                         batch_size=4, resolution=32, task="segmentation", output_stride=16, reduced_tail=True)
    fit(config, progress=False)
    model, spec, _ = load_trained(tmp_path / "run", use_ema=False)
    assert spec.layers[-1].out < SEG.layers[-1].out  # the stored spec is the reduced one
    assert model(torch.randn(1, 3, 32, 64)).shape == (1, NUM_CLASSES, 32, 64)
