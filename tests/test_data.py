import os
import pickle
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from nas.errors import NasError
from nas.train.data import Transform, default_loader_workers, holdout_split, load_classification


def _image_folder(root, classes=("cat", "dog", "fish"), per_class=6, size=20):
    rng = np.random.default_rng(0)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 255, (size, size + 4, 3), dtype=np.uint8)
            pixels[..., c] = 255  # class colour, so a label mix-up shows in the pixels
            Image.fromarray(pixels).save(root / name / f"{i}.png")


def test_synthetic_is_deterministic_balanced_and_any_resolution():
    a = load_classification("synthetic", resolution=24, synthetic_train=40, synthetic_val=10, seed=3)
    b = load_classification("synthetic", resolution=24, synthetic_train=40, synthetic_val=10, seed=3)
    c = load_classification("synthetic", resolution=24, synthetic_train=40, synthetic_val=10, seed=4)
    assert (len(a.train), len(a.val), len(a.test), a.num_classes) == (40, 10, 10, 10)
    torch.testing.assert_close(a.val[3][0], b.val[3][0])
    assert not torch.equal(a.val[3][0], c.val[3][0])
    assert sorted(a.train.labels()) == sorted(list(range(10)) * 4)
    assert a.val[0][0].shape == (3, 24, 24)
    big = load_classification("synthetic", resolution=96, synthetic_train=10, synthetic_val=10)
    assert big.train[0][0].shape == (3, 96, 96)


def test_train_augmentation_is_random_eval_is_fixed():
    data = load_classification("synthetic", resolution=32, synthetic_train=10, synthetic_val=10)
    torch.manual_seed(0)
    draws = [data.train[1][0] for _ in range(6)]
    assert any(not torch.equal(draws[0], d) for d in draws[1:])
    torch.testing.assert_close(data.val[1][0], data.val[1][0])


def test_image_folder_root_of_class_folders_holds_out_val_per_class(tmp_path):
    _image_folder(tmp_path)
    data = load_classification(str(tmp_path), resolution=16, val_fraction=0.34, seed=1)
    assert data.classes == ("cat", "dog", "fish") and data.num_classes == 3
    assert data.test is None
    assert len(data.train) + len(data.val) == 18
    assert sorted(data.val.labels()) == [0, 0, 1, 1, 2, 2]
    assert not set(data.train.indices) & set(data.val.indices)
    x, label = data.val[0]
    assert x.shape == (3, 16, 16)
    # The class colour channel is saturated: after normalisation it is the brightest one.
    assert int(x.mean((1, 2)).argmax()) == label


def test_image_folder_with_train_and_test(tmp_path):
    _image_folder(tmp_path / "train")
    _image_folder(tmp_path / "test", per_class=2)
    data = load_classification(str(tmp_path), resolution=80)
    assert len(data.test) == 6
    assert data.train.transform.policy == "rrc"
    batch = next(iter(data.loader("train", batch_size=4)))
    assert batch[0].shape == (4, 3, 80, 80)


def test_cifar_python_batches(tmp_path):
    rng = np.random.default_rng(0)
    for name, n in [("data_batch_1", 12), ("data_batch_2", 8), ("test_batch", 5)]:
        labels = [i % 3 for i in range(n)]
        with open(tmp_path / name, "wb") as fh:
            pickle.dump({b"data": rng.integers(0, 255, (n, 3072), dtype=np.uint8), b"labels": labels}, fh)
    with open(tmp_path / "batches.meta", "wb") as fh:
        pickle.dump({b"label_names": [b"a", b"b", b"c"]}, fh)
    data = load_classification(str(tmp_path), resolution=32, val_fraction=0.25)
    assert data.classes == ("a", "b", "c")
    assert len(data.train) + len(data.val) == 20 and len(data.test) == 5
    assert data.train[0][0].shape == (3, 32, 32)


def test_loader_workers_default_to_a_few_for_image_folders_and_none_for_data_in_memory(tmp_path, monkeypatch):
    from nas.arch import ArchSpec
    from nas.train.recipes import get_recipe
    from nas.train.trainer import TrainConfig, _setup

    folder, cifar = tmp_path / "folder", tmp_path / "cifar"
    _image_folder(folder, per_class=4, size=12)
    cifar.mkdir()
    (cifar / "batches.meta").write_bytes(b"")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert default_loader_workers(folder) == 4  # min(4, 16 - 1): decoding files is worth a few processes
    assert default_loader_workers("synthetic") == 0 and default_loader_workers(cifar) == 0
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")  # torchrun: 8 processes share the 16 CPUs
    assert default_loader_workers(folder) == 1
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert default_loader_workers(folder) == 0
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(3)), raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    assert load_classification(str(folder), num_workers=None).num_workers == 2
    assert load_classification(str(folder)).num_workers == 0  # the library's default stays explicit
    assert load_classification(str(folder), num_workers=1).loader("val", batch_size=2).num_workers == 1
    tiny = ArchSpec.from_string("stem_k3_s2_c8_relu ir_k3_s2_e16_c8_relu head_c16_relu_d0.0_n3")
    config = TrainConfig(arch=tiny, recipe=get_recipe("dli14"), data=str(folder), out=tmp_path / "run", epochs=1,
                         batch_size=4)
    assert config.num_workers is None
    run = _setup(config, device="cpu", world=1, rank=0)
    assert run.loader.num_workers == 2 and run.val_loader.num_workers == 2
    run = _setup(replace(config, num_workers=0), device="cpu", world=1, rank=0)  # --loader-workers 0
    assert run.loader.num_workers == 0 and run.val_loader.num_workers == 0


@pytest.mark.parametrize("make", ["missing", "empty", "corrupt-cifar"])
def test_bad_sources_raise_nas_error(tmp_path, make):
    path = tmp_path / "data"
    if make == "empty":
        path.mkdir()
    elif make == "corrupt-cifar":
        path.mkdir()
        (path / "data_batch_1").write_bytes(b"not a pickle")
    with pytest.raises(NasError, match=str(path)):
        load_classification(str(path))


def test_holdout_split_is_seeded_and_disjoint():
    labels = [i % 4 for i in range(40)]
    train, held = holdout_split(labels, fraction=0.2, seed=0)
    assert holdout_split(labels, fraction=0.2, seed=0) == (train, held)
    assert holdout_split(labels, fraction=0.2, seed=1) != (train, held)
    assert sorted(train + held) == list(range(40)) and len(held) == 8


def test_eval_center_crop_keeps_aspect():
    image = torch.zeros(3, 100, 200, dtype=torch.uint8)
    image[:, :, 90:110] = 255  # a white vertical bar in the centre survives the crop
    out = Transform(64, False, "rrc")(image)
    assert out.shape == (3, 64, 64)
    assert out[:, :, 32].mean() > out[:, :, 2].mean()
