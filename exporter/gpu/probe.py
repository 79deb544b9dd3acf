"""The child side of exporter.gpu.runner: `python -m exporter.gpu.probe FILE.tflite` prints one JSON
line on stdout and exits. Imports LiteRT only, never TensorFlow (see exporter/gpu/__init__.py)."""

from __future__ import annotations

import json
import os
import sys


def probe(path: str) -> dict:
    """Compile the file for LiteRT's GPU accelerator: {"available": False, "reason", "detail"} on a
    machine without a usable GPU device, else whether the whole graph was accelerated."""
    from ai_edge_litert.compiled_model import CompiledModel
    from ai_edge_litert.hardware_accelerator import HardwareAccelerator

    try:
        model = CompiledModel.from_file(path, hardware_accel=HardwareAccelerator.GPU)
    except Exception as exc:  # LiteRT raises RuntimeError with a multi-line trace
        first = next((line for line in str(exc).splitlines() if line.strip()), exc.__class__.__name__)
        return {"available": False, "reason": "no GPU accelerator available", "detail": first.strip()}
    return {"available": True, "fully_accelerated": bool(model.is_fully_accelerated())}


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        sys.exit("usage: python -m exporter.gpu.probe FILE.tflite")
    result = probe(argv[0])
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    # The answer is written: skip the GPU driver's own teardown, which is not ours to debug.
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1:])
