"""Where plain int8 does not pay for a foreign model, the int8 files that might (`convert --from`).

Plain int8 (AI Edge Quantizer's static_wi8_ai8) can make a model both slower on a phone's CPU and
wrong: every op XNNPACK has no int8 kernel for runs in LiteRT's reference kernels, between a
DEQUANTIZE and a QUANTIZE, and a few sensitive ops lose the mask's edges. Candidates, each written
as MODEL_int8_<what>.tflite and measured like every file (held-out agreement with the original,
ARM instructions after the ARM stage):

    xnnpack-float   the op types XNNPACK leaves to reference kernels in the int8 file kept float
                    (XNNPACK then runs them in float, beside the int8 rest)
    int16-act       those op types with int16 activations instead (when the quantizer offers it)

The recommendation (exporter.recommend) then takes the file with the fewest A76 instructions among
those meeting the gate; the float32 file always meets it, so when no candidate beats it on both,
float32 is recommended and `summarise` says why in one line.
"""

from __future__ import annotations

from pathlib import Path

from exporter.formats import artifact_name
from exporter.progress import say


def undelegated_ops(path: Path) -> dict[str, int]:
    """{op: count} of the ops XNNPACK leaves to LiteRT's own kernels in this file (host LiteRT; the
    aarch64 build delegates the same op set)."""
    from exporter.runtimes import LiteRTRunner, delegation

    runner = LiteRTRunner(path, threads=1)
    return {op: n for op, n in delegation(runner.interpreter)["undelegated"].items()
            if op not in ("QUANTIZE", "DEQUANTIZE")}


def int8_candidates(fm, arts, calib, val, ref, staging: Path, *, writer, measure) -> tuple[list, dict]:
    """(new artifacts, the report's "int8_search" section before ARM figures)."""
    from exporter.convert.aeq import quantise_tflite
    from exporter.errors import ExporterError
    from exporter.formats import SELECTIVE

    plain = next((a for a in arts if a.format == "tflite" and a.precision == "int8"), None)
    if plain is None:
        return [], {}
    left = undelegated_ops(staging / plain.file)
    summary = {"plain": plain.file, "undelegated_in_plain_int8": left, "tried": []}
    if not left:
        say(f"int8 search: XNNPACK runs every op of {plain.file}; no candidate needed")
        return [], summary
    ops = sorted(left)
    say(f"int8 search: in {plain.file} XNNPACK leaves {', '.join(f'{op} x{n}' for op, n in left.items())} to "
        "reference kernels; trying them in float and in int16")
    out = []
    for role, what, kwargs in (("xnnpack-float", f"{', '.join(ops)} kept float", {"keep_float": ops}),
                               ("int16-act", f"{', '.join(ops)} with int16 activations", {"int16": ops})):
        try:
            blob = quantise_tflite(fm.float32, "int8", calib.inputs, **kwargs)
        except ExporterError as exc:
            summary["tried"].append({"role": role, "what": what, "error": str(exc)})
            say(f"int8 search: {role}: not written ({exc})")
            continue
        art = writer(blob, artifact_name(fm.name, "int8", role=role), "int8", "ptq",
                     {"engine": fm.engine, "search": what}, role=SELECTIVE)
        out.append(art)
        summary["tried"].append({"role": role, "what": what, "file": art.file})
    return measure(out), summary


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
        verdict = ("pays" if accurate and cheaper else
                   "too inaccurate" + (" and too slow" if ratio is not None and not cheaper else "") if not accurate else
                   "not cheaper enough" if ratio is not None else "accurate; ARM not measured")
        rows.append({"file": a["file"], "what": whats.get(a["file"], a["precision"] + " (plain)"),
                     "a76_instructions": n, "ratio_to_float32": ratio, "agreement": a.get("agreement"),
                     "verdict": verdict})
    rec = (report.get("recommended") or {}).get("cpu")
    paying = [r["file"] for r in rows if r["verdict"] == "pays"]
    if rec and base and rec == base["file"]:
        line = (f"No quantised file reaches {100 * goal.min_agreement:.0f} % agreement at <= "
                f"{1 / goal.min_arm_ratio:.2f}x the float32 file's {ARM_CORE} instructions; the float32 file is "
                "recommended: " + "; ".join(f"{r['file']}: {r['verdict']}" for r in rows))
    elif rec in paying:
        row = next(r for r in rows if r["file"] == rec)
        line = (f"{rec} pays: {100 * row['agreement']:.2f} % agreement at {row['ratio_to_float32']:.2f}x the "
                f"float32 file's {ARM_CORE} instructions")
    else:
        line = f"recommended CPU file: {rec} (see its basis)"
    search.update(candidates=rows, summary=line)
    return search
