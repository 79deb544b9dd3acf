"""SegFormer against Hugging Face's PyTorch reference, and its checkpoint importer.

The reference tests build `SegformerForSemanticSegmentation` from a MiT-b0 config with seeded
random weights (every parameter and BatchNorm statistic randomised, so a mis-mapped LayerNorm or
bias cannot hide behind a default 1 or 0), save it with `save_pretrained`, import the folder and
compare logits on the same pixels. They need the test-only reference extra (`torch`,
`transformers`) and are skipped without it; the error tests need neither.

Relative error is max|ours - reference| / max|reference|. Our model ends in a bilinear upsampling
to the input size, Hugging Face's logits are at 1/4 resolution: both are compared, the 1/4 logits
against our `classifier` layer and the full-size ones against the reference upsampled with
`torch.nn.functional.interpolate(mode="bilinear", align_corners=False)`.

The contracts every architecture keeps (flat graph of at most 4-D tensors, output shape, batch-1
export, the TFLite files, metadata, MediaPipe, QAT wrap) are in test_registry_contracts.py. Every
test that builds a Hugging Face model (PyTorch: seconds to import, tens of seconds per reference)
is marked slow; the checkpoint-error tests that need neither stay in `make test-fast`.
"""

import json
import shutil
import sys

import numpy as np
import pytest

from architectures import build, get_spec, resolve_config
from exporter.errors import WeightsError

LABELS = ("outer", "hair", "face", "skin", "clothes", "accessories")
SIZE = 64
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def _pixels(n, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, SIZE, SIZE, 3)).astype(np.float32)


def _rel(ours, ref):
    return float(np.abs(ours - ref).max() / np.abs(ref).max())


def _hf_config(**kwargs):
    transformers = pytest.importorskip("transformers")
    return transformers.SegformerConfig(**kwargs)  # defaults: MiT-b0, decoder 256


def _randomise(model, seed):
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if p.ndim == 1:  # LayerNorm/BatchNorm scales near 1, every bias non-zero
                p.copy_(1 + 0.2 * noise if name.endswith("weight") else 0.1 * noise)
            else:  # unit-variance fan-in scaling keeps attention logits far from uniform
                p.copy_(noise / p[0].numel() ** 0.5)
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(0.2 * torch.randn(b.shape, generator=g))
            elif name.endswith("running_var"):
                b.copy_(0.5 + 1.5 * torch.rand(b.shape, generator=g))
    return model.eval()


def _hf_forward(model, pixels, **kwargs):
    import torch

    x = torch.from_numpy(((pixels / 255.0 - MEAN) / STD).transpose(0, 3, 1, 2).copy())
    with torch.no_grad():
        return model(x, **kwargs)


