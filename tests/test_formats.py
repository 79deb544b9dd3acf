"""The format table drives file names, `--precision` choices and the report's rows; a new TFLite
precision is one registered row plus its converter recipe, and nothing else."""

import dataclasses

import pytest

from exporter import formats
from exporter.errors import ExporterError
from exporter.formats import Variant, artifact_name, parse_precisions, register, tflite_precisions, unregister


def test_names_and_choices_come_from_the_table():
    assert tflite_precisions() == ("float32", "float16", "dynamic", "int8", "int16x8")
    assert artifact_name("unet", "int8") == "unet_int8.tflite"
    assert artifact_name("unet", "int8", role="qat") == "unet_int8_qat.tflite"
    assert artifact_name("unet", "float32", "onnx") == "unet_float32.onnx"
    with pytest.raises(ValueError):
        artifact_name("unet", "int4")
    # The old boolean flags are aliases of table rows; float32 is always written, in table order.
    assert parse_precisions("int8", {"fp16": True, "dynamic": False}) == ("float32", "float16", "int8")
    assert parse_precisions(None, {}) == ("float32",)
    with pytest.raises(ExporterError, match="--precision 'int4': choose from float32, float16"):
        parse_precisions("int4")


@pytest.fixture
def float16_twin():
    """A throwaway precision: float16 weights under another name, registered for one test."""
    from exporter.convert.tflite import configure_float16

    register(Variant("tflite", "fp16twin", "float16 weights (test row)", gpu_candidate=True,
                     configure=configure_float16))
    yield "fp16twin"
    unregister("tflite", "fp16twin")


@pytest.mark.slow
def test_a_registered_precision_is_written_measured_and_reported(float16_twin, tmp_path):
    from exporter.options import BenchSpec, ConvertOptions, DataSpec, QuantSpec
    from exporter.pipeline import convert
    from exporter.train import Schedule

    assert float16_twin in tflite_precisions() and parse_precisions(float16_twin) == ("float32", float16_twin)
    opts = ConvertOptions(model="unet", precisions=("float32", float16_twin), onnx=False, out=tmp_path,
                          data=DataSpec(input_size=64, train_samples=16, val_samples=8),
                          schedule=Schedule(epochs=1, batch_size=8), quant=QuantSpec(calibration_samples=8),
                          bench=BenchSpec(enabled=False, arm=()))
    report = convert(opts)
    arts = {a["file"]: a for a in report["artifacts"]}
    twin = arts["unet_fp16twin.tflite"]
    assert (tmp_path / "unet" / "unet_fp16twin.tflite").stat().st_size == twin["bytes"]
    assert twin["bytes"] < 0.6 * arts["unet_float32.tflite"]["bytes"]  # float16 weights: about half
    assert twin["agreement"] > 0.99 and twin["gpu_static"]["compatible"] in (True, False)
    assert "| unet_fp16twin.tflite | fp16twin |" in (tmp_path / "unet" / "report.md").read_text()


def test_rows_are_frozen_records():
    row = formats.variant("tflite", "int8")
    assert row.calibrated and row.accuracy_gate and row.integer_io and row.cli_flag == "int8"
    with pytest.raises(dataclasses.FrozenInstanceError):
        row.precision = "int4"
