"""DeepLab `mobilenet_v3_small_seg` + LR-ASPP (issue 3): what is DeepLab's own. The backbone and
head against the issue's table, its parameter count, the seed's 257x257 align-corners geometry,
BatchNorm freezing, and the hard-swish rewrite that keeps the int8 graph in one XNNPACK partition.

The contracts every architecture keeps (output shape, batch independence, flat Keras graph,
float32/float16/int8 files, metadata, MediaPipe, QAT wrap) are in test_registry_contracts.py.
Small inputs (64x64, 3 classes) keep this fast; the default 256x256x21 model is only built.
"""

from __future__ import annotations

import numpy as np
import pytest

from architectures import create_model, deeplab, get_spec, list_models
from architectures import layers as arch_layers
from exporter.keras import keras, tf

SIZE = 64
CLASSES = 3

# Issue 3's backbone table, written out here independently of architectures/deeplab.py:
# (expansion or None, kernel, stride, out, SE, activation) for slim's layer_2 .. layer_12.
ISSUE_BLOCKS = [
    (None, 3, 2, 16, True, "relu"),
    (72, 3, 2, 24, False, "relu"),
    (88, 3, 1, 24, False, "relu"),
    (96, 5, 2, 40, True, "hswish"),
    (240, 5, 1, 40, True, "hswish"),
    (240, 5, 1, 40, True, "hswish"),
    (120, 5, 1, 48, True, "hswish"),
    (144, 5, 1, 48, True, "hswish"),
    (144, 5, 2, 48, True, "hswish"),
    (288, 5, 1, 48, True, "hswish"),
    (288, 5, 1, 48, True, "hswish"),
]
# SE squeeze widths: expanded channels / 4 rounded to a multiple of 8 (slim's _make_divisible).
SE_SQUEEZE = [8, 24, 64, 64, 32, 40, 40, 72, 72]


def _images(n: int, size: int = SIZE, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, 3)).astype(np.float32)


def _bn_layers(model):
    return [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]


def _calibrate_bn(model, images) -> None:
    """Set every BN's moving statistics to one batch's, so random weights give O(1) activations
    in inference mode (fresh BN is the identity and the signal fades through 11 blocks)."""
    layers = _bn_layers(model)
    for layer in layers:
        layer.momentum = 0.0
    model(images, training=True)
    for layer in layers:
        layer.momentum = deeplab.BN_MOMENTUM


def _expected_params(classes: int) -> int:
    def bn(c):
        return 4 * c  # gamma, beta, moving mean, moving variance

    params = 3 * 3 * 3 * 16 + bn(16)  # stem
    channels = 16
    squeeze = iter(SE_SQUEEZE)
    for expansion, kernel, _, out, se, _ in ISSUE_BLOCKS:
        inner = expansion or channels
        if expansion:
            params += channels * inner + bn(inner)
        params += kernel * kernel * inner + bn(inner)
        if se:
            s = next(squeeze)
            params += inner * s + s + s * inner + inner
        params += inner * out + bn(out)
        channels = out
    params += channels * 288 + bn(288)  # layer13
    params += 288 * 128 + bn(128)  # LR-ASPP 1x1 branch
    params += 288 * 128 + 128  # image-level gate
    params += (128 + 1) * classes + (88 + 1) * classes  # two logits convs with bias
    return params


@pytest.fixture(scope="module")
def model():
    """Any-batch model (training graph) with calibrated BN statistics."""
    m = create_model("deeplab", input_size=SIZE, num_classes=CLASSES)
    _calibrate_bn(m, _images(4, seed=1))
    return m


@pytest.fixture(scope="module")
def export_model(model):
    """The same weights in the static batch-1 export graph."""
    m = create_model("deeplab", input_size=SIZE, num_classes=CLASSES, batch_size=1)
    m.set_weights(model.get_weights())
    return m


def _converter(model):
    h, w = model.input_shape[1:3]
    fn = tf.function(lambda x: model(x, training=False)).get_concrete_function(
        tf.TensorSpec([1, h, w, 3], tf.float32)
    )
    # An empty tf.Module as the trackable: handing over the Keras model itself makes the converter
    # save it as a SavedModel first (every layer's call traced: 30-60 s here, ~2 s this way).
    return tf.lite.TFLiteConverter.from_concrete_functions([fn], tf.Module())


def _interpreter(content, delegates: bool = True):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kwargs = {} if delegates else {
        "experimental_op_resolver_type": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    }
    interpreter = Interpreter(model_content=content, **kwargs)
    interpreter.allocate_tensors()
    return interpreter


