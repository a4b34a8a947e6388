"""Classification data: the built-in synthetic set, ImageFolder directories and CIFAR-10 batches.

Every source yields raw ``uint8`` CHW images; a :class:`Split` picks indices from a source and
applies the train or eval :class:`Transform`, so the validation split held out from ``train``
is seen exactly as the test set is (no augmentation).

Augmentation draws from torch's global RNG, so a seeded run (and a DataLoader with a seeded
``generator``, which also seeds its workers) is reproducible, and a checkpoint that stores the
RNG states resumes the same stream.
"""

from __future__ import annotations

import colorsys
import math
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from nas.errors import NasError

# ImageNet channel statistics; every source is normalised with them so weights move between sources.
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp")
SYNTHETIC_CLASSES = 10
# At or below this resolution images are CIFAR-like: pad-and-crop instead of random-resized-crop.
LOW_RES = 64


class DataError(NasError):
    """A dataset that is missing, empty or unreadable."""


# ------------------------------------------------------------------ transforms


@dataclass(frozen=True)
class Transform:
    """Resize/augment a ``uint8`` CHW image to a normalised float tensor of ``resolution``.

    ``policy`` "pad-crop" (CIFAR style): resize to the resolution, pad by 1/8, random crop, flip.
    ``policy`` "rrc" (ImageNet style): random-resized-crop (area 8-100 %, aspect 3/4-4/3), flip;
    evaluation resizes the short side to ``resolution / 0.875`` and takes the centre crop.
    """

    resolution: int
    train: bool
    policy: str = "pad-crop"

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        x = image.float().div_(255)
        if self.policy == "rrc":
            x = self._random_resized_crop(x) if self.train else self._center_crop(x)
        else:
            x = _resize(x, (self.resolution, self.resolution))
            if self.train:
                x = self._pad_crop(x)
        if self.train and torch.rand(()) < 0.5:
            x = x.flip(-1)
        mean = torch.tensor(MEAN).view(3, 1, 1)
        std = torch.tensor(STD).view(3, 1, 1)
        return (x - mean) / std

    def _pad_crop(self, x: torch.Tensor) -> torch.Tensor:
        pad = max(1, self.resolution // 8)
        x = F.pad(x, (pad, pad, pad, pad))
        top, left = torch.randint(0, 2 * pad + 1, (2,)).tolist()
        return x[:, top:top + self.resolution, left:left + self.resolution]

    def _random_resized_crop(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        for _ in range(10):
            area = h * w * float(torch.empty(()).uniform_(0.08, 1.0))
            ratio = math.exp(float(torch.empty(()).uniform_(math.log(3 / 4), math.log(4 / 3))))
            cw, ch = round(math.sqrt(area * ratio)), round(math.sqrt(area / ratio))
            if 0 < cw <= w and 0 < ch <= h:
                top = int(torch.randint(0, h - ch + 1, ()))
                left = int(torch.randint(0, w - cw + 1, ()))
                return _resize(x[:, top:top + ch, left:left + cw], (self.resolution, self.resolution))
        return self._center_crop(x)

    def _center_crop(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        short = round(self.resolution / 0.875)
        scale = short / min(h, w)
        x = _resize(x, (max(short, round(h * scale)), max(short, round(w * scale))))
        h, w = x.shape[-2:]
        top, left = (h - self.resolution) // 2, (w - self.resolution) // 2
        return x[:, top:top + self.resolution, left:left + self.resolution]


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]


def policy_for(resolution: int) -> str:
    return "pad-crop" if resolution <= LOW_RES else "rrc"


# ------------------------------------------------------------------ sources


class SyntheticImages(Dataset):
    """Procedural 10-class images: a class is a shape (or texture) in a class hue, on a random
    background, at a random place, size and angle, plus pixel noise.

    Learnable by a tiny CNN in a few hundred steps, but not from colour alone (hues jitter into
    their neighbours). Image ``i`` depends only on ``(seed, stream, i)``: deterministic and cheap
    at any resolution, nothing stored.
    """

    def __init__(self, size: int, *, resolution: int, seed: int, stream: int) -> None:
        self.size, self.resolution, self.seed, self.stream = size, resolution, seed, stream

    def __len__(self) -> int:
        return self.size

    def label(self, index: int) -> int:
        return index % SYNTHETIC_CLASSES

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if not 0 <= index < self.size:
            raise IndexError(index)
        label = self.label(index)
        rng = np.random.default_rng([self.seed, self.stream, index])
        image = synthetic_image(rng, label, self.resolution)
        return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))), label


