"""Run a .tflite through MediaPipe Tasks' ImageSegmenter exactly as an app would.

Runs with `.venv-mediapipe/bin/python` (mediapipe cannot be installed in .venv: its absl-py pin
conflicts with tfmot's), so it imports nothing from this repository. The tests call it as a
subprocess:

    .venv-mediapipe/bin/python tests/mediapipe_client.py MODEL.tflite IMAGES.npy OUT_DIR

IMAGES.npy holds uint8 RGB images [N, H, W, 3]. Writes OUT_DIR/category_masks.npy (uint8
[N, H, W], class indices) and OUT_DIR/confidence_masks.npy (float32 [N, H, W, C]) and prints one
JSON object: {"category_masks", "confidence_masks", "labels", "mediapipe"}. A model MediaPipe
refuses exits 1 with MediaPipe's message on stderr.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def segment(model: Path, images, out_dir: Path) -> dict:
    import mediapipe as mp
    import numpy as np
    from mediapipe.tasks.python import vision
    from mediapipe.tasks.python.core.base_options import BaseOptions

    options = vision.ImageSegmenterOptions(
        base_options=BaseOptions(model_asset_path=str(model)),
        running_mode=vision.RunningMode.IMAGE,
        output_category_mask=True,
        output_confidence_masks=True,
    )
    categories, confidences = [], []
    with vision.ImageSegmenter.create_from_options(options) as segmenter:
        labels = list(segmenter.labels)
        for image in images:
            frame = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(image, np.uint8))
            result = segmenter.segment(frame)
            categories.append(np.array(result.category_mask.numpy_view(), dtype=np.uint8).reshape(image.shape[:2]))
            confidences.append(np.stack([np.array(m.numpy_view(), dtype=np.float32).reshape(image.shape[:2])
                                         for m in result.confidence_masks], axis=-1))
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"category_masks": out_dir / "category_masks.npy", "confidence_masks": out_dir / "confidence_masks.npy"}
    np.save(paths["category_masks"], np.stack(categories))
    np.save(paths["confidence_masks"], np.stack(confidences))
    return {**{k: str(v) for k, v in paths.items()}, "labels": labels, "mediapipe": mp.__version__}


def main(argv: list[str]) -> int:
    import numpy as np

    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    model, images, out_dir = Path(argv[0]), np.load(argv[1]), Path(argv[2])
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        print(f"images must be uint8 [N, H, W, 3], got {images.dtype} {images.shape}", file=sys.stderr)
        return 2
    try:
        result = segment(model, images, out_dir)
    except Exception as exc:  # MediaPipe reports a refused model as RuntimeError/ValueError
        print(f"mediapipe: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
