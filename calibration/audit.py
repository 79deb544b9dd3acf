"""`exporter check-data`: every check the loaders run before train/convert, over every file at once.

The loaders (`calibration.sources`) stop at the first problem; `audit` decodes every image and
mask of a data folder (folder, Oxford-IIIT Pet or PASCAL VOC layout, found the same way), in
parallel, and returns one `Problem` per bad file and check, worded by the same functions in
`calibration.checks`, plus a class table (pixels and images per class). No resizing: each file is
checked as stored.
"""

from __future__ import annotations

import dataclasses
import os
import time
from functools import partial
from pathlib import Path

import numpy as np

from calibration.checks import BadFile, check_same_size, label_problem, no_image, no_mask
from calibration.dataset import IGNORE_LABEL
from calibration.sources import _labels_file, _parse, list_files, open_layout, read_image, read_mask
from exporter.errors import DataError, ExporterError

MAX_CLASSES = IGNORE_LABEL  # labels are uint8 and 255 means ignore: 0..254


@dataclasses.dataclass(frozen=True)
class Problem:
    path: str
    kind: str  # unreadable, nan, rgb-mask, channels, labels, size, no-mask, no-image, duplicate, empty
    message: str  # the whole line, starting with the path

    @classmethod
    def of(cls, err: BadFile) -> "Problem":
        return cls(err.path, err.kind, str(err))


@dataclasses.dataclass(frozen=True)
class ClassRow:
    index: int
    name: str
    pixels: int
    images: int  # masks holding at least one pixel of the class


@dataclasses.dataclass
class Audit:
    source: str
    layout: str
    images: int  # image files found (those taking part, for VOC)
    masks: int
    pairs: int  # complete image/mask pairs
    labels: tuple[str, ...]
    classes_from: str
    problems: list[Problem]
    classes: list[ClassRow]  # counted over complete pairs
    ignored_pixels: int  # label 255
    out_of_range_pixels: int
    seconds: float
    notes: list[str]

    @property
    def usable(self) -> bool:
        return not self.problems

    @property
    def never_seen(self) -> list[ClassRow]:
        return [row for row in self.classes if row.pixels == 0]

    def to_json(self) -> dict:
        return {
            "source": self.source, "layout": self.layout, "usable": self.usable,
            "images": self.images, "masks": self.masks, "pairs": self.pairs,
            "num_classes": len(self.labels), "classes_from": self.classes_from,
            "problems": [dataclasses.asdict(p) for p in self.problems],
            "classes": [dataclasses.asdict(row) for row in self.classes],
            "never_seen": [row.name for row in self.never_seen],
            "ignored_pixels": self.ignored_pixels, "out_of_range_pixels": self.out_of_range_pixels,
            "seconds": round(self.seconds, 2), "notes": self.notes,
        }


def check_classes(num_classes: int | None) -> int | None:
    if num_classes is not None and not 2 <= num_classes <= MAX_CLASSES:
        raise ExporterError(f"--classes must be between 2 and {MAX_CLASSES} ({IGNORE_LABEL} is the ignore label), "
                            f"got {num_classes}")
    return num_classes


