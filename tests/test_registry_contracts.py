"""The contracts every registered architecture keeps, at a small size (tests/support.small_config).

Parametrised over `architectures.list_models()`: a new architecture is held to all of them without
touching this file. Per-model files (test_deeplab.py, test_selfie.py, test_segformer.py) keep only
what is specific to one model.

One module fixture per architecture builds the model (BatchNorm statistics set from one batch, so
random weights give a real signal and no comparison passes on a near-zero output), its batch-1
export graph, and the float32, float16 and int8 files with MediaPipe metadata, exactly as the
pipeline writes them (to_tflite, then add_segmenter_metadata). The Keras-level contracts run in
`make test-fast`; those on the converted files and the QAT wrap (tens of seconds per architecture
on two cores) are marked slow and run in `make test`.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from architectures import build, get_spec, list_models
from support import (SMALL_CLASSES, litert_scores, needs_mediapipe, pixels, run_client, small_config,
                     top_class_agreement)

PRECISIONS = ("float32", "float16", "int8")
MIN_MEDIAPIPE_AGREEMENT = 0.99
MIN_FLOAT16_SHRINK = 1.9
FORBIDDEN_LAYERS = {"Lambda", "TFOpLambda", "SlicingOpLambda"}
# Ops XNNPACK must run in every int8 file (LiteRT's reference kernels for them are many times slower).
XNNPACK_INT8_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV"}
# Models whose issue pinned what XNNPACK leaves out of the shipped int8 file (DeepLab, issue 3:
# only the uint8 edges; its final uint8 resize after the moved output QUANTIZE is a second partition).
KNOWN_INT8_UNDELEGATED = {"deeplab": {"QUANTIZE": 2}}


def calibrate_batchnorm(model, images) -> None:
    """Every BN's moving statistics set to one batch's (random weights otherwise fade to ~0)."""
    from exporter.keras import keras

    layers = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.momentum = 0.0
    model(images, training=True)
    for layer, momentum in zip(layers, momenta):
        layer.momentum = momentum


@pytest.fixture(scope="module", params=list_models())
def built(request):
    """(config, training-graph model, batch-1 export graph) of one architecture, same weights."""
    from exporter.convert.signature import export_model
    from exporter.keras import keras

    config = small_config(request.param)
    keras.utils.set_random_seed(0)
    model = build(config)
    calibrate_batchnorm(model, pixels(config, n=4, seed=11))
    return config, model, export_model(model, config)


@pytest.fixture(scope="module")
def calibration(built):
    """Synthetic scenes clipped to 20..230: calibration that does not span the pixel range."""
    from calibration.synthetic import render_scene

    config = built[0]
    scenes = [render_scene(i, config.input_size, config.num_classes, seed=3)[0] for i in range(8)]
    return np.clip(np.stack(scenes), 20, 230).astype(np.uint8)


@pytest.fixture(scope="module")
def files(built, calibration, tmp_path_factory):
    """{precision: path} of the architecture's files with MediaPipe metadata, as convert writes them."""
    from exporter.convert.tflite import to_tflite
    from exporter.metadata import add_segmenter_metadata, segmenter_metadata_for

    config, _, fixed = built
    folder = tmp_path_factory.mktemp(config.name)
    paths = {}
    for precision in PRECISIONS:
        blob = to_tflite(fixed, config, precision, calibration if precision == "int8" else None)
        # check=True (the default): refuses a file MediaPipe would reject or feed wrongly.
        paths[precision] = folder / f"{config.name}_{precision}.tflite"
        paths[precision].write_bytes(add_segmenter_metadata(blob, **segmenter_metadata_for(config)))
    return paths


def _interpreter(path_or_blob, delegates: bool = True):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    source = {"model_content": path_or_blob} if isinstance(path_or_blob, bytes) else {"model_path": str(path_or_blob)}
    if not delegates:
        source["experimental_op_resolver_type"] = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    interpreter = Interpreter(**source, num_threads=1)
    interpreter.allocate_tensors()
    return interpreter


# --- the registry entry and the Keras graph ------------------------------------------------------


@pytest.mark.parametrize("name", list_models())
def test_spec_is_complete(name):
    """Distinct labels, a known output kind, a default input size the stride constraints accept."""
    spec = get_spec(name)
    assert spec.name == name and spec.description
    assert len(spec.labels) >= 2 and len(set(spec.labels)) == len(spec.labels)
    assert spec.output in ("logits", "softmax")
    h, w = spec.input_size
    assert h % spec.input_multiple == 0 and w % spec.input_multiple == 0
    assert spec.min_input <= min(h, w)


