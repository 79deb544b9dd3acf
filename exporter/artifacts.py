"""The record every stage returns for a file it made or measured, and writes that never leave a
partial file. Artifact names are built in exporter.formats."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import dataclasses
from pathlib import Path


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


@dataclasses.dataclass(frozen=True)
class Artifact:
    """One output file: what it is (format, precision, method, role), what it holds (facts: ops,
    float ops, GPU compatibility, I/O type, ...) and what was measured on it (agreement, mIoU,
    latency, ARM cost). Stages return new records (`measured`, `renamed`) rather than editing one;
    the report's `artifacts` entries are `to_json()` (keys as DESIGN.md's report contract)."""

    file: str
    format: str
    precision: str
    method: str  # "none", "ptq" or "qat"
    bytes: int
    role: str | None = None  # exporter.formats.ALTERNATIVE / SELECTIVE; None: the shipped file of its variant
    facts: dict = dataclasses.field(default_factory=dict)
    measurements: dict = dataclasses.field(default_factory=dict)

    def measured(self, **values) -> "Artifact":
        return dataclasses.replace(self, measurements={**self.measurements, **values})

    def renamed(self, file: str, role: str | None) -> "Artifact":
        return dataclasses.replace(self, file=file, role=role)

    def to_json(self) -> dict:
        head = {"file": self.file, "format": self.format, "precision": self.precision, "method": self.method,
                "bytes": self.bytes}
        return {**head, **({"role": self.role} if self.role else {}), **self.facts, **self.measurements}
