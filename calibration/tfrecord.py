"""TFRecord shards in the layout of TensorFlow DeepLab's dataset scripts (build_voc2012_data.py),
the seed's training data: `--data tfrecord:DIR`.

Each record is a tf.train.Example with `image/encoded` (JPEG or PNG), `image/segmentation/class/encoded`
(PNG of class indices, 255 ignored), `image/filename`, `image/height` and `image/width`. Shards whose
names match TRAIN_SHARDS are the training split, VAL_SHARDS the held-out one (DeepLab writes
`train-00000-of-00004.tfrecord`, `val-...`); without validation shards the samples are split by
file name like a folder. Class names come from DIR/labels.txt when there is one.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from calibration.checks import check_labels, mask_array
from calibration.dataset import SegData, Splits, split_by_id
from exporter.errors import DataError

TRAIN_SHARDS = "train-*.tfrecord*"
VAL_SHARDS = "val-*.tfrecord*"
IMAGE_KEY = "image/encoded"
MASK_KEY = "image/segmentation/class/encoded"
FILENAME_KEY = "image/filename"
HEIGHT_KEY = "image/height"
WIDTH_KEY = "image/width"


def shards(root: Path) -> tuple[list[Path], list[Path]]:
    """(training shards, validation shards) in name order; DataError when there are no training shards."""
    if not root.is_dir():
        raise DataError(f"{root}: TFRecord folder not found")
    train, val = sorted(root.glob(TRAIN_SHARDS)), sorted(root.glob(VAL_SHARDS))
    if not train:
        raise DataError(f"{root}: no training shards ({TRAIN_SHARDS}; validation shards: {VAL_SHARDS})")
    return train, val


def load_tfrecord_splits(root: Path, size: tuple[int, int], num_classes: int, labels: tuple[str, ...] | None,
                         *, val_fraction: float = 0.2, max_samples: int | None = None, seed: int = 0) -> Splits:
    """Training and held-out samples, resized to `size` (images bilinear, masks nearest neighbour)."""
    train_files, val_files = shards(Path(root))
    labels = tuple(labels or (f"class_{i}" for i in range(num_classes)))
    source = f"TFRecord folder {root}"
    train = read_shards(train_files, size, labels, source, max_samples)
    if not val_files:
        return split_by_id(train, val_fraction, seed)
    return Splits(train, read_shards(val_files, size, labels, source, max_samples))


def read_shards(files: list[Path], size, labels, source, max_samples=None) -> SegData:
    images, masks, ids = [], [], []
    for path in files:
        for index, example in _examples(path):
            if max_samples is not None and len(ids) >= max_samples:
                break
            name, image, mask = decode_example(example, path, index, size, len(labels))
            images.append(image)
            masks.append(mask)
            ids.append(name)
    if not ids:
        raise DataError(f"{files[0].parent}: the shards {', '.join(p.name for p in files)} hold no records")
    return SegData(np.stack(images), np.stack(masks), labels, ids, source)


def _examples(path: Path):
    """(index, tf.train.Example) of every record; a torn or corrupt file is one DataError naming it."""
    from exporter.keras import tf

    index = -1
    try:
        for index, raw in enumerate(tf.data.TFRecordDataset(str(path)).as_numpy_iterator()):
            try:
                example = tf.train.Example.FromString(raw)
            except Exception as exc:  # protobuf's DecodeError: bytes that are no Example
                raise DataError(f"{path}: record {index} is not a tf.train.Example ({type(exc).__name__})") from None
            yield index, example
    except tf.errors.OpError as exc:  # DataLossError (bad CRC, truncated file) and friends
        detail = exc.message.splitlines()[0] if exc.message else type(exc).__name__
        raise DataError(f"{path}: unreadable TFRecord after record {index} ({detail})") from None


def decode_example(example, path: Path, index: int, size, num_classes: int):
    """(name, image uint8 [H,W,3], mask uint8 [H,W]) of one record at `size`; DataError names file and record."""
    from PIL import Image

    feature = example.features.feature
    where = f"{path}: record {index}"
    for key in (IMAGE_KEY, MASK_KEY):
        if not feature[key].bytes_list.value:
            raise DataError(f"{where}: no {key} (the DeepLab layout: {IMAGE_KEY}, {MASK_KEY}, {FILENAME_KEY}, "
                            f"{HEIGHT_KEY}, {WIDTH_KEY})")
    names = feature[FILENAME_KEY].bytes_list.value
    name = names[0].decode("utf-8", "replace") if names else f"{path.stem}:{index}"
    where = f"{path}: record {index} ({name})"
    try:
        image = Image.open(io.BytesIO(feature[IMAGE_KEY].bytes_list.value[0]))
        image.load()
        mask = mask_array(Image.open(io.BytesIO(feature[MASK_KEY].bytes_list.value[0])), where)
    except DataError:
        raise
    except Exception as exc:  # PIL's UnidentifiedImageError, OSError on truncated data
        raise DataError(f"{where}: undecodable image or mask ({type(exc).__name__}: {exc})") from None
    stated = [int(feature[k].int64_list.value[0]) for k in (HEIGHT_KEY, WIDTH_KEY) if feature[k].int64_list.value]
    if len(stated) == 2 and tuple(stated) != (image.height, image.width):
        raise DataError(f"{where}: {HEIGHT_KEY}/{WIDTH_KEY} say {stated[0]}x{stated[1]}, "
                        f"the image is {image.height}x{image.width}")
    if mask.shape != (image.height, image.width):
        raise DataError(f"{where}: mask is {mask.shape[0]}x{mask.shape[1]}, image {image.height}x{image.width}")
    check_labels(mask, num_classes, where)
    h, w = size
    image = np.asarray(image.convert("RGB").resize((w, h), Image.BILINEAR), np.uint8)
    mask = np.asarray(Image.fromarray(mask).resize((w, h), Image.NEAREST), np.uint8)
    return name, image, mask