def _upsampled(logits):
    import torch

    full = torch.nn.functional.interpolate(logits, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    return full.numpy().transpose(0, 2, 3, 1)


def _keras(labels=LABELS, batch_size=None, **overrides):
    return build(resolve_config("segformer", labels=labels, input_size=SIZE, batch_size=batch_size, **overrides))


@pytest.fixture(scope="module")
def hf_full(tmp_path_factory):
    """(reference model, checkpoint folder): a full segmentation checkpoint, Hub layout."""
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    config = _hf_config(num_labels=len(LABELS), id2label=dict(enumerate(LABELS)))
    model = _randomise(transformers.SegformerForSemanticSegmentation(config), seed=0)
    path = tmp_path_factory.mktemp("segformer_full")
    model.save_pretrained(path)
    return model, path


@pytest.fixture(scope="module")
def imported(hf_full):
    """Our training-graph model (batch None) with the full checkpoint imported."""
    _, path = hf_full
    spec = get_spec("segformer")
    config = resolve_config("segformer", input_size=SIZE, **spec.config_from_weights(path))
    model = build(config)
    summary = spec.load_weights(model, path, config)
    return model, config, summary


def test_variants_build_with_published_sizes():
    from architectures.segformer import VARIANTS, resolve_sizes

    assert resolve_sizes({"variant": "b0"})["hidden_sizes"] == (32, 64, 160, 256)
    assert resolve_sizes({"variant": "b2", "depths": [1, 1, 1, 1]})["depths"] == (1, 1, 1, 1)
    assert sorted(VARIANTS) == ["b0", "b1", "b2", "b3", "b4", "b5"]
    with pytest.raises(ValueError, match="variant"):
        resolve_sizes({"variant": "b9"})


@pytest.mark.slow
def test_config_from_full_checkpoint(hf_full):
    _, path = hf_full
    assert get_spec("segformer").config_from_weights(path) == {"variant": "b0", "labels": LABELS}


@pytest.mark.slow
def test_keras_matches_reference(hf_full, imported):
    from exporter.keras import keras

    hf_model, _ = hf_full
    model, _, summary = imported
    assert summary["decoder"] == "checkpoint" and not summary["fresh_layers"]
    pixels = _pixels(2)
    ref = _hf_forward(hf_model, pixels).logits
    quarter = keras.Model(model.input, model.get_layer("classifier").output)
    assert _rel(quarter(pixels, training=False).numpy(), ref.numpy().transpose(0, 2, 3, 1)) <= 1e-4
    ours = model(pixels, training=False).numpy()
    assert _rel(ours, _upsampled(ref)) <= 1e-4


@pytest.mark.slow
def test_exported_graph_folds_the_decoder_and_still_matches_reference(hf_full, imported):
    """What conversion sees (signature.export_model): the fuse conv folded into the stage Denses."""
    from exporter.convert.signature import export_model as exported_graph

    hf_model, _ = hf_full
    model, config, _ = imported
    fixed = exported_graph(model, config)
    names = {layer.name for layer in fixed.layers}
    assert {"dec_fold0", "dec_fold3"} <= names and not {"dec_concat", "dec_proj0"} & names
    assert fixed.count_params() < model.count_params()  # the 1024x256 fuse kernel is gone
    pixels = _pixels(1)
    assert _rel(fixed(pixels, training=False).numpy(), _upsampled(_hf_forward(hf_model, pixels).logits)) <= 1e-4


@pytest.fixture(scope="module")
def export_model(hf_full, imported):
    """The static batch-1 graph that conversion sees, with the checkpoint imported."""
    _, path = hf_full
    _, config, _ = imported
    export_config = resolve_config("segformer", input_size=SIZE, batch_size=1, labels=config.labels)
    model = build(export_config)
    get_spec("segformer").load_weights(model, path, export_config)
    return model, export_config


@pytest.mark.slow
def test_float32_tflite_matches_reference(hf_full, export_model):
    from ai_edge_litert.interpreter import Interpreter

    from exporter.keras import tf

    hf_model, _ = hf_full
    model, _ = export_model
    fn = tf.function(lambda x: model(x, training=False)).get_concrete_function(
        tf.TensorSpec([1, SIZE, SIZE, 3], tf.float32)
    )
    # A tf.Module holding the variables, not the Keras model, as the trackable object: with the
    # model the converter's SavedModel round trip retraces every layer (about 10x slower).
    holder = tf.Module()
    holder.variables_ = list(model.variables)
    flatbuffer = tf.lite.TFLiteConverter.from_concrete_functions([fn], holder).convert()

    interpreter = Interpreter(model_content=flatbuffer)
    interpreter.allocate_tensors()
    ops = {op["op_name"] for op in interpreter._get_ops_details()}
    assert not {op for op in ops if op.startswith("Flex") or op == "CUSTOM"}, ops
    assert "GELU" in ops  # the exact-GELU pattern fused into the builtin
    assert all(len(t["shape"]) <= 4 for t in interpreter.get_tensor_details())

    pixels = _pixels(1, seed=1)
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], pixels)
    interpreter.invoke()
    ours = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    ref = _upsampled(_hf_forward(hf_model, pixels).logits)
    assert _rel(ours, ref) <= 1e-3
    assert (ours.argmax(-1) == ref.argmax(-1)).mean() >= 0.999


