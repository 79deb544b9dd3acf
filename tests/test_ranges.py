"""Percentile activation ranges for int8 (exporter.convert.ranges) and the int8 path that uses them."""

import numpy as np
import pytest

from exporter.convert.ranges import TailTracker, check_percentile, narrowed
from exporter.errors import ExporterError
from support import pixels, small_config


def test_tail_tracker_is_exact_over_a_stream():
    rng = np.random.default_rng(0)
    chunks = [rng.standard_t(2, size=n).astype(np.float32) for n in (5000, 1, 12000, 300, 7000)]
    everything = np.sort(np.concatenate(chunks))
    for percentile in (100.0, 99.999, 99.99, 99.9):
        tracker = TailTracker(everything.size, percentile)
        for chunk in chunks:
            tracker.add(chunk)
        k = tracker.k
        assert k == max(1, int(everything.size * (100 - percentile) / 100))
        assert tracker.range() == (everything[k - 1], everything[-k])
    assert TailTracker(everything.size, 100.0).k == 1  # min and max


def test_narrowed_never_widens_and_keeps_zero():
    assert narrowed(-4.0, 10.0, -1.0, 6.0) == (-1.0, 6.0)
    assert narrowed(-4.0, 10.0, -9.0, 12.0) == (-4.0, 10.0)  # never wider than min/max
    assert narrowed(0.5, 10.0, 1.0, 6.0) == (0.5, 6.0)  # 0 stays representable: low end not raised above 0
    assert narrowed(-3.0, 0.0, -2.0, -1.0) == (-2.0, 0.0)


@pytest.mark.parametrize("bad", [98.9, 100.5, float("nan"), float("inf")])
def test_percentile_outside_99_to_100_is_refused(bad):
    with pytest.raises(ExporterError, match="--range-percentile"):
        check_percentile(bad)


@pytest.mark.slow
def test_int8_path_without_narrowing_is_the_converters_own():
    """The calibrate -> rewrite -> quantise path, with nothing narrowed, gives the file the
    converter makes by itself: the same ops and the same outputs."""
    from ai_edge_litert.interpreter import Interpreter

    from architectures import build
    from exporter.convert.signature import export_model
    from exporter.convert.tflite import _int8_with_ranges, _pixels_in_as_bytes, calibrated_converter, op_histogram, to_tflite

    config = small_config("unet")
    fixed = export_model(build(config), config)
    calib = pixels(config, n=8, seed=3).astype(np.uint8)
    own = to_tflite(fixed, config, "int8", calib, range_percentile=100)
    converter = calibrated_converter(fixed, config, calib)
    from exporter.keras import tf

    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    ours = _pixels_in_as_bytes(_int8_with_ranges(converter, calib, 100.0, "uint8"))
    assert op_histogram(ours) == op_histogram(own)
    x = pixels(config, n=2, seed=4).astype(np.uint8)
    outputs = []
    for blob in (own, ours):
        interp = Interpreter(model_content=blob)
        interp.allocate_tensors()
        inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
        assert inp["quantization"] == (1.0, 0)
        got = []
        for image in x:
            interp.set_tensor(inp["index"], image[None])
            interp.invoke()
            got.append(interp.get_tensor(out["index"]).copy())
        outputs.append((out["quantization"], np.stack(got)))
    assert outputs[0][0] == outputs[1][0]
    np.testing.assert_array_equal(outputs[0][1], outputs[1][1])


def _qdq_scales(blob: bytes) -> dict:
    """{activation tensor: its QuantizeLinear scale} of a QDQ ONNX model."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load_from_string(blob)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    return {n.input[0]: float(inits[n.input[1]]) for n in model.graph.node
            if n.op_type == "QuantizeLinear" and n.input[1] in inits and inits[n.input[1]].size == 1}


@pytest.mark.slow
def test_onnx_int8_gets_the_percentile_ranges_and_7_bit_weights(tmp_path):
    """The int8 ONNX file narrows activation ranges as the TFLite file does (input and output
    excepted, never wider, 0 kept) and keeps its weights in ORT's 7-bit range (no uint8 x int8
    saturation on x86 without VNNI)."""
    import onnx
    from onnx import numpy_helper
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from architectures import build
    from exporter.convert.onnx import WEIGHT_BITS, quantise_onnx, to_onnx
    from exporter.convert.ranges import onnx_range_overrides
    from exporter.convert.signature import INPUT_NAME, OUTPUT_NAME, export_model

    config = small_config("unet")
    float_blob = to_onnx(export_model(build(config), config), config)
    calib = pixels(config, n=8, seed=3).astype(np.uint8)
    (tmp_path / "f.onnx").write_bytes(float_blob)
    quant_pre_process(str(tmp_path / "f.onnx"), str(tmp_path / "pre.onnx"), skip_symbolic_shape=True)
    assert onnx_range_overrides(tmp_path / "pre.onnx", calib, INPUT_NAME, 100.0) == {}
    overrides = onnx_range_overrides(tmp_path / "pre.onnx", calib, INPUT_NAME, 99.9)
    assert overrides and INPUT_NAME not in overrides and OUTPUT_NAME not in overrides
    assert all(o[0]["rmin"] <= 0.0 <= o[0]["rmax"] for o in overrides.values())

    minmax = _qdq_scales(quantise_onnx(float_blob, calib, INPUT_NAME, range_percentile=100.0))
    narrowed_blob = quantise_onnx(float_blob, calib, INPUT_NAME, range_percentile=99.9)
    narrow = _qdq_scales(narrowed_blob)
    common = [t for t in minmax if t in narrow and t in overrides]
    assert common
    assert all(narrow[t] <= minmax[t] * (1 + 1e-6) for t in common)  # never coarser than min/max
    assert sum(narrow[t] < minmax[t] * (1 - 1e-6) for t in common) > len(common) // 2
    edges = [edge for edge in (INPUT_NAME, OUTPUT_NAME) if edge in minmax]
    assert edges, sorted(minmax)  # else the loop below checks nothing
    for edge in edges:  # the graph's edges keep ORT's min/max scale
        assert narrow[edge] == pytest.approx(minmax[edge])

    weights = [numpy_helper.to_array(i) for i in onnx.load_from_string(narrowed_blob).graph.initializer
               if i.data_type == onnx.TensorProto.INT8 and i.dims]
    assert weights
    limit = 2 ** (WEIGHT_BITS - 1)  # symmetric: codes -64..64, where full int8 would reach 127
    assert max(int(np.abs(w).max()) for w in weights) == limit
