"""The seed's DeepLab: a TF1 research/deeplab `model.ckpt-N` (mobilenet_v3_small_seg, LR-ASPP with
the seed's flags) into our graph, through the real CLI (issue 25).

research/deeplab's own code does not run here (TF1 contrib/slim; docs/import-deeplab.md), so the
checkpoint and the reference logits come from tests/deeplab_tf1_reference.py, written from that
code: the variable names and shapes its graph creates, and its forward pass op for op.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import deeplab_tf1_reference as tf1

CROP = 257  # the seed's --train_crop_size: TF1's geometry is exact at 32k+1
CLASSES = 2  # the seed's --decoder_filters=2 (with decoder_output_is_logits, the class count)
QUICK = ["--no-onnx", "--no-bench", "--no-arm", "--layer-errors", "0", "--train-samples", "4", "--val-samples", "2"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A train_logdir as research/deeplab's train.py leaves it, whose `checkpoint` file names the
    Colab path it was written at (as the seed's --train_logdir on Google Drive)."""
    folder = tmp_path_factory.mktemp("train_logdir")
    prefix = tf1.write_checkpoint(folder, CLASSES, step=200000)
    state = folder / "checkpoint"
    colab = "/content/drive/MyDrive/PQR_Checkpoints_257/model.ckpt-200000"
    state.write_text(f'model_checkpoint_path: "{colab}"\nall_model_checkpoint_paths: "{colab}"\n')
    images = np.random.default_rng(0).integers(0, 256, size=(2, CROP, CROP, 3)).astype(np.float32)
    return folder, Path(prefix), images, _softmax(tf1.tf1_logits(prefix, images).astype(np.float64))


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.mark.slow
@pytest.mark.parametrize("form", ["folder", "index"])
def test_convert_matches_tf1_deeplab(checkpoint, run_cli, form):
    from support import litert_scores

    folder, prefix, images, reference = checkpoint
    weights = folder if form == "folder" else Path(str(prefix) + ".index")
    out = folder.parent / f"runs_{form}"
    result = run_cli("convert", "--model", "deeplab", "--weights", str(weights), "--input-size", str(CROP),
                     *QUICK, "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "217 tensors mapped" in result.stdout + result.stderr
    scores, _ = litert_scores(out / "deeplab" / "deeplab_float32.tflite", images)
    probabilities = _softmax(scores.astype(np.float64))
    delta = float(np.abs(probabilities - reference).max())
    agreement = float((probabilities.argmax(-1) == reference.argmax(-1)).mean())
    print(f"{form}: max |dprob| {delta:.2e}, argmax agreement {agreement:.4%}")
    assert delta <= 1e-4 and agreement >= 0.999
    report = json.loads((out / "deeplab" / "report.json").read_text())
    assert report["training"]["import"]["mapped"] == 217 and report["input_shape"][1:3] == [CROP, CROP]


def test_prefix_imports_exactly(checkpoint):
    """The model.ckpt-N prefix, in Keras (no conversion): the same function as TF1's."""
    from architectures import build, importers, resolve_config
    from exporter.stages.prepare import load_weights

    folder, prefix, images, reference = checkpoint
    config = resolve_config("deeplab", input_size=CROP, **importers.config_overrides("deeplab", prefix))
    assert config.num_classes == CLASSES and config.options["align_corners"]
    model = build(config)
    imported = load_weights(model, prefix, config)
    assert imported.mapped == 217
    probabilities = _softmax(model(images, training=False).numpy().astype(np.float64))
    assert float(np.abs(probabilities - reference).max()) <= 1e-5


@pytest.mark.slow
def test_wrong_class_count_and_architecture_are_one_line(checkpoint, run_cli):
    folder, prefix, _, _ = checkpoint
    for args, words in (
        (["--model", "deeplab", "--classes", "3"], f"{CLASSES} classes"),
        (["--model", "segformer"], "a deeplab checkpoint, not a segformer one"),
    ):
        out = folder.parent / "runs_wrong"
        result = run_cli("convert", *args, "--weights", str(prefix), "--input-size", "64", *QUICK, "--out", str(out))
        assert result.returncode == 2, result.stderr[-2000:]
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and words in lines[0] and "Traceback" not in result.stderr, result.stderr
        assert not (out / args[1]).exists()


def test_missing_and_left_over_variables_are_named_with_shapes(tmp_path):
    """A checkpoint of other flags (no SE in layer_2; a concat projection) is refused in one line."""
    from architectures import build, resolve_config
    from architectures.importers import deeplab_tf1
    from exporter.errors import WeightsError

    se = "MobilenetV3/expanded_conv/squeeze_excite/Conv/weights"
    prefix = Path(tf1.write_checkpoint(tmp_path, CLASSES, drop=(se,),
                                       extra={"concat_projection/weights": (1, 1, 128, 128)}))
    config = resolve_config("deeplab", input_size=65, **deeplab_tf1.config_overrides(prefix))
    with pytest.raises(WeightsError) as error:
        deeplab_tf1.load(build(config), prefix, config)
    message = str(error.value)
    assert "\n" not in message
    assert f"missing (1): {se} [1,1,16,8]" in message and "concat_projection/weights [1,1,128,128]" in message


def test_our_own_weights_still_load(tmp_path):
    """The import keeps today's behaviour for deeplab's own Keras weights (a training run's weights.h5)."""
    from architectures import build, importers, resolve_config
    from exporter.stages.prepare import load_weights

    config = resolve_config("deeplab", input_size=64, num_classes=3)
    source, target = build(config), build(config)
    source.save_weights(str(tmp_path / "weights.h5"))
    assert importers.config_overrides("deeplab", tmp_path / "weights.h5") == {}
    assert load_weights(target, tmp_path / "weights.h5", config) is None  # Keras' own loader, nothing imported
    for a, b in zip(source.get_weights(), target.get_weights()):
        np.testing.assert_array_equal(a, b)
    shutil.rmtree(tmp_path)
