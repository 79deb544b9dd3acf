"""The child side of the GPU stage: `python -m exporter.gpu.child FILE.tflite SAMPLES.npz` prints one
JSON line and exits. Imports LiteRT and numpy only, never TensorFlow (see exporter/gpu/__init__.py).

SAMPLES.npz (written by exporter.gpu.stage) holds `inputs`: the held-out samples as the file's raw
input tensors [N, ...], and `out_scale`/`out_zero`: the output's quantisation (1, 0 for float
outputs), so |Δ| is measured on scores, not on int8 codes.

What it does, all through `CompiledModel` (the API apps use):
1. compiles the file for the GPU accelerator alone (no CPU in the accelerator set), so a file with
   one op the GPU kernels lack fails to compile instead of silently splitting. Which ops those are
   comes from the accelerator's own log ("Following operations are not supported by GPU delegate:
   OP: why"), read back from this process's stderr, which is redirected to a file for that;
2. runs the samples on it and on LiteRT's CPU (XNNPACK): argmax agreement and max |Δ score|;
3. the precision it ran at: the same file compiled again with GpuOptions(enforce_f32=True); if the
   default compile (fp16 allowed, as apps run it) gives bit-identical outputs, the device computed
   in fp32 (SwiftShader offers no shader-f16), otherwise fp16.
The device is the adapter Dawn says it selected ("Selected adapter: ...").
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import time

_UNSUPPORTED = re.compile(r"^([A-Z][A-Z0-9_]+): (.+)$")
_ADAPTER = re.compile(r"Selected adapter: ([^,]+)(?:.*adapterType=([^\n]+))?")


def _redirect_stderr() -> str:
    """Send fd 2 (where LiteRT, Dawn and the Vulkan driver log) to a file this process reads back."""
    fd, path = tempfile.mkstemp(prefix="segexport-gpu-", suffix=".log")
    sys.stderr.flush()
    os.dup2(fd, 2)
    os.close(fd)
    return path


def _log(path: str) -> str:
    with open(path, errors="replace") as fh:
        return fh.read()


def fallback_ops(log: str) -> list[str]:
    """The ops the accelerator's log lists under "Following operations are not supported": "OP: why"."""
    ops, inside = [], False
    for line in log.splitlines():
        if "Following operations are not supported" in line:
            inside = True
            continue
        if inside:
            m = _UNSUPPORTED.match(line.strip())
            if not m:
                inside = False
                continue
            ops.append(f"{m.group(1)}: {m.group(2).strip()}")
    return sorted(set(ops))


def device(log: str) -> str:
    m = _ADAPTER.search(log)
    if not m:
        return "unknown (Dawn named no adapter)"
    return f"{m.group(1).strip()} ({m.group(2).strip()})" if m.group(2) else m.group(1).strip()


def _compile(path: str, accel, enforce_f32: bool | None = None):
    from ai_edge_litert.compiled_model import CompiledModel
    from ai_edge_litert.options import GpuOptions, Options

    if enforce_f32 is None:
        return CompiledModel.from_file(path, hardware_accel=accel)
    return CompiledModel.from_file(path, options=Options(hardware_accelerators=accel,
                                                         gpu_options=GpuOptions(enforce_f32=enforce_f32)))


def _run(model, inputs):
    """Outputs [N, ...] of the first signature's first output, one sample at a time."""
    import numpy as np

    key = next(iter(model.get_signature_list()))
    out_name = model.get_signature_list()[key]["outputs"][0]
    detail = model.get_output_tensor_details(key)[out_name]
    dtype = np.dtype(detail["dtype"])
    size = int(np.prod(detail["shape"]))
    outs = []
    for x in inputs:
        ins = model.create_input_buffers(0)
        outs_b = model.create_output_buffers(0)
        ins[0].write(np.ascontiguousarray(x[None]))
        model.run_by_index(0, ins, outs_b)
        outs.append(np.asarray(outs_b[0].read(size, dtype)).reshape(detail["shape"]).copy())
    return np.concatenate(outs)


def _classes(scores):
    """The class per pixel: argmax, or for a one-channel (sigmoid) head the 0.5 threshold
    (exporter.parity.class_map's rule; an argmax over one channel would always agree)."""
    return scores[..., 0] > 0.5 if scores.shape[-1] == 1 else scores.argmax(-1)


def measure(path: str, samples: str, log_path: str) -> dict:
    import numpy as np
    from ai_edge_litert.hardware_accelerator import HardwareAccelerator

    data = np.load(samples)
    inputs, scale, zero = data["inputs"], float(data["out_scale"]), float(data["out_zero"])
    started = time.monotonic()
    try:
        gpu = _compile(path, HardwareAccelerator.GPU, enforce_f32=False)
    except Exception as exc:  # LiteRT raises RuntimeError with a multi-line trace
        log = _log(log_path)
        ops = fallback_ops(log)
        lines = [line.strip(" └") for line in str(exc).splitlines() if line.strip(" └")]
        first = lines[-1] if lines else type(exc).__name__
        if "Selected adapter" not in log:  # no device at all, not a file the kernels refuse
            return {"available": False, "reason": "no GPU accelerator available", "detail": first.strip()}
        return {"device": device(log), "fully_accelerated": False, "precision": None, "agreement_with_cpu": None,
                "max_abs_diff": None, "fallback_ops": sorted({op.split(":")[0] for op in ops}) or ["(not named)"],
                "fallback_detail": ops or [first], "seconds": round(time.monotonic() - started, 2)}
    compile_s = time.monotonic() - started
    fully = bool(gpu.is_fully_accelerated())
    on_gpu = _run(gpu, inputs)
    f32 = _run(_compile(path, HardwareAccelerator.GPU, enforce_f32=True), inputs[:1])
    precision = "fp32" if np.array_equal(f32, on_gpu[:1]) else "fp16"
    on_cpu = _run(_compile(path, HardwareAccelerator.CPU), inputs)
    g = (on_gpu.astype(np.float64) - zero) * scale
    c = (on_cpu.astype(np.float64) - zero) * scale
    agree = float((_classes(g) == _classes(c)).mean())
    return {"device": device(_log(log_path)), "fully_accelerated": fully, "precision": precision,
            "agreement_with_cpu": round(agree, 6), "max_abs_diff": float(f"{np.abs(g - c).max():.6g}"),
            "fallback_ops": sorted({op.split(":")[0] for op in fallback_ops(_log(log_path))}), "samples": int(len(inputs)),
            "compile_seconds": round(compile_s, 2), "seconds": round(time.monotonic() - started, 2)}


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        sys.exit("usage: python -m exporter.gpu.child FILE.tflite SAMPLES.npz")
    log_path = _redirect_stderr()
    try:
        result = measure(*argv, log_path)
    except Exception as exc:  # one line for the parent, never a traceback
        result = {"error": " ".join(str(exc).split())[:300] or type(exc).__name__}
    finally:
        os.unlink(log_path)
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    # The answer is written: skip the GPU driver's own teardown, which is not ours to debug.
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1:])
