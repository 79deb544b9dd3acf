"""LiteRT's GPU accelerator for real (exporter/gpu/): every registry model's float32 and float16 files
compiled for the GPU alone on the software Vulkan device `make gpu-env` builds (SwiftShader), against
LiteRT's CPU; a file with an op the GPU kernels lack; the recommended GPU file from runs. Where the
environment is missing, the GPU tests skip with one line saying why (`python -m exporter.gpu.env`)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from architectures import build, list_models
from exporter.gpu import env as gpu_env
from support import pixels, small_config

GPU_REASON = gpu_env.check()
needs_gpu = pytest.mark.skipif(GPU_REASON is not None, reason=GPU_REASON or "")
MIN_AGREEMENT = 0.999


def test_env_entry_says_ready_or_why_in_one_line(tmp_path):
    for cache, expect in ((None, None), (tmp_path / "none", 1)):
        env = {**__import__("os").environ, **({"SEGEXPORT_GPU_CACHE": str(cache)} if cache else {})}
        proc = subprocess.run([sys.executable, "-m", "exporter.gpu.env"], capture_output=True, text=True, env=env)
        lines = proc.stdout.strip().splitlines()
        assert len(lines) == 1 and not proc.stderr, (proc.stdout, proc.stderr)
        assert proc.returncode == (expect if expect is not None else (0 if GPU_REASON is None else 1))
        if cache:
            assert "make gpu-env" in lines[0]


def test_stage_without_env_records_one_line_status(tmp_path, monkeypatch):
    from exporter.gpu.stage import measure_gpu

    monkeypatch.setenv("SEGEXPORT_GPU_CACHE", str(tmp_path / "none"))
    per_file, top = measure_gpu([{"file": "x.tflite", "format": "tflite", "precision": "float32"}], tmp_path,
                                np.zeros((1, 8, 8, 3), np.float32))
    assert per_file == {} and "\n" not in top["gpu_status"] and "make gpu-env" in top["gpu_status"]


@pytest.fixture(scope="module", params=list_models())
def small_files(request, tmp_path_factory):
    """(config, {precision: path}) of one architecture's float32 and float16 files, as convert writes them."""
    from exporter.convert.signature import export_model
    from exporter.convert.tflite import to_tflite
    from exporter.keras import keras
    from exporter.metadata import add_segmenter_metadata, segmenter_metadata_for
    from test_registry_contracts import calibrate_batchnorm

    config = small_config(request.param)
    keras.utils.set_random_seed(0)
    model = build(config)
    calibrate_batchnorm(model, pixels(config, n=4, seed=11))
    fixed = export_model(model, config)
    folder = tmp_path_factory.mktemp(f"gpu-{config.name}")
    paths = {}
    for precision in ("float32", "float16"):
        paths[precision] = folder / f"{config.name}_{precision}.tflite"
        blob = to_tflite(fixed, config, precision, None)
        paths[precision].write_bytes(add_segmenter_metadata(blob, **segmenter_metadata_for(config)))
    return config, paths


@needs_gpu
@pytest.mark.slow
def test_float_files_run_whole_on_the_gpu_and_agree_with_the_cpu(small_files):
    from exporter.gpu.stage import measure_gpu

    config, paths = small_files
    arts = [{"file": p.name, "format": "tflite", "precision": precision} for precision, p in paths.items()]
    per_file, top = measure_gpu(arts, next(iter(paths.values())).parent, pixels(config, n=2, seed=5))
    assert "gpu_run" in top, top
    for name, entry in per_file.items():
        assert "error" not in entry, (name, entry)
        assert entry["fully_accelerated"] is True and entry["fallback_ops"] == [], (name, entry)
        assert entry["agreement_with_cpu"] >= MIN_AGREEMENT, (name, entry)
        assert entry["precision"] in ("fp32", "fp16") and entry["device"], entry


@needs_gpu
def test_an_op_the_gpu_kernels_lack_is_named(tmp_path):
    """GATHER_ND has no GPU kernel: compiled for the GPU alone, the file is not fully accelerated and
    the accelerator's log names the op."""
    from exporter.gpu.stage import run_file
    from exporter.keras import tf

    @tf.function(input_signature=[tf.TensorSpec([1, 8, 8, 3], tf.float32)])
    def gather(x):
        return tf.gather_nd(x, [[0, 1], [0, 2]]) + 1.0

    path = tmp_path / "gather_nd.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_concrete_functions([gather.get_concrete_function()]).convert())
    entry = run_file(path, np.zeros((1, 8, 8, 3), np.float32))
    assert entry["fully_accelerated"] is False and entry["fallback_ops"] == ["GATHER_ND"], entry
    assert entry["agreement_with_cpu"] is None


