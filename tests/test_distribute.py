"""`exporter train --distribute mirrored`: the global batch split over 2 logical CPU devices trains like one
device, and a mirrored run resumes from its checkpoint."""

import json
import os
import subprocess

import pytest

from tests.conftest import EXPORTER

pytestmark = pytest.mark.slow  # three short training runs through the CLI

TINY = ["--model", "unet", "--input-size", "32", "--train-samples", "32", "--val-samples", "8", "--batch-size", "8",
        "--seed", "3"]


def history(out) -> list[dict]:
    return json.loads((out / "unet" / "training" / "state.json").read_text())["history"]


def test_mirrored_over_two_cpu_devices_trains_like_one_device_and_resumes(tmp_path):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}

    def start(*args):
        return subprocess.Popen([EXPORTER, "train", *TINY, *args], cwd=tmp_path, env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    single = start("--epochs", "2", "--out", "single")
    # The mirrored run stops after one epoch and is resumed for the second: restore under the strategy.
    mirrored = start("--epochs", "1", "--distribute", "mirrored", "--cpu-devices", "2", "--out", "mirrored")
    _, err = mirrored.communicate(timeout=600)
    assert mirrored.returncode == 0, err
    assert "2 replicas" in err
    resumed = start("--epochs", "2", "--distribute", "mirrored", "--cpu-devices", "2", "--out", "mirrored", "--resume")
    _, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0 and "resuming unet from epoch 2" in err, err
    _, err = single.communicate(timeout=600)
    assert single.returncode == 0, err

    one, two = history(tmp_path / "single"), history(tmp_path / "mirrored")
    assert [h["epoch"] for h in two] == [1, 2]
    # Same seed, data and global batches; only each replica's batch-norm statistics (4 samples, not 8)
    # and the order of float sums differ.
    for a, b in zip(one, two):
        assert b["loss"] == pytest.approx(a["loss"], rel=0.05), (one, two)
    assert abs(one[-1]["val_miou"] - two[-1]["val_miou"]) < 0.1, (one, two)
