"""Streamed folder data (`exporter train --stream`): nothing decoded up front, a batch decoded when it is
used, and exactly the samples, batches and class weights of the same folder loaded whole."""

import numpy as np

from calibration.augment import parse_augment
from calibration.sources import load_splits
from calibration.stream import STREAM_ABOVE_BYTES, decoded_bytes


def test_streamed_folder_gives_the_in_memory_batches_and_decodes_only_what_is_used(folder_dataset, monkeypatch):
    import calibration.sources as sources
    from exporter.losses import auto_class_weights
    from exporter.train import epoch_batches

    whole = load_splits(str(folder_dataset), (32, 32), 3, val_fraction=0.3)
    decoded = []
    original = sources.read_pair
    monkeypatch.setattr(sources, "read_pair", lambda *a, **k: decoded.append(a[0].name) or original(*a, **k))
    streamed = load_splits(str(folder_dataset), (32, 32), 3, val_fraction=0.3, stream=True)
    assert decoded == []  # only the file list so far
    assert streamed.train.ids == whole.train.ids and streamed.val.ids == whole.val.ids

    batches = epoch_batches(streamed, 3, seed=4, epoch=1, augment=parse_augment("light"))
    first_images, first_masks = next(batches)
    assert len(decoded) == 3  # one batch, images and masks decoded once together
    reference = list(epoch_batches(whole, 3, seed=4, epoch=1, augment=parse_augment("light")))
    assert np.array_equal(first_images, reference[0][0]) and np.array_equal(first_masks, reference[0][1])
    for (a, am), (b, bm) in zip(batches, reference[1:]):
        assert np.array_equal(a, b) and np.array_equal(am, bm)
    assert np.array_equal(streamed.val.images[0:len(whole.val)], whole.val.images)
    assert auto_class_weights(streamed.train.masks, 3, chunk=2) == auto_class_weights(whole.train.masks, 3)


def test_streaming_is_the_default_only_above_the_threshold(folder_dataset, monkeypatch):
    import calibration.sources as sources
    from calibration.dataset import SegData
    from calibration.stream import StreamedData

    # 10,000 samples at 256x256 stream by default, 1,000 do not.
    assert decoded_bytes(10_000, (256, 256)) > STREAM_ABOVE_BYTES > decoded_bytes(1_000, (256, 256))
    assert isinstance(load_splits(str(folder_dataset), (32, 32), 3, stream=None).train, SegData)
    monkeypatch.setattr(sources, "STREAM_ABOVE_BYTES", decoded_bytes(9, (32, 32)))  # the fixture holds 10
    assert isinstance(load_splits(str(folder_dataset), (32, 32), 3, stream=None).train, StreamedData)
