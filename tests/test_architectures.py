"""Every registered architecture, at a small size: shapes, export graph, TFLite float and int8.

Parametrised over the registry, so a new architecture is tested without touching this file.
"""

import numpy as np
import pytest

from architectures import build, get_spec, list_models
from support import SMALL_CLASSES as CLASSES, pixels, small_config

@pytest.fixture(scope="module", params=list_models())
def built(request):
    from exporter.convert.signature import export_model

    config = small_config(request.param)
    model = build(config)
    return config, model, export_model(model, config)


def test_output_contract(built):
    config, model, fixed = built
    out = np.asarray(fixed(pixels(config)))
    assert out.shape == (1, *config.input_size, CLASSES)
    assert np.isfinite(out).all()
    if get_spec(config.name).output == "softmax":
        np.testing.assert_allclose(out.sum(-1), 1.0, atol=1e-4)


def test_batch_one_export_graph_matches_training_graph(built):
    config, model, fixed = built
    x = pixels(config, n=2, seed=1)
    batched = np.asarray(model(x, training=False))
    for i in range(2):
        single = np.asarray(fixed(x[i : i + 1], training=False))[0]
        np.testing.assert_allclose(single, batched[i], rtol=1e-4, atol=1e-4)


def test_float32_tflite_matches_keras(built):
    from exporter.convert.tflite import to_tflite
    from exporter.runtimes import LiteRTRunner

    config, _, fixed = built
    blob = to_tflite(fixed, config, "float32")
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.tflite"
        path.write_bytes(blob)
        x = pixels(config, seed=2)
        got = LiteRTRunner(path, threads=1).predict(x.astype(np.uint8))
    want = np.asarray(fixed(x))
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3 * np.abs(want).max())


def test_int8_tflite_is_fully_integer(built):
    from exporter.convert.tflite import float_ops, to_tflite
    from ai_edge_litert.interpreter import Interpreter

    config, _, fixed = built
    # Calibration images that do not span 0..255: the uint8 input must still be the raw pixel.
    calib = np.clip(pixels(config, n=8, seed=3), 20, 230).astype(np.uint8)
    blob = to_tflite(fixed, config, "int8", calib)
    assert float_ops(blob) == []
    interp = Interpreter(model_content=blob)
    assert interp.get_input_details()[0]["dtype"] == np.uint8
    assert interp.get_output_details()[0]["dtype"] == np.uint8
    assert list(interp.get_input_details()[0]["shape"]) == [1, *config.input_size, 3]
    assert interp.get_input_details()[0]["quantization"] == (1.0, 0)
    # Percentile ranges (the default) against TFLite's min/max: finer steps on balance, and more
    # tensors finer than coarser (the quantiser may derive a tensor's scale from a neighbour's,
    # so one can come out coarser); the I/O contract is the same.
    plain = to_tflite(fixed, config, "int8", calib, range_percentile=100)
    narrow, wide = _activation_scales(blob), _activation_scales(plain)
    common = narrow.keys() & wide.keys()
    assert len(common) >= 0.9 * len(wide), (len(common), len(wide))
    ratios = np.array([narrow[n] / wide[n] for n in common])
    assert np.sum(np.log(ratios)) < 0 and np.sum(ratios < 0.999) > np.sum(ratios > 1.001), sorted(ratios)
    assert Interpreter(model_content=plain).get_input_details()[0]["quantization"] == (1.0, 0)


def _activation_scales(blob: bytes) -> dict[str, float]:
    """Scale of every int8 activation tensor (per-tensor quantised, not a constant), by name."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=blob)
    out = {}
    for t in interp.get_tensor_details():
        scales = t["quantization_parameters"]["scales"]
        if t["dtype"] == np.int8 and len(scales) == 1 and not _is_constant(interp, t["index"]):
            out[t["name"]] = float(scales[0])
    return out


def _is_constant(interp, index: int) -> bool:
    try:
        interp.get_tensor(index)
        return True
    except ValueError:  # activations have no data before allocate/invoke
        return False


def _weight_scale_counts(blob: bytes) -> list[int]:
    """Scales per int8 constant tensor (weights) of a TFLite file."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=blob)
    counts = []
    for t in interp.get_tensor_details():
        if t["dtype"] != np.int8:
            continue
        try:  # constants have data before allocation; activations raise
            interp.get_tensor(t["index"])
        except ValueError:
            continue
        counts.append(len(t["quantization_parameters"]["scales"]))
    return counts


def test_per_tensor_int8_has_one_scale_per_weight_tensor_and_a_smaller_file(built):
    from exporter.convert.tflite import float_ops, to_tflite

    config, _, fixed = built
    calib = pixels(config, n=4, seed=5)
    per_channel = to_tflite(fixed, config, "int8", calib)
    per_tensor = to_tflite(fixed, config, "int8", calib, per_tensor=True)
    assert float_ops(per_tensor) == []
    assert max(_weight_scale_counts(per_channel)) > 1
    counts = _weight_scale_counts(per_tensor)
    assert counts and set(counts) == {1}
    assert len(per_tensor) < len(per_channel)
