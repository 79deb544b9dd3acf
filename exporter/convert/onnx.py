"""ONNX conversion through tf2onnx (opset 17, explicit batch-1 signature), checked by onnx."""

from __future__ import annotations

from exporter.convert.signature import OUTPUT_NAME, input_spec
from exporter.errors import ConversionError

OPSET = 17


def to_onnx(model, config) -> bytes:
    import onnx
    import tf2onnx

    try:
        proto, _ = tf2onnx.convert.from_keras(
            model, input_signature=[input_spec(config)], opset=OPSET, output_path=None
        )
    except Exception as exc:
        raise ConversionError(f"ONNX conversion of {config.name} failed: {exc}") from exc
    # Name the output after the contract, whatever the Keras layer was called.
    old = proto.graph.output[0].name
    if old != OUTPUT_NAME:
        for node in proto.graph.node:
            node.output[:] = [OUTPUT_NAME if o == old else o for o in node.output]
        proto.graph.output[0].name = OUTPUT_NAME
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as exc:
        raise ConversionError(f"ONNX model of {config.name} failed onnx.checker: {exc}") from exc
    return proto.SerializeToString()


def quantise_onnx(float_blob: bytes, calibration_images, input_name: str, per_tensor: bool = False) -> bytes:
    """Static int8 QDQ ONNX (int8 weights, per-channel unless `per_tensor`; uint8 activations), calibrated like TFLite's."""
    import tempfile
    from pathlib import Path

    import numpy as np
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter(calibration_images)

        def get_next(self):
            image = next(self.items, None)
            return None if image is None else {input_name: image[None].astype(np.float32)}

    with tempfile.TemporaryDirectory() as tmp:
        src, pre, dst = Path(tmp) / "float.onnx", Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(float_blob)
        try:
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
            quantize_static(str(pre), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=not per_tensor,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        except Exception as exc:
            raise ConversionError(f"ONNX int8 quantisation failed: {exc}") from exc
        return dst.read_bytes()
