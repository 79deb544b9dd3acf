"""The export stage: one TFLite file per precision of the format table, the QAT file, the ONNX files.

Every TFLite file gets MediaPipe segmenter metadata (labels, normalisation, activation) and the
facts the checks read (ops, float ops, GPU-delegate compatibility).
"""

from __future__ import annotations

from pathlib import Path

from exporter.artifacts import Artifact, write_bytes
from exporter.errors import ConversionError
from exporter.formats import ALTERNATIVE, CONTRACT_BASELINE, artifact_name, contract_baseline_name, variant
from exporter.progress import say
from exporter.stages.run import Run


def tflite_files(run: Run) -> list[Artifact]:
    from exporter.convert.tflite import to_tflite, weight_scales

    q = run.opts.quant
    out = []
    for precision in run.opts.precisions:
        row = variant("tflite", precision)
        say(f"converting to TFLite {precision}" + (
            f" (post-training, {len(run.calib)} calibration samples)" if row.calibrated else ""))
        blob = to_tflite(precision_graph(run, precision), run.config, precision, run.calib.images, io=q.io,
                         per_tensor=q.per_tensor, range_percentile=q.range_percentile)
        facts = {"weight_scales": weight_scales(q.per_tensor)} if row.calibrated else {}
        if row.integer_io:
            facts["io"] = q.io
        # With --qat or --ptq-method several int8 files are measured; the ship stage names the better
        # one MODEL_int8.tflite.
        role = ALTERNATIVE if (precision == "int8" and q.int8_rivals) else None
        name = artifact_name(run.name, precision, role="ptq" if role else None)
        out.append(write_tflite(run, blob, name, precision, row.method, facts, role=role))
        if precision == "float32":
            out += contract_baseline_files(run)
    return out


def contract_baseline_files(run: Run) -> list[Artifact]:
    """Under a non-default output contract: [the DEFAULT contract's float32 file] (the model as trained,
    final resize and activation in it; role CONTRACT_BASELINE), the speed check's baseline
    (exporter.policy.speed_baseline): a ratio against the run's own float32 file would credit the file
    with only what the contract's rewrite saves over a float graph already without the resize. Measured
    like every file, never recommended. Nothing under the default contract."""
    import dataclasses

    from exporter import output_contract
    from exporter.convert.signature import export_model
    from exporter.convert.tflite import to_tflite

    if output_contract.is_default(run.config):
        return []
    config = output_contract.default_of(run.config)
    extra = run.spec.precision_export_options.get("float32")
    graph_config = dataclasses.replace(config, options={**config.options, **extra}) if extra else config
    say("converting to TFLite float32 under the default output contract (the speed check's baseline)")
    blob = to_tflite(export_model(run.model, graph_config), config, "float32", None)
    return [write_tflite(run, blob, contract_baseline_name(run.name), "float32", "none", {},
                         role=CONTRACT_BASELINE, config=config)]


def precision_graph(run: Run, precision: str):
    """The export graph one precision's file is converted from: the run's, or the same function in the
    form the architecture's `precision_export_options` gives that precision (e.g. SegFormer's
    int16x8 LayerNorms; architectures.ArchSpec)."""
    extra = run.spec.precision_export_options.get(precision)
    if not extra:
        return run.fixed
    import dataclasses

    from exporter.convert.signature import export_model

    say(f"{precision}: export graph with {', '.join(f'{k}={v}' for k, v in extra.items())}")
    return export_model(run.model, dataclasses.replace(run.config, options={**run.config.options, **extra}))


def write_tflite(run: Run, blob: bytes, name: str, precision: str, method: str, facts: dict,
                 role: str | None = None, config=None) -> Artifact:
    """The blob with MediaPipe metadata (of `config`'s contract, default the run's), written to staging,
    as a record with its TFLite facts."""
    from exporter.metadata import add_segmenter_metadata, mediapipe_problems, segmenter_metadata_for

    problems = mediapipe_problems(blob)
    blob = add_segmenter_metadata(blob, **segmenter_metadata_for(config or run.config), check=False)
    if problems:
        say(f"warning: {name}: MediaPipe's ImageSegmenter cannot use this file: {'; '.join(problems)}")
    return write_artifact(run.staging, blob, name, "tflite", precision, method,
                          {**tflite_facts(blob, problems), **facts}, role)


def tflite_facts(blob: bytes, mediapipe_problems: list[str]) -> dict:
    """What the checks read of a TFLite file: ops, float ops, quantisation-parameter bytes, GPU compatibility."""
    from exporter.convert.tflite import float_ops, op_histogram, quant_param_bytes
    from exporter.delegates import gpu_compatibility

    return {"ops": op_histogram(blob), "float_ops": float_ops(blob), "quant_param_bytes": quant_param_bytes(blob),
            "mediapipe_problems": mediapipe_problems, "gpu_static": gpu_compatibility(blob)}


def onnx_files(run: Run) -> list[Artifact]:
    """float32 ONNX, and int8 QDQ ONNX (same calibration samples) when int8 is asked for."""
    from exporter.convert.onnx import WEIGHT_BITS, quantise_onnx, to_onnx
    from exporter.convert.signature import INPUT_NAME
    from exporter.convert.tflite import weight_scales
    from exporter.delegates import onnx_mobile_usability

    if not run.opts.onnx:
        return []
    q = run.opts.quant
    say("converting to ONNX float32 (tf2onnx)")
    blob = to_onnx(run.fixed, run.config)
    out = [write_artifact(run.staging, blob, artifact_name(run.name, "float32", "onnx"), "onnx", "float32", "none", {})]
    if run.opts.int8:
        say("quantising the ONNX model to int8 QDQ (ONNX Runtime, same calibration samples)")
        int8 = quantise_onnx(blob, run.calib.images, INPUT_NAME, q.per_tensor, q.range_percentile)
        out.append(write_artifact(run.staging, int8, artifact_name(run.name, "int8", "onnx"), "onnx", "int8", "ptq",
                          {"weight_scales": weight_scales(q.per_tensor), "weight_bits": WEIGHT_BITS}))
    return [a.measured(mobile=onnx_mobile_usability(run.staging / a.file)) for a in out]


def write_artifact(folder: Path, blob: bytes, name: str, fmt: str, precision: str, method: str, facts: dict,
                   role: str | None = None) -> Artifact:
    """The file into the run's staging folder, as the record every later stage reads."""
    write_bytes(folder / name, blob)
    say(f"wrote {name} ({len(blob) / 1e6:.2f} MB)")
    return Artifact(file=name, format=fmt, precision=precision, method=method, bytes=len(blob), role=role,
                    facts=facts)


def require_gpu_compatible(artifacts: list[Artifact]) -> None:
    """--require-gpu-compatible: every float TFLite file fully GPU-delegate compatible, or fail."""
    for art in artifacts:
        gpu = art.facts.get("gpu_static")
        if art.format == "tflite" and variant("tflite", art.precision).gpu_candidate and gpu and not gpu["compatible"]:
            blockers = gpu["unsupported_ops"] + gpu["tensors_over_4d"] + gpu["analyzer_warnings"]
            raise ConversionError(f"{art.file} is not fully GPU-delegate compatible: {', '.join(blockers)}")
