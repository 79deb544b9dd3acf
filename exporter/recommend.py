"""Which file to ship: the report's `recommended: {"cpu": FILE, "gpu": FILE}`.

CPU: the TFLite file with the fewest ARM Cortex-A76 instructions per inference among those that
meet the model's accuracy gate (ties: the higher held-out agreement). The float32 file always meets it; any other file must have
accuracy checks (agreement with float, mIoU, per-class IoU; exporter.policy) and pass
them all, and, where its ARM outputs were compared with the host's, pass that too (the held-out
accuracy was measured on host kernels). Without ARM counts the host latency decides, and the
basis says so. GPU: the float16 file when written and fully GPU-delegate compatible, else float32.
"""

from __future__ import annotations

from exporter.policy import ARM_CORE, checks, gate


def judged(report: dict) -> dict:
    """A report's verdicts from its measurements: {"checks": ..., "recommended": ...} (what `convert`
    writes, and what `exporter.report_refresh` recomputes under a changed policy)."""
    found = checks(report)
    return {"checks": found, "recommended": recommend(report, found)}


def recommend(report: dict, checks: list[dict]) -> dict:
    arts = [a for a in report["artifacts"] if a["format"] == "tflite"]
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
    fp16 = next((a for a in arts if a["precision"] == "float16"), None)
    if fp16 is not None and fp16.get("gpu", {}).get("compatible"):
        gpu, gpu_basis = fp16, "the float16 file: fully GPU-delegate compatible, half the float32 size"
    elif fp16 is not None:
        gpu, gpu_basis = float32, "the float32 file: the float16 file is not fully GPU-delegate compatible"
    else:
        gpu, gpu_basis = float32, "the float32 file; no float16 file was written (--precision float16)"
    return {"cpu": cpu["file"], "gpu": gpu["file"], "cpu_basis": basis, "gpu_basis": gpu_basis}
