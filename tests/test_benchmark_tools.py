"""Helpers the benchmark scripts share: the ImageFolder subset that real-data benchmarks run on."""

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
