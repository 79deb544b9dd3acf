"""Bad input through the real console script: one clear line, non-zero exit, no traceback."""

import numpy as np
import pytest


def assert_one_line_error(result, *needles):
    assert result.returncode != 0
    err = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(err) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in err[0], err[0]


def test_list_models(run_cli):
    result = run_cli("list-models")
    assert result.returncode == 0 and "unet" in result.stdout


def test_unknown_model_lists_choices(run_cli):
    from architectures import list_models

    assert_one_line_error(run_cli("convert", "--model", "resnet"), "unknown model 'resnet'", *list_models())


def test_missing_weights(run_cli, tmp_path):
    result = run_cli("convert", "--model", "unet", "--weights", "nope.h5", "--out", "out")
    assert_one_line_error(result, "nope.h5", "not found")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.tflite"))


def test_bad_data_leaves_no_artifact(run_cli, tmp_path, folder_dataset):
    (folder_dataset / "masks" / "img02.png").write_bytes(b"garbage")
    result = run_cli("convert", "--model", "unet", "--int8", "--data", str(folder_dataset), "--out", "out",
                     "--input-size", "64")
    assert_one_line_error(result, "img02.png", "unreadable image")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.tflite"))


def test_debug_shows_traceback(run_cli):
    result = run_cli("--debug", "convert", "--model", "resnet")
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_corrupt_model_file_for_inspect(run_cli, tmp_path):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(np.arange(100, dtype=np.uint8).tobytes())
    assert_one_line_error(run_cli("inspect", str(bad)), "bad.tflite")


@pytest.mark.slow
def test_diverging_training_stops_with_one_line(run_cli, tmp_path):
    # The selfie model squares its features (no normalisation): a learning rate of 1000 sends its
    # loss to NaN within the first two steps (at 1 the loss only reached 1e7 with today's stack, at
    # 10 1e18). Nothing may be saved from NaN weights.
    result = run_cli("train", "--model", "selfie", "--input-size", "64", "--classes", "3", "--epochs", "1",
                     "--train-samples", "16", "--batch-size", "8", "--val-samples", "4", "--lr", "1000",
                     "--out", "out")
    assert_one_line_error(result, "training diverged", "--lr")
    assert not list((tmp_path / "out").rglob("weights.h5"))


@pytest.mark.slow
def test_op_bench_times_real_files(run_cli, tmp_path):
    result = run_cli("op-bench", "--op", "add", "--op", "conv1x1", "--size", "8", "--channels", "8",
                     "--json", "ops.json")
    assert result.returncode == 0, result.stderr
    import json

    report = json.loads((tmp_path / "ops.json").read_text())
    assert [r["op"] for r in report["rows"]] == ["add", "conv1x1"]
    for row in report["rows"]:
        assert row["float32_ms"] > 0 and row["int8_ms"] > 0
        assert row["int8_speedup"] == round(row["float32_ms"] / row["int8_ms"], 3)
    assert_one_line_error(run_cli("op-bench", "--op", "softmax"), "unknown op 'softmax'", "conv3x3")
    # TensorFlow's and LiteRT's native start-up chatter is filtered from what the user reads.
    chatter = [line for line in result.stderr.splitlines()
               if "cudart_stub" in line or "XNNPACK delegate" in line or "absl::InitializeLog" in line]
    assert not chatter, chatter


def test_native_stderr_filter_drops_chatter_and_keeps_errors():
    from exporter.quiet import is_noise

    assert is_noise(b"I0000 00:00:1796159218.092587   28780 cudart_stub.cc:31] Could not find cuda drivers")
    assert is_noise(b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.")
    assert is_noise(b"fully_quantize: 0, inference_type: 6, input_inference_type: UINT8, output_inference_type: UINT8")
    assert not is_noise(b"E0000 00:00:1796159229.0   28780 interpreter.cc:12] Node number 3 (CONV_2D) failed")
    assert not is_noise(b"error: data: label value(s) 7 outside 0..2")
    assert not is_noise(b"ERROR: tensorflow/lite/kernels/conv.cc:349 input->dims->size != 4 (3 != 4)")
