"""The parent side: run exporter.gpu.probe in a child process and read its one JSON line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

TIMEOUT_S = 300  # compiling a large graph on a software Vulkan device takes tens of seconds


def run_child(module: str, *args: str, timeout: float = TIMEOUT_S, env: dict | None = None) -> dict:
    """`python -m MODULE ARGS` in a child; its last stdout line is the JSON answer. A child that
    died or timed out gives {"available": False, "reason": ..., "detail": ...}, never a guess."""
    try:
        proc = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                              timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"available": False, "reason": "the GPU accelerator did not answer", "detail": f"timed out after {timeout:.0f} s"}
    lines = proc.stdout.strip().splitlines()
    try:
        return json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        err = [line for line in proc.stderr.splitlines() if line.strip()]
        return {"available": False, "reason": "the GPU accelerator process failed",
                "detail": f"exit {proc.returncode}: {err[-1].strip() if err else 'no output'}"}


def gpu_runtime_check(path: Path) -> dict:
    """Try LiteRT's GPU accelerator for real on `path`, in a child process. Returns
    {"available": False, "reason": ...} on a machine without a usable GPU: never a made-up figure."""
    from exporter.gpu import env as gpu_env

    # With `make gpu-env` built, the probe sees SwiftShader's ICD (as the GPU stage does); without it,
    # the machine's own Vulkan drivers, whatever they are (still in the child only).
    return run_child("exporter.gpu.probe", str(path), env=gpu_env.child_env() if gpu_env.check() is None else None)