@pytest.mark.slow
def test_float32_onnx_matches_reference(hf_full, export_model):
    """tf2onnx path of the pipeline (it has no Erfc: the GELU layer is written with erf)."""
    pytest.importorskip("tf2onnx")
    ort = pytest.importorskip("onnxruntime")
    from exporter.convert.onnx import to_onnx

    hf_model, _ = hf_full
    model, config = export_model
    session = ort.InferenceSession(to_onnx(model, config), providers=["CPUExecutionProvider"])
    pixels = _pixels(1, seed=6)
    ours = session.run(None, {session.get_inputs()[0].name: pixels})[0]
    ref = _upsampled(_hf_forward(hf_model, pixels).logits)
    assert _rel(ours, ref) <= 1e-3
    assert (ours.argmax(-1) == ref.argmax(-1)).mean() >= 0.999


# Other sizes than a published variant (as a custom checkpoint may have) come through as options.
CUSTOM_SIZES = {"hidden_sizes": [16, 32, 80, 128], "depths": [1, 2, 1, 1], "decoder_hidden_size": 64}


@pytest.mark.slow
@pytest.mark.parametrize("hf_class", ["SegformerModel", "SegformerForImageClassification"])
def test_encoder_only_checkpoint(tmp_path, hf_class):
    """mit-b0 style: the encoder loads, the decoder stays fresh for our labels."""
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from exporter.keras import keras

    # SegformerForImageClassification with an ImageNet-style head is how nvidia/mit-b0 ships:
    # `segformer.`-prefixed encoder keys plus a `classifier.` that has no place in our model.
    # The bare SegformerModel (unprefixed keys) is given non-standard sizes.
    sizes = CUSTOM_SIZES if hf_class == "SegformerModel" else {}
    hf_model = _randomise(getattr(transformers, hf_class)(_hf_config(num_labels=10, **sizes)), seed=2)
    hf_model.save_pretrained(tmp_path)
    spec = get_spec("segformer")
    overrides = spec.config_from_weights(tmp_path)
    assert "labels" not in overrides  # no decoder, so no labels from the ImageNet id2label
    if sizes:  # custom sizes come through as options, each with the checkpoint's value
        assert {k: list(overrides[k]) if isinstance(overrides[k], tuple) else overrides[k] for k in sizes} == sizes
    else:
        assert overrides == {"variant": "b0"}
    config = resolve_config("segformer", input_size=SIZE, **overrides)
    assert config.labels == LABELS
    model = build(config)
    fresh = [w.copy() for w in model.get_layer("dec_fuse").get_weights()]
    assert fresh
    summary = spec.load_weights(model, tmp_path, config)
    assert summary["decoder"] == "fresh" and "classifier" in summary["fresh_layers"]
    assert all(np.array_equal(a, b) for a, b in zip(fresh, model.get_layer("dec_fuse").get_weights()))

    pixels = _pixels(1, seed=3)
    encoder = hf_model if hf_class == "SegformerModel" else hf_model.segformer
    ref = _hf_forward(encoder, pixels, output_hidden_states=True).hidden_states
    stages = keras.Model(model.input, [model.get_layer(f"s{i}_ln").output for i in range(4)])
    assert len(ref) == 4
    for ours, theirs in zip(stages(pixels, training=False), ref, strict=True):
        assert _rel(ours.numpy(), theirs.numpy().transpose(0, 2, 3, 1)) <= 1e-4
    assert model(pixels, training=False).shape == (1, SIZE, SIZE, len(LABELS))


@pytest.mark.slow
def test_pytorch_bin_checkpoint_with_transformers5_names(tmp_path, hf_full):
    """A .bin state dict (module names of transformers 5, no prefix rewriting) loads too."""
    torch = pytest.importorskip("torch")
    hf_model, path = hf_full
    shutil.copy(path / "config.json", tmp_path / "config.json")
    state = hf_model.state_dict()
    assert any(k.startswith("segformer.stages.") for k in state)  # the new layout, unlike the file
    torch.save(state, tmp_path / "pytorch_model.bin")
    spec = get_spec("segformer")
    config = resolve_config("segformer", input_size=SIZE, **spec.config_from_weights(tmp_path))
    model = build(config)
    spec.load_weights(model, tmp_path, config)
    pixels = _pixels(1, seed=4)
    ref = _upsampled(_hf_forward(hf_model, pixels).logits)
    assert _rel(model(pixels, training=False).numpy(), ref) <= 1e-4


