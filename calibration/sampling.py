"""Representative samples for int8 calibration, drawn from the training split only.

Stratified: samples are picked greedily so that every class present in the training data
appears in the calibration set (a class the calibrator never sees gets activation ranges
from other classes' statistics), then filled up at random.
"""

from __future__ import annotations

import numpy as np

from calibration.dataset import SegData


def representative_indices(train: SegData, count: int, seed: int = 0) -> tuple[np.ndarray, list[int]]:
    """Indices into `train` and the classes (indices) absent from the chosen samples."""
    count = min(count, len(train))
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(train))
    present = [np.unique(train.masks[i]) for i in order]
    chosen: list[int] = []
    covered: set[int] = set()
    wanted = set(int(c) for c in np.unique(train.masks) if c < train.num_classes)
    for pos, idx in enumerate(order):  # first pass: one sample for each missing class
        if len(chosen) >= count or covered >= wanted:
            break
        new = set(int(c) for c in present[pos]) & (wanted - covered)
        if new:
            chosen.append(int(idx))
            covered |= new
    rest = [int(i) for i in order if int(i) not in set(chosen)]
    chosen += rest[: count - len(chosen)]
    covered_all = set(int(c) for c in np.unique(train.masks[chosen])) if chosen else set()
    missing = [c for c in range(train.num_classes) if c not in covered_all]
    return np.array(sorted(chosen)), missing


def class_coverage(data: SegData, labels=None) -> dict[str, float]:
    """Fraction of labelled pixels per class (the report's calibration table), named by `labels`
    (the model's class names, which may differ from the data's own)."""
    labels = data.labels if labels is None else labels
    counts = np.bincount(data.masks.ravel(), minlength=256)[: len(labels)].astype(float)
    total = counts.sum() or 1.0
    return {label: round(float(c / total), 5) for label, c in zip(labels, counts)}
