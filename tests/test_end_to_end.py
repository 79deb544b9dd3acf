"""The whole slice for real: train on synthetic data, convert, validate, benchmark, report."""

import dataclasses
import json

import pytest

from exporter.arm import env as arm_env
from exporter.formats import PEER
from exporter.pipeline import BenchSpec, ConvertOptions, DataSpec, QuantSpec, convert
from exporter.train import Schedule

pytestmark = pytest.mark.slow

REPORT_KEYS = {"model", "input_shape", "labels", "reference", "data", "environment", "artifacts"}
ARTIFACT_KEYS = {"file", "format", "precision", "method", "bytes", "latency_ms", "agreement", "miou",
                 "miou_delta", "per_class_iou"}


@pytest.fixture(scope="module")
def unet_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    # 160 training scenes x 4 epochs: the float model reaches a held-out mIoU of 0.84 (0.95 from 240; the check is
    # > 0.6), so int8 parity is measured on a model that segments. No per-layer error table: nothing
    # here reads it (test_quant_cli checks it through the CLI).
    opts = ConvertOptions(model="unet", precisions=("float32", "int8"), out=out, bench=BenchSpec(threads=(1,)),
                          data=DataSpec(input_size=64, train_samples=160, val_samples=40),
                          schedule=Schedule(epochs=4, batch_size=16),
                          quant=QuantSpec(calibration_samples=64, layer_errors=0), command="pytest")
    return out, opts, convert(opts)


def test_artifacts_follow_the_contract(unet_run):
    out, _, report = unet_run
    folder = out / "unet"
    names = {p.name for p in folder.iterdir()}
    assert {"unet_float32.tflite", "unet_int8.tflite", "unet_float32.onnx", "unet_int8.onnx", "report.json", "report.md",
            "report.png"} <= names
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "staging folder left behind"
    on_disk = json.loads((folder / "report.json").read_text())
    assert REPORT_KEYS <= set(on_disk)
    assert {a["file"] for a in on_disk["artifacts"]} >= {"unet_float32.tflite", "unet_int8.tflite",
                                                         "unet_float32.onnx", "unet_int8.onnx"}
    for art in on_disk["artifacts"]:
        assert ARTIFACT_KEYS <= set(art)
        assert art["bytes"] == (folder / art["file"]).stat().st_size
        assert art["latency_ms"]["1"]["median"] > 0 and art["latency_ms"]["1"]["runs"] >= 20
    assert "| unet_int8.tflite | int8 | ptq |" in (folder / "report.md").read_text()


def test_trained_model_is_meaningful_and_int8_keeps_parity(unet_run):
    _, _, report = unet_run
    assert report["reference"]["miou"] > 0.6, report["training"]["history"]
    by_precision = {(a["format"], a["precision"]): a for a in report["artifacts"] if a.get("role") != "peer"}
    for key in [("tflite", "float32"), ("onnx", "float32")]:
        assert by_precision[key]["agreement"] >= 0.999
        assert by_precision[key]["max_abs_diff"] < 1e-2
    int8 = by_precision[("tflite", "int8")]
    assert int8["float_ops"] == []
    assert int8["agreement"] >= 0.99
    assert int8["miou_delta"] > -0.01
    assert int8["bytes"] < 0.4 * by_precision[("tflite", "float32")]["bytes"]
    onnx_int8 = by_precision[("onnx", "int8")]
    assert onnx_int8["agreement"] >= 0.98 and onnx_int8["bytes"] < 0.4 * by_precision[("onnx", "float32")]["bytes"]


