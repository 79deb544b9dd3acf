"""Where the software Vulkan device is and whether it is ready (`make gpu-env` builds it).

exporter/gpu/setup_env.sh fills one cache folder, $SEGEXPORT_GPU_CACHE or .cache/gpu in the
repository: SwiftShader's Vulkan ICD (library + manifest) extracted from Debian's chromium-common.
It writes env.txt last, so env.txt means a finished build; a failed build leaves its reason in
not-built.txt. Only the child process's environment ever points the Vulkan loader at it
(`child_env`), so the parent, which holds TensorFlow, never loads a Vulkan driver (see __init__).

    python -m exporter.gpu.env          # prints "ready: ..." or the reason, exit status 0/1
"""

from __future__ import annotations

import ctypes.util
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HINT = "run `make gpu-env` (root the first time where libvulkan1 is missing)"


def cache_dir() -> Path:
    return Path(os.environ.get("SEGEXPORT_GPU_CACHE") or REPO / ".cache" / "gpu")


def _manifest() -> dict:
    path = cache_dir() / "env.txt"
    if not path.is_file():
        return {}
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def check() -> str | None:
    """None when the GPU environment is ready, else the one-line reason it is not."""
    cache = cache_dir()
    failed = cache / "not-built.txt"
    fields = _manifest()
    if not fields:
        if failed.is_file() and (last := failed.read_text().strip()):
            return f"GPU accelerator not available: {last}"
        return f"GPU accelerator not available: {cache} has no env.txt; {HINT}"
    for key in ("icd", "library"):
        if not Path(fields.get(key, "")).is_file():
            return f"GPU accelerator not available: {key} {fields.get(key, '(none)')} is missing; {HINT}"
    if ctypes.util.find_library("vulkan") is None:
        return f"GPU accelerator not available: no Vulkan loader (libvulkan.so.1); {HINT}"
    return None


def child_env() -> dict:
    """The child's environment: the Vulkan loader sees SwiftShader's ICD only (Dawn rejects Mesa's
    lavapipe, and a machine with a real GPU driver would otherwise be picked nondeterministically),
    XDG_RUNTIME_DIR set (Dawn/the loader warn or fail without it). SEGEXPORT_GPU_DEVICE=system keeps
    the machine's own ICDs instead: the hook for a real GPU's vendor driver."""
    env = dict(os.environ)
    if os.environ.get("SEGEXPORT_GPU_DEVICE") != "system":
        env["VK_ICD_FILENAMES"] = _manifest().get("icd", "")
        env.pop("VK_DRIVER_FILES", None)
    if not env.get("XDG_RUNTIME_DIR"):
        run = Path(tempfile.gettempdir()) / f"segexport-xdg-{os.getuid()}"
        run.mkdir(mode=0o700, exist_ok=True)
        env["XDG_RUNTIME_DIR"] = str(run)
    return env


def device_default() -> str:
    """What the ICD used is, for reports where Dawn's log does not name the adapter."""
    if os.environ.get("SEGEXPORT_GPU_DEVICE") == "system":
        return "the machine's own Vulkan driver"
    return "SwiftShader (software Vulkan on the CPU)"


if __name__ == "__main__":
    reason = check()
    print(reason or f"ready: {cache_dir()} ({_manifest().get('source', '?')})")
    sys.exit(1 if reason else 0)
