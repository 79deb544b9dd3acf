"""Will a mobile accelerator take the file? TFLite GPU delegate and ONNX Runtime NNAPI/CoreML.

TensorFlow's analyzer (`gpu_compatibility=True`) is the verdict the GPU delegate's own rules give;
it is known to pass some files the delegate then splits (it said "compatible" for files with
float islands and >4-D tensors), so two stricter facts are added from the file itself: tensors of
more than 4 dimensions (mobile GPU delegates reject them) and ops the delegate has no kernel for.
"""

from __future__ import annotations

import contextlib
import io
import re
import subprocess
import sys
from pathlib import Path

# Ops the TFLite GPU delegate reports as "Operation is not supported" on devices although the
# analyzer passes them; a file with one runs it on the CPU and splits the GPU graph around it.
GPU_UNSUPPORTED_OPS = {"ARG_MAX", "GATHER_ND", "CUSTOM"}


def gpu_compatibility(model_content: bytes, analyzer: str = "tensorflow") -> dict:
    """`analyzer`: "tensorflow" (tf.lite.experimental.Analyzer) or "litert": the same analyzer as
    the LiteRT wheel ships it, without importing TensorFlow (seconds saved where nothing else needs it)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    if analyzer == "litert":
        from ai_edge_litert import _pywrap_analyzer_wrapper

        text = _pywrap_analyzer_wrapper.ModelAnalyzer(model_content, False, True)
    else:
        from exporter.keras import tf

        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            tf.lite.experimental.Analyzer.analyze(model_content=model_content, gpu_compatibility=True)
        text = buf.getvalue()
    warnings = sorted({line.strip() for line in text.splitlines() if "GPU COMPATIBILITY WARNING" in line})
    interp = Interpreter(model_content=model_content,
                         experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    over_4d = sorted({t["name"] for t in interp.get_tensor_details() if len(t["shape"]) > 4})
    ops = {op["op_name"] for op in interp._get_ops_details()}
    unsupported = sorted(ops & GPU_UNSUPPORTED_OPS)
    return {
        "analyzer_compatible": "looks compatible with GPU delegate" in text and not warnings,
        "analyzer_warnings": warnings,
        "tensors_over_4d": over_4d,
        "unsupported_ops": unsupported,
        "compatible": "looks compatible with GPU delegate" in text and not (warnings or over_4d or unsupported),
    }


def static_verdict(artifact: dict) -> dict | None:
    """The static GPU analysis of one report entry: `gpu_static`, or, in reports written before the
    GPU stage ran files for real (issue 27), the same dict under `gpu` (told apart by "compatible",
    which the runtime entry never has)."""
    if isinstance(artifact.get("gpu_static"), dict):
        return artifact["gpu_static"]
    old = artifact.get("gpu")
    return old if isinstance(old, dict) and "compatible" in old else None


def gpu_runtime(artifact: dict) -> dict | None:
    """The GPU accelerator's runtime result of one report entry (None in older reports and where not run)."""
    entry = artifact.get("gpu")
    return entry if isinstance(entry, dict) and "fully_accelerated" in entry else None


_VERDICT = re.compile(r"Model should perform well with (.+?) as is: (YES|NO)")
_UNSUPPORTED = re.compile(r"Unsupported ops: (.+)")
_PARTITIONS = re.compile(r"(\d+) partitions with a total of (\d+)/(\d+) nodes can be handled by the (.+?) EP")


def onnx_mobile_usability(path: Path) -> dict:
    """ONNX Runtime's mobile usability checker: per execution provider, partitions and verdict."""
    proc = subprocess.run([sys.executable, "-m", "onnxruntime.tools.check_onnx_model_mobile_usability", str(path)],
                          capture_output=True, text=True, timeout=300)
    text = proc.stdout + proc.stderr
    result: dict[str, dict] = {}
    current = None
    for line in text.splitlines():
        if m := _PARTITIONS.search(line):
            current = m.group(4)
            result[current] = {"partitions": int(m.group(1)), "nodes": f"{m.group(2)}/{m.group(3)}",
                               "unsupported_ops": []}
        elif (m := _UNSUPPORTED.search(line)) and current:
            result[current]["unsupported_ops"] = [op.strip() for op in m.group(1).split(",")]
        elif m := _VERDICT.search(line):
            result.setdefault(m.group(1), {})["recommended"] = m.group(2) == "YES"
    if not result:
        return {"error": (text.strip().splitlines() or ["no output"])[-1]}
    return result
