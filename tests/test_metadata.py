"""MediaPipe ImageSegmenter metadata: written, read back, harmless to the model, and accepted by
the real MediaPipe Tasks client (run from .venv-mediapipe, where mediapipe lives).

A three-layer convolutional model stands in for an architecture: what is tested here is the
file, not the network, and it converts in seconds (the registry's models are covered by
test_registry_contracts.py).
"""

from __future__ import annotations

import io
import json
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

import support
from support import needs_mediapipe, run_client

from exporter.metadata import (LABELS_FILE, activation_for, add_segmenter_metadata, describe_metadata,
                               mediapipe_problems, read_metadata)

SIZE = 64
PRECISIONS = ("float32", "int8")
MIN_AGREEMENT = 0.99


def tiny_segmenter(num_classes: int):
    """RGB 0..255 in (normalised inside the graph), logits [1, H, W, C] out, batch 1."""
    from exporter.keras import keras

    init = keras.initializers.GlorotUniform
    inputs = keras.Input((SIZE, SIZE, 3), batch_size=1)
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(inputs)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", kernel_initializer=init(1))(x)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", kernel_initializer=init(2))(x)
    x = keras.layers.Conv2D(num_classes, 1, kernel_initializer=init(3))(x)
    return keras.Model(inputs, x)


def scenes(n: int, seed: int) -> np.ndarray:
    from calibration.synthetic import render_scene

    return np.stack([render_scene(i, (SIZE, SIZE), 3, seed=seed)[0] for i in range(n)]).astype(np.uint8)


@pytest.fixture(scope="module")
def exported():
    """{precision: (plain bytes, bytes with metadata)}, plus the config and the arguments used."""
    from architectures import get_spec, resolve_config
    from exporter.convert.tflite import to_tflite

    config = resolve_config("unet", input_size=SIZE, num_classes=3)
    model = tiny_segmenter(config.num_classes)
    calibration = scenes(16, seed=11)
    calibration[0], calibration[1] = 0, 255  # the full pixel range, so the uint8 input is exact
    args = dict(name=config.name, description="tiny test segmenter", labels=list(config.labels),
                mean=0.0, std=1.0, output_activation=activation_for(get_spec(config.name).output),
                version="0.1.0")
    files = {}
    for precision in PRECISIONS:
        blob = to_tflite(model, config, precision, calibration if precision == "int8" else None)
        files[precision] = (blob, add_segmenter_metadata(blob, **args))
    return config, args, files


def litert_scores(blob: bytes, images: np.ndarray, tmp_path: Path) -> tuple[np.ndarray, np.ndarray]:
    path = tmp_path / f"m{abs(hash(blob))}.tflite"
    path.write_bytes(blob)
    return support.litert_scores(path, images)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_metadata_round_trips(exported, precision):
    config, args, files = exported
    plain, with_md = files[precision]
    assert read_metadata(plain) is None
    meta = read_metadata(with_md)
    assert meta["name"] == config.name and meta["description"] == args["description"]
    assert meta["version"] == "0.1.0"
    assert meta["labels"] == list(config.labels) and meta["labels_file"] == LABELS_FILE
    assert meta["normalisation"] == {"mean": [0.0], "std": [1.0]}
    assert meta["input_range"] == {"min": [0.0], "max": [255.0]}
    assert meta["color_space"] == "RGB"
    assert meta["activation"] == "SOFTMAX"  # the model outputs logits
    assert meta["min_parser_version"] == "1.5.0"
    assert meta["associated_files"] == [LABELS_FILE]
    assert any("pet, background, border" in line for line in describe_metadata(with_md))


def test_labels_file_is_a_zip_appended_to_the_flatbuffer(exported):
    _, _, files = exported
    plain, with_md = files["float32"]
    with zipfile.ZipFile(io.BytesIO(with_md)) as zf:
        (info,) = zf.infolist()
        assert info.filename == LABELS_FILE and info.compress_type == zipfile.ZIP_STORED
        assert zf.read(info).decode() == "pet\nbackground\nborder"
        # The archive starts right after the flatbuffer (offsets are absolute in the file).
        flatbuffer_end = info.header_offset
    assert with_md[flatbuffer_end:flatbuffer_end + 4] == b"PK\x03\x04"
    assert len(plain) < flatbuffer_end < len(with_md)


def test_rewriting_replaces_metadata_and_is_deterministic(exported):
    _, args, files = exported
    plain, with_md = files["float32"]
    assert add_segmenter_metadata(plain, **args) == with_md
    assert add_segmenter_metadata(with_md, **args) == with_md
    relabelled = add_segmenter_metadata(with_md, **{**args, "labels": ["a", "b", "c"], "output_activation": "NONE"})
    meta = read_metadata(relabelled)
    assert meta["labels"] == ["a", "b", "c"] and meta["activation"] == "NONE"
    assert meta["associated_files"] == [LABELS_FILE]


