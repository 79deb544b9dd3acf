"""The report's int8 checks use each architecture's own targets (exporter.targets); the recommended
files follow exporter.recommend's rule."""

import pytest

from architectures import list_models
from exporter.policy import Int8Targets, checks, targets_for
from exporter.recommend import recommend


def arm(instructions, agreement=1.0, float32=None):
    """One core's ARM entry as the convert stage writes it."""
    return {"instructions": instructions, "dot_instructions": 0 if float32 is None else instructions // 40,
            "fma_instructions": instructions // 5 if float32 is None else 0, "agreement_with_host": agreement,
            "ratio_to_float32": (float32 or instructions) / instructions, "samples": 1 if float32 is None else 3}


def with_arm(report, float32=300e6, int8=90e6, agreement=1.0):
    """The report with ARM counts on both cores (the A55's a bit higher)."""
    for art in report["artifacts"]:
        mine = float32 if art["precision"] == "float32" else int8
        art["arm"] = {core: arm(int(mine * k), agreement if art["precision"] != "float32" else 1.0,
                                None if art["precision"] == "float32" else int(float32 * k))
                      for core, k in (("cortex-a76", 1.0), ("cortex-a55", 1.3))}
    report["arm_run"] = {"cores": {"cortex-a76": {}, "cortex-a55": {}}}
    return report


def report(model, int8_iou, method="ptq", agreement=0.9995, float_ms=10.0, int8_ms=4.0):
    reference = {"background": 0.95, "person": 0.90}
    int8 = {"file": f"{model}_int8.tflite", "format": "tflite", "precision": "int8", "method": method,
            "bytes": 1220, "float_ops": [], "agreement": agreement,
            "miou_delta": sum(int8_iou.values()) / 2 - sum(reference.values()) / 2,
            "per_class_iou": int8_iou, "latency_ms": {"2": {"median": int8_ms}}}
    fp32 = {"file": f"{model}_float32.tflite", "format": "tflite", "precision": "float32", "method": "none",
            "latency_ms": {"2": {"median": float_ms}}}
    return {"model": model, "reference": {"per_class_iou": reference}, "benchmark": {"threads": [1, 2]},
            "artifacts": [fp32, int8], "arm_status": "ARM emulation not available: test"}


def by_name(results, text):
    (found,) = [c for c in results if text in c["name"]]
    return found


@pytest.mark.parametrize("model", list_models())
def test_every_architecture_has_its_issue_targets(model):
    """UNet holds the foundation issue's (default) targets; every other architecture its own."""
    assert (targets_for(model) == Int8Targets()) == (model == "unet"), targets_for(model)


def test_speed_and_accuracy_targets_follow_the_model():
    same = {"background": 0.95, "person": 0.90}
    unet = checks(with_arm(report("unet", same), float32=300e6, int8=110e6))  # 2.73x on the A76
    deeplab = checks(with_arm(report("deeplab", same), float32=300e6, int8=110e6))
    assert not by_name(unet, "3.0× instructions")["passed"] and "2.73×" in by_name(unet, "3.0× instructions")["detail"]
    assert by_name(deeplab, "2.0× instructions")["passed"]
    assert by_name(unet, "99.8%")["passed"] and by_name(deeplab, "99.0%")["passed"]


@pytest.mark.parametrize("model", list_models())
def test_the_size_check_compares_with_the_float32_file_leaving_per_channel_parameters_aside(model):
    """int8 bytes, less the per-channel scales and zero points, over the float32 file's: at most 0.3.
    UNet's committed int8 file was 1.206 bytes per weight (the old rule failed it), 0.260 by this one."""
    def size_check(int8_bytes, params=None, float32_bytes=6_049_481):
        rep = report(model, {"background": 0.95, "person": 0.90})
        rep["artifacts"][0]["bytes"] = float32_bytes
        rep["artifacts"][1]["bytes"] = int8_bytes
        if params is not None:
            rep["artifacts"][1]["quant_param_bytes"] = params
        return by_name(checks(rep), "the float32 file's bytes")

    right = size_check(1_801_009, params=230_208)  # the demo's unet_int8.tflite
    assert right["passed"] and right["detail"].startswith("0.260"), right
    # The same bytes without per-channel parameters to leave out: 0.298 still passes, 0.31 does not.
    assert size_check(1_801_009, params=0)["passed"]
    assert size_check(1_900_000, params=0)["passed"] is False
    stale = size_check(1_801_009)  # a report written before quant_param_bytes existed
    assert stale["passed"] is None and "predates" in stale["detail"]


