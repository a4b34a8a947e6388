"""Cityscapes-layout segmentation data: ``leftImg8bit/<split>/<city>/*_leftImg8bit.png`` images and
``gtFine/<split>/<city>/*_gtFine_labelIds.png`` labels, mapped to the 19 training classes.

Training crops are square ``crop`` patches after a random scale (0.5-2x) and flip; evaluation
runs on whole images scaled by ``eval_scale`` (labels resized by nearest neighbour).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from nas.train.data import MEAN, STD, DataError, default_loader_workers
from nas.train.segmentation import IGNORE_INDEX

# The benchmark's evaluated classes: (labelId, trainId, name); every other labelId is ignored.
TRAIN_CLASSES = (
    (7, 0, "road"), (8, 1, "sidewalk"), (11, 2, "building"), (12, 3, "wall"), (13, 4, "fence"),
    (17, 5, "pole"), (19, 6, "traffic light"), (20, 7, "traffic sign"), (21, 8, "vegetation"),
    (22, 9, "terrain"), (23, 10, "sky"), (24, 11, "person"), (25, 12, "rider"), (26, 13, "car"),
    (27, 14, "truck"), (28, 15, "bus"), (31, 16, "train"), (32, 17, "motorcycle"), (33, 18, "bicycle"),
)
NUM_CLASSES = len(TRAIN_CLASSES)
CLASS_NAMES = tuple(name for _, _, name in TRAIN_CLASSES)


def label_to_train_id() -> np.ndarray:
    """A 256-entry lookup table from Cityscapes labelId to trainId (255 = ignore)."""
    table = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for label_id, train_id, _ in TRAIN_CLASSES:
        table[label_id] = train_id
    return table


def find_pairs(root: Path, split: str) -> list[tuple[Path, Path]]:
    """(image, labelIds) paths of one split, sorted; a missing label is an error."""
    image_dir = root / "leftImg8bit" / split
    if not image_dir.is_dir():
        raise DataError(f"{root}: no leftImg8bit/{split}/ (expected the Cityscapes layout)")
    pairs = []
    for image in sorted(image_dir.glob("*/*_leftImg8bit.png")):
        stem = image.name[: -len("_leftImg8bit.png")]
        label = root / "gtFine" / split / image.parent.name / f"{stem}_gtFine_labelIds.png"
        if not label.is_file():
            raise DataError(f"{image}: no label file {label}")
        pairs.append((image, label))
    if not pairs:
        raise DataError(f"{image_dir}: no *_leftImg8bit.png images")
    return pairs


class CityscapesSegmentation(Dataset):
    """``(normalised float CHW image, int64 HW trainId map)`` items."""

    def __init__(self, pairs: list[tuple[Path, Path]], *, train: bool, crop: int, eval_scale: float = 1.0) -> None:
        self.pairs, self.train, self.crop, self.eval_scale = pairs, train, crop, eval_scale
        self.lookup = torch.from_numpy(label_to_train_id().astype(np.int64))

    def __len__(self) -> int:
        return len(self.pairs)

    def _read(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        from PIL import Image, UnidentifiedImageError

        image_path, label_path = self.pairs[index]
        try:
            with Image.open(image_path) as img:
                image = np.asarray(img.convert("RGB"))
            with Image.open(label_path) as lab:
                label = np.asarray(lab)
        except (OSError, UnidentifiedImageError) as err:
            raise DataError(f"{image_path}: unreadable ({err})") from None
        if label.ndim != 2 or label.shape != image.shape[:2]:
            raise DataError(f"{label_path}: label size {label.shape} does not match image {image.shape[:2]}")
        x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().div_(255)
        y = self.lookup[torch.from_numpy(label.astype(np.int64))]
        return x, y

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self._read(index)
        x, y = self._augment(x, y) if self.train else _scale(x, y, self.eval_scale)
        mean, std = torch.tensor(MEAN).view(3, 1, 1), torch.tensor(STD).view(3, 1, 1)
        return (x - mean) / std, y

    def _augment(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = _scale(x, y, float(torch.empty(()).uniform_(0.5, 2.0)))
        h, w = y.shape
        pad_h, pad_w = max(0, self.crop - h), max(0, self.crop - w)
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
            y = F.pad(y, (0, pad_w, 0, pad_h), value=IGNORE_INDEX)
        h, w = y.shape
        top, left = int(torch.randint(0, h - self.crop + 1, ())), int(torch.randint(0, w - self.crop + 1, ()))
        x, y = x[:, top:top + self.crop, left:left + self.crop], y[top:top + self.crop, left:left + self.crop]
        if torch.rand(()) < 0.5:
            x, y = x.flip(-1), y.flip(-1)
        return x.contiguous(), y.contiguous()


def _scale(x: torch.Tensor, y: torch.Tensor, factor: float) -> tuple[torch.Tensor, torch.Tensor]:
    if factor == 1.0:
        return x, y
    size = (max(1, round(y.shape[0] * factor)), max(1, round(y.shape[1] * factor)))
    x = F.interpolate(x[None], size=size, mode="bilinear", align_corners=False, antialias=factor < 1)[0]
    y = F.interpolate(y[None, None].float(), size=size, mode="nearest")[0, 0].long()
    return x, y


@dataclass(frozen=True)
class SegmentationData:
    """Cityscapes train (cropped, augmented) and val (whole images) splits."""

    train: Dataset
    val: Dataset
    num_classes: int = NUM_CLASSES
    classes: tuple[str, ...] = CLASS_NAMES
    num_workers: int = 0

    def loader(self, split: str, *, batch_size: int, seed: int = 0) -> DataLoader:
        if split not in ("train", "val"):
            raise DataError(f"no {split!r} split in a segmentation dataset (have: train, val)")
        train = split == "train"
        return DataLoader(self.train if train else self.val, batch_size=batch_size if train else 1,
                          shuffle=train, drop_last=train and len(self.train) >= batch_size,
                          generator=torch.Generator().manual_seed(seed), num_workers=self.num_workers)


def load_cityscapes(root: str | Path, *, crop: int = 512, eval_scale: float = 1.0,
                    num_workers: int | None = 0) -> SegmentationData:
    """Open a Cityscapes-layout root (``train`` and ``val`` splits); ``num_workers`` None: as for an ImageFolder."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"{root}: no such dataset directory")
    return SegmentationData(
        train=CityscapesSegmentation(find_pairs(root, "train"), train=True, crop=crop),
        val=CityscapesSegmentation(find_pairs(root, "val"), train=False, crop=crop, eval_scale=eval_scale),
        num_workers=default_loader_workers(root) if num_workers is None else num_workers)
