"""The score `--ptq-method auto` ranks candidates by: argmax agreement of the candidate's int8 file
with the float model on a held-out slice (disjoint from the report's samples and from the
calibration samples, which the methods fitted)."""

from __future__ import annotations

import numpy as np


def agreement_score(model, config, calibration_images: np.ndarray, images: np.ndarray, **convert_options):
    """score_fn(methods) for `choose_method`: convert `apply_methods(model, ...)` to int8 with
    `to_tflite(..., **convert_options)` on the same calibration images and return its pixel argmax
    agreement with `model` (float) on `images`. Each call's recipe is kept in `score_fn.recipes`."""
    import tempfile
    from pathlib import Path

    from exporter.convert.tflite import to_tflite
    from exporter.parity import class_map
    from exporter.ptq import apply_methods
    from exporter.runtimes import LiteRTRunner

    reference = class_map(np.asarray(model.predict(np.asarray(images, np.float32), batch_size=1, verbose=0)))

    def score_fn(methods) -> float:
        candidate, recipe = apply_methods(model, config, calibration_images, methods)
        blob = to_tflite(candidate, config, "int8", calibration_images, **convert_options)
        score_fn.recipes["+".join(methods) or "none"] = recipe
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "candidate.tflite"
            path.write_bytes(blob)
            runner = LiteRTRunner(path, threads=1)
            preds = np.stack([class_map(runner.predict(image[None])[0]) for image in images])
        return float((preds == reference).mean())

    score_fn.recipes = {}
    return score_fn
