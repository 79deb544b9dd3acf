"""Data checks from the seed's list of what goes wrong in training data.

Each check raises DataError naming the offending file, so a user fixes the data instead of
debugging a model that learned nothing: NaN/inf pixels, masks paired with the wrong image
(different size), labels outside the class range, images without masks and vice versa.
"""

from __future__ import annotations

import numpy as np

from calibration.dataset import IGNORE_LABEL
from exporter.errors import DataError


def check_finite(array: np.ndarray, what: str) -> None:
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        bad = int(np.size(array) - np.isfinite(array).sum())
        raise DataError(f"{what}: contains {bad} NaN or infinite value(s)")


def check_labels(mask: np.ndarray, num_classes: int, what: str) -> None:
    values = np.unique(mask)
    bad = values[(values >= num_classes) & (values != IGNORE_LABEL)]
    if bad.size:
        shown = ", ".join(str(int(v)) for v in bad[:8])
        raise DataError(
            f"{what}: label value(s) {shown} outside 0..{num_classes - 1} "
            f"(and {IGNORE_LABEL} = ignore); wrong mask format or wrong --classes?"
        )


def check_pairs(image_stems: set[str], mask_stems: set[str], image_dir, mask_dir) -> None:
    """Every image has a mask and every mask an image, paired by file stem."""
    no_mask = sorted(image_stems - mask_stems)
    if no_mask:
        raise DataError(f"{image_dir}/{no_mask[0]}.*: image has no mask in {mask_dir} ({len(no_mask)} such image(s))")
    no_image = sorted(mask_stems - image_stems)
    if no_image:
        raise DataError(f"{mask_dir}/{no_image[0]}.*: mask has no image in {image_dir} ({len(no_image)} such mask(s))")
