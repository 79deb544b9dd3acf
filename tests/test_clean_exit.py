"""Every command exits 0 after success, with nothing on stderr under --quiet (issue 24).

A successful `convert` used to end in `free(): invalid pointer` and exit 134 on machines with Mesa's
Vulkan drivers: its GPU check loaded LiteRT's GPU accelerator into the process that holds
TensorFlow, the Vulkan loader brought in every driver, and Mesa's LLVM met TensorFlow's at exit.
The check now runs in a child (exporter/gpu/). These run the real console script as CI and app
build scripts do; the first one is in the fast tests.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import EXPORTER

TINY_TRAINING = ["--model", "unet", "--input-size", "32", "--epochs", "1", "--batch-size", "8", "--train-samples", "8",
                 "--val-samples", "4"]
TINY_UNET = [*TINY_TRAINING, "--layer-errors", "0", "--no-onnx", "--no-bench", "--no-arm"]


def quiet_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`exporter --quiet ARGS` with the user's own environment (no log-level variables set)."""
    return subprocess.run([EXPORTER, "--quiet", *args], capture_output=True, text=True, cwd=cwd, timeout=600,
                          env=dict(os.environ))


def assert_clean(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr[-2000:]}"
    assert result.stderr == "", result.stderr[-2000:]


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """A 32-pixel UNet trained for one step and converted to float32 TFLite, through the real CLI."""
    folder = tmp_path_factory.mktemp("clean")
    return quiet_cli("convert", *TINY_UNET, "--out", "runs", cwd=folder), folder / "runs" / "unet"


def test_convert_exits_0_with_nothing_on_stderr(converted):
    result, run = converted
    assert_clean(result)
    assert (run / "unet_float32.tflite").is_file() and (run / "report.json").is_file()
    assert "unet_float32.tflite" in result.stdout  # the summary still goes to stdout


def test_the_gpu_check_never_loads_a_gpu_driver_into_the_calling_process(converted):
    """Deterministic whatever Vulkan drivers the machine has: after the GPU check, neither LiteRT's
    GPU accelerator nor a Vulkan library is mapped into a process that imported TensorFlow."""
    _, run = converted
    script = (
        "import sys, re\n"
        "from exporter.keras import tf\n"
        "from exporter.gpu.runner import gpu_runtime_check\n"
        f"answer = gpu_runtime_check(__import__('pathlib').Path({str(run / 'unet_float32.tflite')!r}))\n"
        "assert 'available' in answer, answer\n"
        "maps = open('/proc/self/maps').read()\n"
        "print(sorted(set(re.findall(r'[^/\\s]*(?:WebGpu|vulkan|LLVM-)[^/\\s]*', maps))))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]", proc.stdout


@pytest.mark.slow
def test_train_benchmark_and_validate_exit_0_with_nothing_on_stderr(converted, tmp_path):
    _, run = converted
    model = run / "unet_float32.tflite"
    assert_clean(quiet_cli("train", *TINY_TRAINING, "--out", "runs", cwd=tmp_path))
    assert (tmp_path / "runs" / "unet" / "training" / "weights.h5").is_file()
    assert_clean(quiet_cli("benchmark", str(model), "--threads", "1", "--runs", "2", "--warmup", "1", cwd=tmp_path))
    assert_clean(quiet_cli("validate", str(model), "--reference", str(model), "--samples", "2", cwd=tmp_path))
