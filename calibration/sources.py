"""Dataset sources: built-in synthetic scenes and image/mask folders on local disk.

`load_splits(spec, ...)` is the one entry point. A spec is `synthetic`, a folder (layout
detected), `folder:DIR`, `pet:DIR`, `voc:DIR` to name the layout, or `tfrecord:DIR` (DeepLab's
TFRecord shards, calibration.tfrecord). Images are resized
bilinearly; masks with nearest neighbour only (bilinear invents labels along edges).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from calibration.checks import (
    BadFile,
    check_labels,
    check_pairs,
    check_same_size,
    duplicate_stem,
    image_array_check,
    mask_array,
)
from calibration.dataset import SegData, Splits, split_by_id
from calibration.stream import STREAM_ABOVE_BYTES, StreamedData, decoded_bytes
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
TFRECORD = "tfrecord"  # not a folder layout: shards of records (calibration.tfrecord)


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
    stream: bool | None = False,
) -> Splits:
    """Training and held-out samples at the model's input size. `stream` (folders only): read samples
    from disk when used (calibration.stream) instead of decoding all now; None: when they would take
    more than STREAM_ABOVE_BYTES decoded."""
    layout_name, root = _parse(spec)
    if layout_name == "synthetic":
        return synthetic_splits(train_samples, val_samples, size, num_classes, seed)
    if layout_name == TFRECORD:
        from calibration.tfrecord import load_tfrecord_splits

        return load_tfrecord_splits(root, size, num_classes, _labels_file(root), val_fraction=val_fraction,
                                    max_samples=max_samples, seed=seed)
    layout = open_layout(root, layout_name)
    pairs = _paired(layout)
    labels = layout.labels
    if labels is None:
        labels = _labels_file(root) or tuple(f"class_{i}" for i in range(num_classes))
    if len(labels) != num_classes:
        # The data decides the class count when it names its classes.
        num_classes = len(labels)
    if max_samples is not None:
        pairs = pairs[:max_samples]
    source = f"{layout.name} folder {root}"
    if stream is None:
        stream = decoded_bytes(len(pairs), size) > STREAM_ABOVE_BYTES
    if stream:
        data = StreamedData(pairs, size, num_classes, labels, layout.value_map, source)
    else:
        data = _read_pairs(pairs, size, num_classes, labels, layout.value_map, source)
    if layout.official_val is not None:
        val = np.array([i in layout.official_val for i in data.ids])
        if val.any() and not val.all():
            return Splits(data.subset(np.flatnonzero(~val)), data.subset(np.flatnonzero(val)))
    return split_by_id(data, val_fraction, seed)


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where a data folder keeps its images and masks, and how its masks are read."""

    name: str  # "folder", "pet" or "voc"
    root: Path
    image_dir: Path
    mask_dir: Path
    mask_suffixes: frozenset[str]
    labels: tuple[str, ...] | None  # class names the layout fixes (Pet, VOC); None: labels.txt or --classes
    value_map: np.ndarray | None  # stored mask value -> class index (Pet's trimaps)
    masked_only: bool  # only images that have a mask take part (VOC), the others are no problem
    official_val: set[str] | None


def open_layout(root: Path, name: str | None = None) -> Layout:
    """The layout of a data folder (`name`, or detected); DataError when there is none."""
    if not root.is_dir():
        raise DataError(f"{root}: data folder not found")
    name = name or detect_layout(root)
    if name == "folder":
        layout = Layout(name, root, root / "images", root / "masks", frozenset(IMAGE_SUFFIXES), None, None,
                        False, None)
    elif name == "pet":
        # Trimaps exist for every image; stray files (the dataset ships a few .mat images) are
        # skipped by suffix. Values 1..3 become 0..2, any other value is ignored.
        value_map = np.full(256, 255, np.uint8)
        value_map[1:4] = [0, 1, 2]
        layout = Layout(name, root, root / "images", root / "annotations" / "trimaps", frozenset({".png"}),
                        PET_LABELS, value_map, False, None)
    else:
        # Only images that have a segmentation mask take part; the official val list is respected.
        val_list = root / "ImageSets" / "Segmentation" / "val.txt"
        official_val = set(val_list.read_text().split()) if val_list.is_file() else None
        layout = Layout(name, root, root / "JPEGImages", root / "SegmentationClass", frozenset({".png"}),
                        VOC_LABELS, None, True, official_val)
    for folder in (layout.image_dir, layout.mask_dir):
        if not folder.is_dir():
            raise DataError(f"{folder}: folder not found (the {name} layout keeps its "
                            f"{'images' if folder == layout.image_dir else 'masks'} there)")
    return layout


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
    if sep and layout in (*LAYOUTS[1:], TFRECORD):
        return layout, Path(rest)
    return None, Path(spec)


def scan_stems(folder: Path, suffixes=IMAGE_SUFFIXES) -> tuple[dict[str, Path], list[BadFile]]:
    """Files by stem (the first of each stem in name order) and one problem per extra file."""
    found: dict[str, Path] = {}
    duplicates = []
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in suffixes:
            if p.stem in found:
                duplicates.append(duplicate_stem(p, found[p.stem]))
            else:
                found[p.stem] = p
    return found, duplicates


def list_files(layout: Layout) -> tuple[dict[str, Path], dict[str, Path], list[BadFile]]:
    """Images and masks taking part, by stem, and one problem per file that shares a stem."""
    images, image_dups = scan_stems(layout.image_dir)
    masks, mask_dups = scan_stems(layout.mask_dir, layout.mask_suffixes)
    if layout.masked_only:
        images = {k: v for k, v in images.items() if k in masks}
        image_dups = [d for d in image_dups if Path(d.path).stem in masks]
    return images, masks, image_dups + mask_dups


def _paired(layout: Layout) -> list[tuple[Path, Path]]:
    images, masks, duplicates = list_files(layout)
    if duplicates:
        raise duplicates[0]
    check_pairs(images, masks, layout.image_dir, layout.mask_dir)
    if not images:
        raise DataError(f"{layout.image_dir}: no images found")
    return [(images[k], masks[k]) for k in sorted(images)]


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
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise BadFile(path, "unreadable", f"unreadable image ({exc.__class__.__name__}: {exc})") from None


def read_image(path: Path):
    """A decoded, checked image (PIL, any mode); raises BadFile naming the file."""
    im = _open(path)
    image_array_check(im, path)
    return im


def read_mask(path: Path, value_map=None) -> np.ndarray:
    """A decoded, checked mask as uint8 class indices [H, W] (`value_map` applied)."""
    mask = mask_array(_open(path), path)
    return mask if value_map is None else value_map[mask]


def read_pair(img_path: Path, mask_path: Path, size, num_classes, value_map=None):
    """One resized (image, mask) pair, checked; raises DataError naming the bad file."""
    from PIL import Image

    h, w = size
    image = read_image(img_path)
    mask_arr = read_mask(mask_path, value_map)
    check_same_size(mask_arr, image.size, mask_path, img_path)
    check_labels(mask_arr, num_classes, str(mask_path))
    image = np.asarray(image.convert("RGB").resize((w, h), Image.BILINEAR), np.uint8)
    mask = np.asarray(Image.fromarray(mask_arr).resize((w, h), Image.NEAREST), np.uint8)
    return image, mask
