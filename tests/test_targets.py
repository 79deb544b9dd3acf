"""The report's int8 checks use each architecture's own targets (exporter.targets)."""

import pytest

from architectures import list_models
from exporter.pipeline import checks
from exporter.targets import Int8Targets, targets_for


def report(model, int8_iou, method="ptq", agreement=0.9995, float_ms=10.0, int8_ms=4.0):
    reference = {"background": 0.95, "person": 0.90}
    int8 = {"file": f"{model}_int8.tflite", "format": "tflite", "precision": "int8", "method": method,
            "bytes": 1220, "float_ops": [], "agreement": agreement,
            "miou_delta": sum(int8_iou.values()) / 2 - sum(reference.values()) / 2,
            "per_class_iou": int8_iou, "latency_ms": {"2": {"median": int8_ms}}}
    fp32 = {"file": f"{model}_float32.tflite", "format": "tflite", "precision": "float32", "method": "none",
            "latency_ms": {"2": {"median": float_ms}}}
    return {"model": model, "reference": {"per_class_iou": reference}, "benchmark": {"threads": [1, 2]},
            "artifacts": [fp32, int8]}


def by_name(results, text):
    (found,) = [c for c in results if text in c["name"]]
    return found


@pytest.mark.parametrize("model", list_models())
def test_every_architecture_has_its_issue_targets(model):
    assert targets_for(model) != Int8Targets() or model == "unet"


def test_speed_and_accuracy_targets_follow_the_model():
    unet = checks(report("unet", {"background": 0.95, "person": 0.90}, float_ms=10.0, int8_ms=4.5), 1000)
    deeplab = checks(report("deeplab", {"background": 0.95, "person": 0.90}, float_ms=10.0, int8_ms=4.5), 1000)
    assert not by_name(unet, "2.5× as fast")["passed"]  # 2.22x
    assert by_name(deeplab, "2.0× as fast")["passed"]
    assert by_name(unet, "99.8%")["passed"] and by_name(deeplab, "99.0%")["passed"]
    assert by_name(deeplab, "1.25× one byte")["passed"] and not by_name(unet, "1.2× one byte")["passed"]


def test_a_class_losing_more_than_the_target_fails_even_when_the_mean_holds():
    results = checks(report("unet", {"background": 0.97, "person": 0.88}), 1000)  # mean unchanged
    assert by_name(results, "mIoU at most")["passed"]
    worst = by_name(results, "no class loses")
    assert not worst["passed"] and "person" in worst["detail"]


def test_a_qat_file_is_held_to_the_qat_targets():
    results = checks(report("unet", {"background": 0.95, "person": 0.90}, method="qat", agreement=0.996), 1000)
    assert by_name(results, "agreement >= 99.5%")["passed"]
