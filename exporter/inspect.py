"""`exporter inspect FILE`: what a model file takes, returns and is made of."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from exporter.errors import ExporterError


def describe_file(path: Path) -> str:
    path = Path(path)
    if not path.is_file():
        raise ExporterError(f"{path}: file not found")
    if path.suffix == ".tflite":
        return _describe_tflite(path)
    if path.suffix == ".onnx":
        return _describe_onnx(path)
    raise ExporterError(f"{path}: not a .tflite or .onnx file")


def _describe_tflite(path: Path) -> str:
    from ai_edge_litert.interpreter import Interpreter

    from exporter.convert.tflite import float_ops, op_histogram

    blob = path.read_bytes()
    try:
        interp = Interpreter(model_content=blob)
    except Exception as exc:
        raise ExporterError(f"{path}: not a valid TFLite file ({exc})") from None
    lines = [f"{path.name}: TFLite, {len(blob) / 1e6:.2f} MB"]
    for kind, details in (("input", interp.get_input_details()), ("output", interp.get_output_details())):
        for d in details:
            q = d["quantization"]
            quant = f", scale {q[0]:.6g}, zero point {q[1]}" if q[0] else ""
            lines.append(f"  {kind}: {d['name']} {[int(v) for v in d['shape']]} {d['dtype'].__name__}{quant}")
    hist = op_histogram(blob)
    lines.append("  ops: " + ", ".join(f"{k}×{v}" for k, v in sorted(hist.items(), key=lambda kv: -kv[1])))
    fl = float_ops(blob)
    lines.append(f"  float ops inside: {', '.join(sorted(set(fl))) if fl else 'none'}")
    from exporter.metadata import describe_metadata

    lines += describe_metadata(blob)
    return "\n".join(lines)


def _describe_onnx(path: Path) -> str:
    import onnx

    try:
        model = onnx.load(str(path))
    except Exception as exc:
        raise ExporterError(f"{path}: not a valid ONNX file ({exc})") from None
    lines = [f"{path.name}: ONNX opset {model.opset_import[0].version}, {path.stat().st_size / 1e6:.2f} MB"]
    for kind, values in (("input", model.graph.input), ("output", model.graph.output)):
        for v in values:
            dims = [d.dim_value or d.dim_param for d in v.type.tensor_type.shape.dim]
            lines.append(f"  {kind}: {v.name} {dims} {onnx.TensorProto.DataType.Name(v.type.tensor_type.elem_type).lower()}")
    hist = Counter(n.op_type for n in model.graph.node)
    lines.append("  ops: " + ", ".join(f"{k}×{v}" for k, v in hist.most_common()))
    return "\n".join(lines)
