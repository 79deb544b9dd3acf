"""Data checks from the seed's list of what goes wrong in training data.

Each check raises `BadFile` (a DataError) naming the offending file, so a user fixes the data
instead of debugging a model that learned nothing: NaN/inf pixels, masks paired with the wrong
image (different size), labels outside the class range, masks that are not single-channel class
indices, images without masks and vice versa, two files sharing a stem. The loaders in
`calibration.sources` stop at the first one; `calibration.audit` (`exporter check-data`) runs the
same checks over every file and collects them. This module is the one place for each decision
and its wording.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from calibration.dataset import IGNORE_LABEL
from exporter.errors import DataError

# Mask modes whose pixel values are the class indices as stored (palette PNGs, VOC's format,
# hold them in the palette index; "1" is a bilevel 0/1 mask).
RAW_MASK_MODES = ("1", "L", "P", "I", "I;16", "I;16L", "I;16B", "F")


class BadFile(DataError):
    """A problem with one file: `kind` says which check found it (for check-data's JSON)."""

    def __init__(self, path, kind: str, detail: str):
        super().__init__(f"{path}: {detail}")
        self.path, self.kind, self.detail = str(path), kind, detail


def finite_problem(array: np.ndarray) -> str | None:
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        bad = int(np.size(array) - np.isfinite(array).sum())
        return f"contains {bad} NaN or infinite value(s)"
    return None


def check_finite(array: np.ndarray, what: str) -> None:
    problem = finite_problem(array)
    if problem:
        raise BadFile(what, "nan", problem)


def label_problem(values, num_classes: int) -> str | None:
    """The message for label values (those present in a mask) outside 0..num_classes-1 and 255."""
    values = np.asarray(values)
    bad = values[(values >= num_classes) & (values != IGNORE_LABEL)]
    if bad.size:
        shown = ", ".join(str(int(v)) for v in bad[:8]) + (", ..." if bad.size > 8 else "")
        return (f"label value(s) {shown} outside 0..{num_classes - 1} "
                f"(and {IGNORE_LABEL} = ignore); wrong mask format or wrong --classes?")
    return None


def check_labels(mask: np.ndarray, num_classes: int, what: str) -> None:
    problem = label_problem(np.unique(mask), num_classes)
    if problem:
        raise BadFile(what, "labels", problem)


def no_mask(image: Path, mask_dir) -> BadFile:
    return BadFile(image, "no-mask", f"image has no mask in {mask_dir}")


def no_image(mask: Path, image_dir) -> BadFile:
    return BadFile(mask, "no-image", f"mask has no image in {image_dir}")


def check_pairs(images: dict[str, Path], masks: dict[str, Path], image_dir, mask_dir) -> None:
    """Every image has a mask and every mask an image, paired by file stem (stem -> path)."""
    missing = sorted(set(images) - set(masks))
    if missing:
        err = no_mask(images[missing[0]], mask_dir)
        raise BadFile(err.path, err.kind, f"{err.detail} ({len(missing)} such image(s))")
    missing = sorted(set(masks) - set(images))
    if missing:
        err = no_image(masks[missing[0]], image_dir)
        raise BadFile(err.path, err.kind, f"{err.detail} ({len(missing)} such mask(s))")


def duplicate_stem(path: Path, first: Path) -> BadFile:
    return BadFile(path, "duplicate", f"two files share the stem {path.stem!r} ({first.name}); "
                                      "which one is meant?")


def image_array_check(im, path: Path) -> None:
    """A decoded image: float images (e.g. 32-bit TIFF) must hold finite values."""
    if im.mode == "F" or im.mode.startswith("F;"):
        check_finite(np.asarray(im), str(path))


def mask_array(im, path: Path) -> np.ndarray:
    """A decoded mask as uint8 class indices [H, W]; raises BadFile when it is not one."""
    mode = im.mode
    if mode in RAW_MASK_MODES:
        arr = np.asarray(im)
    elif mode in ("LA", "PA"):  # grey or palette plus alpha: the first band holds the indices
        arr = np.asarray(im.getchannel(0))
    elif mode in ("RGB", "RGBA", "RGBX"):
        rgb = np.asarray(im.convert("RGB") if mode != "RGB" else im)
        # A grey mask saved as RGB (all three channels equal) is lossless; colours are not indices.
        if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])):
            raise BadFile(path, "rgb-mask", f"RGB mask ({mode}, {im.width}x{im.height}): masks must be "
                          "single-channel class indices (8-bit grey or palette PNG); a colour rendering "
                          "of the classes (e.g. a palette PNG saved as RGB) was given")
        arr = rgb[..., 0]
    else:
        raise BadFile(path, "channels", f"mask must be single-channel class indices, got image mode {mode} "
                      f"with {len(im.getbands())} band(s)")
    if arr.ndim != 2:
        raise BadFile(path, "channels", f"mask must be single-channel class indices, got shape {arr.shape}")
    check_finite(arr, str(path))
    if np.issubdtype(arr.dtype, np.floating) and not np.all(arr == np.round(arr)):
        raise BadFile(path, "labels", "mask holds non-integer values; masks are class indices")
    if arr.dtype != np.bool_ and arr.dtype != np.uint8 and (arr.min() < 0 or arr.max() > 255):
        raise BadFile(path, "labels", "label values outside 0..255")
    return arr.astype(np.uint8, copy=False)


def check_same_size(mask: np.ndarray, image_size: tuple[int, int], mask_path: Path, img_path: Path) -> None:
    """`image_size` is PIL's (width, height)."""
    width, height = image_size
    if mask.shape != (height, width):
        raise BadFile(mask_path, "size", f"mask is {mask.shape[1]}x{mask.shape[0]} but its image "
                      f"{Path(img_path).name} is {width}x{height}; mismatched pair?")
