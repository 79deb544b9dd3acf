"""`--data tfrecord:DIR`: TFRecord shards in TensorFlow DeepLab's layout train and convert like a folder;
a bad record is one line naming its file."""

import io
import json
from pathlib import Path

import numpy as np
import pytest

from exporter.errors import DataError


def _png(array: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def example(image: np.ndarray, mask: np.ndarray, name: str, *, height=None, mask_bytes=None):
    """One record as DeepLab's build_voc2012_data.py writes it."""
    from exporter.keras import tf

    def b(value):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

    def i(value):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))

    return tf.train.Example(features=tf.train.Features(feature={
        "image/encoded": b(_png(image)), "image/filename": b(name.encode()), "image/format": b(b"png"),
        "image/height": i(image.shape[0] if height is None else height), "image/width": i(image.shape[1]),
        "image/channels": i(3), "image/segmentation/class/encoded": b(_png(mask) if mask_bytes is None else mask_bytes),
        "image/segmentation/class/format": b(b"png")}))


def write_shards(root: Path, counts={"train": (6, 6), "val": (4,)}, size=(40, 48)) -> dict[str, tuple]:
    """Synthetic scenes (3 classes) into split-NNNNN-of-NNNNN.tfrecord shards; returns what was written."""
    from calibration.synthetic import render_scene
    from exporter.keras import tf

    root.mkdir(parents=True, exist_ok=True)
    written, n = {}, 0
    for split, shard_sizes in counts.items():
        for s, count in enumerate(shard_sizes):
            with tf.io.TFRecordWriter(str(root / f"{split}-{s:05d}-of-{len(shard_sizes):05d}.tfrecord")) as writer:
                for _ in range(count):
                    image, mask = render_scene(n, size, 3, seed=2)
                    mask[0, :3] = 255  # an ignored pixel or three, as VOC's borders
                    writer.write(example(image, mask, f"{split}_{n:04d}").SerializeToString())
                    written[f"{split}_{n:04d}"] = (image, mask)
                    n += 1
    return written


def test_shards_load_as_splits_by_file_name(tmp_path):
    from calibration.sources import load_splits

    written = write_shards(tmp_path / "records")
    (tmp_path / "records" / "labels.txt").write_text("background\ndisc\nbox\n")
    (tmp_path / "records" / "trainval-00000-of-00001.tfrecord").write_bytes(b"not read: neither train- nor val-")
    splits = load_splits(f"tfrecord:{tmp_path / 'records'}", (40, 48), 3)
    assert splits.train.ids == [f"train_{i:04d}" for i in range(12)]
    assert splits.val.ids == [f"val_{i:04d}" for i in range(12, 16)]
    assert splits.labels == ("background", "disc", "box")
    # At the stored size nothing is resampled: the records come back exactly as written.
    for data in (splits.train, splits.val):
        for name, image, mask in zip(data.ids, data.images, data.masks):
            assert np.array_equal(image, written[name][0]) and np.array_equal(mask, written[name][1])
    resized = load_splits(f"tfrecord:{tmp_path / 'records'}", (32, 32), 3)
    assert resized.train.images.shape == (12, 32, 32, 3)
    assert set(np.unique(resized.train.masks)) <= {0, 1, 2, 255}  # nearest neighbour: no invented labels


def test_bad_records_name_their_file(tmp_path):
    from calibration.sources import load_splits
    from calibration.synthetic import render_scene
    from exporter.keras import tf

    image, mask = render_scene(0, (16, 16), 3)
    cases = {
        "stated size": (example(image, mask, "a", height=99).SerializeToString(), "say 99x16, the image is 16x16"),
        "mask": (example(image, mask, "b", mask_bytes=b"\x89PNG broken").SerializeToString(), "undecodable"),
        "labels": (example(image, np.full_like(mask, 7), "c").SerializeToString(), "7"),
        "not an example": (b"\x00\xff" * 20, "is not a tf.train.Example"),
    }
    for what, (record, message) in cases.items():
        root = tmp_path / what.replace(" ", "_")
        root.mkdir()
        with tf.io.TFRecordWriter(str(root / "train-00000-of-00001.tfrecord")) as writer:
            writer.write(example(image, mask, "fine").SerializeToString())
            writer.write(record)
        with pytest.raises(DataError, match=message) as err:
            load_splits(f"tfrecord:{root}", (16, 16), 3)
        assert str(err.value).startswith(f"{root / 'train-00000-of-00001.tfrecord'}: record 1"), what

    torn = tmp_path / "torn"
    write_shards(torn, {"train": (3,)})
    shard = torn / "train-00000-of-00001.tfrecord"
    shard.write_bytes(shard.read_bytes()[:-40])  # a copy cut short
    with pytest.raises(DataError, match="unreadable TFRecord after record 1") as err:
        load_splits(f"tfrecord:{torn}", (16, 16), 3)
    assert str(err.value).startswith(str(shard))
    with pytest.raises(DataError, match="no training shards"):
        load_splits(f"tfrecord:{tmp_path}", (16, 16), 3)  # shards only in its subfolders


@pytest.mark.slow  # a training run and a convert through the CLI: about a minute
def test_a_tfrecord_folder_trains_and_converts_through_the_cli(run_cli, tmp_path):
    write_shards(tmp_path / "records")
    data = ["--data", "tfrecord:records", "--model", "unet", "--input-size", "32", "--classes", "3"]
    train = run_cli("train", *data, "--epochs", "1", "--batch-size", "4", "--out", "runs")
    assert train.returncode == 0, train.stderr
    state = json.loads((tmp_path / "runs" / "unet" / "training" / "state.json").read_text())
    assert state["fingerprint"]["data"] == "tfrecord:records" and state["epochs_done"] == 1
    assert "12 samples of TFRecord folder records" in train.stderr

    convert = run_cli("convert", *data, "--out", "runs", "--no-onnx", "--no-bench", "--layer-errors", "0")
    assert convert.returncode == 0, convert.stderr
    assert "using the model trained in runs/unet/training" in convert.stderr
    assert (tmp_path / "runs" / "unet" / "unet_float32.tflite").read_bytes()[4:8] == b"TFL3"
    report = json.loads((tmp_path / "runs" / "unet" / "report.json").read_text())
    assert report["data"]["heldout_samples"] == 4, report["data"]

    # A corrupt shard is one line naming it, no traceback.
    shard = tmp_path / "records" / "val-00000-of-00001.tfrecord"
    shard.write_bytes(shard.read_bytes()[:100])
    bad = run_cli("train", *data, "--epochs", "1", "--out", "other")
    errors = [line for line in bad.stderr.splitlines() if line.startswith("error:")]
    assert bad.returncode == 2 and len(errors) == 1 and str(shard.name) in errors[0], bad.stderr
    assert "Traceback" not in bad.stderr