def _report(runs: dict, static: dict, **top) -> dict:
    arts = [{"file": f"m_{p}.tflite", "format": "tflite", "precision": p, "method": "none", "bytes": b,
             "agreement": 1.0, "miou": 0.5, "miou_delta": 0.0, "per_class_iou": {},
             "gpu_static": {"compatible": static[p], "unsupported_ops": [], "tensors_over_4d": [], "analyzer_warnings": []},
             **({"gpu": runs[p]} if p in runs else {})}
            for p, b in (("float32", 4000), ("float16", 2000))]
    return {"model": "unet", "labels": [], "artifacts": arts, **top}


def _run(fully=True, agreement=1.0, ops=()):
    return {"device": "SwiftShader Device (Subzero) (CPU / Software)", "fully_accelerated": fully, "precision": "fp32",
            "agreement_with_cpu": agreement if fully else None, "max_abs_diff": 0.0 if fully else None,
            "fallback_ops": list(ops)}


PASSED: list = []  # float16 is not gated by the checks: its held-out figures are held to the same rule


def test_a_float16_file_far_from_float_is_not_recommended_for_the_gpu():
    from exporter.recommend import recommend

    report = _report({"float32": _run(), "float16": _run()}, {"float32": True, "float16": True})
    report["artifacts"][1]["agreement"] = 0.9
    assert recommend(report, PASSED)["gpu"] == "m_float32.tflite"


def test_recommended_gpu_file_comes_from_the_runs_with_the_static_check_as_second_opinion():
    from exporter.recommend import recommend

    rec = recommend(_report({"float32": _run(), "float16": _run()}, {"float32": True, "float16": True}), PASSED)
    assert rec["gpu"] == "m_float16.tflite" and "GPU accelerator" in rec["gpu_basis"] and "gpu_disagreements" not in rec
    # The run says the float16 file fell back: float32 ships, and the static analyser's "compatible" is a disagreement.
    rec = recommend(_report({"float32": _run(), "float16": _run(False, ops=["GATHER_ND"])},
                            {"float32": True, "float16": True}), PASSED)
    assert rec["gpu"] == "m_float32.tflite"
    assert len(rec["gpu_disagreements"]) == 1 and "GATHER_ND" in rec["gpu_disagreements"][0]
    # Below the GPU-vs-CPU agreement the CPU-measured accuracy does not hold on the GPU.
    rec = recommend(_report({"float32": _run(), "float16": _run(agreement=0.99)}, {"float32": True, "float16": True}), PASSED)
    assert rec["gpu"] == "m_float32.tflite"


def test_without_runs_the_static_rule_decides_and_says_so():
    from exporter.recommend import recommend

    rec = recommend(_report({}, {"float32": True, "float16": True}, gpu_status="GPU accelerator not available: x"), PASSED)
    assert rec["gpu"] == "m_float16.tflite" and "static analyser only" in rec["gpu_basis"]
    assert "GPU accelerator not available: x" in rec["gpu_basis"]


@needs_gpu
def test_benchmark_gpu_runs_any_file_and_exits_clean(tmp_path):
    """`exporter --quiet benchmark FILE --gpu`: the file's `gpu` entry in --json, exit 0, nothing on stderr."""
    import json

    from conftest import EXPORTER
    from exporter.keras import tf

    @tf.function(input_signature=[tf.TensorSpec([1, 16, 16, 3], tf.float32)])
    def head(x):
        return tf.nn.softmax(tf.nn.conv2d(x / 255.0, tf.ones([3, 3, 3, 3]) * 0.1, 1, "SAME"))

    model = tmp_path / "tiny.tflite"
    model.write_bytes(tf.lite.TFLiteConverter.from_concrete_functions([head.get_concrete_function()]).convert())
    proc = subprocess.run([EXPORTER, "--quiet", "benchmark", str(model), "--gpu", "--runs", "1", "--warmup", "0",
                           "--threads", "1", "--json", str(tmp_path / "b.json")], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr[-2000:]
    (row,) = json.loads((tmp_path / "b.json").read_text())["files"]
    assert row["gpu"]["fully_accelerated"] is True and row["gpu"]["agreement_with_cpu"] == 1.0, row["gpu"]
    assert "GPU accelerator run: fully accelerated" in proc.stdout