def test_graph_is_flat_keras_layers_at_most_4d(built):
    """Stock Keras layers only (no Lambda, no raw TF op, no nested model: tfmot and the converter
    see every layer) and no tensor above 4-D (GPU delegates take at most 4-D)."""
    from exporter.keras import keras

    _, model, fixed = built
    for graph in (model, fixed):
        for layer in graph.layers:
            assert type(layer).__name__ not in FORBIDDEN_LAYERS, layer.name
            assert not isinstance(layer, keras.Model), layer.name
            shapes = layer.output_shape if isinstance(layer.output_shape, list) else [layer.output_shape]
            assert all(len(s) <= 4 for s in shapes), (layer.name, shapes)


def test_output_contract(built):
    """0..255 RGB pixels in, per-class scores [N, H, W, classes] out at input resolution; a softmax
    head's scores are probabilities; the map is not constant."""
    config, model, fixed = built
    assert model.output_shape == (None, *config.input_size, SMALL_CLASSES)
    assert fixed.input_shape == (1, *config.input_size, 3)
    assert fixed.output_shape == (1, *config.input_size, SMALL_CLASSES)
    out = np.asarray(model(pixels(config, n=2), training=False))
    assert out.shape == (2, *config.input_size, SMALL_CLASSES)
    assert np.isfinite(out).all()
    assert out.std() > 1e-3, out.std()
    if get_spec(config.name).output == "softmax":
        assert (out >= 0).all()
        np.testing.assert_allclose(out.sum(-1), 1.0, atol=1e-4)


def test_batch_independence_and_export_graph(built):
    """Each sample's scores do not depend on the batch, and the static batch-1 export graph (what
    is converted) computes the training graph's function with its weights."""
    config, model, fixed = built
    x = pixels(config, n=3, seed=1)
    batched = np.asarray(model(x, training=False))
    scale = np.abs(batched).max()
    assert batched.std() > 1e-3, batched.std()
    for i in range(3):
        alone = np.asarray(model(x[i : i + 1], training=False))[0]
        exported = np.asarray(fixed(x[i : i + 1], training=False))[0]
        np.testing.assert_allclose(alone, batched[i], rtol=1e-4, atol=1e-5 * scale)
        np.testing.assert_allclose(exported, batched[i], rtol=1e-4, atol=1e-5 * scale)


# --- the float files ----------------------------------------------------------------------------


@pytest.mark.slow
def test_float32_tflite_matches_keras(built, files):
    """The float32 file takes raw 0..255 pixels and computes the Keras function; builtin ops only
    (no Flex, no CUSTOM) and no tensor above 4-D."""
    from exporter.runtimes import LiteRTRunner

    config, _, fixed = built
    interpreter = _interpreter(files["float32"], delegates=False)
    ops = {op["op_name"] for op in interpreter._get_ops_details()}
    assert not {op for op in ops if op.startswith("Flex") or op == "CUSTOM"}, ops
    assert all(len(t["shape"]) <= 4 for t in interpreter.get_tensor_details())
    x = pixels(config, seed=2)
    got = LiteRTRunner(files["float32"], threads=1).predict(x.astype(np.uint8))
    want = np.asarray(fixed(x))
    assert got.shape == want.shape == (1, *config.input_size, SMALL_CLASSES)
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max(), np.abs(got - want).max()


@pytest.mark.slow
def test_float16_is_gpu_delegate_whole_and_half_the_size(built, files):
    """The float16 file (for GPU delegates) is one the GPU delegate takes whole, at about half the bytes."""
    from exporter.delegates import gpu_compatibility

    config = built[0]
    verdict = gpu_compatibility(files["float16"].read_bytes())
    assert verdict["compatible"], f"{config.name} float16 falls back from the GPU delegate: {verdict}"
    shrink = files["float32"].stat().st_size / files["float16"].stat().st_size
    assert shrink >= MIN_FLOAT16_SHRINK, f"{config.name}: float16 only {shrink:.2f}x smaller than float32"


# --- the int8 file ------------------------------------------------------------------------------


