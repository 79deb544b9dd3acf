"""Which file to ship: the report's `recommended: {"cpu": FILE, "gpu": FILE}`.

CPU: the TFLite file with the fewest ARM Cortex-A76 instructions per inference among those that
meet the model's accuracy gate (ties: the higher held-out agreement). The float32 file always meets it; any other file must have
accuracy checks (agreement with float, mIoU, per-class IoU; exporter.policy) and pass
them all, and, where its ARM outputs were compared with the host's, pass that too (the held-out
accuracy was measured on host kernels). Without ARM counts the host latency decides, and the
basis says so. GPU: from LiteRT's GPU accelerator runs (exporter.gpu.stage; `_gpu_from_runs`), the
static analyser as second opinion; a report without runs: the float16 file when written and statically
fully GPU-delegate compatible, else float32, and the basis says it is the static rule.
"""

from __future__ import annotations

from exporter.delegates import gpu_runtime, static_verdict
from exporter.formats import CONTRACT_BASELINE, PEER
from exporter.policy import ARM_CORE, checks, gate, meets_gate, policy_of, speed_baseline

GPU_CPU_AGREEMENT = 0.999  # GPU vs CPU argmax agreement below which the CPU-measured accuracy is not the GPU's


def judged(report: dict) -> dict:
    """A report's verdicts from its measurements: {"checks", "recommended", "speed_baseline"} (what `convert`
    writes, and what `exporter.report_refresh` recomputes under a changed policy)."""
    found = checks(report)
    base, why = speed_baseline(report)  # what the speed check divides by, and why
    return {"checks": found, "recommended": recommend(report, found), "speed_baseline": {"file": base, "why": why}}


def recommend(report: dict, checks: list[dict]) -> dict:
    # A peer file (another tool's, exporter.stages.peers) is measured for comparison, never shipped; nor
    # is the default contract's float32 file of a run under another output contract (the speed baseline).
    arts = [a for a in report["artifacts"] if a["format"] == "tflite" and a.get("role") not in (PEER, CONTRACT_BASELINE)]
    float32 = next((a for a in arts if a["precision"] == "float32"), arts[0] if arts else None)
    if float32 is None:
        return {"cpu": None, "gpu": None, "cpu_basis": "no TFLite file", "gpu_basis": "no TFLite file"}
    passing = gate(report, checks)
    candidates = [a for a in arts if passing.get(a["file"])]
    counts = {a["file"]: a.get("arm", {}).get(ARM_CORE, {}).get("instructions") for a in candidates}
    names = ", ".join(a["file"] for a in candidates)
    if len(candidates) == 1:
        cpu = candidates[0]
        basis = "the only TFLite file that meets the accuracy gate"
    elif all(counts.values()):
        # Equal counts (the same graph, e.g. post-training methods that change weights only): the
        # file that agrees more with float, then the smaller one.
        cpu = min(candidates, key=lambda a: (counts[a["file"]], -a.get("agreement", 0.0), a.get("bytes", 0)))
        basis = (f"fewest ARM {ARM_CORE} instructions per inference ({counts[cpu['file']] / 1e6:.2f} M) among the "
                 f"files that meet the accuracy gate: {names}")
    else:
        why = report.get("arm_status") or (
            f"no {ARM_CORE} count for " + ", ".join(f for f, n in counts.items() if not n))
        threads = report.get("benchmark", {}).get("threads") or []
        t = str(max(threads)) if threads else None
        latency = {a["file"]: a.get("latency_ms", {}).get(t, {}).get("median") for a in candidates} if t else {}
        if latency and all(latency.values()):
            cpu = min(candidates, key=lambda a: (latency[a["file"]], a.get("bytes", 0)))
            basis = (f"ARM not measured ({why}): lowest host latency at {t} thread(s) "
                     f"({latency[cpu['file']]:.2f} ms, this machine's CPU) among the files that meet the accuracy "
                     f"gate: {names}")
        else:
            cpu = float32
            basis = f"nothing measured (ARM: {why}; no host latency): the float32 file"
    out = {"cpu": cpu["file"], "cpu_basis": basis}
    runs = {a["file"]: gpu_runtime(a) for a in arts if gpu_runtime(a) is not None}
    if runs:
        out.update(_gpu_from_runs(arts, runs, _gpu_gate(report, arts, checks, passing)))
    else:
        gpu, gpu_basis = _gpu_static_rule(arts, float32)
        why = report.get("gpu_status") or "this report has no GPU runs"
        out.update({"gpu": gpu["file"], "gpu_basis": f"{gpu_basis} (static analyser only: {why})"})
    return {"cpu": out["cpu"], "gpu": out["gpu"], "cpu_basis": out["cpu_basis"], "gpu_basis": out["gpu_basis"],
            **{k: v for k, v in out.items() if k not in ("cpu", "gpu", "cpu_basis", "gpu_basis")}}


