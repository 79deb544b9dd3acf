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