@pytest.mark.slow
def test_int8_is_full_integer_with_raw_uint8_pixels_in(built, files):
    """uint8 in and out; the input is the raw 0..255 pixel (scale 1, zero point 0) though the
    calibration images span only 20..230; no tensor in the file is float, and the only QUANTIZEs
    are the uint8 -> int8 input edge and the int8 -> uint8 output edge (which may sit before a
    final uint8 resize): everything else computes in int8/int32, or uint8 after the output edge."""
    from exporter.convert.tflite import float_ops

    config = built[0]
    blob = files["int8"].read_bytes()
    assert float_ops(blob) == []
    interpreter = _interpreter(blob, delegates=False)
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    assert inp["dtype"] == np.uint8 and out["dtype"] == np.uint8
    assert list(inp["shape"]) == [1, *config.input_size, 3]
    assert list(out["shape"]) == [1, *config.input_size, SMALL_CLASSES]
    assert inp["quantization"] == (1.0, 0)
    dtypes = {t["index"]: t["dtype"] for t in interpreter.get_tensor_details()}
    assert not [d for d in dtypes.values() if np.issubdtype(d, np.floating)]
    ops = interpreter._get_ops_details()
    names = [op["op_name"] for op in ops]
    assert "DEQUANTIZE" not in names and names.count("QUANTIZE") == 2, names
    quantize_in, quantize_out = sorted((op for op in ops if op["op_name"] == "QUANTIZE"),
                                       key=lambda op: inp["index"] not in op["inputs"])
    assert list(quantize_in["inputs"]) == [inp["index"]] and dtypes[quantize_in["outputs"][0]] == np.int8
    assert dtypes[quantize_out["inputs"][0]] == np.int8 and dtypes[quantize_out["outputs"][0]] == np.uint8
    for op in ops:
        if op["op_name"] != "QUANTIZE":
            tensors = [i for i in (*op["inputs"], *op["outputs"]) if i >= 0]
            assert all(dtypes[i] in (np.int8, np.int32, np.uint8) for i in tensors), op["op_name"]
    interpreter.set_tensor(inp["index"], pixels(config, seed=7).astype(np.uint8))
    interpreter.invoke()
    y = interpreter.get_tensor(out["index"])
    assert y.dtype == np.uint8 and y.shape == (1, *config.input_size, SMALL_CLASSES)


@pytest.mark.slow
def test_int8_convolutions_run_in_xnnpack(built, files):
    """XNNPACK (LiteRT's default CPU delegate) takes the int8 file's convolutions, where the time
    goes; the two uint8 <-> int8 QUANTIZEs stay on LiteRT's own kernels. Where a model's issue
    pinned the whole split (DeepLab: nothing else left out), that split holds for the shipped file."""
    from exporter.runtimes import delegation

    config = built[0]
    split = delegation(_interpreter(files["int8"]))
    undelegated = split["undelegated"]
    assert split["partitions"] >= 1 and undelegated.get("QUANTIZE") == 2, split
    assert not XNNPACK_INT8_OPS & set(undelegated), split
    if config.name in KNOWN_INT8_UNDELEGATED:
        assert undelegated == KNOWN_INT8_UNDELEGATED[config.name], split


def _activation_scales(blob: bytes) -> dict[str, float]:
    """Scale of every per-tensor quantised int8 activation (not a constant), by tensor name."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=blob)  # not allocated: only constants hold data
    out = {}
    for t in interpreter.get_tensor_details():
        scales = t["quantization_parameters"]["scales"]
        if t["dtype"] == np.int8 and len(scales) == 1 and not _is_constant(interpreter, t["index"]):
            out[t["name"]] = float(scales[0])
    return out


def _is_constant(interpreter, index: int) -> bool:
    try:
        interpreter.get_tensor(index)
        return True
    except ValueError:  # activations have no data before allocate_tensors
        return False


def _weight_scale_counts(blob: bytes) -> list[int]:
    """Scales per int8 constant tensor (the weights) of a TFLite file."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=blob)
    return [len(t["quantization_parameters"]["scales"]) for t in interpreter.get_tensor_details()
            if t["dtype"] == np.int8 and _is_constant(interpreter, t["index"])]


@pytest.mark.slow
def test_percentile_ranges_are_finer_than_min_max(built, calibration, files):
    """The default percentile activation ranges give finer int8 steps than TFLite's min/max on
    balance, and more tensors finer than coarser (the quantiser may derive a tensor's scale from a
    neighbour's, so one can come out coarser); the pixel input contract is the same."""
    from exporter.convert.tflite import to_tflite

    config, _, fixed = built
    plain = to_tflite(fixed, config, "int8", calibration, range_percentile=100)
    narrow, wide = _activation_scales(files["int8"].read_bytes()), _activation_scales(plain)
    assert wide
    common = narrow.keys() & wide.keys()
    assert len(common) >= 0.9 * len(wide), (len(common), len(wide))
    ratios = np.array([narrow[n] / wide[n] for n in common])
    assert np.sum(np.log(ratios)) < 0 and np.sum(ratios < 0.999) > np.sum(ratios > 1.001), sorted(ratios)
    assert _interpreter(plain).get_input_details()[0]["quantization"] == (1.0, 0)


@pytest.mark.slow
def test_per_tensor_int8_has_one_scale_per_weight_tensor_and_a_smaller_file(built, calibration, files):
    """--per-tensor: still full-integer, one scale per weight tensor, fewer bytes than per-channel."""
    from exporter.convert.tflite import float_ops, to_tflite
    from exporter.metadata import add_segmenter_metadata, segmenter_metadata_for

    config, _, fixed = built
    per_channel = files["int8"].read_bytes()
    per_tensor = to_tflite(fixed, config, "int8", calibration, per_tensor=True)
    assert float_ops(per_tensor) == []
    assert max(_weight_scale_counts(per_channel)) > 1
    counts = _weight_scale_counts(per_tensor)
    assert counts and set(counts) == {1}
    assert len(add_segmenter_metadata(per_tensor, **segmenter_metadata_for(config))) < len(per_channel)


