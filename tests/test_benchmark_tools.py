"""Helpers the benchmark scripts share: the ImageFolder subset, the ranking benchmark's supernet checks."""

import importlib.util
from pathlib import Path

import pytest

from nas.errors import NasError

ROOT = Path(__file__).resolve().parents[1]


def _load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "experiments" / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_imagefolder_subset_takes_the_first_files_of_every_class(tmp_path):
    subset = _load("imagefolder_subset")
    for split in ("train", "test"):
        for cls in ("cat", "dog"):
            folder = tmp_path / "src" / split / cls
            folder.mkdir(parents=True)
            for i in (3, 1, 2, 0):
                (folder / f"{i}.jpg").write_bytes(bytes([i]))
    made = subset.make_subset(tmp_path / "src", tmp_path / "sub", {"train": 2, "test": 1})
    assert made == {"train": 4, "test": 2}
    assert sorted(p.name for p in (tmp_path / "sub" / "train" / "dog").iterdir()) == ["0.jpg", "1.jpg"]
    assert (tmp_path / "sub" / "test" / "cat" / "0.jpg").read_bytes() == bytes([0])
    assert subset.main([str(tmp_path / "src"), str(tmp_path / "sub"), "--per-class", "train=2"]) == 0  # rerun: same
    with pytest.raises(NasError, match="fewer than the 5 asked for"):
        subset.make_subset(tmp_path / "src", tmp_path / "more", {"train": 5})


def test_the_ranking_benchmark_scores_only_supernets_trained_on_its_split(tmp_path):
    from nas.search.evaluate import ProxySettings
    from nas.supernet.training import SupernetSettings, train_supernet

    ranking = _load("supernet_ranking")
    tiny = dict(space="mobilenetv3-small-shared", resolution=8, synthetic_train=64, synthetic_val=32, batch_size=32)
    train_supernet(SupernetSettings(**tiny, epochs=2, lr=0.02), tmp_path / "lr02", progress=False, stop_after=1)
    base = ProxySettings(resolution=8, synthetic_train=64, synthetic_val=32)
    with pytest.raises(NasError, match="trained for 1 of its 2 epochs"):
        ranking._check_trained(tmp_path / "lr02", base, "mobilenetv3-small-shared")
    train_supernet(SupernetSettings(**tiny, epochs=2, lr=0.02), tmp_path / "lr02", progress=False, resume=True)
    assert ranking._check_trained(tmp_path / "lr02", base, "mobilenetv3-small-shared").lr == 0.02
    with pytest.raises(NasError, match="trained with resolution 8, this benchmark uses 16"):
        ranking._check_trained(tmp_path / "lr02", ProxySettings(resolution=16, synthetic_train=64, synthetic_val=32),
                               "mobilenetv3-small-shared")
    with pytest.raises(NasError, match="trained with space 'mobilenetv3-small-shared', this benchmark uses"):
        ranking._check_trained(tmp_path / "lr02", base, "mobilenetv3-shared")
