"""Every precision of every registered architecture, as a mobile app gets it.

The pipeline's own steps (to_tflite, then the segmenter metadata) make float32, float16 and int8
files of each architecture at a small size; MediaPipe Tasks' ImageSegmenter, the real client,
loads each one as an app would and must agree with LiteRT, and every float16 file must be one the
GPU delegate takes whole. Parametrised over the registry: a new architecture is covered here
without touching this file.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from architectures import build, list_models
from support import litert_scores, needs_mediapipe, pixels, run_client, small_config, top_class_agreement

PRECISIONS = ("float32", "float16", "int8")
MIN_AGREEMENT = 0.99
MIN_FLOAT16_SHRINK = 1.9


@pytest.fixture(scope="module", params=list_models())
def exported(request, tmp_path_factory):
    """(config, {precision: path of the file with metadata}) for one architecture."""
    from calibration.synthetic import render_scene
    from exporter.convert.signature import export_model
    from exporter.convert.tflite import to_tflite
    from exporter.metadata import add_segmenter_metadata, segmenter_metadata_for

    config = small_config(request.param)
    fixed = export_model(build(config), config)
    calibration = np.stack([render_scene(i, config.input_size, config.num_classes, seed=3)[0]
                            for i in range(8)]).astype(np.uint8)
    folder = tmp_path_factory.mktemp(config.name)
    paths = {}
    for precision in PRECISIONS:
        blob = to_tflite(fixed, config, precision, calibration if precision == "int8" else None)
        # check=True: refuses a file MediaPipe would reject or feed wrongly.
        blob = add_segmenter_metadata(blob, **segmenter_metadata_for(config))
        paths[precision] = folder / f"{config.name}_{precision}.tflite"
        paths[precision].write_bytes(blob)
    return config, paths


def test_float16_is_gpu_delegate_whole_and_half_the_size(exported):
    from exporter.delegates import gpu_compatibility

    config, paths = exported
    verdict = gpu_compatibility(paths["float16"].read_bytes())
    assert verdict["compatible"], f"{config.name} float16 falls back from the GPU delegate: {verdict}"
    shrink = paths["float32"].stat().st_size / paths["float16"].stat().st_size
    assert shrink >= MIN_FLOAT16_SHRINK, f"{config.name}: float16 only {shrink:.2f}x smaller than float32"


@needs_mediapipe
@pytest.mark.parametrize("precision", PRECISIONS)
def test_mediapipe_segmenter_loads_it_and_agrees_with_litert(exported, precision, tmp_path):
    config, paths = exported
    images = pixels(config, n=2, seed=7).astype(np.uint8)
    done = run_client(paths[precision], images, tmp_path / "mediapipe")
    assert done.returncode == 0, f"MediaPipe refused {paths[precision].name}: {done.stderr[-2000:]}"
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["labels"] == list(config.labels)

    scores, _ = litert_scores(paths[precision], images)
    category = np.load(result["category_masks"])
    assert category.shape == images.shape[:3]
    agreement = top_class_agreement(category, scores)
    assert agreement >= MIN_AGREEMENT, f"{paths[precision].name}: MediaPipe agrees with LiteRT on {agreement:.2%}"
