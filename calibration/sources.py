"""Dataset sources: built-in synthetic scenes and image/mask folders on local disk.

`load_splits(spec, ...)` is the one entry point. A spec is `synthetic`, a folder (layout
detected), or `folder:DIR`, `pet:DIR`, `voc:DIR` to name the layout. Images are resized
bilinearly; masks with nearest neighbour only (bilinear invents labels along edges).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from calibration.checks import check_finite, check_labels, check_pairs
from calibration.dataset import SegData, Splits, split_by_id
from calibration.synthetic import synthetic_splits
from exporter.errors import DataError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
PET_LABELS = ("pet", "background", "border")  # trimap values 1, 2, 3
VOC_LABELS = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)
LAYOUTS = ("synthetic", "folder", "pet", "voc")


def load_splits(
    spec: str,
    size: tuple[int, int],
    num_classes: int,
    *,
    train_samples: int = 400,
    val_samples: int = 100,
    val_fraction: float = 0.2,
    max_samples: int | None = None,
    seed: int = 0,
) -> Splits:
    """Training and held-out samples at the model's input size."""
    layout, root = _parse(spec)
    if layout == "synthetic":
        return synthetic_splits(train_samples, val_samples, size, num_classes, seed)
    if not root.is_dir():
        raise DataError(f"{root}: data folder not found")
    if layout is None:
        layout = detect_layout(root)
    loader = {"folder": _folder_pairs, "pet": _pet_pairs, "voc": _voc_pairs}[layout]
    pairs, labels, value_map, official_val = loader(root)
    if labels is None:
        labels = _labels_file(root) or tuple(f"class_{i}" for i in range(num_classes))
    if len(labels) != num_classes:
        # The data decides the class count when it names its classes.
        num_classes = len(labels)
    if max_samples is not None:
        pairs = pairs[:max_samples]
    data = _read_pairs(pairs, size, num_classes, labels, value_map, f"{layout} folder {root}")
    if official_val is not None:
        val = np.array([i in official_val for i in data.ids])
        if val.any() and not val.all():
            return Splits(data.subset(np.flatnonzero(~val)), data.subset(np.flatnonzero(val)))
    return split_by_id(data, val_fraction, seed)


def detect_layout(root: Path) -> str:
    if (root / "JPEGImages").is_dir() and (root / "SegmentationClass").is_dir():
        return "voc"
    if (root / "images").is_dir() and (root / "annotations" / "trimaps").is_dir():
        return "pet"
    if (root / "images").is_dir() and (root / "masks").is_dir():
        return "folder"
    raise DataError(
        f"{root}: unknown data layout; expected images/ + masks/, images/ + annotations/trimaps/ "
        "(Oxford-IIIT Pet) or JPEGImages/ + SegmentationClass/ (PASCAL VOC)"
    )


def _parse(spec: str) -> tuple[str | None, Path | None]:
    if spec == "synthetic":
        return "synthetic", None
    layout, sep, rest = spec.partition(":")
    if sep and layout in LAYOUTS[1:]:
        return layout, Path(rest)
    return None, Path(spec)


def _stems(folder: Path, suffixes=IMAGE_SUFFIXES) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in suffixes:
            if p.stem in found:
                raise DataError(f"{p}: two files share the stem {p.stem!r} ({found[p.stem].name})")
            found[p.stem] = p
    return found


def _paired(image_dir: Path, mask_dir: Path, mask_suffixes=IMAGE_SUFFIXES, only=None):
    images, masks = _stems(image_dir), _stems(mask_dir, mask_suffixes)
    if only is not None:
        images = {k: v for k, v in images.items() if k in only}
        masks = {k: v for k, v in masks.items() if k in only}
    check_pairs(set(images), set(masks), image_dir, mask_dir)
    if not images:
        raise DataError(f"{image_dir}: no images found")
    return [(images[k], masks[k]) for k in sorted(images)]


def _folder_pairs(root: Path):
    return _paired(root / "images", root / "masks"), None, None, None


def _pet_pairs(root: Path):
    # Trimaps exist for every image; stray files (the dataset ships a few .mat images) are
    # skipped by suffix. Values 1..3 become 0..2.
    pairs = _paired(root / "images", root / "annotations" / "trimaps", {".png"})
    value_map = np.full(256, 255, np.uint8)
    value_map[1:4] = [0, 1, 2]
    return pairs, PET_LABELS, value_map, None


def _voc_pairs(root: Path):
    # Only images that have a segmentation mask take part; the official val list is respected.
    masks = _stems(root / "SegmentationClass", {".png"})
    lists = root / "ImageSets" / "Segmentation"
    official_val = None
    if (lists / "val.txt").is_file():
        official_val = set((lists / "val.txt").read_text().split())
    pairs = _paired(root / "JPEGImages", root / "SegmentationClass", {".png"}, only=set(masks))
    return pairs, VOC_LABELS, None, official_val


def _labels_file(root: Path) -> tuple[str, ...] | None:
    path = root / "labels.txt"
    if path.is_file():
        names = tuple(line.strip() for line in path.read_text().splitlines() if line.strip())
        if len(names) >= 2:
            return names
    return None


def _read_pairs(pairs, size, num_classes, labels, value_map, source) -> SegData:
    from exporter.progress import progress_iter

    h, w = size
    images = np.empty((len(pairs), h, w, 3), np.uint8)
    masks = np.empty((len(pairs), h, w), np.uint8)
    for i, (img_path, mask_path) in enumerate(progress_iter(pairs, "reading data")):
        images[i], masks[i] = read_pair(img_path, mask_path, size, num_classes, value_map)
    return SegData(images, masks, tuple(labels), [p[0].stem for p in pairs], source)


def _open(path: Path):
    from PIL import Image, UnidentifiedImageError

    try:
        im = Image.open(path)
        im.load()
        return im
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: unreadable image ({exc.__class__.__name__}: {exc})") from None


def read_pair(img_path: Path, mask_path: Path, size, num_classes, value_map=None):
    """One resized (image, mask) pair, checked; raises DataError naming the bad file."""
    from PIL import Image

    h, w = size
    im = _open(img_path)
    check_finite(np.asarray(im), str(img_path))
    image = im.convert("RGB")
    m = _open(mask_path)
    # Palette PNGs (VOC) hold class indices in the palette index: read them raw.
    mask_arr = np.asarray(m if m.mode in ("P", "L", "I", "I;16", "F") else m.convert("L"))
    if mask_arr.ndim != 2:
        raise DataError(f"{mask_path}: mask must be single-channel class indices, got shape {mask_arr.shape}")
    check_finite(mask_arr, str(mask_path))
    if mask_arr.shape != (image.height, image.width):
        raise DataError(
            f"{mask_path}: mask is {mask_arr.shape[1]}x{mask_arr.shape[0]} but its image {img_path.name} "
            f"is {image.width}x{image.height}; mismatched pair?"
        )
    if np.issubdtype(mask_arr.dtype, np.floating) and not np.all(mask_arr == np.round(mask_arr)):
        raise DataError(f"{mask_path}: mask holds non-integer values; masks are class indices")
    if mask_arr.min() < 0 or mask_arr.max() > 255:
        raise DataError(f"{mask_path}: label values outside 0..255")
    mask_arr = mask_arr.astype(np.uint8)
    if value_map is not None:
        mask_arr = value_map[mask_arr]
    check_labels(mask_arr, num_classes, str(mask_path))
    image = np.asarray(image.resize((w, h), Image.BILINEAR), np.uint8)
    mask = np.asarray(Image.fromarray(mask_arr).resize((w, h), Image.NEAREST), np.uint8)
    return image, mask
