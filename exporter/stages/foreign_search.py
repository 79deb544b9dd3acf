"""Where plain int8 does not pay for a foreign model, the int8 files that might (`convert --from`).

Plain int8 (AI Edge Quantizer's static_wi8_ai8) can make a model both slower on a phone's CPU and
wrong (issue 26: MediaPipe's selfie segmenter, 2.7x the float file's A76 instructions). Slower:
every op XNNPACK has no int8 kernel for runs in LiteRT's reference kernels, between a DEQUANTIZE
and a QUANTIZE; in MediaPipe's file 22 standalone RELUs alone cost 69 M of 108 M instructions.
Wrong: the logits before the output activation span hundreds of units, so one int8 step flips
pixels near the mask's edge. Candidates, each written as MODEL_int8_<what>.tflite and measured like
every file (held-out agreement with the original, ARM instructions in the ARM stage):

    fused          exact float rewrites first (exporter.convert.xnnpack_rewrites: standalone RELUs
                   fused into their producers; kernel=stride TRANSPOSE_CONV as a 1x1 CONV_2D and
                   DEPTH_TO_SPACE), then int8 everywhere (written when a rewrite applied)
    head-float     the same, with the head (the last convolution and the ops after it) kept float
    xnnpack-float  the same, with the op types XNNPACK still leaves to reference kernels kept float
                   too (written when any are left)

The recommendation (exporter.recommend) takes the file with the fewest A76 instructions among those
meeting the gate; the float32 file always meets it, so when no candidate beats it on both, float32
is recommended and `summarise` says why in one line.
"""

from __future__ import annotations

from pathlib import Path

from exporter.formats import artifact_name
from exporter.progress import say

