"""Issue 25: the seed's UNet (TensorFlow's segmentation tutorial) comes in from every form its code
saves, and the exported file computes what the user's model computes when fed the way it was trained.

The user's code runs in its own process (tests/seed_user_code.py: tf.keras, the tutorial's nested
down_stack frozen over a pretrained MobileNetV2, pix2pix decoder, trained on x / 255), saves each form,
and records its probabilities; `exporter convert --weights FORM --input-norm 0,1` runs through the
real CLI. (A fine-tuned tutorial UNet, which needs no trained user model, is in
test_import_seed_unet_finetune.py: a file of its own so that `--dist loadfile` can run it beside this one.)"""

import pytest

from seed_import_support import (CHEAP, assert_computes_the_user_model, convert, pretrained_encoder, report,
                                 train_user_model)
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
    """64x64, 3 classes: the tutorial's recipe (a pretrained encoder, frozen; the decoder trained,
    here 10 epochs on 256 synthetic scenes). From scratch, MobileNetV2's BatchNorm statistics
    (momentum 0.999) still predicted the background everywhere after 3,000 steps."""
    folder = tmp_path_factory.mktemp("seed_unet")
    encoder = pretrained_encoder(folder, 64)
    return train_user_model(folder, "unet", 64, 256, 10, "--encoder-weights", str(encoder))


@pytest.mark.parametrize("form", FORMS)
def test_every_saved_form_converts_to_what_the_users_model_computes(user, form, tmp_path):
    result = convert(user / "saved" / FORMS[form], "unet", tmp_path / "out", "--precision", "float32", *UNET, *CHEAP)
    assert result.returncode == 0 and result.stderr == "", result.stderr[-3000:]
    assert_computes_the_user_model(tmp_path / "out" / "unet" / "unet_float32.tflite", user, logits=True)
    rep = report(tmp_path / "out", "unet")
    assert rep["training"]["import"]["mapped"] == 217  # MobileNetV2 to block_13 + decoder, every tensor
    assert rep["input_norm"]["spec"] == "0,1" and "x / 255" in rep["normalisation"]


def test_the_int8_file_is_held_to_the_gate_on_held_out_data(user, tmp_path):
    """The imported model's int8 file, measured on 32 held-out scenes against the imported float
    model. Measured: agreement 99.715 %, mIoU -0.148 points: within DeepLab's and the selfie model's
    gate (99 %, 0.5 point), short of UNet's stricter 99.8 % / 0.1 point, which the report says (FAIL
    lines; the recommended CPU file then is the float32 one). Our own 128-pixel UNet: 99.97 %."""
    result = convert(user / "saved" / "Lips.ckpt", "unet", tmp_path / "out", "--precision", "int8", *UNET,
                     "--no-onnx", "--no-bench", "--no-arm", "--layer-errors", "0", "--train-samples", "128",
                     "--val-samples", "32")
    assert result.returncode == 0, result.stderr[-3000:]
    rep = report(tmp_path / "out", "unet")
    learnt = [c for c, iou in rep["reference"]["per_class_iou"].items() if iou and iou > 0.5]
    assert len(learnt) == 3, rep["reference"]["per_class_iou"]  # the premise: a model that segments
    int8 = next(a for a in rep["artifacts"] if a["file"] == "unet_int8.tflite")
    assert int8["agreement"] >= 0.99 and int8["miou_delta"] >= -0.005, (int8["agreement"], int8["miou_delta"])
    gate = [c for c in rep["checks"] if c.get("file") == "unet_int8.tflite" and c["kind"] == "accuracy"]
    assert len(gate) >= 3 and all(c["passed"] is not None for c in gate)  # evaluated, pass or fail, and said


def test_a_checkpoint_that_does_not_fit_is_refused_in_one_line(user, tmp_path):
    out = tmp_path / "out"
    wrong_arch = convert(user / "saved" / "Lips.ckpt", "selfie", out, "--input-size", "64", *CHEAP)
    assert_one_line_error(wrong_arch, "Lips.ckpt", "a unet checkpoint, not a selfie one", "--model unet")
    assert wrong_arch.returncode == 2 and len(wrong_arch.stderr) < 1000  # names and shapes, no values
    wrong_classes = convert(user / "saved" / "weights.h5", "unet", out, "--labels", "a,b", *UNET, *CHEAP)
    assert_one_line_error(wrong_classes, "--labels names 2 classes", "has 3")
    assert wrong_classes.returncode == 2
    not_a_model = tmp_path / "notes.h5"
    not_a_model.write_bytes(b"not hdf5 at all")
    assert_one_line_error(convert(not_a_model, "unet", out, *UNET, *CHEAP), "notes.h5", "not a readable HDF5 file")
    assert not out.exists() or not list(out.rglob("*.tflite"))