def test_host_latency_is_information_not_a_check():
    results = checks(with_arm(report("unet", {"background": 0.95, "person": 0.90}, float_ms=10.0, int8_ms=40.0)))
    host = by_name(results, "host latency vs unet_float32.tflite")
    assert host["kind"] == "info" and host["passed"] is None and "0.25×" in host["detail"]
    assert by_name(results, "ARM cortex-a76")["passed"]  # 300 M / 90 M instructions: 3.33x


def test_without_arm_the_speed_check_is_not_evaluated_and_says_why():
    results = checks(report("unet", {"background": 0.95, "person": 0.90}))
    speed = by_name(results, "ARM cortex-a76")
    assert speed["kind"] == "speed" and speed["passed"] is None
    assert "not evaluated" in speed["detail"] and "ARM emulation not available: test" in speed["detail"]
    assert by_name(results, "ARM outputs agree")["passed"] is None


def test_arm_agreement_with_the_host_is_reported_per_core():
    results = checks(with_arm(report("unet", {"background": 0.95, "person": 0.90}), agreement=0.998))
    found = by_name(results, "ARM outputs agree with the host's on >= 99.9%")
    assert found["kind"] == "reported" and not found["passed"]
    assert "cortex-a76 99.800%" in found["detail"] and "cortex-a55" in found["detail"]


def test_recommended_cpu_file_is_the_cheapest_on_arm_that_meets_the_gate():
    rep = with_arm(report("unet", {"background": 0.95, "person": 0.90}), float32=300e6, int8=90e6)
    rep["artifacts"].append({**rep["artifacts"][1], "file": "unet_float16.tflite", "precision": "float16",
                             "gpu": {"compatible": True}, "arm": {"cortex-a76": arm(int(299e6))}})
    rec = recommend(rep, checks(rep))
    assert rec["cpu"] == "unet_int8.tflite" and "cortex-a76" in rec["cpu_basis"]
    assert rec["gpu"] == "unet_float16.tflite"
    # int8 losing accuracy: the float32 file, however many instructions it costs; float16 has no gate.
    bad = with_arm(report("unet", {"background": 0.95, "person": 0.80}), float32=300e6, int8=90e6)
    rec = recommend(bad, checks(bad))
    assert rec["cpu"] == "unet_float32.tflite" and rec["gpu"] == "unet_float32.tflite"
    assert not by_name(checks(bad), "recommended CPU file (unet_float32.tflite)")["passed"]  # 1.00x
    # ARM outputs that disagree with the host's: the host-measured accuracy does not hold there.
    off = with_arm(report("unet", {"background": 0.95, "person": 0.90}), agreement=0.99)
    assert recommend(off, checks(off))["cpu"] == "unet_float32.tflite"


def test_equal_arm_counts_recommend_the_file_that_agrees_more():
    """Files of one graph (a post-training method changes weights only) cost the same on ARM: the
    more accurate one is recommended, not the first or the smaller."""
    rep = with_arm(report("unet", {"background": 0.95, "person": 0.90}), float32=300e6, int8=90e6)
    better = {**rep["artifacts"][1], "file": "unet_int8_bias_correction_act.tflite", "agreement": 0.9998,
              "bytes": rep["artifacts"][1]["bytes"] + 10}
    rep["artifacts"].append(better)
    assert rep["artifacts"][1]["agreement"] < better["agreement"]
    assert recommend(rep, checks(rep))["cpu"] == "unet_int8_bias_correction_act.tflite"


