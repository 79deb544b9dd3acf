"""Keep the CLI's stderr to lines that matter: our messages, warnings and errors, not the runtimes' chatter.

TensorFlow, the TFLite converter and LiteRT write start-up and info lines straight to file
descriptor 2 from C++ ("Could not find cuda drivers", "Created TensorFlow Lite XNNPACK delegate",
"fully_quantize: 0, ..."), which Python cannot redirect. `filter_native_stderr` points fd 2 at a
pipe whose reader drops those lines and forwards everything else, while Python's own sys.stderr
(progress bars, `say`, errors) writes to the real stream directly, so a terminal stays a terminal.
`--verbose` and `--debug` turn all of this off.
"""

from __future__ import annotations

import atexit
import os
import re
import sys
import threading
import warnings

# Native lines that carry no information for a user of this tool. Errors (absl "E...", "ERROR:")
# and anything unknown pass through.
NOISE = re.compile(
    rb"^(?:[IW]\d{4} [\d:.]+ +\d+ \S+\] "  # absl INFO/WARNING lines (cuda probe, XLA, oneDNN)
    rb"|E\d{4} [\d:.]+ +\d+ cuda_platform\.cc:\d+\] failed call to cuInit"  # no GPU: expected here
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called"
    rb"|INFO: Created TensorFlow Lite XNNPACK delegate"
    rb"|INFO: Initialized TensorFlow Lite runtime"
    rb"|INFO: \[accelerator_registry\.cc"
    rb"|fully_quantize: \d, inference_type: "
    rb"|Estimated count of arithmetic ops: "
    rb"|\s*$)"
)

# Python warnings raised inside the libraries on every conversion (e.g. "Statistics for quantized
# inputs were expected", the interpreter's deprecation notice); they point at no user action.
_LIBRARY_WARNINGS = r"(tensorflow|tf_keras|ai_edge_litert|tf2onnx|onnxruntime|keras)(\..*)?$"


def is_noise(line: bytes) -> bool:
    return bool(NOISE.match(line))


# Python loggers of the libraries (tf2onnx logs every conversion step at INFO, TensorFlow and absl
# their deprecation notes at WARNING): errors only, unless --verbose.
_LIBRARY_LOGGERS = ("tensorflow", "absl", "tf2onnx", "onnxruntime", "h5py", "matplotlib")


def quiet_library_warnings() -> None:
    """Library warnings and log lines off (called once, early, by the CLI entry; --verbose skips it)."""
    import logging

    for category in (UserWarning, DeprecationWarning, FutureWarning):
        warnings.filterwarnings("ignore", category=category, module=_LIBRARY_WARNINGS)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ INFO and WARNING lines, before it loads
    for name in _LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


def filter_native_stderr() -> None:
    """Route fd 2 through a filter for the rest of the process (idempotent)."""
    if getattr(filter_native_stderr, "installed", False):
        return
    filter_native_stderr.installed = True
    sys.stderr.flush()
    real = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    # Python's own stderr writes to the real stream, unfiltered and with its tty-ness intact.
    sys.stderr = open(real, "w", buffering=1, encoding=sys.stderr.encoding or "utf-8", errors="replace",
                      closefd=False)

    def pump() -> None:
        pending = b""
        while chunk := os.read(read_end, 65536):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            kept = b"".join(line + b"\n" for line in lines if not is_noise(line))
            if kept:
                os.write(real, kept)
        if pending and not is_noise(pending):
            os.write(real, pending)

    thread = threading.Thread(target=pump, name="stderr-filter", daemon=True)
    thread.start()

    def restore() -> None:
        # Point fd 2 back at the real stream: the pipe's last writer closes, the pump drains and ends.
        os.dup2(real, 2)
        thread.join(timeout=2)

    atexit.register(restore)
