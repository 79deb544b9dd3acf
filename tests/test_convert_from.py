"""`exporter convert --from FILE` through the real CLI: a Keras model we did not build, MediaPipe's
own float selfie segmenter (a real trained third-party .tflite), a PyTorch-exported ONNX file, and
bad files (one line, exit 2, nothing written).

Photographs: matplotlib's grace_hopper.jpg, the one real photograph an installed package ships;
its crops and mirror images make the folder (plain images, no masks: agreement-only parity).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.support import MEDIAPIPE_PYTHON, ROOT, run_client

MEDIAPIPE_MODELS = Path(os.environ.get("SEGEXPORT_MEDIAPIPE_MODELS", ROOT / ".cache" / "mediapipe-models"))
SELFIE = MEDIAPIPE_MODELS / "selfie_segmentation.tflite"


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """14 crops (every other one mirrored) of matplotlib's photograph, as a folder of plain images."""
    import matplotlib

    from tools.sample_photos import write_crops

    if not (Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg").is_file():
        pytest.skip("matplotlib's sample photograph grace_hopper.jpg is not installed")
    return write_crops(tmp_path_factory.mktemp("photos"))


def _report(out: Path, name: str) -> dict:
    return json.loads((out / name / "report.json").read_text())


def _ok(result) -> None:
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-2000:]


def _input_detail(path: Path) -> dict:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path))
    return interp.get_input_details()[0]