def test_arm_cost_and_recommended_files(unet_run):
    out, _, report = unet_run
    md = (out / "unet" / "report.md").read_text()
    tflite = [a for a in report["artifacts"] if a["format"] == "tflite"]
    rec = report["recommended"]
    assert rec["cpu"] in {a["file"] for a in tflite if a.get("role") != "peer"} and rec["gpu"] == "unet_float32.tflite"
    # The peers (AI Edge Quantizer's plain int8 of the same float32 file; TFLiteConverter's default
    # full-integer file of the training graph) measured beside the recommendation.
    peers = {p["file"]: p for p in report["peers"]["peers"]}
    assert set(peers) == {"unet_int8_peer-aeq.tflite", "unet_int8_peer-tflite.tflite"}
    for peer in peers.values():
        assert peer["a76_instructions"] > 0 and peer["agreement"] > 0.9, peer
    # The converter's file keeps the training graph's TRANSPOSE_CONVs: it costs more than ours.
    tflite_peer = next(a for a in tflite if a["file"] == "unet_int8_peer-tflite.tflite")
    assert tflite_peer["ops"].get("TRANSPOSE_CONV") and tflite_peer["io"] == "uint8", tflite_peer["ops"]
    assert peers["unet_int8_peer-tflite.tflite"]["a76_instructions"] > report["peers"]["recommended"]["a76_instructions"]
    assert report["peers"]["recommended"]["file"] == rec["cpu"] and "## Peers" in md
    assert "**Recommended:** CPU `" in "\n".join(md.splitlines()[:4])
    (speed,) = [c for c in report["checks"] if c["kind"] == "speed"]
    reason = arm_env.check()
    if reason is not None:
        assert report["arm_status"] == reason and f"ARM: not measured ({reason})" in md
        assert speed["passed"] is None and reason in speed["detail"]
        assert "ARM not measured" in rec["cpu_basis"]
        pytest.skip(reason)
    assert "arm_status" not in report and set(report["arm_run"]["cores"]) == set(arm_env.CORES)
    for art in tflite:
        # Peer files on the A76 only (their table compares A76 instructions).
        assert set(art["arm"]) == ({"cortex-a76"} if art.get("role") == "peer" else set(arm_env.CORES)), art["arm"]
        for core, e in art["arm"].items():
            print(f"\n{art['file']} on {core}: {e}")
            assert {"instructions", "dot_instructions", "fma_instructions", "agreement_with_host", "ratio_to_float32",
                    "samples"} <= set(e)
            assert e["instructions"] > 0
            if art["precision"] == "int8":
                assert e["dot_instructions"] > 0 and e["ratio_to_float32"] > 1
                assert e["agreement_with_host"] >= 0.999 and e["samples"] >= 3
            else:
                assert e["fma_instructions"] > 0 and e["ratio_to_float32"] == 1
    assert speed["passed"] is not None and "cortex-a76" in speed["name"]
    assert "cortex-a76" in rec["cpu_basis"]
    assert "## ARM cost (emulated)" in md and "not cycles" in md and "in-order" in md
    assert "| unet_int8.tflite | cortex-a55 |" in md


def test_second_run_reuses_the_trained_checkpoint(unet_run, capfd):
    out, opts, first = unet_run
    capfd.readouterr()
    second = convert(dataclasses.replace(opts, precisions=("float32",), onnx=False,
                                         bench=BenchSpec(enabled=False, threads=(1,), arm=())))
    assert "using the model trained in" in capfd.readouterr().err
    assert second["reference"]["miou"] == pytest.approx(first["reference"]["miou"], abs=1e-6)


def test_inspect_describes_the_int8_file(unet_run, run_cli):
    """`exporter inspect` names the int8 file's raw-pixel uint8 input and finds no float op."""
    out, _, _ = unet_run
    result = run_cli("inspect", str(out / "unet" / "unet_int8.tflite"))
    assert result.returncode == 0, result.stderr
    lines = [line.strip() for line in result.stdout.splitlines()]
    assert "input: pixels [1, 64, 64, 3] uint8, scale 1, zero point 0" in lines, result.stdout
    assert any(line.startswith("output: ") and "uint8" in line for line in lines), result.stdout
    assert "float ops inside: none" in lines, result.stdout


def test_gpu_stage_runs_every_tflite_file_or_says_why(unet_run):
    """Per TFLite file, `gpu` holds LiteRT's GPU accelerator run (exporter/gpu/) and `gpu_static` the
    static analyser's verdict; without `make gpu-env` the report says why in one line."""
    from exporter.gpu import env as gpu_env

    out, _, report = unet_run
    md = (out / "unet" / "report.md").read_text()
    tflite = [a for a in report["artifacts"] if a["format"] == "tflite"]
    assert all("compatible" in a["gpu_static"] for a in tflite)
    reason = gpu_env.check()
    if reason is not None:
        assert report["gpu_status"] == reason and "static analyser only" in report["recommended"]["gpu_basis"]
        assert f"GPU run: not measured: {reason}" in md
        pytest.skip(reason)
    assert report["gpu_run"]["devices"] and report["gpu_run"]["fp16_simulation"]["agreement_with_float32"] > 0.99
    for art in tflite:
        g = art["gpu"]
        assert {"device", "fully_accelerated", "precision", "agreement_with_cpu", "max_abs_diff", "fallback_ops"} <= set(g)
        if art.get("role") == PEER:
            continue  # another tool's file: whatever the GPU does with it is reported, not ours to assert
        assert g["fully_accelerated"] and g["fallback_ops"] == [], art["file"]
    # TFLiteConverter's file of the training graph keeps the decoder's TRANSPOSE_CONV, which the GPU
    # accelerator hands back to the CPU: the report must say so, naming the op.
    (converter_peer,) = [a for a in tflite if a["file"].endswith("_peer-tflite.tflite")]
    g = converter_peer["gpu"]
    assert g["fully_accelerated"] == (g["fallback_ops"] == [])
    assert g["fully_accelerated"] or "TRANSPOSE_CONV" in g["fallback_ops"]
    (f32,) = [a for a in tflite if a["precision"] == "float32"]
    assert f32["gpu"]["agreement_with_cpu"] >= 0.999
    assert "GPU accelerator" in report["recommended"]["gpu_basis"] and "GPU run:" in md
