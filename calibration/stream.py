"""Folder data read from disk as it is used, for data that does not fit in memory.

`StreamedData` has SegData's interface (len, ids, labels, source, subset, and `images`/`masks` that
index like arrays), but holds only the file pairs: `images[idx]` decodes and resizes those samples
then, so training holds a batch at a time. A batch's images and masks are decoded once together
(the masks of the batch whose images were just read come from a one-batch cache).
"""

from __future__ import annotations

import numpy as np

# Decoded training data above this streams by default (`exporter train --stream/--in-memory` decides otherwise).
STREAM_ABOVE_BYTES = 2 << 30


def decoded_bytes(count: int, size: tuple[int, int]) -> int:
    """What `count` samples take decoded in memory: uint8 RGB image plus uint8 mask per pixel."""
    return count * size[0] * size[1] * 4


class _Rows:
    """One side (images or masks) of a StreamedData, indexable like a numpy array's first axis."""

    def __init__(self, data: "StreamedData", side: int, tail: tuple[int, ...]):
        self.data, self.side, self.tail = data, side, tail

    def __len__(self) -> int:
        return len(self.data)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.data), *self.tail)

    def __getitem__(self, index):
        if isinstance(index, (int, np.integer)):
            return self.data.read([int(index)])[self.side][0]
        if isinstance(index, slice):
            index = range(*index.indices(len(self.data)))
        return self.data.read([int(i) for i in np.asarray(index).ravel()])[self.side]


class StreamedData:
    def __init__(self, pairs, size, num_classes, labels, value_map, source, ids=None):
        self.pairs, self.size, self.num_classes = list(pairs), tuple(size), num_classes
        self.labels, self.value_map, self.source = tuple(labels), value_map, source
        self.ids = ids if ids is not None else [p[0].stem for p in self.pairs]
        self.images = _Rows(self, 0, (*self.size, 3))
        self.masks = _Rows(self, 1, self.size)
        self._cache: tuple[tuple[int, ...], tuple[np.ndarray, np.ndarray]] | None = None

    def __len__(self) -> int:
        return len(self.pairs)

    def subset(self, index) -> "StreamedData":
        index = np.asarray(index, dtype=int)
        return StreamedData([self.pairs[i] for i in index], self.size, self.num_classes, self.labels,
                            self.value_map, self.source, [self.ids[i] for i in index])

    def read(self, index: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """(images uint8 [B,H,W,3], masks uint8 [B,H,W]) of the samples at `index`, checked like a folder's."""
        from calibration.sources import read_pair

        key = tuple(index)
        if self._cache is None or self._cache[0] != key:
            h, w = self.size
            images, masks = np.empty((len(key), h, w, 3), np.uint8), np.empty((len(key), h, w), np.uint8)
            for row, i in enumerate(key):
                images[row], masks[row] = read_pair(*self.pairs[i], self.size, self.num_classes, self.value_map)
            self._cache = (key, (images, masks))
        return self._cache[1]
