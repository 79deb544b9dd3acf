"""The int16x8 file: a precision's own export graph (ArchSpec.precision_export_options) computes the
export graph's function, and SegFormer's full-integer int16x8 file through the real console script.

Why SegFormer has one: its int8 files fail the held-out gate (-2.2 mIoU points on the bench model),
while the int16x8 file of its centred-LayerNorm graph meets it (docs/arm.md); Keras's LayerNorm has
a SQUARED_DIFFERENCE, which LiteRT runs in float and int32 only, so the int16x8 file of the plain
export graph does not run.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from architectures import build, get_spec, list_models
from support import pixels, small_config

PRECISION_GRAPHS = [(name, precision) for name in list_models()
                    for precision in get_spec(name).precision_export_options]


def test_segformer_asks_for_its_int16x8_graph():
    assert ("segformer", "int16x8") in PRECISION_GRAPHS


@pytest.mark.parametrize("name,precision", PRECISION_GRAPHS)
def test_precision_graph_computes_the_export_graphs_function(name, precision):
    from exporter.convert.signature import export_model
    from exporter.train import seed_everything

    config = small_config(name)
    seed_everything(0)
    model = build(config)
    extra = get_spec(name).precision_export_options[precision]
    plain = export_model(model, config)
    other = export_model(model, dataclasses.replace(config, options={**config.options, **extra}))
    x = pixels(config, 2)
    a = np.concatenate([plain(x[i:i + 1], training=False).numpy() for i in range(2)])
    b = np.concatenate([other(x[i:i + 1], training=False).numpy() for i in range(2)])
    np.testing.assert_allclose(b, a, atol=2e-4, rtol=1e-4)
    assert (b.argmax(-1) == a.argmax(-1)).mean() > 0.999


@pytest.mark.slow
def test_segformer_int16x8_through_the_cli(run_cli, tmp_path):
    """32x32, 1 epoch, 4 calibration and 4 held-out samples: the file is written from the centred
    graph, every op computes in integers (int16 activations), and it is gated like the int8 file."""
    from ai_edge_litert.interpreter import Interpreter

    from exporter.convert.tflite import float_ops, op_histogram

    done = run_cli("convert", "--model", "segformer", "--input-size", "32", "--epochs", "1", "--train-samples", "8",
                   "--val-samples", "4", "--calibration-samples", "4", "--precision", "int16x8", "--no-onnx",
                   "--no-bench", "--layer-errors", "0", "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr[-2000:]
    folder = tmp_path / "out" / "segformer"
    blob = (folder / "segformer_int16x8.tflite").read_bytes()
    ops = op_histogram(blob)
    assert not float_ops(blob) and "SQUARED_DIFFERENCE" not in ops, ops
    interp = Interpreter(model_content=blob)
    types = {d["dtype"] for d in interp.get_tensor_details() if d["name"].endswith("Rsqrt")}
    assert types == {np.int16}, types
    report = json.loads((folder / "report.json").read_text())
    art = next(a for a in report["artifacts"] if a["file"] == "segformer_int16x8.tflite")
    assert art["precision"] == "int16x8" and art["agreement"] > 0.5
    mine = {c["name"].split(": ", 1)[1]: c for c in report["checks"] if c.get("file") == art["file"]}
    assert mine["no float op inside"]["passed"] is True
    assert any(c.get("accuracy_gate") for c in mine.values())


def test_aeq_minmax_ranges_hold_every_calibration_value():
    """AI Edge Quantizer's own ranges are a moving average of each sample's min/max: one wide sample
    among narrow ones saturates; ranges="minmax" holds it (exporter.convert.aeq)."""
    from architectures.importers.foreign.tflite_float import fix_float_tflite
    from exporter.convert.aeq import quantise_tflite
    from exporter.errors import ExporterError
    from exporter.keras import keras, tf

    inputs = keras.Input((8, 8, 3), batch_size=1)
    model = keras.Model(inputs, keras.layers.Conv2D(4, 1, name="conv")(inputs))
    blob = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    blob, _ = fix_float_tflite(blob, "tiny.tflite")
    calibration = np.full((20, 8, 8, 3), 0.5, np.float32)
    calibration[0] = 50.0  # the first sample is 100x wider than the rest

    def input_scale(ranges):
        from ai_edge_litert.interpreter import Interpreter

        q = quantise_tflite(blob, "int8", calibration, ranges=ranges)
        details = Interpreter(model_content=q).get_tensor_details()
        return max(d["quantization"][0] for d in details if d["dtype"] == np.int8 and d["shape"].tolist() == [1, 8, 8, 3])

    # asymmetric int8 activations: 255 steps over [0, max]
    assert input_scale("minmax") * 255 >= 49.9 > 2 * input_scale("moving_average") * 255
    with pytest.raises(ExporterError, match="ranges"):
        quantise_tflite(blob, "int8", calibration, ranges="percentile")
