"""`exporter convert --strict` is a CI gate: through the real console script, a convert whose int8
file misses an accuracy target exits non-zero with --strict, and 0 without it.

The cheapest convert that misses one: a UNet at 64x64 trained for one epoch on 16 scenes (near
random, so int8 rounding flips many near-tied pixels), activation ranges cut at the 99th
percentile, no benchmark, no ONNX, no ARM. The second and third converts reuse the first one's
trained run.
"""

import json

import pytest

from exporter.errors import ParityError
from test_cli import assert_one_line_error

pytestmark = pytest.mark.slow

CHEAP = ["--model", "unet", "--input-size", "64", "--epochs", "1", "--batch-size", "8", "--train-samples", "16",
         "--val-samples", "8", "--calibration-samples", "8", "--range-percentile", "99", "--layer-errors", "0",
         "--no-bench", "--no-onnx", "--no-arm", "--out", "runs"]


def test_strict_exit_code_follows_the_accuracy_checks(run_cli, tmp_path):
    """Without --strict a failed int8 accuracy check is reported and the exit is 0; with --strict the
    same convert exits with ParityError's code, naming the failed check in one line; --strict with
    no failed accuracy check (float32 only: nothing gated) exits 0."""
    lenient = run_cli("convert", *CHEAP, "--int8")
    assert lenient.returncode == 0, lenient.stderr[-3000:]
    report = json.loads((tmp_path / "runs" / "unet" / "report.json").read_text())
    failed = [c for c in report["checks"] if c["kind"] == "accuracy" and c["passed"] is False]
    assert failed, report["checks"]  # the premise: this int8 file misses a target
    assert {c["file"] for c in failed} == {"unet_int8.tflite"}
    assert f"{failed[0]['name']}: {failed[0]['detail']}" in lenient.stdout

    strict = run_cli("convert", *CHEAP, "--int8", "--strict")
    assert strict.returncode == ParityError.exit_code, strict.stderr[-3000:]
    assert_one_line_error(strict, "unet_int8.tflite")
    assert "using the model trained in" in strict.stderr  # the same trained model, so the same file

    passing = run_cli("convert", *CHEAP, "--strict")
    assert passing.returncode == 0, passing.stderr[-3000:]
    report = json.loads((tmp_path / "runs" / "unet" / "report.json").read_text())
    assert not [c for c in report["checks"] if c["kind"] == "accuracy" and c["passed"] is False]
