"""Nothing a user trained is lost: convert uses the run that is there, a new run never replaces one,
a SIGKILLed run resumes where it was, and a seed reproduces the same bytes. All through the real CLI."""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import EXPORTER

pytestmark = pytest.mark.slow

# Small and quick: UNet at 32x32 on synthetic scenes.
TINY = ["--model", "unet", "--input-size", "32", "--val-samples", "16"]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def state(out: Path) -> dict:
    return json.loads((out / "unet" / "training" / "state.json").read_text())


def test_convert_uses_the_trained_run_and_train_never_replaces_it(run_cli, tmp_path):
    train = run_cli("train", *TINY, "--epochs", "3", "--train-samples", "48", "--batch-size", "8", "--out", "runs")
    assert train.returncode == 0, train.stderr
    weights = tmp_path / "runs" / "unet" / "training" / "weights.h5"
    before = digest(weights), (weights.parent / "state.json").read_text()

    # No --weights and another schedule (convert's default is 6 epochs): the 3-epoch run is used.
    convert = run_cli("convert", *TINY, "--int8", "--train-samples", "48", "--out", "runs", "--no-onnx",
                      "--no-bench", "--layer-errors", "0")
    assert convert.returncode == 0, convert.stderr
    assert "using the model trained in runs/unet/training: 3 epoch(s)" in convert.stderr
    assert "training unet" not in convert.stderr
    report = json.loads((tmp_path / "runs" / "unet" / "report.json").read_text())
    assert len(report["training"]["history"]) == 3
    assert report["training"]["summary"].startswith("trained for 3 epochs")

    # A second training run into the same folder refuses, in one line, and touches nothing.
    again = run_cli("train", *TINY, "--epochs", "1", "--train-samples", "48", "--out", "runs")
    assert again.returncode == 2
    errors = [line for line in again.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "already holds a finished training run" in errors[0], again.stderr
    assert "--resume" in errors[0] and "--overwrite" in errors[0] and "Traceback" not in again.stderr
    assert (digest(weights), (weights.parent / "state.json").read_text()) == before

    # --input-size that contradicts the trained run is one clear line.
    wrong = run_cli("convert", "--model", "unet", "--input-size", "64", "--weights", "runs/unet/training/weights.h5",
                    "--out", "other")
    assert wrong.returncode == 2 and "takes 32x32" in wrong.stderr and "Traceback" not in wrong.stderr
    assert digest(weights) == before[0]


def test_weights_may_name_the_training_folder_or_its_weights_file(tmp_path):
    from exporter.errors import ExporterError
    from exporter.train import find_run, run_from_weights

    folder = tmp_path / "unet" / "training"
    folder.mkdir(parents=True)
    (folder / "weights.h5").write_bytes(b"")
    (folder / "state.json").write_text(json.dumps({"fingerprint": {"model": {"name": "unet"}, "data": "synthetic"},
                                                   "schedule": {"epochs": 2}, "epochs_done": 2, "history": [],
                                                   "finished": True}))
    assert run_from_weights(folder).folder == folder and run_from_weights(folder / "weights.h5").finished
    plain = tmp_path / "mine.h5"
    plain.write_bytes(b"")
    assert run_from_weights(plain) is None  # a user's own Keras weights file: loaded as it is
    (folder / "state.json").write_text(json.dumps({"fingerprint": {"model": {}, "data": "x"}, "schedule": {"epochs": 4},
                                                   "epochs_done": 2, "history": [], "finished": False}))
    with pytest.raises(ExporterError, match="unfinished"):
        run_from_weights(folder)
    assert find_run(tmp_path / "nothing") is None


def start(args, cwd):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.Popen([EXPORTER, *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def finish(proc) -> subprocess.CompletedProcess:
    out, err = proc.communicate(timeout=600)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _checkpoint_number(run_dir: Path) -> int:
    index = run_dir / "checkpoints" / "checkpoint"
    if not index.is_file():
        return 0
    text = index.read_text()
    return int(text.split('model_checkpoint_path: "ckpt-')[1].split('"')[0]) if "ckpt-" in text else 0


def test_sigkill_mid_epoch_then_resume_loses_nothing(run_cli, tmp_path):
    # 96 samples at batch 8: 12 steps an epoch, a checkpoint every 4 steps and at every epoch end.
    args = [*TINY, "--epochs", "3", "--train-samples", "96", "--batch-size", "8", "--seed", "11"]
    steps = 12
    run_dir = tmp_path / "killed" / "unet" / "training"
    # The same seed uninterrupted, beside it: the reference the resumed run must match.
    whole = start(["train", *args, "--out", "whole"], tmp_path)
    proc = start(["train", *args, "--save-every", "4", "--out", "killed"], tmp_path)
    deadline = time.time() + 300
    # Kill as soon as a mid-epoch checkpoint of epoch 2 is written (step 4 or 8 of 12).
    while time.time() < deadline and proc.poll() is None:
        number = _checkpoint_number(run_dir)
        if number > steps and number % steps:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "training finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    killed_at = _checkpoint_number(run_dir)
    assert steps < killed_at < 2 * steps
    assert not (run_dir / "weights.h5").exists() and not state(tmp_path / "killed")["finished"]

    # convert refuses to train over (or use) the unfinished run.
    convert = run_cli("convert", *TINY, "--out", "killed", "--no-onnx", "--no-bench")
    assert convert.returncode == 2 and "unfinished training run" in convert.stderr

    # A damaged newest checkpoint (a torn write) falls back to the one before it.
    shutil.copytree(tmp_path / "killed", tmp_path / "torn")
    torn_dir = tmp_path / "torn" / "unet" / "training" / "checkpoints"
    (torn_dir / f"ckpt-{killed_at}.data-00000-of-00001").write_bytes(b"torn")

    torn = start(["train", *args, "--save-every", "4", "--resume", "--out", "torn"], tmp_path)
    resumed = finish(start(["train", *args, "--save-every", "4", "--resume", "--out", "killed"], tmp_path))
    assert resumed.returncode == 0, resumed.stderr
    step_in_epoch = killed_at - steps
    assert f"resuming unet from epoch 2, step {step_in_epoch + 1}" in resumed.stderr
    history = state(tmp_path / "killed")["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3]

    torn = finish(torn)
    assert torn.returncode == 0, torn.stderr
    assert f"ckpt-{killed_at} is unreadable" in torn.stderr and "resuming unet from epoch 2" in torn.stderr
    assert [h["epoch"] for h in state(tmp_path / "torn")["history"]] == [1, 2, 3]

    # The resumed runs replay the uninterrupted run's batches from its restored optimiser state.
    whole = finish(whole)
    assert whole.returncode == 0, whole.stderr
    for name, other in (("resumed", "killed"), ("torn", "torn")):
        mine = state(tmp_path / other)["history"][-1]["val_miou"]
        reference = state(tmp_path / "whole")["history"][-1]["val_miou"]
        assert abs(mine - reference) < 0.02, (name, mine, reference)


def test_seeded_converts_give_byte_identical_int8_files(run_cli, tmp_path):
    args = [*TINY, "--int8", "--epochs", "1", "--train-samples", "32", "--batch-size", "8", "--seed", "5",
            "--no-onnx", "--no-bench", "--layer-errors", "0"]
    for result in [finish(p) for p in [start(["convert", *args, "--out", out], tmp_path) for out in ("a", "b")]]:
        assert result.returncode == 0, result.stderr
    for name in ("unet_int8.tflite", "unet_float32.tflite"):
        assert digest(tmp_path / "a" / "unet" / name) == digest(tmp_path / "b" / "unet" / name), name