def _run(interpreter, x):
    inp = interpreter.get_input_details()[0]
    interpreter.set_tensor(inp["index"], x.astype(inp["dtype"]))
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


# --- registry and spec -------------------------------------------------------------------------


def test_registered_with_voc_defaults():
    assert "deeplab" in list_models()
    spec = get_spec("deeplab")
    assert len(spec.labels) == 21
    assert spec.labels[0] == "background" and spec.labels[15] == "person"
    assert spec.labels[-1] == "tvmonitor"
    assert spec.input_size == (256, 256)
    assert spec.output == "logits"
    assert spec.options == {"align_corners": False, "freeze_bn": False, "hard_swish": "xnnpack", "hard_sigmoid": "exact"}
    assert spec.input_multiple == 32 and spec.min_input == 32


def test_backbone_and_head_follow_the_issue(model):
    # The decoder tap: block 4's depthwise output, 88 channels at stride 8.
    assert model.get_layer(deeplab.DECODER_ENDPOINT).output.shape.as_list() == [
        None, SIZE // 8, SIZE // 8, 88]  # fmt: skip
    # The last features: 288 channels (the halved stage) at stride 32.
    assert model.get_layer(deeplab.FEATURES_ENDPOINT).output.shape.as_list() == [
        None, SIZE // 32, SIZE // 32, 288]  # fmt: skip

    stride, channels = 2, 16  # after the stem
    assert model.get_layer("layer1_conv").strides == (2, 2)
    assert isinstance(model.get_layer("layer1_hswish"), arch_layers.HardSwish)
    squeeze = iter(SE_SQUEEZE)
    for index, (expansion, kernel, s, out, se, act) in enumerate(ISSUE_BLOCKS, start=2):
        name = f"layer{index}"
        names = {layer.name for layer in model.layers if layer.name.startswith(name + "_")}
        assert (f"{name}_expand" in names) == (expansion is not None), name
        if expansion:
            assert model.get_layer(f"{name}_expand").filters == expansion
        dw = model.get_layer(f"{name}_depthwise")
        assert dw.kernel_size == (kernel, kernel) and dw.strides == (s, s), name
        assert f"{name}_depthwise_{act}" in names, name
        assert (f"{name}_se_mul" in names) == se, name
        if se:
            assert model.get_layer(f"{name}_se_reduce").filters == next(squeeze)
            assert model.get_layer(f"{name}_se_expand").filters == (expansion or channels)
            assert isinstance(model.get_layer(f"{name}_se_hsigmoid"), arch_layers.HardSigmoid)
        assert model.get_layer(f"{name}_project").filters == out
        # Residual exactly where stride 1 keeps the width.
        assert (f"{name}_add" in names) == (s == 1 and channels == out), name
        stride *= s
        channels = out
    assert stride == 32

    types = [type(layer).__name__ for layer in model.layers]
    assert types.count("HardSwish") == 18  # stem, 2 per block in layers 5..12, layer13
    assert types.count("HardSigmoid") == 10  # 9 SE blocks + the image-level gate
    assert types.count("Multiply") == 10
    head = model.get_layer("aspp0_conv")
    assert head.filters == 128 and not head.use_bias
    gate = model.get_layer("image_pooling_conv")
    assert gate.filters == 128 and gate.use_bias
    for name in ("decoder_aspp_logits", "decoder_feature_logits"):
        conv = model.get_layer(name)
        assert conv.filters == CLASSES and conv.use_bias and conv.activation.__name__ == "linear"
    assert model.get_layer("decoder_aspp_logits").input.shape[1:3] == (SIZE // 8, SIZE // 8)
    assert _bn_layers(model) and all(
        layer.momentum == 0.9 and layer.epsilon == 1e-3 for layer in _bn_layers(model)
    )


def test_normalises_pixels_to_minus_one_one_inside_the_graph(model):
    norm = model.get_layer("normalise")
    assert isinstance(norm, keras.layers.Rescaling)
    assert norm.scale == pytest.approx(2 / 255) and norm.offset == pytest.approx(-1.0)


@pytest.fixture(scope="module")
def default_model():
    """Default settings (256x256, 21 VOC classes) as exported: static batch 1."""
    return create_model("deeplab", batch_size=1)


def test_parameter_count_at_default_settings(default_model):
    m = default_model
    assert m.count_params() == _expected_params(21) == 477_890
    bn_channels = sum(layer.gamma.shape[0] for layer in _bn_layers(m))
    assert len(m.non_trainable_weights) == 2 * len(_bn_layers(m))
    assert sum(int(np.prod(w.shape)) for w in m.non_trainable_weights) == 2 * bn_channels


# --- shapes and batch independence -------------------------------------------------------------


def test_output_shape_default_size(default_model):
    m = default_model
    assert m.input_shape == (1, 256, 256, 3)
    assert m.output_shape == (1, 256, 256, 21)
    assert m.get_layer(deeplab.DECODER_ENDPOINT).output.shape[1:3] == (32, 32)
    assert m.get_layer(deeplab.FEATURES_ENDPOINT).output.shape[1:3] == (8, 8)
    # Stock half-pixel UpSampling2D by exact factors (x4 head, x8 logits).
    assert isinstance(m.get_layer("decoder_upsample"), keras.layers.UpSampling2D)
    assert m.get_layer("decoder_upsample").size == (4, 4)
    assert m.get_layer("logits").size == (8, 8)
    out = m(_images(1, 256)).numpy()
    assert out.shape == (1, 256, 256, 21) and np.isfinite(out).all()


def test_seed_geometry_257_align_corners():
    m = create_model("deeplab", input_size=257, align_corners=True)
    assert m.output_shape == (None, 257, 257, 21)
    assert m.get_layer(deeplab.DECODER_ENDPOINT).output.shape[1:3] == (33, 33)
    assert m.get_layer(deeplab.FEATURES_ENDPOINT).output.shape[1:3] == (9, 9)
    for name in ("decoder_upsample", "logits"):
        layer = m.get_layer(name)
        assert isinstance(layer, arch_layers.ResizeBilinear) and layer.align_corners


def test_any_input_size_gets_exact_resizes():
    m = create_model("deeplab", input_size=(80, 96), num_classes=CLASSES)
    assert m.output_shape == (None, 80, 96, CLASSES)
    assert m.get_layer("decoder_upsample").output.shape[1:3] == (10, 12)


# --- batch-norm freezing -------------------------------------------------------------------------


def test_freeze_bn_runs_inference_mode_with_trainable_affine(model):
    frozen = create_model("deeplab", input_size=SIZE, num_classes=CLASSES, freeze_bn=True)
    frozen.set_weights(model.get_weights())
    x = _images(2, seed=3)
    moving = [w.numpy().copy() for w in frozen.non_trainable_weights]
    with tf.GradientTape() as tape:
        y_train = frozen(x, training=True)
        loss = tf.reduce_mean(tf.square(y_train))
    np.testing.assert_allclose(y_train.numpy(), frozen(x, training=False).numpy(), rtol=1e-5,
                               atol=1e-6)  # fmt: skip
    for before, after in zip(moving, frozen.non_trainable_weights):
        np.testing.assert_array_equal(before, after.numpy())
    bns = _bn_layers(frozen)
    assert bns and len(moving) == 2 * len(bns)
    trainable = {id(w) for w in frozen.trainable_weights}
    assert all(id(layer.gamma) in trainable and id(layer.beta) in trainable for layer in bns)
    grads = tape.gradient(loss, [layer.gamma for layer in bns])
    assert all(g is not None for g in grads)
    assert sum(float(tf.reduce_max(tf.abs(g))) > 0 for g in grads) == len(bns)

    # Unfrozen, training mode uses batch statistics (and would update the moving ones).
    weights = model.get_weights()
    try:
        assert not np.allclose(model(x, training=True).numpy(), model(x, training=False).numpy())
    finally:
        model.set_weights(weights)


# --- TFLite --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_align_corners_65_float_tflite_matches_keras():
    """The seed's geometry in small (65 = 32*2+1, align-corners resizes) converts and matches Keras
    (the default half-pixel geometry: test_registry_contracts)."""
    size = 65
    m = create_model("deeplab", input_size=size, num_classes=CLASSES, batch_size=1, align_corners=True)
    _calibrate_bn(m, _images(1, size, seed=4))
    content = _converter(m).convert()
    interpreter = _interpreter(content)
    ops = {op["op_name"] for op in interpreter._get_ops_details()}
    # hard_swish="xnnpack" (default): MUL, ADD(+RELU6), MUL instead of the HARD_SWISH builtin.
    assert "HARD_SWISH" not in ops and "RESIZE_BILINEAR" in ops
    x = _images(1, size, seed=5)
    expected = m(x, training=False).numpy()
    got = _run(interpreter, x)
    assert got.shape == (1, size, size, CLASSES)
    assert np.abs(got - expected).max() <= 1e-4 * np.abs(expected).max()


@pytest.fixture(scope="module")
def int8_model(export_model):
    calib = _images(8, seed=6)
    converter = _converter(export_model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([calib[i : i + 1]] for i in range(len(calib)))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.uint8
    converter.inference_output_type = tf.uint8
    return converter.convert()


@pytest.mark.slow
def test_int8_tflite_has_no_hard_swish_builtin(int8_model):
    """Full integer with the hard-swishes decomposed (the file's integer contract for every
    architecture, on the pipeline's own file, is in test_registry_contracts)."""
    interpreter = _interpreter(int8_model, delegates=False)
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    assert inp["dtype"] == np.uint8 and out["dtype"] == np.uint8
    dtypes = {t["index"]: t["dtype"] for t in interpreter.get_tensor_details()}
    assert not any(np.issubdtype(d, np.floating) for d in dtypes.values())
    names = [op["op_name"] for op in interpreter._get_ops_details()]
    assert "HARD_SWISH" not in names  # 18 hard-swishes as MUL, ADD(+RELU6), MUL
    assert names.count("QUANTIZE") == 2  # uint8 -> int8 in, int8 -> uint8 out
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "MEAN", "MUL", "ADD", "RESIZE_BILINEAR"} <= set(names)
    y = _run(interpreter, _images(1, seed=7))
    assert y.shape == (1, SIZE, SIZE, CLASSES) and y.dtype == np.uint8


@pytest.mark.slow
def test_int8_tflite_is_one_xnnpack_partition(int8_model):
    """The int8 graph is one XNNPACK subgraph: no op between its layers runs on LiteRT's own
    (reference) kernels; only the uint8 <-> int8 QUANTIZE at the input and output stay outside.
    The HARD_SWISH builtin would break this (LiteRT 2.3's XNNPACK runs it in float only)."""
    from exporter.runtimes import delegation

    interpreter = _interpreter(int8_model)
    split = delegation(interpreter)
    assert split == {"partitions": 1, "undelegated": {"QUANTIZE": 2}}, split


@pytest.mark.slow
def test_hard_swish_forms_agree_and_builtin_stays_available():
    """Both hard-swish forms compute relu6(x+3)/6*x to float rounding; "builtin" still gives
    TFLite's HARD_SWISH (the issue's form), which XNNPACK leaves out of an int8 graph."""
    from exporter.runtimes import delegation

    x = tf.constant(np.linspace(-8.0, 8.0, 4001, dtype=np.float32).reshape(1, 1, -1, 1))
    reference = x * tf.nn.relu6(x + 3.0) / 6.0
    for builtin in (False, True):
        got = arch_layers.HardSwish(builtin=builtin)(x)
        assert np.abs(got - reference).max() <= 1e-5
    with pytest.raises(ValueError, match="hard_swish"):
        create_model("deeplab", input_size=SIZE, num_classes=CLASSES, hard_swish="keras")

    m = create_model("deeplab", input_size=SIZE, num_classes=CLASSES, batch_size=1, hard_swish="builtin")
    _calibrate_bn(m, _images(2, seed=8))
    converter = _converter(m)
    names = [op["op_name"] for op in _interpreter(converter.convert(), delegates=False)._get_ops_details()]
    assert names.count("HARD_SWISH") == 18
    calib = _images(4, seed=9)
    converter = _converter(m)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([calib[i : i + 1]] for i in range(len(calib)))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    split = delegation(_interpreter(converter.convert()))
    assert split["undelegated"].get("HARD_SWISH") == 18 and split["partitions"] > 1


def test_int8_hard_swish_decomposition_is_as_accurate_as_the_builtin():
    """The XNNPACK form's int8 error equals the HARD_SWISH builtin's (conv -> hard-swish -> conv).

    Written as (x/6) * relu6(x+3), the converter's calibration gave x/6 the product's range and
    the int8 error was 1.8x the builtin's here; the layer's operand order avoids that.
    """
    rng = np.random.default_rng(0)
    data = [rng.normal(0, 2, (1, 16, 16, 3)).astype(np.float32) for _ in range(40)]
    heldout = [rng.normal(0, 2, (1, 16, 16, 3)).astype(np.float32) for _ in range(10)]

    def int8_error(builtin):
        keras.utils.set_random_seed(0)
        inputs = keras.Input((16, 16, 3), batch_size=1)
        x = keras.layers.Conv2D(16, 3, padding="same")(inputs)
        x = arch_layers.HardSwish(builtin=builtin)(x)
        m = keras.Model(inputs, keras.layers.Conv2D(4, 1)(x))
        converter = _converter(m)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([d] for d in data)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        interpreter = _interpreter(converter.convert())  # float input and output
        ops = {op["op_name"] for op in interpreter._get_ops_details()}
        errors = [np.abs(_run(interpreter, d) - m(d).numpy()).mean() for d in heldout]
        return float(np.mean(errors)), ops

    builtin_error, builtin_ops = int8_error(True)
    xnnpack_error, xnnpack_ops = int8_error(False)
    assert "HARD_SWISH" in builtin_ops and "HARD_SWISH" not in xnnpack_ops
    assert {"ADD", "MUL"} <= xnnpack_ops
    assert xnnpack_error <= 1.1 * builtin_error, (xnnpack_error, builtin_error)


from exporter.arm import env as _arm_env  # noqa: E402

_ARM_REASON = _arm_env.check()


def _pipeline_int8(model, config, export_options: dict) -> bytes:
    """The pipeline's int8 file (uint8 in/out, its uint8 edges) of `model` rebuilt with these export
    options: {} is the training graph at batch 1, the spec's own is what `convert` ships."""
    import dataclasses

    from architectures import build
    from exporter.convert.tflite import to_tflite

    fixed = build(dataclasses.replace(config, batch_size=1, options={**config.options, **export_options}))
    deeplab.fold_sixth_weights(model, fixed)  # plain copies where nothing is folded
    return to_tflite(fixed, config, "int8", _images(8, seed=6))


def test_export_graph_folds_the_hard_swish_sixth_into_the_convs_that_read_it(model):
    """The export graph's hard-swishes output 6x (relu6(x + 3) * x) and every conv reading one,
    directly or through the SE pool and multiply, takes the 1/6: the same function."""
    from architectures import resolve_config
    from exporter.convert.signature import export_model as pipeline_export

    config = resolve_config("deeplab", input_size=SIZE, num_classes=CLASSES)
    fixed = pipeline_export(model, config)
    swishes = [layer for layer in fixed.layers if isinstance(layer, arch_layers.HardSwish)]
    assert len(swishes) == 18 and all(layer.sixth_folded for layer in swishes)
    absorbers = deeplab._sixth_absorbers(fixed)
    # stem -> layer2 depthwise; per hard-swish block: depthwise, SE reduce, project; head: two convs.
    assert len(absorbers) == 1 + 8 * 3 + 2 and {"layer2_depthwise", "aspp0_conv", "image_pooling_conv"} <= absorbers
    x = _images(2, seed=11)
    want, got = model(x, training=False).numpy(), fixed(x).numpy()
    assert np.abs(got - want).max() <= 1e-4 * max(1.0, np.abs(want).max())


@pytest.mark.slow
@pytest.mark.skipif(_ARM_REASON is not None, reason=_ARM_REASON or "")
def test_export_graph_saves_a76_instructions(tmp_path):
    """On an emulated Cortex-A76 (exact counts, issue 28): with the 1/6 folded, LiteRT's XNNPACK
    takes each int8 ADD(+RELU6)-MUL pair as one hard-swish table lookup (with it as a MUL of its
    own, the MUL-by-constant and the MUL of two tensors run element by element); the final resize
    as two 1-D passes pays for 21 channels, not 32, at every output pixel."""
    from architectures import resolve_config
    from exporter.arm.runner import arm_cost

    config = resolve_config("deeplab", input_size=SIZE, num_classes=CLASSES)
    keras.utils.set_random_seed(0)  # counts are exact for given weights (and differ by a few hundred across weights)
    model = create_model("deeplab", input_size=SIZE, num_classes=CLASSES)
    _calibrate_bn(model, _images(4, seed=1))
    pixels = [np.asarray(_images(1, seed=12), np.uint8)]
    variants = {"training graph": {}, "sixth folded": {"sixth": "folded"},
                "export graph": get_spec("deeplab").export_options}
    assert variants["export graph"] == {"sixth": "folded", "logits_resize": "separable"}
    counts = {}
    for key, options in variants.items():
        path = tmp_path / f"deeplab_{len(counts)}.tflite"
        path.write_bytes(_pipeline_int8(model, config, options))
        counts[key] = arm_cost(path, pixels, "cortex-a76").instructions
    # 64x64, 3 classes. At 128x128, 21 classes (trained bench weights): 7.27 M -> 6.29 M -> 5.90 M.
    # The counts are exact for one file; a fresh clone's calibration moved one variant's by 32
    # instructions (1,377,330; the int8 parameters, not the kernels), so each within 0.01 %.
    expected = {"training graph": 1_626_402, "sixth folded": 1_377_298, "export graph": 1_219_451}
    assert all(abs(counts[k] - n) <= 1e-4 * n for k, n in expected.items()), counts
