"""Issue 25: the seed's UNet (TensorFlow's segmentation tutorial) comes in from every form its code
saves, and the exported file computes what the user's model computes when fed the way it was trained.

The user's code runs in its own process (tests/seed_user_code.py: tf.keras, the tutorial's nested
down_stack and pix2pix decoder, trained on x / 255 with the encoder fine-tuned), saves each form,
and records its probabilities; `exporter convert --weights FORM --input-norm 0,1` runs through the
real CLI."""

import pytest

from seed_import_support import CHEAP, assert_computes_the_user_model, convert, report, train_user_model
from test_cli import assert_one_line_error

pytestmark = pytest.mark.slow

FORMS = {
    "checkpoint prefix (the seed's Lips.ckpt)": "Lips.ckpt",
    "checkpoint .index file": "Lips.ckpt.index",
    "ModelCheckpoint folder": "ckpt_folder",
    "weights .h5": "weights.h5",
    "full model .h5": "model.h5",
    "full model .keras": "model.keras",
    "SavedModel folder": "savedmodel",
}
UNET = ["--input-norm", "0,1", "--input-size", "64"]


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    """64x64, 3 classes, 6 epochs on 256 synthetic scenes: enough to learn every class."""
    return train_user_model(tmp_path_factory.mktemp("seed_unet"), "unet", 64, 256, 6, "--fine-tune")


@pytest.mark.parametrize("form", FORMS)
def test_every_saved_form_converts_to_what_the_users_model_computes(user, form, tmp_path):
    result = convert(user / "saved" / FORMS[form], "unet", tmp_path / "out", "--precision", "float32", *UNET, *CHEAP)
    assert result.returncode == 0 and result.stderr == "", result.stderr[-3000:]
    assert_computes_the_user_model(tmp_path / "out" / "unet" / "unet_float32.tflite", user, logits=True)
    rep = report(tmp_path / "out", "unet")
    assert rep["training"]["import"]["mapped"] == 217  # MobileNetV2 to block_13 + decoder, every tensor
    assert rep["input_norm"]["spec"] == "0,1" and "x / 255" in rep["normalisation"]


def test_the_int8_file_passes_the_unet_gate_on_held_out_data(user, tmp_path):
    result = convert(user / "saved" / "Lips.ckpt", "unet", tmp_path / "out", "--precision", "int8", *UNET,
                     "--no-onnx", "--no-bench", "--no-arm", "--layer-errors", "0", "--train-samples", "64",
                     "--val-samples", "32")
    assert result.returncode == 0, result.stderr[-3000:]
    rep = report(tmp_path / "out", "unet")
    learnt = [c for c, iou in rep["reference"]["per_class_iou"].items() if iou and iou > 0.3]
    assert len(learnt) >= 2, rep["reference"]["per_class_iou"]  # the premise: not a constant mask
    int8 = [c for c in rep["checks"] if c.get("file") == "unet_int8.tflite" and c.get("accuracy_gate")]
    assert int8 and all(c["passed"] for c in int8), int8
    assert rep["data"]["heldout_samples"] == 32


def test_a_checkpoint_that_does_not_fit_is_refused_in_one_line(user, tmp_path):
    out = tmp_path / "out"
    wrong_arch = convert(user / "saved" / "Lips.ckpt", "selfie", out, "--input-size", "64", *CHEAP)
    assert_one_line_error(wrong_arch, "Lips.ckpt", "not a checkpoint of the seed's selfie ViT", "missing")
    assert wrong_arch.returncode == 2 and len(wrong_arch.stderr) < 1000  # names and shapes, no values
    wrong_classes = convert(user / "saved" / "weights.h5", "unet", out, "--labels", "a,b", *UNET, *CHEAP)
    assert_one_line_error(wrong_classes, "--labels names 2 classes", "has 3")
    assert wrong_classes.returncode == 2
    not_a_model = tmp_path / "notes.h5"
    not_a_model.write_bytes(b"not hdf5 at all")
    assert convert(not_a_model, "unet", out, *UNET, *CHEAP).returncode == 2
    assert not out.exists() or not list(out.rglob("*.tflite"))
