"""`exporter train --distribute mirrored`: the global batch split over 2 logical CPU devices trains like one
device, and a mirrored run resumes from its checkpoint. `--distribute multiworker`: two worker processes on
127.0.0.1 agree on the weights, the chief alone writes the run folder, and a killed run resumes."""

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


# --- --distribute multiworker: two worker processes on 127.0.0.1, the chief (worker 0) writes OUT --------------

MULTI = ["--model", "unet", "--input-size", "32", "--train-samples", "16", "--val-samples", "4", "--batch-size", "8",
         "--seed", "3", "--epochs", "2", "--distribute", "multiworker"]


def free_ports(n: int) -> list[int]:
    import socket

    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def start_workers(tmp_path, out: str, *args) -> list[subprocess.Popen]:
    """Both workers get the same --out (storage both can read): worker 0 writes it, worker 1 only reads it
    (--resume) and writes to a temporary folder that its last line names."""
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    scratch = tmp_path / "tmp"  # the non-chief's temporary folders, removed with tmp_path
    scratch.mkdir(exist_ok=True)
    procs = []
    for index in range(2):
        tf_config = json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TF_CONFIG": tf_config, "TMPDIR": str(scratch)}
        procs.append(subprocess.Popen([EXPORTER, "train", *MULTI, "--out", out, *args], cwd=tmp_path, env=env,
                                      text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    return procs


def finish(procs) -> list[str]:
    outputs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, err
    return [out for out, _ in outputs]


def weights_of(line: str, cwd) -> list:
    import h5py

    path = cwd / line.strip().rsplit("weights in ", 1)[1]  # the chief's is relative to cwd, the other's absolute
    arrays = []
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: arrays.append((name, obj[()])) if isinstance(obj, h5py.Dataset) else None)
    return sorted(arrays, key=lambda a: a[0])


def same_weights(a: list, b: list, tolerance: float = 0.0) -> bool:
    import numpy as np

    return [n for n, _ in a] == [n for n, _ in b] and all(
        np.allclose(x, y, rtol=tolerance, atol=tolerance) for (_, x), (_, y) in zip(a, b))


def test_multiworker_two_processes_agree_and_resume_after_a_worker_is_killed(tmp_path):
    import signal
    import time

    # Uninterrupted: both workers finish, the chief writes the run folder, and their weights are the same.
    chief, other = finish(start_workers(tmp_path, "whole"))
    run = tmp_path / "whole" / "unet" / "training"
    assert (run / "weights.h5").exists() and (run / "curves.png").exists(), chief
    assert str(run) not in other and "exporter-worker-" in other, other  # the other worker wrote elsewhere
    reference = weights_of(chief, tmp_path)
    assert same_weights(reference, weights_of(other, tmp_path))
    assert [h["epoch"] for h in history(tmp_path / "whole")] == [1, 2]

    # Worker 1 is killed once the chief's first-epoch checkpoint is there; the cluster is restarted whole
    # (the chief cannot go on without it) with --resume and ends where the uninterrupted run did.
    procs = start_workers(tmp_path, "killed")
    # The manager's "checkpoint" file names ckpt-2 once that checkpoint is complete.
    listing = tmp_path / "killed" / "unet" / "training" / "checkpoints" / "checkpoint"
    deadline = time.time() + 200
    while time.time() < deadline and procs[1].poll() is None and \
            not (listing.exists() and '"ckpt-2"' in listing.read_text()):
        time.sleep(0.1)
    assert listing.exists() and '"ckpt-2"' in listing.read_text(), "no first-epoch checkpoint"
    procs[1].send_signal(signal.SIGKILL)
    procs[0].send_signal(signal.SIGKILL)
    for p in procs:
        p.communicate(timeout=60)
    resumed = start_workers(tmp_path, "killed", "--resume")
    errs = []
    for p in resumed:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        errs.append((out, err))
    for out, err in errs:
        assert "resuming unet from epoch 2" in err, err
    assert [h["epoch"] for h in history(tmp_path / "killed")] == [1, 2]
    assert same_weights(weights_of(errs[0][0], tmp_path), weights_of(errs[1][0], tmp_path))  # bit for bit
    # Restored, the second epoch's sums run in another order: the same weights up to float rounding.
    assert same_weights(weights_of(errs[0][0], tmp_path), reference, tolerance=1e-3)


def test_multiworker_bad_tf_config_is_one_line(tmp_path, monkeypatch):
    from exporter.distribute import is_chief, tf_config
    from exporter.errors import ExporterError

    for bad, says in ((None, "not set"), ("{oops", "not valid JSON"), ('{"cluster": {"worker": ["a:1"]}}', "task"),
                      ('{"task": {"type": "worker", "index": 0}}', "cluster"),
                      ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 1}}', "task")):
        if bad is None:
            monkeypatch.delenv("TF_CONFIG", raising=False)
        else:
            monkeypatch.setenv("TF_CONFIG", bad)
        with pytest.raises(ExporterError, match=says):
            tf_config()
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}}')
    assert not is_chief("multiworker") and is_chief("mirrored")
    env = {**os.environ, "TF_CONFIG": "{oops"}
    done = subprocess.run([EXPORTER, "train", *MULTI, "--out", "o"], cwd=tmp_path, env=env, text=True,
                          capture_output=True, timeout=120)
    assert done.returncode == 2 and "TF_CONFIG is not valid JSON" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "o").exists()
