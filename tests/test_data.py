"""Data sources and the seed's data checks, on real files written to a temporary folder."""

import numpy as np
import pytest

from calibration.sampling import class_coverage, representative_indices
from calibration.sources import load_splits
from calibration.synthetic import make_synthetic, render_scene, synthetic_labels
from exporter.errors import DataError
from tests.conftest import write_png


def test_synthetic_is_deterministic_and_covers_every_class():
    a = make_synthetic(40, (64, 64), 5, seed=3)
    b = make_synthetic(40, (64, 64), 5, seed=3)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.masks, b.masks)
    assert set(np.unique(a.masks)) == set(range(5))
    assert a.labels == synthetic_labels(5) and a.labels[0] == "background"
    c = make_synthetic(40, (64, 64), 5, seed=4)
    assert not np.array_equal(a.images, c.images)


def test_synthetic_heldout_is_disjoint_from_training():
    splits = load_splits("synthetic", (32, 32), 3, train_samples=20, val_samples=10)
    train = {im.tobytes() for im in splits.train.images}
    assert not any(im.tobytes() in train for im in splits.val.images)


def test_folder_dataset_resizes_masks_with_nearest_neighbour(folder_dataset):
    splits = load_splits(str(folder_dataset), (48, 48), 3)
    assert len(splits.train) + len(splits.val) == 10 and len(splits.train) >= 1 and len(splits.val) >= 1
    assert splits.train.images.shape[1:] == (48, 48, 3)
    # Nearest-neighbour masks hold only the original labels (bilinear would invent in-between values).
    for part in (splits.train, splits.val):
        assert set(np.unique(part.masks)) <= {0, 1, 2}


def test_folder_labels_file_names_classes(folder_dataset):
    (folder_dataset / "labels.txt").write_text("sky\nball\nbox\n")
    splits = load_splits(str(folder_dataset), (32, 32), 3)
    assert splits.labels == ("sky", "ball", "box")


def test_pet_layout_maps_trimaps(tmp_path):
    root = tmp_path / "pet"
    for i in range(4):
        image, _ = render_scene(i, (40, 40), 3)
        trimap = np.full((40, 40), 2, np.uint8)
        trimap[10:30, 10:30] = 1
        trimap[10, 10:30] = 3
        write_png(root / "images" / f"cat_{i}.jpg", image)
        write_png(root / "annotations" / "trimaps" / f"cat_{i}.png", trimap)
    splits = load_splits(str(root), (40, 40), 3)
    assert splits.labels == ("pet", "background", "border")
    mask = np.concatenate([splits.train.masks, splits.val.masks])
    assert set(np.unique(mask)) == {0, 1, 2}
    assert (mask[:, 20, 20] == 0).all() and (mask[:, 0, 0] == 1).all()


def test_voc_layout_reads_palette_masks_and_official_split(tmp_path):
    from PIL import Image

    root = tmp_path / "VOC2012"
    for i, stem in enumerate(["2007_000001", "2007_000002", "2007_000003"]):
        image, _ = render_scene(i, (36, 36), 3)
        write_png(root / "JPEGImages" / f"{stem}.jpg", image)
        mask = np.zeros((36, 36), np.uint8)
        mask[5:20, 5:20] = 15  # person
        mask[4, :] = 255  # VOC's void border
        pal = Image.fromarray(mask, mode="P")
        pal.putpalette([v for c in range(256) for v in (c, 255 - c, c // 2)])
        (root / "SegmentationClass").mkdir(parents=True, exist_ok=True)
        pal.save(root / "SegmentationClass" / f"{stem}.png")
    write_png(root / "JPEGImages" / "2007_000099.jpg", image)  # an image without a mask: not used
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("2007_000003\n")
    splits = load_splits(str(root), (36, 36), 21)
    assert len(splits.labels) == 21 and splits.labels[15] == "person"
    assert splits.val.ids == ["2007_000003"] and len(splits.train) == 2
    assert set(np.unique(splits.train.masks)) == {0, 15, 255}


def test_image_without_mask_is_named(folder_dataset):
    (folder_dataset / "masks" / "img03.png").unlink()
    with pytest.raises(DataError, match=r"img03.*has no mask"):
        load_splits(str(folder_dataset), (32, 32), 3)


def test_mask_without_image_is_named(folder_dataset):
    (folder_dataset / "images" / "img04.png").unlink()
    with pytest.raises(DataError, match=r"img04.*mask has no image"):
        load_splits(str(folder_dataset), (32, 32), 3)


def test_corrupt_image_is_named(folder_dataset):
    (folder_dataset / "images" / "img05.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(DataError, match=r"img05.png: unreadable image"):
        load_splits(str(folder_dataset), (32, 32), 3)


def test_labels_out_of_range_are_named(folder_dataset):
    write_png(folder_dataset / "masks" / "img06.png", np.full((72, 80), 7, np.uint8))
    with pytest.raises(DataError, match=r"img06.png: label value\(s\) 7 outside 0..2"):
        load_splits(str(folder_dataset), (32, 32), 3)


def test_mismatched_pair_sizes_are_named(folder_dataset):
    write_png(folder_dataset / "masks" / "img07.png", np.zeros((30, 30), np.uint8))
    with pytest.raises(DataError, match=r"img07.png: mask is 30x30 but its image"):
        load_splits(str(folder_dataset), (32, 32), 3)


def test_nan_in_float_image_is_named(folder_dataset):
    from PIL import Image

    arr = np.full((72, 80), 0.5, np.float32)
    arr[3, 3] = np.nan
    Image.fromarray(arr, mode="F").save(folder_dataset / "images" / "img08.tiff")
    (folder_dataset / "images" / "img08.png").unlink()
    with pytest.raises(DataError, match=r"img08.tiff: contains 1 NaN"):
        load_splits(str(folder_dataset), (32, 32), 3)


def test_missing_or_unknown_folder(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_splits(str(tmp_path / "nope"), (32, 32), 3)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="unknown data layout"):
        load_splits(str(tmp_path / "empty"), (32, 32), 3)


def test_representative_samples_cover_rare_classes():
    data = make_synthetic(60, (32, 32), 6, seed=1)
    # Make class 5 rare: present in one sample only.
    masks = data.masks.copy()
    masks[masks == 5] = 0
    masks[17, :4, :4] = 5
    data.masks = masks
    idx, missing = representative_indices(data, 8, seed=0)
    assert 17 in idx and missing == [] and len(idx) == 8
    cov = class_coverage(data.subset(idx))
    assert cov[data.labels[5]] > 0 and abs(sum(cov.values()) - 1) < 1e-3
    masks[17] = 0
    data.masks = masks
    _, missing = representative_indices(data, 8)
    assert missing == [5]