def synthetic_image(rng: np.random.Generator, label: int, resolution: int) -> np.ndarray:
    """One ``uint8`` HWC image of class ``label`` (0-9)."""
    grid = (np.arange(resolution) + 0.5) / resolution
    y, x = np.meshgrid(grid, grid, indexing="ij")
    cx, cy = rng.uniform(0.35, 0.65, 2)
    radius = rng.uniform(0.2, 0.32)
    angle = rng.uniform(0, 2 * np.pi)
    dx = ((x - cx) * np.cos(angle) + (y - cy) * np.sin(angle)) / radius
    dy = (-(x - cx) * np.sin(angle) + (y - cy) * np.cos(angle)) / radius
    freq = 3 + label % 3 + rng.uniform(-0.5, 0.5)
    phase = rng.uniform(0, 2 * np.pi)
    r = np.hypot(dx, dy)
    masks = (
        r < 1,                                                        # disc
        np.maximum(abs(dx), abs(dy)) < 0.8,                           # square
        (dy < 0.5) & (abs(dx) < (dy + 1) * 0.6) & (dy > -1),          # triangle
        (r > 0.55) & (r < 1),                                         # ring
        ((abs(dx) < 0.3) | (abs(dy) < 0.3)) & (np.maximum(abs(dx), abs(dy)) < 1),  # cross
        np.sin(2 * np.pi * freq * y + phase) > 0,                     # horizontal stripes
        np.sin(2 * np.pi * freq * x + phase) > 0,                     # vertical stripes
        np.sin(2 * np.pi * freq * (x + y) / np.sqrt(2) + phase) > 0,  # diagonal stripes
        (np.sin(2 * np.pi * freq * x + phase) * np.sin(2 * np.pi * freq * y)) > 0,  # checker
        np.minimum(np.hypot(dx - 0.55, dy), np.hypot(dx + 0.55, dy)) < 0.4,  # two dots
    )
    mask = masks[label][..., None]
    hue = (label / SYNTHETIC_CLASSES + rng.normal(0, 0.06)) % 1.0
    fg = np.array(colorsys.hsv_to_rgb(hue, rng.uniform(0.6, 1.0), rng.uniform(0.6, 1.0)))
    bg = rng.uniform(0, 1, 3) * rng.uniform(0.2, 0.7)
    image = np.where(mask, fg, bg) + rng.normal(0, 0.08, (resolution, resolution, 3))
    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8)


class ImageFiles(Dataset):
    """Image files decoded with Pillow, as RGB."""

    def __init__(self, paths: Sequence[Path], labels: Sequence[int]) -> None:
        self.paths, self.labels = list(paths), list(labels)

    def __len__(self) -> int:
        return len(self.paths)

    def label(self, index: int) -> int:
        return self.labels[index]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        from PIL import Image, UnidentifiedImageError

        path = self.paths[index]
        try:
            with Image.open(path) as img:
                array = np.asarray(img.convert("RGB"))
        except (OSError, UnidentifiedImageError) as err:
            raise DataError(f"{path}: unreadable image ({err})") from None
        return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1))), self.labels[index]


class ArrayImages(Dataset):
    """Images held in memory as an ``N x H x W x 3`` uint8 array (CIFAR batches)."""

    def __init__(self, images: np.ndarray, labels: Sequence[int]) -> None:
        self.images, self.labels = images, [int(v) for v in labels]

    def __len__(self) -> int:
        return len(self.labels)

    def label(self, index: int) -> int:
        return self.labels[index]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return torch.from_numpy(np.ascontiguousarray(self.images[index].transpose(2, 0, 1))), self.labels[index]


class Split(Dataset):
    """Some indices of a source seen through a transform: ``(float CHW tensor, label)`` items."""

    def __init__(self, source: Dataset, indices: Sequence[int], transform: Transform) -> None:
        self.source, self.indices, self.transform = source, list(indices), transform

    def __len__(self) -> int:
        return len(self.indices)

    def labels(self) -> list[int]:
        return [self.source.label(i) for i in self.indices]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, label = self.source[self.indices[index]]
        return self.transform(image), label


# ------------------------------------------------------------------ the loader entry point

# Decoding JPEGs keeps a GPU (or the training process) waiting; a few worker processes hide it.
MAX_LOADER_WORKERS = 4


