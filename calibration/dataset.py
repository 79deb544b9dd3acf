"""In-memory segmentation data and the split into training and held-out samples."""

from __future__ import annotations

import dataclasses

import numpy as np

IGNORE_LABEL = 255  # mask value excluded from loss and metrics (PASCAL VOC's convention)


@dataclasses.dataclass
class SegData:
    """Images as uint8 RGB [N, H, W, 3], masks as uint8 class indices [N, H, W]."""

    images: np.ndarray
    masks: np.ndarray
    labels: tuple[str, ...]
    ids: list[str]  # one name per sample (file stem or synthetic index), for error messages
    source: str  # human-readable description for the report

    def __post_init__(self):
        if self.images.dtype != np.uint8 or self.images.ndim != 4 or self.images.shape[-1] != 3:
            raise ValueError(f"images must be uint8 [N,H,W,3], got {self.images.dtype} {self.images.shape}")
        if self.masks.shape != self.images.shape[:3]:
            raise ValueError(f"masks {self.masks.shape} do not match images {self.images.shape}")
        if len(self.ids) != len(self.images):
            raise ValueError("one id per sample required")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def subset(self, index) -> "SegData":
        index = np.asarray(index, dtype=int)
        return SegData(
            self.images[index], self.masks[index], self.labels, [self.ids[i] for i in index], self.source
        )


@dataclasses.dataclass
class Splits:
    """Training samples (calibration samples are drawn from these) and held-out samples."""

    train: SegData
    val: SegData

    @property
    def labels(self) -> tuple[str, ...]:
        return self.train.labels

    def describe(self) -> dict:
        return {
            "source": self.train.source,
            "train_samples": len(self.train),
            "heldout_samples": len(self.val),
            "heldout_ids": self.val.ids if len(self.val) <= 50 else self.val.ids[:50] + ["..."],
        }


def split_by_id(data: SegData, val_fraction: float, seed: int = 0) -> Splits:
    """Deterministic split on a hash of each sample id, stable when files are added."""
    import zlib

    if len(data) < 2:
        raise ValueError(f"need at least 2 samples to hold some out, got {len(data)} from {data.source}")
    keys = np.array([zlib.crc32(f"{seed}:{i}".encode()) / 2**32 for i in data.ids])
    val = keys < val_fraction
    if not val.any():  # tiny folders: hold out at least one sample
        val[np.argmin(keys)] = True
    if val.all():
        val[np.argmax(keys)] = False
    return Splits(train=data.subset(np.flatnonzero(~val)), val=data.subset(np.flatnonzero(val)))