# --- as a mobile app gets it ----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("precision", PRECISIONS)
def test_metadata_describes_the_model(built, files, precision):
    """Every file carries the ImageSegmenter metadata: the labels, 0..255 RGB pixels with no
    normalisation for the app to apply, and the activation matching the head (SOFTMAX over logits)."""
    from exporter.metadata import LABELS_FILE, mediapipe_problems, read_metadata

    config = built[0]
    blob = files[precision].read_bytes()
    meta = read_metadata(blob)
    assert meta["name"] == config.name and meta["labels"] == list(config.labels)
    assert meta["normalisation"] == {"mean": [0.0], "std": [1.0]}
    assert meta["input_range"] == {"min": [0.0], "max": [255.0]} and meta["color_space"] == "RGB"
    assert meta["activation"] == ("SOFTMAX" if get_spec(config.name).output == "logits" else "NONE")
    assert meta["associated_files"] == [LABELS_FILE]
    assert mediapipe_problems(blob) == []


@pytest.mark.slow
@needs_mediapipe
@pytest.mark.parametrize("precision", PRECISIONS)
def test_mediapipe_segmenter_loads_it_and_agrees_with_litert(built, files, precision, tmp_path):
    """MediaPipe Tasks' ImageSegmenter, the real client, loads the file as an app would, reads the
    labels, and its category mask is LiteRT's argmax."""
    config = built[0]
    images = pixels(config, n=2, seed=7).astype(np.uint8)
    done = run_client(files[precision], images, tmp_path / "mediapipe")
    assert done.returncode == 0, f"MediaPipe refused {files[precision].name}: {done.stderr[-2000:]}"
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["labels"] == list(config.labels)
    scores, _ = litert_scores(files[precision], images)
    category = np.load(result["category_masks"])
    assert category.shape == images.shape[:3]
    agreement = top_class_agreement(category, scores)
    assert agreement >= MIN_MEDIAPIPE_AGREEMENT, f"{files[precision].name}: MediaPipe agrees on {agreement:.2%}"


# --- quantisation-aware training ----------------------------------------------------------------


@pytest.mark.slow
def test_wraps_for_qat_with_a_reason_per_layer(built):
    """QAT (the --qat path: the EXPORT graph, so the QAT file gets the same rewrites as the
    post-training one) accepts the architecture: every layer is accounted for, whatever stays
    unquantised is named with a reason, nothing is left out of QAT (treatment "float"), folded BNs
    are among the unquantised, the wrapped model still maps pixels to per-class scores, and its
    batch-1 rebuild (what to_int8_tflite converts) is the same model weight for weight."""
    import tensorflow_model_optimization as tfmot

    from exporter.qat import export_graph_qat_model, export_qat_model

    config, model, fixed = built
    annotated = tfmot.quantization.keras.quantize_annotate_model(model)
    assert len(annotated.layers) == len(model.layers)
    qat = export_graph_qat_model(model, config)
    info = qat.qat_info
    assert info.graph == "export"
    assert {r.layer for r in info.layers} == {layer.name for layer in fixed.layers} | {f["bn"] for f in info.folded}
    assert all(r.reason for r in info.layers)
    assert [r.layer for r in info.layers if r.treatment == "float"] == []
    assert {r["layer"] for r in info.unquantised} >= {f["bn"] for f in info.folded}
    assert sum(r.quantizers for r in info.layers) > 0
    x = pixels(config, seed=4)
    scores = qat(x, training=False).numpy()
    assert scores.shape == (1, *config.input_size, config.num_classes)
    rebuilt = export_qat_model(qat, config)
    assert rebuilt.input_shape == (1, *config.input_size, 3)
    assert np.abs(rebuilt(x, training=False).numpy() - scores).max() < 1e-5


def test_every_custom_layer_is_a_registered_keras_serializable():
    """Clones, QAT's quantize_apply and .keras files find our layers by registered name: a class
    that lost its decorator (one slid between a decorator and its class once) breaks them all."""
    import inspect

    from architectures import layers
    from exporter.keras import keras

    ours = [c for _, c in inspect.getmembers(layers, inspect.isclass)
            if issubclass(c, keras.layers.Layer) and c.__module__ == layers.__name__]
    assert ours
    assert {c.__name__: keras.utils.get_registered_name(c) for c in ours} == {
        c.__name__: f"segexport>{c.__name__}" for c in ours}
