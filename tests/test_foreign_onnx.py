"""`convert --from model.onnx`'s model source: a PyTorch-exported ONNX segmenter to a float32 TFLite
that takes and returns the same tensors as the ONNX file, its int8 ONNX, and one-line refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from architectures.importers.foreign.errors import ForeignModelError
from tests.foreign_models import torch_onnx_classifier, torch_onnx_segmenter

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def photo_crops(n: int, size: int = 64, seed: int = 0) -> np.ndarray:
    """[n, size, size, 3] uint8 crops (random places and scales, some mirrored) of a real photograph,
    matplotlib's grace_hopper.jpg."""
    import matplotlib
    from PIL import Image

    photo = Image.open(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg").convert("RGB")
    rng = np.random.default_rng(seed)
    crops = []
    for _ in range(n):
        side = int(rng.uniform(0.3, 1.0) * min(photo.size))
        x, y = (int(rng.integers(0, d - side + 1)) for d in photo.size)
        crop = photo.crop((x, y, x + side, y + side)).resize((size, size), Image.BILINEAR)
        if rng.random() < 0.5:
            crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
        crops.append(np.asarray(crop))
    return np.stack(crops)


def imagenet_nchw(crops: np.ndarray) -> np.ndarray:
    return ((crops.astype(np.float32) / 255.0 - MEAN) / STD).transpose(0, 3, 1, 2).copy()


def ort_outputs(model, batch: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    source = model if isinstance(model, bytes) else str(model)
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: x[None]})[0] for x in batch])


def tflite_outputs(blob: bytes, batch: np.ndarray, facts: dict) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_content=blob).get_signature_runner("serving_default")
    return np.concatenate([runner(**{facts["input_name"]: x[None]})[facts["output_name"]] for x in batch])


@pytest.fixture(scope="module")
def segmenter(tmp_path_factory) -> Path:
    return torch_onnx_segmenter(tmp_path_factory.mktemp("torch") / "segmenter.onnx")


@pytest.fixture(scope="module")
def photos() -> np.ndarray:
    return imagenet_nchw(photo_crops(24))


@pytest.mark.slow
def test_float_tflite_keeps_the_onnx_contract(segmenter, photos, tmp_path, capsys):
    from ai_edge_litert.interpreter import Interpreter

    from architectures.importers.foreign.onnx_source import onnx_to_float_tflite

    import os
    import warnings

    from tensorflow.python.framework import config

    before = segmenter.read_bytes()
    seed_state = np.random.get_state()[1].copy()
    process = (os.environ.get("CUDA_VISIBLE_DEVICES"), config.is_op_determinism_enabled())
    capsys.readouterr()
    blob, facts = onnx_to_float_tflite(segmenter, tmp_path / "work")
    assert capsys.readouterr() == ("", "")  # onnx2tf's printing captured
    # what onnx2tf sets for the whole process (warnings off, seeds, op determinism, no CUDA) undone
    assert ("ignore", None, Warning, None, 0) not in warnings.filters  # (libraries may add their own)
    assert np.array_equal(np.random.get_state()[1], seed_state)
    assert (os.environ.get("CUDA_VISIBLE_DEVICES"), config.is_op_determinism_enabled()) == process
    assert segmenter.read_bytes() == before  # onnx2tf rewrites its input file: never the user's
    assert facts["engine"] == "onnx2tf 1.29.24"
    assert (facts["input_layout"], facts["output_layout"]) == ("NCHW", "NCHW")
    assert facts["input_shape"] == [1, 3, 64, 64] and facts["output_shape"] == [1, 3, 64, 64]
    interpreter = Interpreter(model_content=blob)
    assert interpreter.get_signature_list() == {"serving_default": {"inputs": ["pixels"], "outputs": ["logits"]}}
    assert list(interpreter.get_input_details()[0]["shape"]) == [1, 3, 64, 64]
    assert interpreter.get_input_details()[0]["dtype"] == np.float32

    batch = photos[:8]
    want, got = ort_outputs(segmenter, batch), tflite_outputs(blob, batch, facts)
    assert got.shape == want.shape == (8, 3, 64, 64)
    assert np.max(np.abs(got - want)) < 1e-4 * max(1.0, float(np.ptp(want)))
    assert np.mean(got.argmax(1) == want.argmax(1)) >= 0.999


@pytest.mark.slow
def test_nhwc_onnx_stays_nhwc(tmp_path):
    from architectures.importers.foreign.onnx_source import onnx_to_float_tflite

    model = torch_onnx_segmenter(tmp_path / "nhwc.onnx", layout="NHWC")
    blob, facts = onnx_to_float_tflite(model, tmp_path / "work")
    assert (facts["input_layout"], facts["output_layout"]) == ("NHWC", "NHWC")
    batch = imagenet_nchw(photo_crops(3, seed=1)).transpose(0, 2, 3, 1).copy()
    want, got = ort_outputs(model, batch), tflite_outputs(blob, batch, facts)
    assert got.shape == want.shape == (3, 64, 64, 3)
    assert np.mean(got.argmax(-1) == want.argmax(-1)) >= 0.999


