"""Exported-graph rewrites that compute the same function with fewer ARM instructions:
the uint8 output QUANTIZE moved in front of a final resize (exporter/convert/edges.py) and the
transposed convolution as per-phase convolutions (architectures/subpixel.py)."""

import numpy as np
import pytest

from exporter.convert.tflite import op_histogram


def _run(blob, x):
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=blob)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    interp.set_tensor(inp["index"], x)
    interp.invoke()
    return interp.get_tensor(out["index"]).copy(), out


def _ops_in_order(blob):
    from exporter.convert.tflite import _ops

    return [op["op_name"] for op in _ops(blob)]


def _uint8_int8_file(model, config, calib) -> bytes:
    """The full-integer file the int8 recipe writes (uint8 pixels in, uint8 scores out), before the edge rewrite."""
    from exporter.convert.tflite import _int8_with_ranges, _pixels_in_as_bytes, calibrated_converter
    from exporter.keras import tf

    converter = calibrated_converter(model, config, calib)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return _pixels_in_as_bytes(_int8_with_ranges(converter, calib, 99.999, "uint8"))


def _assert_same_output_bytes(plain: bytes, moved: bytes, size: int) -> None:
    """Both files give the same uint8 output bytes, with the same output parameters, on 3 random inputs."""
    for seed in range(3):
        pixels = np.random.default_rng(seed).integers(0, 256, (1, size, size, 3)).astype(np.uint8)
        a, out_a = _run(plain, pixels)
        b, out_b = _run(moved, pixels)
        assert out_b["dtype"] == np.uint8 and out_b["quantization"] == out_a["quantization"]
        assert np.array_equal(a, b)


def test_quantize_moves_before_the_final_resize_with_identical_bytes():
    from exporter.convert.edges import quantize_before_resize
    from exporter.keras import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 3), batch_size=1)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(inputs)
    x = keras.layers.Conv2D(5, 1)(x)
    model = keras.Model(inputs, keras.layers.UpSampling2D(2, interpolation="bilinear")(x))

    class Config:
        name, input_size = "tiny", (16, 16)

    rng = np.random.default_rng(0)
    calib = rng.uniform(0, 255, (8, 16, 16, 3)).astype(np.float32)
    plain = _uint8_int8_file(model, Config, calib)
    moved = quantize_before_resize(plain)
    assert _ops_in_order(plain)[-2:] == ["RESIZE_BILINEAR", "QUANTIZE"]
    assert _ops_in_order(moved)[-2:] == ["QUANTIZE", "RESIZE_BILINEAR"]
    assert op_histogram(moved) == op_histogram(plain)
    _assert_same_output_bytes(plain, moved, 16)
    assert quantize_before_resize(moved) == moved  # nothing left to move


def test_separable_resize_is_the_resize_and_its_quantize_moves_before_the_chain():
    """ResizeBilinear(separable=True) (DeepLab's exported final resize) computes the one-op resize in
    float, and the uint8 output QUANTIZE moves in front of its resize-reshape-resize-reshape chain
    with identical output bytes (the chain carries values without requantising them)."""
    from architectures.layers import ResizeBilinear
    from exporter.convert.edges import quantize_before_resize
    from exporter.keras import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3), batch_size=1)
    x = keras.layers.Conv2D(8, 3, strides=4, padding="same", activation="relu")(inputs)
    x = keras.layers.Conv2D(5, 1)(x)  # 8x8x5 logits, x4 to the input size as DeepLab's x8
    direct = keras.Model(inputs, ResizeBilinear((32, 32))(x))
    model = keras.Model(inputs, ResizeBilinear((32, 32), separable=True)(x))
    rng = np.random.default_rng(0)
    calib = rng.uniform(0, 255, (8, 32, 32, 3)).astype(np.float32)
    assert np.abs(model(calib).numpy() - direct(calib).numpy()).max() <= 1e-5

    class Config:
        name, input_size = "tiny", (32, 32)

    plain = _uint8_int8_file(model, Config, calib)
    moved = quantize_before_resize(plain)
    chain = ["RESIZE_BILINEAR", "RESHAPE", "RESIZE_BILINEAR", "RESHAPE"]
    assert _ops_in_order(plain)[-5:] == [*chain, "QUANTIZE"]
    assert _ops_in_order(moved)[-5:] == ["QUANTIZE", *chain]
    _assert_same_output_bytes(plain, moved, 32)
    assert quantize_before_resize(moved) == moved


@pytest.mark.parametrize("kernel,stride", [(3, 2), (4, 2), (2, 2), (3, 3)])
def test_phase_deconvolution_equals_conv2d_transpose(kernel, stride):
    from architectures.subpixel import PhaseConv2DTranspose
    from exporter.keras import keras

    keras.utils.set_random_seed(1)
    x = np.random.default_rng(0).normal(size=(1, 7, 9, 5)).astype(np.float32)
    ref = keras.layers.Conv2DTranspose(6, kernel, strides=stride, padding="same", bias_initializer="glorot_uniform")
    expected = ref(x).numpy()
    phases = PhaseConv2DTranspose(6, kernel, stride)
    phases.build(x.shape)
    phases.set_weights(ref.get_weights())
    np.testing.assert_allclose(phases(x).numpy(), expected, atol=1e-5)


