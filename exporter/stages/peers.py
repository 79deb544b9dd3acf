"""The peers: what a user gets without this tool from the same float model, measured beside ours.

- AI Edge Quantizer's plain `static_wi8_ai8` (litert-quantizer, exporter.convert.aeq) of the run's
  float32 file (our export graph), calibrated on the same samples: MODEL_int8_peer-aeq.tflite.
- TFLiteConverter's default full-integer file of the TRAINING graph (the model as trained, no
  export-graph rewrites, no edge rewrites, the converter's own min/max calibration on the same
  samples, per-channel weights): MODEL_int8_peer-tflite.tflite. The recipe is TensorFlow's
  documented integer-only one (`Optimize.DEFAULT`, a representative dataset,
  `TFLITE_BUILTINS_INT8`, `inference_input_type`/`inference_output_type` uint8): integer I/O
  because that recipe sets it (without it the converter keeps float I/O, which is "integer with
  float fallback", not the full-integer file an NPU or a uint8 camera pipeline takes), and uint8 as
  ours is, so the A76 counts compare the graphs, not the I/O edges. The uint8 input keeps the
  scale the converter derives from the calibration pixels (we set ours to 1/0); the runners
  quantise pixels with each file's own parameters. Only the static batch of 1 and the run's
  output contract (`exporter.output_contract.strip`) are applied, as for every file measured.

Each is written and measured like every file (held-out agreement, ARM instructions, GPU), reported,
never gated or recommended (role PEER). `section(report)` sets the recommended CPU file beside each peer: the
report's `peers` and its table. A foreign model's (`convert --from` a .tflite or .onnx) plain int8
file is that same recipe on the same float file, so it is its peer (no second file).

Runs when int8 is written and the ARM cost is measured (instructions are the comparison).
"""

from __future__ import annotations

from exporter.formats import PEER, artifact_name
from exporter.progress import say

AEQ_ROLE = "peer-aeq"
AEQ_WHAT = "AI Edge Quantizer static_wi8_ai8 of the same float32 file (plain recipe, same calibration samples)"
TFLITE_ROLE = "peer-tflite"
TFLITE_WHAT = ("TFLiteConverter's default full-integer file of the training graph (no rewrites, min/max "
               "calibration on the same samples, uint8 I/O)")


def peer_files(run, arts: list) -> list:
    bench = run.opts.bench
    if not (run.opts.int8 and bench.enabled and bench.arm and bench.peers):
        return []
    return _aeq_file(run, arts) + _tflite_file(run)


def _aeq_file(run, arts: list) -> list:
    from architectures.importers.foreign.tflite_float import fix_float_tflite
    from exporter.convert.aeq import quantise_tflite
    from exporter.errors import ExporterError
    from exporter.stages.export import write_tflite

    float32 = next((a for a in arts if a.format == "tflite" and a.precision == "float32"), None)
    if float32 is None:
        return []
    say("peers: AI Edge Quantizer static_wi8_ai8 of the float32 file, same calibration samples")
    try:
        # Our files carry no signature; the quantizer needs one (nothing else changes).
        blob, _ = fix_float_tflite((run.staging / float32.file).read_bytes(), float32.file)
        blob = quantise_tflite(blob, "int8", run.calib.images.astype("float32"))
    except ExporterError as exc:
        say(f"warning: peers: AI Edge Quantizer's file not written ({exc})")
        return []
    name = artifact_name(run.name, "int8", role=AEQ_ROLE)
    return [write_tflite(run, blob, name, "int8", "ptq", {"peer": AEQ_WHAT, "io": "float"}, role=PEER)]


def _tflite_file(run) -> list:
    from exporter.errors import ExporterError
    from exporter.stages.export import write_tflite

    say("peers: TFLiteConverter's default full-integer file of the training graph, same calibration samples")
    try:
        blob = converter_default_int8(run.model, run.config, run.calib.images)
    except ExporterError as exc:
        say(f"warning: peers: TFLiteConverter's default int8 file not written ({exc})")
        return []
    name = artifact_name(run.name, "int8", role=TFLITE_ROLE)
    return [write_tflite(run, blob, name, "int8", "ptq", {"peer": TFLITE_WHAT, "io": "uint8"}, role=PEER)]


def converter_default_int8(model, config, calibration_images) -> bytes:
    """TensorFlow's documented integer-only recipe on `model`'s own graph at batch 1 (module doc)."""
    import dataclasses

    from architectures import build
    from exporter.convert.tflite import _converter, representative
    from exporter.errors import ConversionError
    from exporter.keras import tf
    from exporter.output_contract import strip

    try:
        fixed = build(dataclasses.replace(config, batch_size=1))  # the training graph's options, no export_options
        fixed.set_weights(model.get_weights())
        converter = _converter(strip(fixed, config), config)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative(calibration_images)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.uint8
        return converter.convert()
    except Exception as exc:  # the converter raises many types; the message is what matters
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise ConversionError(f"TFLiteConverter's default int8 conversion of {config.name} failed: {first}") from exc


def section(report: dict) -> dict | None:
    """{"recommended": {...}, "peers": [{file, what, a76_instructions, agreement, verdict}]}: the
    recommended CPU file beside every peer file, on A76 instructions and held-out agreement."""
    from exporter.policy import ARM_CORE

    arts = {a["file"]: a for a in report["artifacts"] if a["format"] == "tflite"}
    peers = [a for a in arts.values() if a.get("role") == PEER or a.get("peer")]
    rec = arts.get((report.get("recommended") or {}).get("cpu"))
    if not peers or rec is None:
        return None

    def row(a):
        return {"file": a["file"], "what": a.get("peer") or a["precision"],
                "a76_instructions": a.get("arm", {}).get(ARM_CORE, {}).get("instructions"),
                "agreement": a.get("agreement")}

    ours = row(rec)
    out = []
    for peer in peers:
        theirs = row(peer)
        n_ours, n_theirs = ours["a76_instructions"], theirs["a76_instructions"]
        a_ours, a_theirs = ours["agreement"], theirs["agreement"]
        if None in (n_ours, n_theirs, a_ours, a_theirs):
            verdict = "not compared (ARM or agreement not measured)"
        else:
            verdict = (f"the peer: {n_theirs / n_ours:.2f}x our instructions, "
                       f"{100 * (a_theirs - a_ours):+.2f} points of agreement")
            if n_theirs <= n_ours and a_theirs >= a_ours and (n_theirs, a_theirs) != (n_ours, a_ours):
                verdict += "; better on both (a finding)"
        out.append({**theirs, "verdict": verdict})
    return {"recommended": ours, "peers": out}


def markdown(report: dict) -> list[str]:
    p = report.get("peers")
    if not p:
        return []

    def cells(r):
        n = r["a76_instructions"]
        return (f"{n / 1e6:.2f} M" if n else "–") + " | " + (
            f"{100 * r['agreement']:.3f}%" if r.get("agreement") is not None else "–")

    lines = ["## Peers: the same float model without this tool", "",
             "| file | what | A76 instructions | held-out agreement | |", "|---|---|---|---|---|",
             f"| {p['recommended']['file']} | recommended CPU file | {cells(p['recommended'])} | |"]
    lines += [f"| {r['file']} | {r['what']} | {cells(r)} | {r['verdict']} |" for r in p["peers"]]
    return lines + [""]
