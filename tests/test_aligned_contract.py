"""`convert --output-size aligned:R` (exporter.output_contract, issue 28): DeepLab's logits resampled
inside the file to a grid whose aligned-corners upsample (MediaPipe's ImageSegmenter) reproduces the
model's own half-pixel resize. Through the real code: the export graph, the TFLite file with its
metadata, LiteRT, and the real client."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from architectures import build, resolve_config
from support import needs_mediapipe, run_client

SIZE = (64, 96)  # not square: a map applied along the wrong axis would show


def test_resize_matrix_is_tensorflows():
    from exporter.keras import tf
    from exporter.output_contract import aligned_map, resize_matrix

    for align_corners in (False, True):
        for out, inp in ((128, 16), (96, 12), (5, 3)):
            basis = np.eye(inp, dtype=np.float32).reshape(1, inp, 1, inp)
            ref = tf.raw_ops.ResizeBilinear(images=basis, size=(out, 1), align_corners=align_corners,
                                            half_pixel_centers=not align_corners).numpy()[0, :, 0, :]
            assert np.abs(ref - resize_matrix(out, inp, align_corners)).max() < 1e-5
    # At the input's own size the client's upsample is the identity: the map is the model's resize.
    assert np.allclose(aligned_map(128, 16, 128), resize_matrix(128, 16))


def test_bad_grid_refused_in_one_line():
    from exporter.errors import ExporterError
    from exporter.output_contract import aligned_grid, check

    assert aligned_grid("aligned:32", (128, 128)) == (32, 32)
    assert aligned_grid("aligned:32x48", None) == (32, 48)
    for bad in ("aligned:", "aligned:1", "aligned:x", "aligned:3x4x5", "client:32"):
        with pytest.raises(ExporterError):
            check("model", bad)
    with pytest.raises(ExporterError, match="larger than"):
        aligned_grid("aligned:256", (128, 128))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """{contract: float32 file} of one seeded DeepLab (BatchNorm statistics from real scenes), and the images."""
    from calibration.synthetic import render_scene
    from exporter.convert.signature import export_model
    from exporter.convert.tflite import to_tflite
    from exporter.keras import keras
    from exporter.metadata import add_segmenter_metadata, segmenter_metadata_for
    from test_registry_contracts import calibrate_batchnorm

    base = resolve_config("deeplab", input_size=SIZE, num_classes=4)
    keras.utils.set_random_seed(0)
    model = build(base)
    scenes = np.stack([render_scene(i, SIZE, base.num_classes, seed=5)[0] for i in range(6)])
    calibrate_batchnorm(model, scenes[:4].astype(np.float32))
    folder = tmp_path_factory.mktemp("aligned")
    paths = {}
    for size in ("input", "native", "aligned:32x48", f"aligned:{SIZE[0]}x{SIZE[1]}"):
        config = dataclasses.replace(base, output_size=size)
        paths[size] = folder / f"deeplab_{size.replace(':', '_')}.tflite"
        blob = to_tflite(export_model(model, config), config, "float32", None)
        paths[size].write_bytes(add_segmenter_metadata(blob, **segmenter_metadata_for(config)))
    return base, paths, scenes.astype(np.uint8), folder


def _client_scores(path, config, images):
    """What MediaPipe's category mask reads: the file's output upsampled with aligned corners (ClientView)."""
    from exporter.output_contract import ClientView
    from exporter.runtimes import LiteRTRunner

    view = ClientView(LiteRTRunner(path, threads=1), config)
    return np.stack([view.predict(image[None].astype(np.float32))[0] for image in images])


def test_aligned_grid_reproduces_the_model_after_the_clients_upsample(files):
    from exporter.keras import keras  # noqa: F401 - TF before LiteRT, as convert imports them
    from exporter.metadata import read_metadata
    from exporter.runtimes import LiteRTRunner

    base, paths, images, _ = files
    model = _client_scores(paths["input"], base, images)  # the model's own scores at the input size
    scale = float(np.sqrt((model ** 2).mean()))
    err = {}
    for size in ("native", "aligned:32x48", f"aligned:{SIZE[0]}x{SIZE[1]}"):
        config = dataclasses.replace(base, output_size=size)
        shape = LiteRTRunner(paths[size], threads=1).output["shape"][1:3].tolist()
        assert shape == {"native": [8, 12], "aligned:32x48": [32, 48]}.get(size, list(SIZE))
        err[size] = float(np.sqrt(((_client_scores(paths[size], config, images) - model) ** 2).mean())) / scale
    print(f"relative RMS error after MediaPipe's upsample: {err}")
    # The full grid is the model's resize itself (along the right axes); a half-size grid is close,
    # and far closer than the decoder's own grid read with aligned corners.
    assert err[f"aligned:{SIZE[0]}x{SIZE[1]}"] < 1e-4
    assert err["aligned:32x48"] < 0.02 and err["aligned:32x48"] < err["native"] / 4
    assert "aligned corners" in read_metadata(paths["aligned:32x48"].read_bytes())["description"]


@needs_mediapipe
@pytest.mark.slow
def test_mediapipe_category_mask_of_the_aligned_file(files):
    """The real ImageSegmenter on the aligned file: masks at the image size, equal to parity's client
    view, and agreeing with the float model's argmax better than the native file's."""
    base, paths, images, folder = files
    model = _client_scores(paths["input"], base, images).argmax(-1)
    agree = {}
    for size in ("native", "aligned:32x48"):
        config = dataclasses.replace(base, output_size=size)
        result = run_client(paths[size], images, folder / size.replace(":", "_"))
        assert result.returncode == 0, result.stderr[-2000:]
        category = np.load(json.loads(result.stdout.strip().splitlines()[-1])["category_masks"])
        assert category.shape == images.shape[:3]
        assert float((category == _client_scores(paths[size], config, images).argmax(-1)).mean()) >= 0.999
        agree[size] = float((category == model).mean())
    print(f"MediaPipe's category mask vs the float model's argmax: {agree}")
    assert agree["aligned:32x48"] >= 0.99 and agree["aligned:32x48"] > agree["native"]