@pytest.mark.slow
def test_unet_exports_the_transposed_convs_as_phase_convolutions():
    """Same weights as the training graph, no TRANSPOSE_CONV (XNNPACK's int8 deconvolution runs
    a one-row GEMM kernel: 2/3 of the int8 UNet's ARM instructions), no zero taps stored."""
    from architectures import build, resolve_config
    from exporter.convert.signature import export_model
    from exporter.convert.tflite import to_tflite

    config = resolve_config("unet", input_size=(64, 64))
    model = build(config)
    fixed = export_model(model, config)
    x = np.random.default_rng(0).uniform(0, 255, (1, 64, 64, 3)).astype(np.float32)
    np.testing.assert_allclose(fixed(x).numpy(), model(x, training=False).numpy(), atol=1e-3)
    ops = op_histogram(to_tflite(fixed, config, "float32"))
    assert "TRANSPOSE_CONV" not in ops and ops.get("DEPTH_TO_SPACE") == 4
    # Per layer the cheaper form on 16-wide int8 GEMM tiles: the 3-class logits layer dense (4 taps x
    # 12 channels, padded to 16) rather than per phase (9 taps x 3 channels, each padded to 16).
    forms = {layer.name: type(layer).__name__ for layer in fixed.layers if layer.name.endswith(("deconv", "logits"))}
    assert forms == {**{f"up{i}_deconv": "PhaseConv2DTranspose" for i in range(3)},
                     "logits": "SubpixelConv2DTranspose"}, forms


@pytest.mark.parametrize("filters,expected", [(3, "SubpixelConv2DTranspose"), (4, "SubpixelConv2DTranspose"),
                                              (8, "SubpixelConv2DTranspose"), (16, "PhaseConv2DTranspose"), (64, "PhaseConv2DTranspose")])
def test_cheapest_deconvolution_form_counts_padded_gemm_channels(filters, expected):
    from architectures.subpixel import SubpixelConv2DTranspose, cheapest_form
    from exporter.keras import keras

    assert cheapest_form(filters, 3, 2).__name__ == expected
    x = np.random.default_rng(0).normal(size=(1, 5, 6, 7)).astype(np.float32)
    ref = keras.layers.Conv2DTranspose(filters, 3, strides=2, padding="same", bias_initializer="glorot_uniform")
    expected_out = ref(x).numpy()
    dense = SubpixelConv2DTranspose(filters, 3, 2)
    dense.build(x.shape)
    dense.set_weights(ref.get_weights())
    np.testing.assert_allclose(dense(x).numpy(), expected_out, atol=1e-5)


def test_dynamic_range_depthwise_keeps_its_dequantised_weights_in_float_inside_xnnpack():
    """A hybrid DEPTHWISE_CONV_2D (int8 weights, float input) has no XNNPACK kernel: the dynamic
    recipe writes its weights back as float (int8 x channel scale, the values the hybrid kernel
    used), so the whole graph is one XNNPACK partition; the other ops stay int8-weight hybrids."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.interpreter import Interpreter

    from exporter.convert.hybrid import float_weights_where_not_delegated
    from exporter.convert.tflite import _converter, configure_dynamic, to_tflite
    from exporter.keras import keras, tf
    from exporter.runtimes import delegation

    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3), batch_size=1)
    x = keras.layers.Conv2D(128, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.DepthwiseConv2D(3, padding="same")(x)  # 3*3*128 weights: big enough to quantise
    model = keras.Model(inputs, keras.layers.Conv2D(4, 1)(x))

    class Config:
        name, input_size = "tiny", (8, 8)

    converter = _converter(model, Config)
    configure_dynamic(converter, tf, "float")
    hybrid = converter.convert()
    rewritten = to_tflite(model, Config, "dynamic")

    def depthwise_weights(blob):
        m = schema.ModelT.InitFromObj(schema.Model.GetRootAs(bytearray(blob), 0))
        g = m.subgraphs[0]
        op = next(op for op in g.operators if m.operatorCodes[op.opcodeIndex].builtinCode
                  == schema.BuiltinOperator.DEPTHWISE_CONV_2D)
        t = g.tensors[op.inputs[1]]
        return t, np.frombuffer(bytes(bytearray(m.buffers[t.buffer].data)), {
            schema.TensorType.INT8: np.int8, schema.TensorType.FLOAT32: np.float32}[t.type]).reshape(t.shape)

    q, int8 = depthwise_weights(hybrid)
    f, real = depthwise_weights(rewritten)
    assert q.type == schema.TensorType.INT8 and f.type == schema.TensorType.FLOAT32
    assert np.array_equal(real, int8.astype(np.float32) * np.asarray(q.quantization.scale, np.float32))
    assert float_weights_where_not_delegated(rewritten) == rewritten  # nothing left to rewrite

    def split(blob):
        interp = Interpreter(model_content=blob)
        interp.allocate_tensors()
        return delegation(interp)

    assert split(hybrid)["undelegated"] == {"DEPTHWISE_CONV_2D": 1}
    assert split(rewritten) == {"partitions": 1, "undelegated": {}}
    x = np.random.default_rng(0).uniform(0, 255, (1, 8, 8, 3)).astype(np.float32)
    expected = model(x).numpy()
    got, _ = _run(rewritten, x)
    assert np.abs(got - expected).max() < 0.02 * np.abs(expected).max()