def default_loader_workers(source: str | Path) -> int:
    """DataLoader workers for ``source`` when none are asked for: ``min(4, CPUs - 1)`` for image
    files read and decoded from disk (an ImageFolder, Cityscapes), 0 for images already in
    memory (``synthetic``, CIFAR-10 batches), where another process only adds copying.

    The CPUs are this process's share: ``torchrun`` starts ``LOCAL_WORLD_SIZE`` of them per machine.
    """
    if str(source) == "synthetic" or _is_cifar(Path(source).expanduser()):
        return 0
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    share = cpus // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(0, min(MAX_LOADER_WORKERS, share - 1))


@dataclass(frozen=True)
class ClassificationData:
    """Train (augmented), a fixed validation split held out from train, optional test."""

    train: Dataset
    val: Dataset
    test: Dataset | None
    num_classes: int
    resolution: int
    classes: tuple[str, ...] = ()
    num_workers: int = 0

    def loader(self, split: str, *, batch_size: int, seed: int = 0, drop_last: bool | None = None) -> DataLoader:
        """A DataLoader over ``train`` (shuffled by ``seed``), ``val`` or ``test`` (in order)."""
        dataset = {"train": self.train, "val": self.val, "test": self.test}.get(split)
        if dataset is None:
            raise DataError(f"no {split!r} split in this dataset (have: train, val"
                            f"{', test' if self.test is not None else ''})")
        train = split == "train"
        generator = torch.Generator().manual_seed(seed)
        return DataLoader(dataset, batch_size=batch_size, shuffle=train, generator=generator,
                          drop_last=(train and len(dataset) >= batch_size) if drop_last is None else drop_last,
                          num_workers=self.num_workers, persistent_workers=False)


def load_classification(source: str, *, resolution: int = 32, val_fraction: float = 0.1, seed: int = 0,
                        synthetic_train: int = 2000, synthetic_val: int = 500,
                        num_workers: int | None = 0) -> ClassificationData:
    """Open ``source``: ``"synthetic"``, an ImageFolder directory or a CIFAR-10 python-batches directory.

    >>> data = load_classification("synthetic", synthetic_train=100, synthetic_val=20)
    >>> len(data.train), len(data.val), data.num_classes
    (100, 20, 10)

    ImageFolder: a root holding ``train/`` (and optionally ``test/`` or ``val/``, used as the
    test set), or a root of class folders; classes are the sorted folder names. The validation
    split is ``val_fraction`` of train per class, chosen by ``seed``. ``num_workers`` None picks
    :func:`default_loader_workers` for ``source``.
    """
    if num_workers is None:
        num_workers = default_loader_workers(source)
    if resolution < 8:
        raise DataError(f"resolution must be at least 8, got {resolution}")
    if not 0 < val_fraction < 1:
        raise DataError(f"val_fraction must lie in (0, 1), got {val_fraction}")
    train_tf, eval_tf = Transform(resolution, True), Transform(resolution, False)
    if source == "synthetic":
        if synthetic_train < 1 or synthetic_val < 1:
            raise DataError("synthetic_train and synthetic_val must be positive")
        pool = SyntheticImages(synthetic_train + synthetic_val, resolution=resolution, seed=seed, stream=0)
        test = SyntheticImages(synthetic_val, resolution=resolution, seed=seed, stream=1)
        return ClassificationData(
            train=Split(pool, range(synthetic_train), train_tf),
            val=Split(pool, range(synthetic_train, synthetic_train + synthetic_val), eval_tf),
            test=Split(test, range(len(test)), eval_tf),
            num_classes=SYNTHETIC_CLASSES, resolution=resolution,
            classes=tuple(f"class{i}" for i in range(SYNTHETIC_CLASSES)), num_workers=num_workers)
    root = Path(source).expanduser()
    if not root.is_dir():
        raise DataError(f"{source}: no such dataset directory (give a path or 'synthetic')")
    if _is_cifar(root):
        train_src, test_src, classes = _read_cifar(root)
        train_tf, eval_tf = Transform(resolution, True, "pad-crop"), Transform(resolution, False, "pad-crop")
    else:
        train_src, test_src, classes = _read_image_folder(root)
        policy = policy_for(resolution)
        train_tf, eval_tf = Transform(resolution, True, policy), Transform(resolution, False, policy)
    train_idx, val_idx = holdout_split([train_src.label(i) for i in range(len(train_src))],
                                       fraction=val_fraction, seed=seed)
    if not train_idx or not val_idx:
        raise DataError(f"{source}: too few training images ({len(train_src)}) to hold out a validation split")
    return ClassificationData(
        train=Split(train_src, train_idx, train_tf),
        val=Split(train_src, val_idx, eval_tf),
        test=None if test_src is None else Split(test_src, range(len(test_src)), eval_tf),
        num_classes=len(classes), resolution=resolution, classes=tuple(classes), num_workers=num_workers)


