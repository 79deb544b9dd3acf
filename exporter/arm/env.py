"""Where the ARM emulation environment is and whether it is ready (`make arm-env` builds it).

The environment (exporter/arm/setup_env.sh) is one cache folder, $SEGEXPORT_ARM_CACHE or
.cache/arm in the repository: an arm64 Debian userland with Python, the aarch64 wheels of the
host's ai-edge-litert version, the instruction-counting QEMU plugin and one sysroot per emulated
core (a fixed /proc/cpuinfo). QEMU itself is the system's qemu-aarch64. setup_env.sh writes
env.txt last, so env.txt means a finished build; a failed build leaves its reason in
not-built.txt.

    python -m exporter.arm.env          # prints "ready" or the reason, exit status 0/1
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from exporter.errors import ExporterError

CORES = ("cortex-a76", "cortex-a55")
REPO = Path(__file__).resolve().parents[2]


def cache_dir() -> Path:
    return Path(os.environ.get("SEGEXPORT_ARM_CACHE") or REPO / ".cache" / "arm")


@dataclass(frozen=True)
class ArmEnv:
    cache: Path
    qemu: Path
    python: Path  # the guest's python3.X, a host path inside the userland
    site: Path  # unpacked aarch64 wheels: the guest's PYTHONPATH
    plugin: Path  # libicount.so
    cpus: dict  # core name -> QEMU -cpu model
    requirements: str  # the pinned wheels, "ai-edge-litert==X numpy==Y ..."

    def sysroot(self, core: str) -> Path:
        return self.cache / "sysroot" / core

    @property
    def litert_version(self) -> str:
        for pin in self.requirements.split():
            if pin.startswith("ai-edge-litert=="):
                return pin.split("==", 1)[1]
        return "?"


def _not_built(cache: Path, why: str) -> ExporterError:
    hint = "run `make arm-env` (root on Debian/Ubuntu x86_64)"
    failed = cache / "not-built.txt"
    if failed.is_file() and (last := failed.read_text().strip()):
        return ExporterError(f"ARM emulation not available: {last}")
    return ExporterError(f"ARM emulation not available: {why}; {hint}")


def load() -> ArmEnv:
    """The built environment, or ExporterError saying in one line why there is none."""
    cache = cache_dir()
    manifest = cache / "env.txt"
    if not manifest.is_file():
        raise _not_built(cache, f"{cache} has no env.txt")
    fields = dict(line.split("=", 1) for line in manifest.read_text().splitlines() if "=" in line)
    try:
        env = ArmEnv(cache=cache, qemu=Path(fields["qemu"]), python=Path(fields["python"]),
                     site=Path(fields["site"]), plugin=Path(fields["plugin"]),
                     cpus={core: fields[f"cpu.{core}"] for core in CORES}, requirements=fields["requirements"])
    except KeyError as missing:
        raise _not_built(cache, f"{manifest} lacks {missing}") from None
    for what, path in (("qemu-aarch64", env.qemu), ("the guest Python", env.python), ("the plugin", env.plugin),
                       ("the aarch64 ai_edge_litert", env.site / "ai_edge_litert")):
        if not path.exists():
            raise _not_built(cache, f"{what} is missing ({path})")
    for core in CORES:
        if not (env.sysroot(core) / "proc" / "cpuinfo").is_file():
            raise _not_built(cache, f"no sysroot for {core}")
    host = _host_litert()
    if host and host != env.litert_version:
        raise ExporterError(f"ARM emulation has ai-edge-litert {env.litert_version}, the host {host}: "
                            "rerun `make arm-env` (kernels and counts differ between versions)")
    return env


def _host_litert() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ai-edge-litert")
    except PackageNotFoundError:
        return None


def check() -> str | None:
    """None when the ARM emulation environment is ready, else the one-line reason it is not."""
    try:
        load()
    except ExporterError as error:
        return str(error)
    return None


if __name__ == "__main__":
    reason = check()
    print(reason or f"ready: {cache_dir()}")
    sys.exit(1 if reason else 0)
