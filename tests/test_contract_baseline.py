"""The speed check of a run under a non-default output contract (issue 28) divides by the DEFAULT
contract's float32 file (the model as trained, final resize in it), which the run writes and measures
beside its own float32 file and never recommends (exporter.policy.speed_baseline)."""

from __future__ import annotations

import json

import pytest

from exporter.arm import env as arm_env
from exporter.formats import CONTRACT_BASELINE, baseline_name, contract_baseline_name
from exporter.pipeline import BenchSpec, ConvertOptions, DataSpec, QuantSpec, convert
from exporter.policy import ARM_CORE, speed_baseline


def test_policy_takes_the_default_contracts_float32_file_when_the_run_wrote_one():
    """The decision alone, on a report's records (issue 28's DeepLab figures, aligned:40)."""
    from exporter.policy import checks

    def arm(n):
        return {ARM_CORE: {"instructions": n}}

    own, base, int8 = baseline_name("deeplab"), contract_baseline_name("deeplab"), "deeplab_int8.tflite"
    iou = {"background": 0.9, "star": 0.5}
    arts = [{"file": own, "format": "tflite", "precision": "float32", "method": "none", "arm": arm(8.79e6)},
            {"file": base, "format": "tflite", "precision": "float32", "method": "none", "role": CONTRACT_BASELINE,
             "arm": arm(9.60e6)},
            {"file": int8, "format": "tflite", "precision": "int8", "method": "ptq", "agreement": 0.9909,
             "miou_delta": -0.0023, "per_class_iou": iou, "float_ops": [], "arm": arm(4.73e6)}]
    report = {"model": "deeplab", "artifacts": arts, "reference": {"per_class_iou": iou}, "benchmark": {"threads": []},
              "output_contract": {"activation": "model", "size": "aligned:40"}}
    assert speed_baseline(report)[0] == base
    speed = next(c for c in checks(report) if c["kind"] == "speed")
    assert speed["passed"] and speed["detail"].startswith("2.03×") and base in speed["name"]
    # Without the file (the default contract, or an older report): the run's own float32 file.
    plain = {**report, "artifacts": [arts[0], arts[2]]}
    assert speed_baseline(plain)[0] == own
    assert next(c for c in checks(plain) if c["kind"] == "speed")["detail"].startswith("1.86×")


@pytest.fixture(scope="module")
def aligned_run(tmp_path_factory):
    """A small DeepLab at 32x32 under `--output-size aligned:8`, float32 and int8, untrained; ARM
    on the A76 only, no host timing, no ONNX, no peers, no GPU."""
    if (reason := arm_env.check()) is not None:
        pytest.skip(f"ARM emulation not available: {reason}")
    from architectures import build, resolve_config
    from exporter.keras import keras

    out = tmp_path_factory.mktemp("contract")
    keras.utils.set_random_seed(0)  # seeded initial weights: no training (it took 30 s of the test's 100)
    weights = out / "deeplab.h5"
    build(resolve_config("deeplab", input_size=(32, 32), num_classes=21)).save_weights(str(weights))
    opts = ConvertOptions(model="deeplab", precisions=("float32", "int8"), out=out, onnx=False, weights=weights,
                          bench=BenchSpec(enabled=False, threads=(1,), arm=(ARM_CORE,), gpu=False, peers=False),
                          data=DataSpec(input_size=32, train_samples=8, val_samples=2),
                          quant=QuantSpec(calibration_samples=4, layer_errors=0),
                          output_size="aligned:8", command="pytest")
    return out, convert(opts)


@pytest.mark.slow
def test_the_speed_check_divides_by_the_default_contracts_float32_file(aligned_run):
    out, report = aligned_run
    model = report["model"]
    by_file = {a["file"]: a for a in report["artifacts"]}
    base = contract_baseline_name(model)
    assert base in by_file and by_file[base]["role"] == CONTRACT_BASELINE
    assert (out / model / base).exists()
    # The baseline keeps the model's output at the input size; the run's own float32 file the 8x8 grid.
    assert by_file[base]["agreement"] == pytest.approx(1.0, abs=1e-3)
    assert speed_baseline(report)[0] == base and report["speed_baseline"]["file"] == base
    counts = {f: a["arm"][ARM_CORE]["instructions"] for f, a in by_file.items()}
    assert counts[base] > counts[baseline_name(model)]  # the x32 resize is in it
    rec = report["recommended"]["cpu"]
    assert rec != base and report["recommended"]["gpu"] != base
    check = next(c for c in report["checks"] if c["kind"] == "speed")
    assert base in check["name"] and "default output contract" in check["detail"]
    assert check["detail"].startswith(f"{counts[base] / counts[rec]:.2f}×")
    md = (out / model / "report.md").read_text()
    assert f"Speed baseline: `{base}`" in md
    assert json.loads((out / model / "report.json").read_text())["speed_baseline"]["file"] == base