def keras_deeplab(path: Path, size: int = 64, classes: int = 3, output: str = "softmax") -> Path:
    """A small DeepLabV3-style Keras 3 model (strided encoder, ASPP with a dilated branch and image
    pooling, bilinear upsampling), saved with model.save as a notebook would. output: softmax,
    logits, or "classifier" (a 2-D [1, classes] head: not a segmentation model)."""
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((size, size, 3))
    x = keras.layers.Rescaling(1 / 127.5, -1)(inp)
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(x)
    x = keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu")(x)
    if output == "classifier":
        x = keras.layers.GlobalAveragePooling2D()(x)
        model = keras.Model(inp, keras.layers.Dense(classes, activation="softmax")(x))
    else:
        b1 = keras.layers.Conv2D(16, 1, activation="relu")(x)
        b2 = keras.layers.Conv2D(16, 3, padding="same", dilation_rate=2, activation="relu")(x)
        pooled = keras.layers.GlobalAveragePooling2D(keepdims=True)(x)
        pooled = keras.layers.UpSampling2D(size // 4)(keras.layers.Conv2D(16, 1, activation="relu")(pooled))
        x = keras.layers.Conv2D(classes, 1)(keras.layers.Concatenate()([b1, b2, pooled]))
        x = keras.layers.UpSampling2D(4, interpolation="bilinear")(x)
        if output == "softmax":
            x = keras.layers.Softmax()(x)
        model = keras.Model(inp, x)
    model.save(path)
    return path


@pytest.mark.slow
def test_keras_model_end_to_end(run_cli, tmp_path, photos):
    """A .keras file through every stage: its files keep its float [0..255] input (the model rescales
    inside), parity against the model in Keras, ARM cost, the recommendation."""
    from exporter.arm import env as arm_env
    from exporter.metadata import read_metadata

    model = keras_deeplab(tmp_path / "my_deeplab.keras")
    out = tmp_path / "runs"
    result = run_cli("--quiet", "convert", "--from", str(model), "--data", str(photos), "--precision", "int8,float16",
                     "--labels", "background,person,hair", "--threads", "1", "--no-gpu-run", "--arm", "cortex-a76",
                     "--out", str(out))
    _ok(result)
    report = _report(out, "my_deeplab")
    assert report["source"]["kind"] == "keras" and "TFLiteConverter" in report["source"]["engine"]
    assert "original model" in report["reference"]["description"]
    assert report["source"]["contract"]["output"] == "probabilities"  # read from the last layer
    assert report["labels"] == ["background", "person", "hair"]
    assert not report["data"]["masks"] and report["data"]["heldout_samples"] >= 2
    arts = {a["file"]: a for a in report["artifacts"]}
    assert set(arts) == {"my_deeplab_float32.tflite", "my_deeplab_float16.tflite", "my_deeplab_int8.tflite"} | {
        a for a in arts if a.startswith("my_deeplab_int8_")}
    assert arts["my_deeplab_float32.tflite"]["agreement"] >= 0.999
    assert arts["my_deeplab_int8.tflite"]["agreement"] >= 0.9
    for name in arts:
        detail = _input_detail(out / "my_deeplab" / name)
        assert list(detail["shape"]) == [1, 64, 64, 3] and detail["dtype"] == np.float32  # the original's input
        meta = read_metadata((out / "my_deeplab" / name).read_bytes())
        assert meta["labels"] == ["background", "person", "hair"] and meta["activation"] == "NONE"
    assert report["recommended"]["cpu"] in arts
    if arm_env.check() is None:
        for name, art in arts.items():
            assert art["arm"]["cortex-a76"]["instructions"] > 0  # both cores by default; one here, for time
        assert report["int8_search"]["summary"]
    assert result.stderr == ""


def test_savedmodel_source(tmp_path, photos):
    """A SavedModel folder (Keras 3's model.export): its float32 TFLite equals the model in TensorFlow."""
    import keras
    from PIL import Image

    from architectures.importers.foreign import open_foreign

    folder = tmp_path / "exported"
    keras.saving.load_model(keras_deeplab(tmp_path / "m.keras")).export(str(folder), verbose=False)
    fm = open_foreign(folder, tmp_path / "work", input_norm="0,255", labels=("a", "b", "c"))
    assert fm.kind == "savedmodel" and fm.contract.output == "probabilities" and not fm.contract.channels_first
    pixels = np.stack([np.asarray(Image.open(p).convert("RGB").resize((64, 64))) for p in sorted(photos.iterdir())[:3]])
    path = tmp_path / "f.tflite"
    path.write_bytes(fm.float32)
    from exporter.stages.foreign import FileRunner

    runner, reference = FileRunner(path, fm.contract), fm.reference()
    for image in pixels:  # batch 1, as every runner is fed
        ours, theirs = runner.predict(image[None]), reference.predict(image[None])
        assert ours.shape == theirs.shape == (1, 64, 64, 3) and np.abs(ours - theirs).max() < 1e-4


@pytest.mark.slow
def test_mediapipe_selfie_segmenter(run_cli, tmp_path, photos):
    """MediaPipe's own float selfie segmenter: fixed (float16 constants, its custom transposed conv,
    no signature), quantised by AI Edge Quantizer, every file keeping its [0, 1] float input and its
    metadata; MediaPipe's ImageSegmenter loads each with the original's label and activation."""
    if not SELFIE.is_file():
        pytest.skip(f"{SELFIE} missing: `make mediapipe-models` extracts it from the pinned mediapipe wheel")
    out = tmp_path / "runs"
    result = run_cli("--quiet", "convert", "--from", str(SELFIE), "--data", str(photos),
                     "--precision", "int8,dynamic,float16", "--no-bench", "--out", str(out))
    _ok(result)
    report = _report(out, "selfie_segmentation")
    source = report["source"]
    assert source["kind"] == "tflite" and "AI Edge Quantizer" in source["engine"]
    assert len(source["fixes"]) == 3, source["fixes"]  # float16 constants, the custom op, the signature
    assert report["reference"]["description"] == "LiteRT on the original file"
    contract = source["contract"]
    assert contract["normalisation_from"] == "metadata" and contract["std"] == [255.0]
    assert report["labels"] == ["background", "selfie"]
    arts = {a["file"]: a for a in report["artifacts"]}
    assert arts["selfie_segmentation_float32.tflite"]["agreement"] == 1.0
    assert arts["selfie_segmentation_float16.tflite"]["agreement"] >= 0.999
    from PIL import Image

    images = np.stack([np.asarray(Image.open(p).convert("RGB").resize((256, 256))) for p in sorted(photos.iterdir())[:2]])
    if not MEDIAPIPE_PYTHON.exists():
        pytest.skip("no .venv-mediapipe (make mediapipe-env)")
    for name in arts:
        detail = _input_detail(out / "selfie_segmentation" / name)
        assert list(detail["shape"]) == [1, 256, 256, 3] and detail["dtype"] == np.float32
        client = run_client(out / "selfie_segmentation" / name, images, tmp_path / "mp" / name)
        assert client.returncode == 0, client.stderr[-2000:]
        seen = json.loads(client.stdout.strip().splitlines()[-1])
        assert seen["labels"] == ["selfie"]  # the original's labels file, kept
        masks = np.load(seen["confidence_masks"])
        assert masks.shape == (2, 256, 256, 1) and 0.0 <= masks.min() and masks.max() <= 1.0  # activation NONE kept
    assert result.stderr == ""


@pytest.mark.slow
def test_onnx_model_end_to_end(run_cli, tmp_path, photos):
    """A PyTorch-exported ONNX file: TFLite files through onnx2tf keep its NCHW input; the int8 ONNX
    through ONNX Runtime's quantize_static; parity against the ONNX file in ONNX Runtime."""
    from tests.foreign_models import torch_onnx_segmenter

    model = torch_onnx_segmenter(tmp_path / "torch_seg.onnx", size=64, classes=3)
    out = tmp_path / "runs"
    result = run_cli("--quiet", "convert", "--from", str(model), "--data", str(photos), "--precision", "int8",
                     "--input-norm", "imagenet", "--no-bench", "--out", str(out))
    _ok(result)
    report = _report(out, "torch_seg")
    assert report["source"]["kind"] == "onnx" and "onnx2tf" in report["source"]["engine"]
    assert report["source"]["contract"]["layout"] == "NCHW" and report["input_shape"] == [1, 3, 64, 64]
    arts = {a["file"]: a for a in report["artifacts"]}
    assert {"torch_seg_float32.tflite", "torch_seg_int8.tflite", "torch_seg_float32.onnx",
            "torch_seg_int8.onnx"} <= set(arts)
    assert arts["torch_seg_float32.onnx"]["agreement"] == 1.0
    assert arts["torch_seg_float32.tflite"]["agreement"] >= 0.999
    assert arts["torch_seg_int8.onnx"]["agreement"] >= 0.9 and arts["torch_seg_int8.tflite"]["agreement"] >= 0.9
    assert list(_input_detail(out / "torch_seg" / "torch_seg_int8.tflite")["shape"]) == [1, 3, 64, 64]


def _int8_tflite(path: Path) -> Path:
    """A full-integer file (what `--from` must refuse as a float model)."""
    from exporter.keras import tf

    model = tf.keras.Sequential([tf.keras.Input((16, 16, 3)), tf.keras.layers.Conv2D(2, 3, padding="same")])
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([np.random.rand(1, 16, 16, 3).astype(np.float32)] for _ in range(4))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.int8
    path.write_bytes(converter.convert())
    return path


def _bad_files(tmp: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, a phrase its one-line error must contain)."""
    tmp.mkdir(parents=True, exist_ok=True)
    selfie_cut = tmp / "cut.tflite"
    selfie_cut.write_bytes(SELFIE.read_bytes()[:5000] if SELFIE.is_file() else b"TFL3" + bytes(100))
    text = tmp / "notes.onnx"
    text.write_text("this is not a model\n")
    return {
        "truncated tflite": (selfie_cut, "cut.tflite"),
        "text as onnx": (text, "notes.onnx"),
        "classifier": (keras_deeplab(tmp / "classifier.keras", output="classifier"), "not a segmentation model"),
        "int8 given as float": (_int8_tflite(tmp / "quantised.tflite"), "quantised"),
        "missing": (tmp / "nothing.onnx", "not found"),
        "other suffix": (_copy(text, tmp / "notes.txt"), "not a model file"),
    }


def _copy(src: Path, dst: Path) -> Path:
    shutil.copy(src, dst)
    return dst


@pytest.mark.slow
def test_bad_files_one_line_exit_2(run_cli, tmp_path, photos):
    out = tmp_path / "runs"
    for what, (path, phrase) in _bad_files(tmp_path / "bad").items():
        result = run_cli("convert", "--from", str(path), "--data", str(photos), "--no-bench", "--out", str(out))
        assert result.returncode == 2, (what, result.stderr[-2000:])
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and phrase in lines[0], (what, lines)
        assert "Traceback" not in result.stderr
    assert not out.exists() or not any(out.iterdir())  # no partial artifact, no staging left


def test_from_needs_data_and_one_source(run_cli, tmp_path):
    model = tmp_path / "m.onnx"
    model.write_bytes(b"x")
    for args, phrase in ((["--from", str(model)], "--from needs --data"),
                         (["--from", str(model), "--model", "unet", "--data", "x"], "not both"),
                         ([], "not neither"),
                         (["--from", str(model), "--data", "x", "--weights", "w.h5"], "--weights is for --model")):
        result = run_cli("convert", *args)
        assert result.returncode == 2, (args, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and phrase in lines[0], (args, lines)