@pytest.mark.slow
def test_other_label_count_keeps_a_fresh_classifier(hf_full):
    _, path = hf_full
    config = resolve_config("segformer", input_size=SIZE, labels=("a", "b", "c"))
    model = build(config)
    with pytest.warns(UserWarning, match="classifier"):
        summary = get_spec("segformer").load_weights(model, path, config)
    assert summary["fresh_layers"] == ["classifier"]


@pytest.mark.slow
def test_keras_weights_file_reloads(tmp_path, imported):
    """Weights of our own Keras model (e.g. trained by the pipeline) go through Keras' loader."""
    model, config, _ = imported
    path = tmp_path / "segformer.weights.h5"
    model.save_weights(str(path))
    spec = get_spec("segformer")
    assert spec.config_from_weights(path) == {}
    again = build(config)
    assert spec.load_weights(again, path, config)["format"] == "keras"
    pixels = _pixels(1, seed=5)
    np.testing.assert_array_equal(again(pixels, training=False), model(pixels, training=False))


# ----------------------------------------------------------------------------- errors


def _damaged_copy(src, dst, drop=(), add=None):
    from safetensors.numpy import load_file, save_file

    tensors = {k: v for k, v in load_file(str(src / "model.safetensors")).items() if k not in drop}
    tensors.update(add or {})
    dst.mkdir()
    save_file(tensors, str(dst / "model.safetensors"))
    shutil.copy(src / "config.json", dst / "config.json")
    return dst


@pytest.mark.slow
def test_missing_and_unexpected_tensors_are_named(tmp_path, hf_full, imported):
    _, path = hf_full
    model, config, _ = imported
    load = get_spec("segformer").load_weights
    key = "segformer.encoder.block.2.1.mlp.dwconv.dwconv.weight"
    missing = _damaged_copy(path, tmp_path / "missing", drop=[key])
    with pytest.raises(WeightsError, match=r"missing tensor.*stages\.2\.blocks\.1\.mlp\.dwconv\.dwconv\.weight"):
        load(model, missing, config)
    extra = _damaged_copy(path, tmp_path / "extra", add={"decode_head.aux.weight": np.zeros(3, np.float32)})
    with pytest.raises(WeightsError, match=r"map to nothing.*decode_head\.aux\.weight"):
        load(model, extra, config)


@pytest.mark.slow
def test_other_sizes_are_an_error(hf_full, imported):
    _, path = hf_full
    model, _, _ = imported
    config = resolve_config("segformer", input_size=SIZE, variant="b1")
    with pytest.raises(WeightsError, match="hidden_sizes"):
        get_spec("segformer").load_weights(model, path, config)


def test_hub_name_says_how_to_get_the_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = get_spec("segformer")
    with pytest.raises(WeightsError, match=r"Nothing is downloaded.*huggingface-cli download nvidia/mit-b0"):
        spec.config_from_weights("nvidia/mit-b0")
    with pytest.raises(WeightsError, match="Hub name"):
        spec.load_weights(None, "nvidia/mit-b0", resolve_config("segformer"))


def test_missing_folder_and_empty_folder(tmp_path):
    spec = get_spec("segformer")
    with pytest.raises(WeightsError, match="does not exist"):
        spec.config_from_weights(tmp_path / "nowhere")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "segformer"}))
    with pytest.raises(WeightsError, match="holds no model.safetensors"):
        spec.config_from_weights(tmp_path)


def test_not_a_segformer_config(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "vit"}))
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(WeightsError, match="not a SegFormer"):
        get_spec("segformer").config_from_weights(tmp_path)


def test_bin_without_torch_is_a_clear_error(tmp_path, monkeypatch):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "segformer"}))
    (tmp_path / "pytorch_model.bin").write_bytes(b"not read")
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    with pytest.raises(WeightsError, match="needs PyTorch"):
        get_spec("segformer").config_from_weights(tmp_path)