# The ops a head ends at, walking back from the output: its last weighted layer.
_HEAD_START = {"CONV_2D", "TRANSPOSE_CONV", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"}


def undelegated_ops(blob: bytes) -> dict[str, int]:
    """{op: count} of the ops XNNPACK leaves to LiteRT's own kernels in this file (host LiteRT; the
    aarch64 build delegates the same op set), the QUANTIZE/DEQUANTIZE edges aside."""
    from ai_edge_litert.interpreter import Interpreter

    from exporter.runtimes import delegation

    interp = Interpreter(model_content=blob, num_threads=1)
    interp.allocate_tensors()
    return {op: n for op, n in delegation(interp)["undelegated"].items() if op not in ("QUANTIZE", "DEQUANTIZE")}


def head_tensors(blob: bytes, output: int = 0) -> list[str]:
    """The output tensor names of the head: from the graph output back to its last weighted op."""
    from exporter.convert.flatbuffer import op_name, read_model

    model = read_model(blob)
    sg = model.subgraphs[0]
    producer = {int(t): op for op in sg.operators for t in op.outputs}
    tensor, names = int(sg.outputs[output]), []
    for _ in range(8):
        op = producer.get(tensor)
        if op is None:
            break
        names.append(sg.tensors[int(op.outputs[0])].name.decode())
        if op_name(model, op) in _HEAD_START:
            break
        tensor = int(op.inputs[0])
    return names


def layer_errors(float_blob: bytes, quant_blob: bytes, inputs, top: int = 8) -> list[dict]:
    """The ops whose outputs the quantised file gets most wrong, on held-out inputs: relative RMS
    error of each op output the two files share by name (dequantised with its own scale and zero
    point), worst first. Where the error starts and where it grows is where to keep float."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    def opened(blob):
        # LiteRT's own kernels: a delegate's intermediate tensors are never written back.
        interp = Interpreter(model_content=blob, num_threads=1, experimental_preserve_all_tensors=True,
                             experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        interp.allocate_tensors()
        outs = {int(t) for op in interp._get_ops_details() for t in op["outputs"]}  # noqa: SLF001
        return interp, {d["name"]: d for d in interp.get_tensor_details() if d["index"] in outs}

    (f, f_named), (q, q_named) = opened(float_blob), opened(quant_blob)
    shared = [n for n in f_named if n in q_named and f_named[n]["shape"].tolist() == q_named[n]["shape"].tolist()]
    sq_err, sq_ref = dict.fromkeys(shared, 0.0), dict.fromkeys(shared, 0.0)
    for x in inputs:
        for interp in (f, q):
            detail = interp.get_input_details()[0]
            interp.set_tensor(detail["index"], x[None].astype(detail["dtype"]))
            interp.invoke()
        for name in shared:
            ref = f.get_tensor(f_named[name]["index"]).astype(np.float64)
            d = q_named[name]
            raw = q.get_tensor(d["index"])
            scale, zero = d["quantization"]
            got = (raw.astype(np.float64) - zero) * scale if np.issubdtype(raw.dtype, np.integer) and scale else \
                raw.astype(np.float64)
            sq_err[name] += float(((got - ref) ** 2).sum())
            sq_ref[name] += float((ref ** 2).sum())
    rows = [{"tensor": n, "relative_rms_error": round(float(np.sqrt(sq_err[n] / sq_ref[n])), 5)}
            for n in shared if sq_ref[n] > 0]
    return sorted(rows, key=lambda r: -r["relative_rms_error"])[:top]


def rewritten(blob: bytes) -> tuple[bytes, list[str]]:
    """The float file after the exact rewrites that let XNNPACK run its int8 version."""
    from exporter.convert.xnnpack_rewrites import fuse_activations, transpose_conv_to_depth_to_space

    blob, fused = fuse_activations(blob)
    blob, d2s = transpose_conv_to_depth_to_space(blob)
    return blob, fused + d2s


def int8_candidates(fm, arts, calib, val, staging: Path, *, writer, measure) -> tuple[list, dict]:
    """(new artifacts, the report's "int8_search" section before ARM figures)."""
    plain = next((a for a in arts if a.format == "tflite" and a.precision == "int8"), None)
    if plain is None:
        return [], {}
    plain_blob = (staging / plain.file).read_bytes()
    plain_left = undelegated_ops(plain_blob)
    base, rewrites = rewritten(fm.float32)
    head = head_tensors(base, fm.contract.head)
    summary = {"plain": plain.file, "undelegated_in_plain_int8": plain_left, "rewrites": rewrites,
               "head": head, "tried": [], "layer_errors": {
                   "file": plain.file, "samples": min(2, len(val)),
                   "worst": layer_errors(fm.float32, plain_blob, val.inputs[:2])}}
    say(f"int8 search: in {plain.file} XNNPACK leaves "
        + (", ".join(f"{op} x{n}" for op, n in plain_left.items()) or "nothing") + " to reference kernels; "
        + (f"rewrites: {'; '.join(rewrites)}" if rewrites else "no rewrite applies"))
    plans = []
    if rewrites:
        plans.append(("fused", "exact rewrites, then int8 everywhere", {}))
    plans.append(("head-float", ("exact rewrites, " if rewrites else "") + f"head kept float ({', '.join(head)})",
                  {"keep_float": head}))
    out = []
    for role, what, kwargs in plans:
        out += _candidate(fm, base, calib, role, what, kwargs, writer, summary)
    left = undelegated_ops((staging / out[-1].file).read_bytes()) if out else {}
    if left:
        ops = sorted(left)
        out += _candidate(fm, base, calib, "xnnpack-float", f"head and {', '.join(ops)} kept float",
                          {"keep_float": head + ops}, writer, summary)
    return measure(out), summary


def _candidate(fm, base: bytes, calib, role: str, what: str, kwargs: dict, writer, summary: dict) -> list:
    """One int8 file of the search, written and recorded in `summary["tried"]`; [] when the quantizer refuses."""
    from exporter.convert.aeq import quantise_tflite
    from exporter.errors import ExporterError
    from exporter.formats import SELECTIVE

    try:
        blob = quantise_tflite(base, "int8", calib.inputs, **kwargs)
    except ExporterError as exc:
        summary["tried"].append({"role": role, "what": what, "error": str(exc)})
        say(f"int8 search: {role}: not written ({exc})")
        return []
    art = writer(blob, artifact_name(fm.name, "int8", role=role), "int8", "ptq", {"engine": fm.engine, "search": what},
                 role=SELECTIVE)
    summary["tried"].append({"role": role, "what": what, "file": art.file})
    return [art]


def summarise(report: dict) -> dict:
    """The search's table, once the ARM stage measured every file: per int8 file its A76 instructions,
    agreement and verdict, and one line on what the recommendation is and why."""
    from exporter.policy import ARM_CORE, targets_for

    search = dict(report.get("int8_search") or {})
    goal = targets_for(report.get("policy") or report["model"])
    arts = {a["file"]: a for a in report["artifacts"] if a["format"] == "tflite"}
    base = next((a for a in arts.values() if a["precision"] == "float32"), None)
    base_n = (base or {}).get("arm", {}).get(ARM_CORE, {}).get("instructions")
    whats = {t.get("file"): t["what"] for t in search.get("tried", []) if t.get("file")}
    rows = []
    for a in arts.values():
        if a["precision"] in ("float32", "float16"):
            continue
        n = a.get("arm", {}).get(ARM_CORE, {}).get("instructions")
        ratio = round(n / base_n, 4) if n and base_n else None  # this file's instructions over float32's
        accurate = a.get("agreement") is not None and a["agreement"] >= goal.min_agreement
        cheaper = ratio is not None and ratio <= 1 / goal.min_arm_ratio
        if accurate:
            verdict = "pays" if cheaper else "accurate, not cheap enough" if ratio is not None else "accurate"
        else:
            verdict = "too inaccurate" + (" and not cheap enough" if ratio is not None and not cheaper else "")
        rows.append({"file": a["file"], "what": whats.get(a["file"], a["precision"] + " (plain)"),
                     "a76_instructions": n, "ratio_to_float32": ratio, "agreement": a.get("agreement"),
                     "verdict": verdict})
    rec = (report.get("recommended") or {}).get("cpu")
    paying = [r["file"] for r in rows if r["verdict"] == "pays"]
    if base_n is None:
        line = (f"ARM not measured, so whether int8 pays is not known ({ARM_CORE} instructions decide it): "
                + "; ".join(f"{r['file']}: {r['verdict']}" for r in rows))
    elif rec and base and rec == base["file"]:
        line = (f"No quantised file reaches {100 * goal.min_agreement:.0f} % agreement at <= "
                f"{1 / goal.min_arm_ratio:.2f}x the float32 file's {ARM_CORE} instructions; the float32 file is "
                "recommended: " + "; ".join(f"{r['file']}: {r['verdict']}" for r in rows))
    elif rec in paying:
        row = next(r for r in rows if r["file"] == rec)
        line = (f"{rec} pays: {100 * row['agreement']:.2f} % agreement at {row['ratio_to_float32']:.2f}x the "
                f"float32 file's {ARM_CORE} instructions")
    else:
        row = next((r for r in rows if r["file"] == rec), None)
        line = (f"no file reaches {100 * goal.min_agreement:.0f} % agreement at <= {1 / goal.min_arm_ratio:.2f}x the "
                f"float32 file's {ARM_CORE} instructions; the closest, {rec}, is recommended"
                + (f": {100 * row['agreement']:.2f} % at {row['ratio_to_float32']:.2f}x" if row and
                   row.get("ratio_to_float32") else ""))
    search.update(candidates=rows, summary=line)
    return search