def test_recommended_cpu_file_falls_back_to_host_latency_and_says_so():
    rep = report("unet", {"background": 0.95, "person": 0.90}, float_ms=10.0, int8_ms=40.0)
    rec = recommend(rep, checks(rep))
    assert rec["cpu"] == "unet_float32.tflite"  # slower int8 on this x86 CPU
    assert "ARM not measured (ARM emulation not available: test)" in rec["cpu_basis"]
    assert "host latency" in rec["cpu_basis"]
    rep = report("unet", {"background": 0.95, "person": 0.90}, float_ms=10.0, int8_ms=4.0)
    assert recommend(rep, checks(rep))["cpu"] == "unet_int8.tflite"


def test_a_class_losing_more_than_the_target_fails_even_when_the_mean_holds():
    results = checks(report("unet", {"background": 0.97, "person": 0.88}))  # mean unchanged
    assert by_name(results, "mIoU at most")["passed"]
    worst = by_name(results, "no class loses")
    assert not worst["passed"] and "person" in worst["detail"]


def test_a_qat_file_is_held_to_the_qat_targets():
    results = checks(report("unet", {"background": 0.95, "person": 0.90}, method="qat", agreement=0.996))
    assert by_name(results, "agreement >= 99.5%")["passed"]


def test_the_better_int8_file_ships_and_strict_gates_only_shipped_files():
    from exporter.policy import better_int8, strict_failures

    ref = {"background": 0.95, "person": 0.90}
    ptq = {"file": "unet_int8_ptq.tflite", "method": "ptq", "agreement": 0.9990, "miou": 0.925, "miou_delta": -0.0,
           "per_class_iou": {"background": 0.95, "person": 0.90}}
    qat = {**ptq, "file": "unet_int8_qat.tflite", "method": "qat", "agreement": 0.9985}
    best, why = better_int8("unet", ref, [qat, ptq])
    assert best is ptq and "ptq meets" in why and "qat 99.850%" in why
    # A file that passes the gate beats a higher-agreement one that loses a class.
    lost_class = {**ptq, "agreement": 0.9995, "per_class_iou": {"background": 0.97, "person": 0.87}}
    best, why = better_int8("unet", ref, [lost_class, qat])
    assert best is qat and "(fails the gate)" in why
    # Neither passes: the closer one, and the reason says so.
    best, why = better_int8("unet", ref, [{**qat, "agreement": 0.95}, {**ptq, "agreement": 0.96}])
    assert best["method"] == "ptq" and "fails too" in why
    # --strict exits on a failed accuracy check of a shipped file, not on the one reported beside it.
    rep = report("unet", {"background": 0.95, "person": 0.80})
    assert strict_failures(checks(rep))
    rep["artifacts"][1]["role"] = "alternative"
    assert not strict_failures(checks(rep))


def test_report_refresh_recomputes_checks_and_recommendation_from_the_measurements(tmp_path, capsys):
    """A committed report re-judged with today's policy: the measurements stay, the checks and
    the recommendation are what `convert` would compute from them, and the report says so."""
    import json
    import shutil
    from pathlib import Path

    from exporter.report_refresh import main

    folder = tmp_path / "deeplab"
    shutil.copytree(Path(__file__).resolve().parents[1] / "reports" / "deeplab", folder)
    before = json.loads((folder / "report.json").read_text())
    before["recommended"]["cpu"] = "stale.tflite"
    (folder / "report.json").write_text(json.dumps(before))
    assert main([str(folder), "--why", "a test"]) == 0
    after = json.loads((folder / "report.json").read_text())
    assert after["artifacts"] == before["artifacts"]
    assert after["recommended"] == recommend(after, checks(after))
    assert after["recommended"]["cpu"] != "stale.tflite" and after["refreshed"]["why"] == "a test"
    assert "recomputed from these measurements" in (folder / "report.md").read_text()
    # Bad input: one line, exit 2, and no report rewritten (the good one is read, not refreshed).
    (folder / "report.json").write_text(json.dumps(before))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "report.json").write_text("{not json")
    assert main([str(folder), str(broken), "--why", "x"]) == 2
    assert json.loads((folder / "report.json").read_text()) == before
    assert main([str(tmp_path / "missing"), "--why", "x"]) == 2
    assert "not found" in capsys.readouterr().err
