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


def _run_entry(path: Path) -> tuple[dict, dict]:
    """(the report.json beside an int8 .tflite written by `exporter convert`, the file's entry in it)."""
    import json

    if not path.is_file():
        raise ExporterError(f"{path}: file not found")
    if path.suffix != ".tflite":
        raise ExporterError(f"{path}: --quant needs an int8 .tflite file written by `exporter convert`")
    report_path = path.parent / "report.json"
    if not report_path.is_file():
        raise ExporterError(f"{path}: no report.json beside it; --quant needs the folder `exporter convert` "
                            "wrote (its report names the float model, data and calibration)")
    try:
        report = json.loads(report_path.read_text())
        entry = next((a for a in report["artifacts"] if a["file"] == path.name), None)
    except Exception as exc:
        raise ExporterError(f"{report_path}: unreadable report ({exc.__class__.__name__}: {exc})") from None
    if entry is None:
        raise ExporterError(f"{path}: not among the files of {report_path}")
    if entry["format"] != "tflite" or entry["precision"] != "int8":
        raise ExporterError(f"{path}: a {entry['precision']} file; --quant ranks the layers of an int8 file")
    return report, entry


def quant_errors(path: Path, top: int = 15, samples: int = 32) -> str:
    """`exporter inspect --quant FILE`: the worst layers of a post-training int8 file by int8 error.

    FILE must sit in the folder `exporter convert` wrote: its report.json names the float model
    (weights), the data, and how many calibration samples were drawn, so the same float model is
    quantised with the same calibration samples and TFLite's QuantizationDebugger compares every
    int8 op with the float op on held-out samples (never calibration ones).
    """
    path = Path(path)
    if top < 1 or samples < 1:
        raise ExporterError(f"--top {top} --samples {samples}: both must be at least 1")
    report, entry = _run_entry(path)
    if entry.get("method") == "qat":
        ptq = next((a["file"] for a in report["artifacts"] if a["format"] == "tflite" and a["precision"] == "int8"
                    and a["method"] == "ptq" and a.get("role") != "selective"), "the post-training int8 file")
        raise ExporterError(f"{path}: a quantisation-aware-trained file; the debugger measures post-training "
                            f"quantisation of the float model, which is not how this file was made "
                            f"(inspect {ptq} for the post-training ranking)")
    if path.stat().st_size != entry["bytes"]:
        raise ExporterError(f"{path}: {path.stat().st_size} bytes, but its report says {entry['bytes']}: "
                            "the file changed since that run")

    from calibration.sampling import representative_indices
    from exporter.convert.signature import export_model
    from exporter.pipeline import ConvertOptions, DataSpec, QuantSpec, prepare_model
    from exporter.quant_debug import ROUNDING_RMSE_OVER_SCALE, QuantDebugSession

    data = report["data"]
    requested = data.get("requested", {})
    h, w = report["input_shape"][1:3]
    cal = report["calibration"]
    opts = ConvertOptions(model=report["model"], weights=_run_weights(path, report),
                          data=DataSpec(source=data["spec"], input_size=h if h == w else None,
                                        classes=len(report["labels"]),
                                        train_samples=requested.get("train_samples", data["train_samples"]),
                                        val_samples=requested.get("val_samples", data["heldout_samples"])),
                          quant=QuantSpec(calibration_samples=cal.get("requested", cal["samples"])))
    _, config, splits, model, _ = prepare_model(opts)
    calib_idx, _ = representative_indices(splits.train, opts.quant.calibration_samples)
    if len(calib_idx) != cal["samples"] or len(splits.val) != data["heldout_samples"]:
        raise ExporterError(f"{path}: the data {data['spec']} no longer gives the run's {cal['samples']} "
                            f"calibration and {data['heldout_samples']} held-out samples")
    n = min(samples, len(splits.val))
    session = QuantDebugSession(export_model(model, config), config, splits.train.images[calib_idx],
                                splits.val.images[:n], per_tensor=entry.get("weight_scales") == "per-tensor",
                                range_percentile=cal.get("range_percentile", 100.0))  # older reports: min/max
    rows = session.layer_stats()
    kept = set(entry.get("keep_float") or [])
    lines = [f"{path.name}: per-layer int8 error (TFLite QuantizationDebugger): {report['model']}'s float model "
             f"({opts.weights.name}) quantised post-training with the run's {len(calib_idx)} calibration samples, "
             f"each int8 op against the float op on the same input, over {n} held-out samples",
             f"  RMSE/scale = output error in int8 steps (rounding alone: {ROUNDING_RMSE_OVER_SCALE:.2f}); "
             f"the {min(top, len(rows))} worst of {len(rows)} quantised tensors:",
             f"  {'#':>3}  {'RMSE/scale':>10}  {'max abs err':>11}  {'op':<18} layer"]
    for i, r in enumerate(rows[:top], 1):
        also = [x for x in r["layers"][1:3] if x != r["layer"]]
        note = (f" (with {', '.join(also)})" if also else "") + (" [float in this file]" if r["layer"] in kept else "")
        lines.append(f"  {i:>3}  {r['rmse_over_scale']:>10.3f}  {r['max_abs_error']:>11.4g}  {r['op']:<18} "
                     f"{r['layer']}{note}")
    worst = list(dict.fromkeys(r["layer"] for r in rows))[:2]
    lines.append(f"  keep layers float: exporter convert --model {report['model']} --weights {opts.weights} "
                 f"--keep-float {','.join(worst)} (or --keep-float auto)")
    return "\n".join(lines)


def _run_weights(path: Path, report: dict) -> Path:
    """The float weights a run converted: --weights as given, or those trained into OUT/MODEL/training."""
    from exporter.train import WEIGHTS_FILE

    candidates = []
    if report.get("weights"):
        candidates.append(Path(report["weights"]))
    candidates.append(path.parent / "training" / WEIGHTS_FILE)
    recorded = (report.get("training") or {}).get("weights")
    if recorded:
        candidates.append(Path(recorded))
    for candidate in candidates:
        if candidate.exists():
            return candidate
    raise ExporterError(f"{path}: the float weights of its run are gone (looked for "
                        f"{', '.join(str(c) for c in candidates)})")
