"""Bad input through the real console script: one clear line, non-zero exit, no traceback."""

import numpy as np


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
    assert not any((tmp_path / "out").rglob("*.tflite")) if (tmp_path / "out").exists() else True


def test_debug_shows_traceback(run_cli):
    result = run_cli("--debug", "convert", "--model", "resnet")
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_corrupt_model_file_for_inspect(run_cli, tmp_path):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(np.arange(100, dtype=np.uint8).tobytes())
    assert_one_line_error(run_cli("inspect", str(bad)), "bad.tflite")