def test_bad_arguments_are_refused(exported):
    _, args, files = exported
    plain, _ = files["float32"]
    with pytest.raises(ValueError, match="channels for 2 labels"):
        add_segmenter_metadata(plain, **{**args, "labels": ["a", "b"]})
    with pytest.raises(ValueError, match="activation"):
        add_segmenter_metadata(plain, **{**args, "output_activation": "RELU"})
    with pytest.raises(ValueError, match="differ in length"):
        add_segmenter_metadata(plain, **{**args, "mean": [0, 0, 0], "std": [1]})
    with pytest.raises(ValueError, match="TFL3"):
        add_segmenter_metadata(b"not a model at all", **args)


def with_input(blob: bytes, **changes) -> bytes:
    """The model with its input tensor's type or quantisation changed (never run, only checked)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(bytearray(blob), 0))
    tensor = model.subgraphs[0].tensors[model.subgraphs[0].inputs[0]]
    if "type" in changes:
        tensor.type = getattr(schema.TensorType, changes["type"])
    if "scale" in changes:
        tensor.quantization.scale = np.array([changes["scale"]], np.float32)
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), b"TFL3")
    return bytes(builder.Output())


def test_files_mediapipe_would_misread_are_refused(exported):
    _, args, files = exported
    plain, with_md = files["int8"]
    assert mediapipe_problems(plain) == [] and "MediaPipe ImageSegmenter: ready" in describe_metadata(with_md)[-1]
    # A uint8 input calibrated on less than the full 0..255 range: MediaPipe's raw pixels would be
    # read rescaled (measured: 79% agreement with LiteRT for a scale of 0.90).
    rescaled = with_input(plain, scale=0.9019608)
    with pytest.raises(ValueError, match="scale 0.901961"):
        add_segmenter_metadata(rescaled, **args)
    assert read_metadata(add_segmenter_metadata(rescaled, **args, check=False))["labels"] == args["labels"]
    # --io int8: "Requested one of these types: uint8/float32, got INT8."
    with pytest.raises(ValueError, match="uint8 or float32 input"):
        add_segmenter_metadata(with_input(plain, type="INT8"), **args)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_metadata_leaves_the_model_unchanged(exported, precision, tmp_path):
    from exporter.convert.tflite import op_histogram

    _, _, files = exported
    plain, with_md = files[precision]
    images = scenes(3, seed=5)
    _, raw_plain = litert_scores(plain, images, tmp_path)
    _, raw_md = litert_scores(with_md, images, tmp_path)
    np.testing.assert_array_equal(raw_md, raw_plain)
    assert op_histogram(with_md) == op_histogram(plain)


@needs_mediapipe
@pytest.mark.parametrize("precision", PRECISIONS)
def test_mediapipe_segmenter_agrees_with_litert(exported, precision, tmp_path):
    config, _, files = exported
    _, with_md = files[precision]
    model = tmp_path / f"{config.name}_{precision}.tflite"
    model.write_bytes(with_md)
    images = scenes(4, seed=5)
    done = run_client(model, images, tmp_path / "mediapipe")
    assert done.returncode == 0, f"MediaPipe refused {model.name}: {done.stderr[-2000:]}"
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["labels"] == list(config.labels)

    scores, _ = litert_scores(with_md, images, tmp_path)
    category = np.load(result["category_masks"])
    assert category.shape == images.shape[:3]
    agreement = float((category == scores.argmax(-1)).mean())
    assert agreement >= MIN_AGREEMENT, f"{precision}: MediaPipe agrees with LiteRT on {agreement:.2%} of pixels"
    # SOFTMAX in the metadata: MediaPipe's confidence masks are the softmax of the (dequantised) logits.
    confidence = np.load(result["confidence_masks"])
    expected = np.exp(scores - scores.max(-1, keepdims=True))
    expected /= expected.sum(-1, keepdims=True)
    np.testing.assert_allclose(confidence, expected, atol=1e-4)


@needs_mediapipe
def test_mediapipe_refuses_a_float_model_without_metadata(exported, tmp_path):
    _, _, files = exported
    model = tmp_path / "plain_float32.tflite"
    model.write_bytes(files["float32"][0])
    done = run_client(model, scenes(1, seed=5), tmp_path / "mediapipe")
    assert done.returncode == 1
    assert "NormalizationOptions" in done.stderr


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