def check_files(task, value_map=None):
    """Worker: decode one image and/or mask. Returns (problems as (path, kind, line), mask histogram)."""
    img_path, mask_path = task
    problems, hist, size = [], None, None
    if img_path is not None:
        try:
            size = read_image(Path(img_path)).size
        except BadFile as err:
            problems.append((err.path, err.kind, str(err)))
        except Exception as exc:  # anything else a decoder throws: still this file's problem
            problems.append((img_path, "unreadable", f"{img_path}: unreadable image ({exc.__class__.__name__}: {exc})"))
    if mask_path is not None:
        try:
            mask = read_mask(Path(mask_path), value_map)
            hist = np.bincount(mask.ravel(), minlength=256)
            if size is not None:
                check_same_size(mask, size, Path(mask_path), Path(img_path))
        except BadFile as err:
            problems.append((err.path, err.kind, str(err)))
        except Exception as exc:
            problems.append((mask_path, "unreadable", f"{mask_path}: unreadable image ({exc.__class__.__name__}: {exc})"))
    return problems, hist


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def audit(spec: str, num_classes: int | None = None, *, workers: int | None = None, pool: str = "thread",
          progress: bool = True) -> Audit:
    """Check a data folder in one pass. DataError (bad usage) only when it is no data folder.

    PIL releases the GIL while it decodes, so threads (the default) parallelise as well as
    processes: 2,000 512x512 PNG pairs on 2 cores took 18.7-19.9 s with 2 threads, 20.8-22.3 s
    with 2 processes (`pool="process"`), 30 s with one thread.
    """
    started = time.perf_counter()
    check_classes(num_classes)
    layout_name, root = _parse(spec)
    if layout_name == "synthetic":
        raise DataError("synthetic: generated data needs no check; give a data folder")
    if layout_name == "tfrecord":
        raise DataError(f"{spec}: check-data reads image folders; TFRecord records are checked as train reads them")
    layout = open_layout(root, layout_name)

    images, masks, duplicates = list_files(layout)
    problems = [Problem.of(d) for d in duplicates]
    tasks, complete = [], []
    for stem in sorted(images.keys() | masks.keys()):
        img, mask = images.get(stem), masks.get(stem)
        if mask is None:
            problems.append(Problem.of(no_mask(img, layout.mask_dir)))
        if img is None:
            problems.append(Problem.of(no_image(mask, layout.image_dir)))
        complete.append(img is not None and mask is not None)
        tasks.append((str(img) if img else None, str(mask) if mask else None))
    # Files that lost their stem to a namesake are still decoded: every file is checked.
    is_mask = [Path(d.path).parent == layout.mask_dir for d in duplicates]
    tasks += [(None, d.path) if m else (d.path, None) for d, m in zip(duplicates, is_mask)]
    complete += [False] * len(duplicates)
    if not images:
        problems.append(Problem(str(layout.image_dir), "empty", f"{layout.image_dir}: no images found"))

    results = _run(tasks, layout.value_map, workers or default_workers(), pool, progress)

    notes = []
    labels = layout.labels or _labels_file(root)
    if labels is not None:
        classes_from = f"the {layout.name} layout" if layout.labels else "labels.txt"
        if num_classes is not None and num_classes != len(labels):
            notes.append(f"--classes {num_classes} ignored: {classes_from} names {len(labels)} classes "
                         "(train and convert do the same)")
    elif num_classes is not None:
        labels, classes_from = tuple(f"class_{i}" for i in range(num_classes)), "--classes"
    else:
        seen = np.zeros(256, np.int64)
        for _, hist in results:
            if hist is not None:
                seen += hist
        seen[IGNORE_LABEL] = 0
        n = int(np.flatnonzero(seen).max()) + 1 if seen.any() else 0
        labels = tuple(f"class_{i}" for i in range(n))
        classes_from = "the largest label in the masks; --classes N checks the range"
    n = len(labels)

    hists = []
    for (img, mask), (file_problems, hist), whole in zip(tasks, results, complete):
        problems += [Problem(*p) for p in file_problems]
        if hist is not None:
            wrong = label_problem(np.flatnonzero(hist), n)
            if wrong:
                problems.append(Problem(mask, "labels", f"{mask}: {wrong}"))
            if whole:
                hists.append(hist)
    problems.sort(key=lambda p: p.path)  # a file's problems together; stable within a file

    table = np.stack(hists) if hists else np.zeros((0, 256), np.int64)
    pixels, present = table.sum(0), (table > 0).sum(0)
    rows = [ClassRow(i, labels[i], int(pixels[i]), int(present[i])) for i in range(n)]
    return Audit(
        source=f"{layout.name} layout at {root}", layout=layout.name, images=len(images) + is_mask.count(False),
        masks=len(masks) + is_mask.count(True), pairs=sum(complete), labels=tuple(labels), classes_from=classes_from,
        problems=problems, classes=rows, ignored_pixels=int(pixels[IGNORE_LABEL]) if len(pixels) else 0,
        out_of_range_pixels=int(pixels[n:IGNORE_LABEL].sum()) if len(pixels) else 0,
        seconds=time.perf_counter() - started, notes=notes,
    )


def _run(tasks, value_map, workers: int, pool: str, progress: bool):
    from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

    from exporter.progress import make_progress

    work = partial(check_files, value_map=value_map)
    if workers <= 1 or len(tasks) < 8:
        results = map(work, tasks)
        executor = None
    elif pool == "process":
        executor = ProcessPoolExecutor(workers)
        results = executor.map(work, tasks, chunksize=max(1, min(16, len(tasks) // (4 * workers))))
    else:
        executor = ThreadPoolExecutor(workers)
        results = executor.map(work, tasks)
    out = []
    try:
        # The pool's workers are started (map submits everything) before the bar's thread is.
        with make_progress() as bar:
            task = bar.add_task("checking data", total=len(tasks), info="", visible=progress)
            for result in results:
                out.append(result)
                bar.advance(task)
    finally:
        if executor is not None:
            executor.shutdown(cancel_futures=True)
    return out


def format_table(result: Audit) -> list[str]:
    """The class table as text lines: pixels and images per class, then the classes never seen."""
    total = sum(row.pixels for row in result.classes) + result.ignored_pixels + result.out_of_range_pixels
    width = max([len(row.name) for row in result.classes] + [13])
    lines = [f"{'class':>5s}  {'name':{width}s} {'pixels':>14s} {'share':>7s} {'images':>7s}"]

    def line(index: str, name: str, pixels: int, images: int | str) -> str:
        share = f"{100 * pixels / total:6.2f}%" if total else "      -"
        return f"{index:>5s}  {name:{width}s} {pixels:14,d} {share} {images:>7}"

    for row in result.classes:
        lines.append(line(str(row.index), row.name, row.pixels, row.images))
    if result.ignored_pixels:
        lines.append(line(str(IGNORE_LABEL), "(ignore)", result.ignored_pixels, ""))
    if result.out_of_range_pixels:
        lines.append(line("", "(out of range)", result.out_of_range_pixels, ""))
    unseen = result.never_seen
    lines.append("classes never seen: " + (", ".join(f"{r.index} {r.name}" for r in unseen) if unseen else "none"))
    return lines