def _is_cifar(root: Path) -> bool:
    return (root / "batches.meta").is_file() or (root / "data_batch_1").is_file()


def holdout_split(labels: Sequence[int], *, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Per-class random split: (train indices, held-out indices), both sorted.

    Each class with at least two images gives ``max(1, round(n * fraction))`` of them.
    """
    rng = np.random.default_rng(seed)
    by_class: dict[int, list[int]] = {}
    for index, label in enumerate(labels):
        by_class.setdefault(int(label), []).append(index)
    held: list[int] = []
    for label in sorted(by_class):
        members = by_class[label]
        if len(members) < 2:
            continue
        count = min(len(members) - 1, max(1, round(len(members) * fraction)))
        held.extend(rng.permutation(members)[:count].tolist())
    held_set = set(held)
    return [i for i in range(len(labels)) if i not in held_set], sorted(held)


def _class_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _scan(root: Path, classes: list[str]) -> ImageFiles:
    paths, labels = [], []
    for label, name in enumerate(classes):
        folder = root / name
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*")):
            if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
                paths.append(path)
                labels.append(label)
    return ImageFiles(paths, labels)


def _read_image_folder(root: Path) -> tuple[ImageFiles, ImageFiles | None, list[str]]:
    train_root = root / "train" if (root / "train").is_dir() else root
    classes = [p.name for p in _class_folders(train_root)]
    if not classes:
        raise DataError(f"{root}: no class folders (expected ROOT/train/<class>/*.jpg or ROOT/<class>/*.jpg)")
    train = _scan(train_root, classes)
    if len(train) == 0:
        raise DataError(f"{train_root}: no images ({', '.join(IMAGE_SUFFIXES)}) in the class folders")
    test = None
    if train_root != root:
        test_root = next((root / n for n in ("test", "val") if (root / n).is_dir()), None)
        if test_root is not None:
            unknown = sorted({p.name for p in _class_folders(test_root)} - set(classes))
            if unknown:
                raise DataError(f"{test_root}: class folder {unknown[0]!r} does not exist in train/")
            test = _scan(test_root, classes)
            if len(test) == 0:
                test = None
    return train, test, classes


def _unpickle(path: Path) -> dict:
    try:
        with path.open("rb") as fh:
            return pickle.load(fh, encoding="bytes")
    except (OSError, pickle.UnpicklingError, EOFError, ValueError) as err:
        raise DataError(f"{path}: not a CIFAR-10 python batch ({err})") from None


def _cifar_batch(path: Path) -> tuple[np.ndarray, list[int]]:
    batch = _unpickle(path)
    data, labels = batch.get(b"data"), batch.get(b"labels")
    if data is None or labels is None:
        raise DataError(f"{path}: a CIFAR-10 batch needs 'data' and 'labels'")
    data = np.asarray(data, dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(labels):
        raise DataError(f"{path}: expected an N x 3072 'data' array with N labels, got {data.shape}")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), list(labels)


def _read_cifar(root: Path) -> tuple[ArrayImages, ArrayImages | None, list[str]]:
    batches = sorted(root.glob("data_batch_*"))
    if not batches:
        raise DataError(f"{root}: CIFAR-10 directory without data_batch_1..5")
    parts = [_cifar_batch(p) for p in batches]
    images = np.concatenate([p[0] for p in parts])
    labels = [label for p in parts for label in p[1]]
    classes = [f"class{i}" for i in range(max(labels) + 1)]
    if (root / "batches.meta").is_file():
        names = _unpickle(root / "batches.meta").get(b"label_names")
        if names:
            classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    if max(labels) >= len(classes) or min(labels) < 0:
        raise DataError(f"{root}: labels outside 0..{len(classes) - 1}")
    test = None
    if (root / "test_batch").is_file():
        test = ArrayImages(*_cifar_batch(root / "test_batch"))
    return ArrayImages(images, labels), test, classes