@pytest.mark.slow
def test_int8_onnx_of_a_foreign_model(segmenter, photos):
    import onnx

    from architectures.importers.foreign.onnx_source import quantise_foreign_onnx

    blob = quantise_foreign_onnx(segmenter, photos[8:])
    quantised = onnx.load_from_string(blob)
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in quantised.graph.node}
    original = onnx.load(str(segmenter))
    for ours, theirs in ((quantised.graph.input[0], original.graph.input[0]),
                         (quantised.graph.output[0], original.graph.output[0])):
        assert (ours.name, ours.type) == (theirs.name, theirs.type)  # float32, same names and shapes
    batch = photos[:8]
    want, got = ort_outputs(segmenter, batch), ort_outputs(blob, batch)
    assert np.mean(got.argmax(1) == want.argmax(1)) >= 0.95
    with pytest.raises(ForeignModelError, match=r"segmenter\.onnx: calibration batch is \[16, 64, 64, 3\]"):
        quantise_foreign_onnx(segmenter, photos[8:].transpose(0, 2, 3, 1))


@pytest.mark.slow
def test_open_foreign_onnx(segmenter, tmp_path):
    """The ForeignModel of an .onnx: NCHW contract, ONNX Runtime reference in NHWC scores, the float
    TFLite equal to it, the int8 TFLite (AI Edge Quantizer) in the same float contract."""
    from ai_edge_litert.interpreter import Interpreter

    from architectures.importers.foreign import open_foreign

    fm = open_foreign(segmenter, tmp_path / "work", input_norm="imagenet")
    assert (fm.kind, fm.onnx_path, fm.contract.channels_first, fm.contract.channels) == ("onnx", segmenter, True, 3)
    assert (fm.contract.height, fm.contract.width, fm.contract.output) == (64, 64, "logits")
    pixels = photo_crops(16, seed=2)
    reference = fm.reference().predict(pixels[:6])
    assert reference.shape == (6, 64, 64, 3)
    np.testing.assert_allclose(reference, ort_outputs(segmenter, fm.contract.inputs(pixels[:6])).transpose(0, 2, 3, 1),
                               atol=1e-5)
    facts = {"input_name": "pixels", "output_name": "logits"}
    for blob, at_least in ((fm.float32, 0.999), (fm.quantise("int8", fm.contract.inputs(pixels[6:])), 0.95)):
        assert Interpreter(model_content=blob).get_input_details()[0]["dtype"] == np.float32
        scores = tflite_outputs(blob, fm.contract.inputs(pixels[:6]), facts).transpose(0, 2, 3, 1)
        assert np.mean(scores.argmax(-1) == reference.argmax(-1)) >= at_least


def refusal(path: Path, tmp_path: Path) -> str:
    from architectures.importers.foreign.onnx_source import onnx_to_float_tflite

    with pytest.raises(ForeignModelError) as info:
        onnx_to_float_tflite(path, tmp_path / "work")
    message = str(info.value)
    assert "\n" not in message and len(message) < 300, message
    assert message.startswith(f"{path.name}: "), message
    assert info.value.exit_code == 2
    return message


def test_refuses_a_truncated_file(segmenter, tmp_path):
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(segmenter.read_bytes()[: segmenter.stat().st_size // 2])
    assert "truncated" in refusal(cut, tmp_path)


def test_refuses_text_named_onnx(tmp_path):
    text = tmp_path / "notes.onnx"
    text.write_text("these are my notes about the model, not the model\n" * 20)
    assert "not an ONNX model" in refusal(text, tmp_path)


def test_refuses_a_classifier(tmp_path):
    message = refusal(torch_onnx_classifier(tmp_path / "classifier.onnx"), tmp_path)
    assert "output 'logits' is 2-D [1, 10]: not a segmentation model" in message


def test_refuses_a_dynamic_input_size(tmp_path):
    message = refusal(torch_onnx_segmenter(tmp_path / "dynamic.onnx", dynamic_size=True), tmp_path)
    assert "give a fixed input size" in message


def test_onnx2tf_stopping_is_one_line(segmenter, tmp_path, monkeypatch):
    """onnx2tf prints a coloured ERROR and calls sys.exit(1) on what it cannot convert."""
    import onnx2tf

    def stops(**kwargs):
        print("\x1b[31mERROR:\x1b[0m Unsupported op: GridSample mode=bicubic\nTraceback (most recent call last):")
        raise SystemExit(1)

    monkeypatch.setattr(onnx2tf, "convert", stops)
    assert refusal(segmenter, tmp_path) == "segmenter.onnx: onnx2tf cannot convert it: Unsupported op: GridSample mode=bicubic"
