"""Artifact names (the contract in DESIGN.md) and writes that never leave a partial file."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

PRECISIONS = ("float32", "float16", "dynamic", "int8", "int16x8")
FORMATS = {"tflite": ".tflite", "onnx": ".onnx"}


def artifact_name(model: str, precision: str, fmt: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}")
    return f"{model}_{precision}{FORMATS[fmt]}"


@contextlib.contextmanager
def atomic_path(path: Path):
    """Yield a temporary path beside `path`; rename it into place only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial" + path.suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json(path: Path, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2) + "\n")
