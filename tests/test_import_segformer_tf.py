"""The seed's SegFormer checkpoints: Hugging Face's TensorFlow `TFSegformerForSemanticSegmentation`
saved with `save_weights` (a TF checkpoint `Lips.ckpt`, and `tf_model.h5`), converted by the real
CLI (issue 25).

A tiny SegformerConfig (4 stages of one block, hidden 8..64) is built, saved and run in
.venv-hf-tf (transformers 4.x; tests/hf_tf_reference.py), in a subprocess: transformers 5 in .venv
has no TensorFlow models. Each save form goes through `exporter convert --weights FORM`, and the
float32 .tflite it writes must give that model's own probabilities: its 1/4-resolution NCHW
logits, upsampled to the input as our graph does (bilinear, half-pixel), then softmax.
"""

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from support import ROOT

HF_TF_PYTHON = Path(os.environ.get("HF_TF_PYTHON", ROOT / ".venv-hf-tf" / "bin" / "python"))
SIZE = 64
TINY = {"num_channels": 3, "num_encoder_blocks": 4, "depths": [1, 1, 1, 1], "sr_ratios": [8, 4, 2, 1],
        "hidden_sizes": [8, 16, 40, 64], "patch_sizes": [7, 3, 3, 3], "strides": [4, 2, 2, 2],
        "num_attention_heads": [1, 2, 5, 8], "mlp_ratios": [4, 4, 4, 4], "decoder_hidden_size": 32,
        "id2label": {"0": "outer", "1": "hair", "2": "face", "3": "skin", "4": "clothes", "5": "lips"}}
QUICK = ["--input-size", str(SIZE), "--no-onnx", "--no-bench", "--no-arm", "--layer-errors", "0",
         "--train-samples", "8", "--val-samples", "4"]

pytestmark = pytest.mark.skipif(
    not HF_TF_PYTHON.exists(),
    reason=f"Hugging Face TF environment missing ({HF_TF_PYTHON}); create it with `make hf-tf-env`")


@pytest.fixture(scope="module")
def hf_model(tmp_path_factory):
    """(folder with ckpt/Lips.ckpt*, tf_model.h5; images [N, H, W, 3]; the HF model's probabilities)."""
    folder = tmp_path_factory.mktemp("hf_tf")
    images = np.random.default_rng(0).integers(0, 256, size=(2, SIZE, SIZE, 3)).astype(np.float32)
    np.save(folder / "images.npy", images)
    (folder / "config.in.json").write_text(json.dumps(TINY))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    result = subprocess.run([str(HF_TF_PYTHON), str(ROOT / "tests" / "hf_tf_reference.py"), str(folder),
                             str(folder / "config.in.json"), str(folder / "images.npy")],
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    logits = np.load(folder / "logits.npy")
    assert logits.shape == (2, len(TINY["id2label"]), SIZE // 4, SIZE // 4)  # NCHW, 1/4 resolution
    return folder, images, _reference_probabilities(logits)


def _reference_probabilities(logits_nchw: np.ndarray) -> np.ndarray:
    import tensorflow as tf

    nhwc = tf.image.resize(logits_nchw.transpose(0, 2, 3, 1), (SIZE, SIZE), method="bilinear")
    return tf.nn.softmax(nhwc).numpy()


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.mark.slow
@pytest.mark.parametrize("form", ["ckpt/Lips.ckpt", "ckpt/Lips.ckpt.index", "ckpt", "tf_model.h5", "pretrained"])
def test_convert_matches_the_hugging_face_tf_model(hf_model, run_cli, form):
    from support import litert_scores

    folder, images, reference = hf_model
    out = folder / ("runs_" + form.replace("/", "_").replace(".", "_"))
    result = run_cli("convert", "--model", "segformer", "--weights", str(folder / form), *QUICK, "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "123 tensors mapped" in result.stdout + result.stderr
    scores, _ = litert_scores(out / "segformer" / "segformer_float32.tflite", images)
    probabilities = _softmax(scores.astype(np.float64))
    delta = float(np.abs(probabilities - reference).max())
    agreement = float((probabilities.argmax(-1) == reference.argmax(-1)).mean())
    print(f"{form}: max |dprob| {delta:.2e}, argmax agreement {agreement:.4%}")
    assert delta <= 1e-4
    assert agreement >= 0.999
    report = json.loads((out / "segformer" / "report.json").read_text())
    assert len(report["labels"]) == len(TINY["id2label"])
    if form == "pretrained":  # save_pretrained's config.json names the classes
        assert report["labels"][-1] == "lips"
    assert report["training"]["import"]["mapped"] == 123  # what the importer said, kept in report.json


@pytest.mark.slow
def test_wrong_class_count_is_one_line(hf_model, run_cli):
    folder, _, _ = hf_model
    result = run_cli("convert", "--model", "segformer", "--weights", str(folder / "ckpt" / "Lips.ckpt"),
                     *QUICK, "--classes", "3", "--out", str(folder / "runs_wrong_classes"))
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "6 classes" in lines[0] and "Traceback" not in result.stderr, result.stderr
    assert not (folder / "runs_wrong_classes" / "segformer").exists()


@pytest.mark.slow
def test_wrong_architecture_is_one_line(hf_model, run_cli):
    """The SegFormer checkpoint given as DeepLab's, and a DeepLab-shaped model given to the SegFormer
    importer with fewer classes: each one line naming what does not fit."""
    folder, _, _ = hf_model
    for form in ("ckpt/Lips.ckpt", "tf_model.h5"):
        result = run_cli("convert", "--model", "deeplab", "--weights", str(folder / form), *QUICK,
                         "--out", str(folder / "runs_wrong_arch"))
        assert result.returncode == 2, result.stderr[-2000:]
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "segformer checkpoint" in lines[0], result.stderr
        assert not (folder / "runs_wrong_arch" / "deeplab").exists()


def test_importer_refuses_a_model_of_other_class_count(hf_model):
    """The importer itself, handed a graph built for 3 classes: names the classifier tensors' shapes."""
    from architectures import build, resolve_config
    from architectures.importers import segformer_tf
    from exporter.errors import WeightsError

    folder, _, _ = hf_model
    path = folder / "tf_model.h5"
    overrides = {**segformer_tf.config_overrides(path), "num_classes": 3}
    config = resolve_config("segformer", input_size=SIZE, **overrides)
    with pytest.raises(WeightsError) as error:
        segformer_tf.load(build(config), path, config)
    message = str(error.value)
    assert "\n" not in message and "6 classes" in message and "classifier.kernel [1,1,32,3]" in message, message
    assert "decode_head/classifier/kernel [1,1,32,6]" in message, message
