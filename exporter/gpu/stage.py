"""The GPU stage of `convert` and `exporter benchmark --gpu`: every TFLite file on LiteRT's GPU accelerator.

    per_file, summary = measure_gpu(artifacts, folder, pixels)

For each TFLite artifact, `per_file[file]` is what exporter.gpu.child measured on it, in a child
process of its own (the GPU runtime never shares a process with TensorFlow, see __init__):
`device`, `fully_accelerated`, `precision` ("fp32"/"fp16"), `agreement_with_cpu` (argmax
agreement of the GPU's outputs with LiteRT's CPU kernels on the same file and held-out samples),
`max_abs_diff` (on scores), `fallback_ops` (ops the GPU kernels refused, from the accelerator's log),
or {"error": reason} for a file the child could not measure. `summary` is the report's top-level
entry: {"gpu_run": how it was measured} or, when nothing was measured, {"gpu_status": one line}.
Nothing here fails the convert.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from exporter.gpu import env as gpu_env
from exporter.progress import say

SAMPLES = 3  # held-out samples per file: software Vulkan runs a 128x128 UNet in about a second each
NOTE = ("LiteRT's GPU accelerator (ML Drift kernels over WebGPU/Dawn, `CompiledModel` with "
        "HardwareAccelerator.GPU alone, no CPU fallback) on the Vulkan device named in `device`; against LiteRT's "
        "CPU kernels on the same file and held-out samples. A software device (SwiftShader) computes in fp32: "
        "its figures say whether the kernels take the graph and compute what the CPU does, not phone speed or "
        "fp16 numerics (see fp16_simulation). Android runs the same kernels over OpenCL/OpenGL, not run here.")


def measure_gpu(artifacts: list[dict], folder: Path, pixels: np.ndarray, enabled: bool = True) -> tuple[dict, dict]:
    """({TFLite file: gpu entry}, {"gpu_run": ...} or {"gpu_status": reason}); artifacts are report
    entries (file, format, precision), only read; `pixels`: held-out samples, RGB 0..255."""
    if not enabled:
        return {}, {"gpu_status": "not requested (--no-gpu or --no-bench)"}
    reason = gpu_env.check()
    if reason is not None:
        say(f"GPU: not measured ({reason})")
        return {}, {"gpu_status": reason}
    files = [a for a in artifacts if a["format"] == "tflite"]
    n = min(SAMPLES, len(pixels))
    say(f"GPU: {len(files)} TFLite file(s) on LiteRT's GPU accelerator ({gpu_env.device_default()}), {n} sample(s) each")
    started = time.monotonic()
    per_file = {}
    for art in files:
        per_file[art["file"]] = entry = run_file(Path(folder) / art["file"], pixels[:n])
        say(f"GPU: {art['file']}: {describe(entry)}")
    seconds = round(time.monotonic() - started, 1)
    devices = sorted({e["device"] for e in per_file.values() if "device" in e})
    if not devices:  # every child failed: no device figures at all
        first = next(iter(per_file.values()), {})
        why = first.get("reason") or first.get("error") or "no TFLite file"
        return per_file if any("error" in e for e in per_file.values()) else {}, {"gpu_status": f"GPU accelerator not available: {why}"}
    say(f"GPU: done in {seconds:.0f} s")
    return per_file, {"gpu_run": {"devices": devices, "samples": n, "seconds": seconds, "note": NOTE}}


def run_file(path: Path, pixels: np.ndarray) -> dict:
    """One file in a child: its raw inputs go through an .npz (quantised with the file's own input
    parameters by the host LiteRT, as the other stages feed it)."""
    from exporter.runtimes import LiteRTRunner, input_tensor

    try:
        runner = LiteRTRunner(path, threads=1)
        inputs = np.concatenate([input_tensor(pixels[i : i + 1], runner.input) for i in range(len(pixels))])
    except Exception as error:  # a file the host cannot open: say so for this file only
        return {"error": " ".join(str(error).split()) or type(error).__name__}
    return run_raw(path, inputs, runner.output)


def run_raw(path: Path, inputs: np.ndarray, out: dict) -> dict:
    """One file in a child on raw input tensors [N, ...] (`out`: the output's LiteRT tensor detail)."""
    from exporter.gpu.runner import run_child

    scale, zero = out["quantization"] if np.issubdtype(out["dtype"], np.integer) else (1.0, 0)
    with tempfile.TemporaryDirectory(prefix="segexport-gpu-") as tmp:
        samples = Path(tmp) / "samples.npz"
        np.savez(samples, inputs=inputs, out_scale=np.float64(scale), out_zero=np.float64(zero))
        result = run_child("exporter.gpu.child", str(path), str(samples), env=gpu_env.child_env())
    if result.get("available") is False:
        return {"error": f"{result['reason']}: {result.get('detail', '')}".rstrip(": ")}
    return result


def describe(entry: dict, brief: bool = False) -> str:
    """One GPU entry in words: for the console, or `brief` (no device or time) for the report's verdicts."""
    if "error" in entry:
        return f"not measured ({entry['error']})"
    where = "" if brief else f" ({entry['device']})"
    if not entry["fully_accelerated"]:
        return f"not fully accelerated: {', '.join(entry['fallback_ops'])} fell back{where}"
    return (f"fully accelerated, {entry['precision']}, agreement with CPU "
            f"{100 * entry['agreement_with_cpu']:.{2 if brief else 3}f}%, max |Δ| {entry['max_abs_diff']:.3g}"
            + ("" if brief else f", {entry['seconds']:.1f} s{where}"))