def _gpu_gate(report: dict, arts: list[dict], checks: list[dict], passing: dict) -> dict:
    """{file: within the accuracy gate against float}: the checks' verdict for gated files; files the
    checks do not gate (float16: float compute on CPU) held to the same rule (exporter.policy.meets_gate)
    on their measured held-out agreement, mIoU and per-class IoU."""
    gated = {c["file"] for c in checks if c.get("accuracy_gate") and c.get("file")}
    ref_iou = (report.get("reference") or {}).get("per_class_iou", {})
    out = {}
    for a in arts:
        if a["file"] in gated or a["precision"] == "float32":
            out[a["file"]] = bool(passing.get(a["file"]))
        elif a.get("agreement") is not None and (a.get("miou_delta") is not None or report.get("policy")):
            out[a["file"]] = meets_gate(policy_of(report), ref_iou, a, method="ptq")
        else:
            out[a["file"]] = False
    return out


def _gpu_static_rule(arts: list[dict], float32: dict) -> tuple[dict, str]:
    """The rule before GPU runs (and without them): the float16 file when the static analyser passes it."""
    fp16 = next((a for a in arts if a["precision"] == "float16"), None)
    if fp16 is not None and (static_verdict(fp16) or {}).get("compatible"):
        return fp16, "the float16 file: fully GPU-delegate compatible, half the float32 size"
    if fp16 is not None:
        return float32, "the float32 file: the float16 file is not fully GPU-delegate compatible"
    return float32, "the float32 file; no float16 file was written (--precision float16)"


def _gpu_from_runs(arts: list[dict], runs: dict, passing: dict) -> dict:
    """From LiteRT's GPU accelerator runs: files fully accelerated (GPU alone), within the accuracy gate
    against float (measured on CPU kernels), and whose GPU outputs agree with the CPU's on at least
    GPU_CPU_AGREEMENT of pixels (else the gate's figures do not hold on the GPU). Float files first: the GPU
    kernels compute in float whatever the file stores, so a quantised file saves bytes, not time, and its
    GPU masks differ from the CPU int8 kernels' (issue 27); then the smaller file. The static analyser is a
    second opinion: where it disagrees with a run, `gpu_disagreements` says so."""
    ok = [a for a in arts if (r := runs.get(a["file"])) and r.get("fully_accelerated") and passing.get(a["file"])
          and (r.get("agreement_with_cpu") or 0) >= GPU_CPU_AGREEMENT]
    disagreements = []
    for a in arts:
        static, run = static_verdict(a), runs.get(a["file"])
        if static is None or run is None or "fully_accelerated" not in run:
            continue
        if bool(static["compatible"]) != bool(run["fully_accelerated"]):
            disagreements.append(
                f"{a['file']}: static analyser says {'compatible' if static['compatible'] else 'not compatible'}, "
                f"the GPU run {'fully accelerated' if run['fully_accelerated'] else 'fell back for ' + ', '.join(run['fallback_ops'])}")
    out = {"gpu_disagreements": disagreements} if disagreements else {}
    if not ok:
        return {**out, "gpu": None, "gpu_basis": "no TFLite file ran fully accelerated on LiteRT's GPU accelerator "
                "within the accuracy gate and agreeing with the CPU kernels"}
    rank = {"float16": 0, "float32": 1}
    best = min(ok, key=lambda a: (rank.get(a["precision"], 2), a.get("bytes", 0)))
    run = runs[best["file"]]
    second = static_verdict(best)
    opinion = ("; the static analyser agrees" if second and second["compatible"]
               else "; the static analyser disagrees (it expects a fallback)" if second else "")
    return {**out, "gpu": best["file"],
            "gpu_basis": (f"the {best['precision']} file: fully accelerated on LiteRT's GPU accelerator ({run['device']}, "
                          f"{run['precision']}), meets the accuracy gate, agreement with the CPU kernels "
                          f"{100 * run['agreement_with_cpu']:.2f}%; among {', '.join(a['file'] for a in ok)}{opinion}")}
